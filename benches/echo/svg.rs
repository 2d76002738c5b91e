//! Hand-written SVG line charts: one panel per (size, pipeline), connection count on a
//! logarithmic x axis, one line per server.

use std::fmt::Write;

pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

pub struct Panel {
    pub title: String,
    pub series: Vec<Series>,
}

const COLOURS: [&str; 6] = [
    "#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860",
];
const PANEL_W: f64 = 380.0;
const PANEL_H: f64 = 250.0;
const LEFT: f64 = 62.0;
const RIGHT: f64 = 14.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 40.0;
const HEADER: f64 = 56.0;

/// `1.25M`, `350k`, `2.5`: short tick labels.
fn short(v: f64) -> String {
    let (x, unit) = if v.abs() >= 1e6 {
        (v / 1e6, "M")
    } else if v.abs() >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let s = format!("{x:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}{unit}")
}

/// A round upper bound for the y axis.
fn nice_max(max: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let exp = 10f64.powf(max.log10().floor());
    for step in [1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0] {
        if step * exp >= max {
            return step * exp;
        }
    }
    10.0 * exp
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn panel(svg: &mut String, p: &Panel, names: &[String], ox: f64, oy: f64) {
    let (w, h) = (PANEL_W - LEFT - RIGHT, PANEL_H - TOP - BOTTOM);
    let xs: Vec<f64> = p
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|q| q.0))
        .collect();
    let ys = p.series.iter().flat_map(|s| s.points.iter().map(|q| q.1));
    let (xmin, xmax) = xs
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    let ymax = nice_max(ys.fold(0.0, f64::max) * 1.05);
    let (lmin, lmax) = (xmin.max(1.0).ln(), xmax.max(1.0).ln());
    let px = |x: f64| {
        if lmax > lmin {
            ox + LEFT + (x.max(1.0).ln() - lmin) / (lmax - lmin) * w
        } else {
            ox + LEFT + w / 2.0
        }
    };
    let py = |y: f64| oy + TOP + h - y / ymax * h;
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-size="13" font-weight="bold" text-anchor="middle">{}</text>"#,
        ox + LEFT + w / 2.0,
        oy + 18.0,
        escape(&p.title)
    );
    for i in 0..=5 {
        let v = ymax * i as f64 / 5.0;
        let y = py(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e4e4e4"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{}</text>"##,
            ox + LEFT,
            ox + LEFT + w,
            ox + LEFT - 5.0,
            y + 3.5,
            short(v)
        );
    }
    let mut ticks = xs.clone();
    ticks.sort_by(f64::total_cmp);
    ticks.dedup();
    for x in ticks {
        let _ = writeln!(
            svg,
            r##"<line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{2:.1}" stroke="#e4e4e4"/><text x="{0:.1}" y="{3:.1}" font-size="10" text-anchor="middle">{4}</text>"##,
            px(x),
            oy + TOP,
            oy + TOP + h,
            oy + TOP + h + 14.0,
            short(x)
        );
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{:.1}" y="{:.1}" width="{w:.1}" height="{h:.1}" fill="none" stroke="#888"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">connections</text>"##,
        ox + LEFT,
        oy + TOP,
        ox + LEFT + w / 2.0,
        oy + TOP + h + 30.0
    );
    for s in &p.series {
        let colour = COLOURS[names.iter().position(|n| *n == s.name).unwrap_or(0) % COLOURS.len()];
        let mut pts = s.points.clone();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let path: Vec<String> = pts
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
            path.join(" ")
        );
        for &(x, y) in &pts {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"><title>{}: {} at {} conns</title></circle>"#,
                px(x),
                py(y),
                escape(&s.name),
                short(y),
                short(x)
            );
        }
    }
}

/// A grid of panels with `cols` columns, a title, a y-axis caption and a legend.
pub fn chart(title: &str, y_caption: &str, panels: &[Panel], cols: usize) -> String {
    let cols = cols.clamp(1, panels.len().max(1));
    let rows = panels.len().div_ceil(cols).max(1);
    let (width, height) = (cols as f64 * PANEL_W, HEADER + rows as f64 * PANEL_H);
    let mut names: Vec<String> = Vec::new();
    for s in panels.iter().flat_map(|p| &p.series) {
        if !names.contains(&s.name) {
            names.push(s.name.clone());
        }
    }
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif">"#
    );
    let _ = writeln!(
        svg,
        r##"<rect width="100%" height="100%" fill="white"/><text x="12" y="20" font-size="15" font-weight="bold">{}</text><text x="12" y="38" font-size="11" fill="#555">{}</text>"##,
        escape(title),
        escape(y_caption)
    );
    let mut x = 12.0;
    for (i, name) in names.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let _ = writeln!(
            svg,
            r#"<rect x="{:.1}" y="44" width="14" height="4" fill="{colour}"/><text x="{:.1}" y="50" font-size="11">{}</text>"#,
            x,
            x + 18.0,
            escape(name)
        );
        x += 30.0 + 7.0 * name.len() as f64;
    }
    for (i, p) in panels.iter().enumerate() {
        let (c, r) = (i % cols, i / cols);
        panel(
            &mut svg,
            p,
            &names,
            c as f64 * PANEL_W,
            HEADER + r as f64 * PANEL_H,
        );
    }
    svg.push_str("</svg>\n");
    svg
}
