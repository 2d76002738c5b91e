//! The text report and the one-line JSON result.

use std::fmt::Write;

use super::driver::Window;

/// Everything a run measured; `None` where the run did not measure it.
#[derive(Default)]
pub struct Report {
    pub mode: &'static str,
    pub addr: String,
    pub conns: usize,
    pub size: usize,
    pub pipeline: u64,
    pub rate: Option<f64>,
    pub connect_secs: f64,
    pub connect_retries: u64,
    pub errors: u64,
    pub last_error: Option<String>,
    /// How long the warm-up took (at least `--warmup`, longer while connections waited
    /// for their warm-up echoes).
    pub warmup_secs: f64,
    pub window_secs: f64,
    pub msgs: u64,
    /// Client reads and writes that moved data during the window.
    pub reads: u64,
    pub writes: u64,
    /// Client polls during the window and the events they returned.
    pub polls: (u64, u64),
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub client_cpu_secs: f64,
    pub server_cpu_secs: Option<f64>,
    pub server_stat_cpu_secs: Option<f64>,
    /// Busy time of the server's core, with the core's number.
    pub server_core: Option<(usize, f64)>,
    pub rss_before: Option<u64>,
    pub rss_after: Option<u64>,
    /// UDP: datagrams given up on while measuring and over the whole run, and echoes that
    /// arrived after their datagram was given up on.
    pub lost: Option<(u64, u64, u64)>,
}

impl Report {
    /// Takes the figures of a measured window.
    pub fn add_window(&mut self, w: &Window, server_core: Option<usize>) {
        let us = |ns: u64| ns as f64 / 1e3;
        self.warmup_secs = w.warmup_secs;
        self.window_secs = w.secs;
        self.msgs = w.msgs;
        self.reads = w.reads;
        self.writes = w.writes;
        self.polls = w.polls;
        self.p50_us = us(w.hist.quantile(0.50));
        self.p99_us = us(w.hist.quantile(0.99));
        self.p999_us = us(w.hist.quantile(0.999));
        self.max_us = us(w.hist.max());
        self.client_cpu_secs = w.client_cpu_secs;
        self.server_cpu_secs = w.server_cpu_secs;
        self.server_stat_cpu_secs = w.server_stat_cpu_secs;
        self.server_core = server_core.zip(w.server_core_secs);
        debug_assert_eq!(w.hist.count(), w.msgs);
    }

    pub fn msgs_per_sec(&self) -> f64 {
        self.msgs as f64 / self.window_secs.max(1e-9)
    }

    /// Payload megabytes per second in each direction.
    pub fn mb_per_sec(&self) -> f64 {
        self.msgs_per_sec() * self.size as f64 / 1e6
    }

    fn per_msg_us(&self, cpu: Option<f64>) -> Option<f64> {
        cpu.filter(|_| self.msgs > 0)
            .map(|c| c * 1e6 / self.msgs as f64)
    }

    fn per_msg(&self, n: u64) -> f64 {
        n as f64 / self.msgs.max(1) as f64
    }

    pub fn rss_per_conn(&self) -> Option<f64> {
        let (before, after) = (self.rss_before?, self.rss_after?);
        Some((after as f64 - before as f64) / self.conns as f64)
    }

    pub fn text(&self) -> String {
        let mut s = String::new();
        let rate = self
            .rate
            .map_or("saturation (closed loop)".to_string(), |r| {
                format!("fixed rate {r:.0} msg/s (open loop)")
            });
        let _ = writeln!(
            s,
            "loadgen {} {}: conns={} size={} pipeline={} {}",
            self.addr, self.mode, self.conns, self.size, self.pipeline, rate
        );
        let _ = writeln!(
            s,
            "  connect      {:.2} s, {} retries",
            self.connect_secs, self.connect_retries
        );
        if self.mode == "idle" {
            if let (Some(b), Some(a), Some(per)) =
                (self.rss_before, self.rss_after, self.rss_per_conn())
            {
                let _ = writeln!(
                    s,
                    "  server rss   {:.1} MiB before, {:.1} MiB with the connections: {per:.0} B/conn",
                    b as f64 / 1048576.0,
                    a as f64 / 1048576.0
                );
            }
        } else {
            let _ = writeln!(s, "  warm-up      {:.2} s", self.warmup_secs);
            let _ = writeln!(
                s,
                "  throughput   {:.0} msg/s, {:.2} MB/s each way ({} messages in {:.2} s)",
                self.msgs_per_sec(),
                self.mb_per_sec(),
                self.msgs,
                self.window_secs
            );
            let _ = writeln!(
                s,
                "  latency      p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us",
                self.p50_us, self.p99_us, self.p999_us, self.max_us
            );
            if let Some(us) = self.per_msg_us(self.server_cpu_secs) {
                let util = self.server_cpu_secs.unwrap_or(0.0) / self.window_secs * 100.0;
                let _ = writeln!(s, "  server cpu   {us:.3} us/msg ({util:.0}% of a core)");
            }
            if let Some((core, busy)) = self.server_core {
                let us = self.per_msg_us(Some(busy)).unwrap_or(f64::NAN);
                let util = busy / self.window_secs.max(1e-9) * 100.0;
                let _ = writeln!(
                    s,
                    "  server core  {us:.3} us/msg (core {core} {util:.0}% busy)"
                );
            }
            let _ = writeln!(
                s,
                "  client cpu   {:.0}% of a core; per message {:.3} reads, {:.3} writes, {:.4} polls \
                 ({:.1} events per poll)",
                self.client_cpu_secs / self.window_secs.max(1e-9) * 100.0,
                self.per_msg(self.reads),
                self.per_msg(self.writes),
                self.per_msg(self.polls.0),
                self.polls.1 as f64 / self.polls.0.max(1) as f64
            );
        }
        if let Some((window, run, late)) = self.lost {
            let _ = writeln!(
                s,
                "  lost         {window} datagrams while measuring ({run} in the run, {late} echoed late)"
            );
        }
        let _ = writeln!(s, "  errors       {}", self.errors);
        if let Some(e) = &self.last_error {
            let _ = writeln!(s, "  last error   {e}");
        }
        s
    }

    pub fn json(&self) -> String {
        let mut fields: Vec<(&str, String)> = vec![
            ("mode", format!("\"{}\"", self.mode)),
            ("addr", format!("\"{}\"", self.addr)),
            ("conns", self.conns.to_string()),
            ("size", self.size.to_string()),
            ("pipeline", self.pipeline.to_string()),
            ("rate", num(self.rate)),
            ("connect_secs", format!("{:.3}", self.connect_secs)),
            ("connect_retries", self.connect_retries.to_string()),
            ("errors", self.errors.to_string()),
        ];
        if let Some((window, run, late)) = self.lost {
            fields.push(("lost", window.to_string()));
            fields.push(("lost_in_run", run.to_string()));
            fields.push(("late", late.to_string()));
        }
        if self.mode == "idle" {
            fields.push(("rss_before", num(self.rss_before.map(|v| v as f64))));
            fields.push(("rss_after", num(self.rss_after.map(|v| v as f64))));
            fields.push(("rss_per_conn", num(self.rss_per_conn())));
        } else {
            let client_util = self.client_cpu_secs / self.window_secs.max(1e-9);
            let server_util = self.server_cpu_secs.map(|c| c / self.window_secs.max(1e-9));
            fields.extend([
                ("warmup_secs", format!("{:.3}", self.warmup_secs)),
                ("window_secs", format!("{:.4}", self.window_secs)),
                ("msgs", self.msgs.to_string()),
                ("msgs_per_sec", format!("{:.1}", self.msgs_per_sec())),
                ("mb_per_sec", format!("{:.3}", self.mb_per_sec())),
                ("p50_us", format!("{:.2}", self.p50_us)),
                ("p99_us", format!("{:.2}", self.p99_us)),
                ("p999_us", format!("{:.2}", self.p999_us)),
                ("max_us", format!("{:.2}", self.max_us)),
                ("client_util", format!("{client_util:.3}")),
                ("reads_per_msg", format!("{:.4}", self.per_msg(self.reads))),
                (
                    "writes_per_msg",
                    format!("{:.4}", self.per_msg(self.writes)),
                ),
                (
                    "polls_per_msg",
                    format!("{:.5}", self.per_msg(self.polls.0)),
                ),
                ("server_util", num(server_util)),
                (
                    "server_cpu_us_per_msg",
                    num(self.per_msg_us(self.server_cpu_secs)),
                ),
                (
                    "server_stat_cpu_us_per_msg",
                    num(self.per_msg_us(self.server_stat_cpu_secs)),
                ),
                (
                    "server_core_us_per_msg",
                    num(self.per_msg_us(self.server_core.map(|c| c.1))),
                ),
                (
                    "server_core_util",
                    num(self.server_core.map(|c| c.1 / self.window_secs.max(1e-9))),
                ),
            ]);
        }
        let body: Vec<String> = fields
            .into_iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        format!("{{{}}}", body.join(","))
    }
}

fn num(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.4}"),
        _ => "null".to_string(),
    }
}
