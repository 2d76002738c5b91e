//! The measurements, and the markdown tables and charts made from them.

use std::fmt::Write;

use super::json::Object;
use super::stats::{sig3, thousands, Spread};
use super::svg::{self, Panel, Series};

#[derive(Clone, Copy, PartialEq)]
pub struct Point {
    pub conns: usize,
    pub size: usize,
    pub pipeline: u64,
}

/// One load-generator run.
pub struct Run {
    pub msgs_per_sec: f64,
    pub p99_us: f64,
    pub cpu_us_per_msg: Option<f64>,
    pub server_util: Option<f64>,
    pub client_util: f64,
    pub errors: f64,
    /// UDP: datagrams given up on while measuring.
    pub lost: f64,
}

impl Run {
    /// With `core`, CPU and utilisation are the busy time of the server's core rather than
    /// the server process's CPU time.
    pub fn from_json(o: &Object, core: bool) -> Run {
        let (cpu, util) = if core {
            ("server_core_us_per_msg", "server_core_util")
        } else {
            ("server_cpu_us_per_msg", "server_util")
        };
        Run {
            msgs_per_sec: o.num("msgs_per_sec").unwrap_or(0.0),
            p99_us: o.num("p99_us").unwrap_or(f64::NAN),
            cpu_us_per_msg: o.num(cpu),
            server_util: o.num(util),
            client_util: o.num("client_util").unwrap_or(f64::NAN),
            errors: o.num("errors").unwrap_or(0.0),
            lost: o.num("lost").unwrap_or(0.0),
        }
    }
}

/// The runs of one server at one point.
pub struct ServerRuns {
    pub label: String,
    pub sat: Vec<Run>,
    pub rate: Vec<Run>,
    pub failures: Vec<String>,
}

pub struct PointResult {
    pub point: Point,
    pub rate: Option<f64>,
    pub servers: Vec<ServerRuns>,
}

pub struct IdleResult {
    pub label: String,
    pub conns: usize,
    pub per_conn: Vec<f64>,
    pub before: Vec<f64>,
    pub after: Vec<f64>,
    pub failures: Vec<String>,
}

fn spread(runs: &[Run], f: impl Fn(&Run) -> Option<f64>) -> Option<Spread> {
    Spread::of(&runs.iter().filter_map(f).collect::<Vec<_>>())
}

fn cell(s: Option<Spread>, fmt: impl Fn(f64) -> String) -> String {
    s.map_or("–".to_string(), |s| s.show(fmt))
}

fn size_label(size: usize) -> String {
    if size >= 1024 && size % 1024 == 0 {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

/// The throughput table: one row per point and server.
/// `share` is the part of a core each server may use (1 unless `--server-cpu` capped it);
/// the saturation notes judge the server's utilisation against it.
pub fn throughput_table(points: &[PointResult], reference: &str, share: f64) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "| conns | size | pipeline | server | msgs/s at saturation | vs {reference} | p99 µs at saturation \
         | fixed rate msgs/s | CPU µs/msg at fixed rate | p99 µs at fixed rate | notes |"
    );
    md.push_str("|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|\n");
    for pr in points {
        let reference_median = pr
            .servers
            .iter()
            .find(|s| s.label == reference)
            .and_then(|s| spread(&s.sat, |r| Some(r.msgs_per_sec)))
            .map(|s| s.median);
        for s in &pr.servers {
            let sat = spread(&s.sat, |r| Some(r.msgs_per_sec));
            let ratio = match (sat, reference_median) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a.median / b),
                _ => "–".to_string(),
            };
            let mut notes = Vec::new();
            let bound = s
                .sat
                .iter()
                .any(|r| r.client_util > 0.95 && r.server_util.is_some_and(|u| u < 0.9 * share));
            if bound {
                notes.push("load generator saturated first".to_string());
            }
            let stalled = s
                .sat
                .iter()
                .any(|r| r.client_util < 0.6 && r.server_util.is_some_and(|u| u < 0.6 * share));
            if stalled {
                notes.push("a saturation run left both sides mostly idle (stall)".to_string());
            }
            if let (Some(target), Some(got)) = (pr.rate, spread(&s.rate, |r| Some(r.msgs_per_sec)))
            {
                if got.median < 0.95 * target {
                    notes.push(format!(
                        "kept up with only {} msgs/s",
                        thousands(got.median)
                    ));
                }
            }
            let errors: f64 = s.sat.iter().chain(&s.rate).map(|r| r.errors).sum();
            if errors > 0.0 {
                notes.push(format!("{errors:.0} connection errors"));
            }
            notes.extend(s.failures.iter().cloned());
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                thousands(pr.point.conns as f64),
                size_label(pr.point.size),
                pr.point.pipeline,
                s.label,
                cell(sat, thousands),
                ratio,
                cell(spread(&s.sat, |r| Some(r.p99_us)), sig3),
                pr.rate.map_or("–".to_string(), thousands),
                cell(spread(&s.rate, |r| r.cpu_us_per_msg), sig3),
                cell(spread(&s.rate, |r| Some(r.p99_us)), sig3),
                notes.join("; ")
            );
        }
    }
    md
}

pub fn idle_table(idle: &[IdleResult]) -> String {
    let mut md = String::new();
    md.push_str("| server | idle conns | bytes per idle connection | RSS before (MiB) | RSS with the connections (MiB) | notes |\n");
    md.push_str("|---|---:|---:|---:|---:|---|\n");
    let mib = |v: f64| format!("{:.1}", v / 1048576.0);
    for r in idle {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            r.label,
            thousands(r.conns as f64),
            cell(Spread::of(&r.per_conn), thousands),
            cell(Spread::of(&r.before), mib),
            cell(Spread::of(&r.after), mib),
            r.failures.join("; ")
        );
    }
    md
}

/// One chart over connection counts, one panel per (size, pipeline).
pub fn chart(
    points: &[PointResult],
    title: &str,
    caption: &str,
    cols: usize,
    value: impl Fn(&ServerRuns) -> Option<f64>,
) -> String {
    let mut panels: Vec<Panel> = Vec::new();
    for pr in points {
        let title = format!(
            "{}, pipeline {}",
            size_label(pr.point.size),
            pr.point.pipeline
        );
        let index = match panels.iter().position(|p| p.title == title) {
            Some(i) => i,
            None => {
                panels.push(Panel {
                    title,
                    series: Vec::new(),
                });
                panels.len() - 1
            }
        };
        for s in &pr.servers {
            let Some(y) = value(s) else { continue };
            let series = &mut panels[index].series;
            match series.iter_mut().find(|x| x.name == s.label) {
                Some(x) => x.points.push((pr.point.conns as f64, y)),
                None => series.push(Series {
                    name: s.label.clone(),
                    points: vec![(pr.point.conns as f64, y)],
                }),
            }
        }
    }
    svg::chart(title, caption, &panels, cols)
}

pub fn median_sat(s: &ServerRuns) -> Option<f64> {
    spread(&s.sat, |r| Some(r.msgs_per_sec)).map(|x| x.median)
}

pub fn median_cpu(s: &ServerRuns) -> Option<f64> {
    spread(&s.rate, |r| r.cpu_us_per_msg).map(|x| x.median)
}
