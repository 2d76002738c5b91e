//! `cargo bench --bench echo [-- options]`: gnet's echo server on each usable backend against
//! a tokio echo server, side by side.
//!
//! The harness builds the examples in release, finds out which gnet backends start and echo
//! on this machine (and says which do not, and why), then for each point of the matrix
//! (connections × message size × pipeline depth) and each round runs every server once:
//!
//! 1. at saturation (closed loop) for throughput and its p99 latency;
//! 2. at one fixed rate, the same for every server (by default half the reference server's
//!    median saturation throughput), for the server's CPU time per message and the p99
//!    latency measured from each message's scheduled send time.
//!
//! Every run gets a fresh server pinned to core 0 while `loadgen` runs on core 1. Rounds
//! alternate the servers (A B A B ...) so that drift in the machine affects all of them;
//! cells show the median over rounds with the min–max range. An idle-memory run opens
//! `--idle-conns` connections per server and reports the RSS growth per connection.
//!
//! With `--net veth` the load generator runs in a network namespace of its own behind a
//! veth pair, so that each side's packets are received on its own core (see
//! `echo/netns.rs`), and the CPU column is the busy time of the server's core.
//!
//! Results go to `bench-results/results.md`, `throughput.svg` and `cpu_per_msg.svg`; server
//! logs to `bench-results/tmp/`. A byte echoed wrong anywhere fails the bench.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[path = "echo/build.rs"]
mod build;
#[path = "echo/cgroup.rs"]
mod cgroup;
#[path = "echo/json.rs"]
mod json;
#[path = "echo/loadrun.rs"]
mod loadrun;
#[path = "echo/markdown.rs"]
mod markdown;
#[path = "echo/netns.rs"]
mod netns;
#[path = "echo/options.rs"]
mod options;
#[path = "echo/results.rs"]
mod results;
#[path = "echo/server.rs"]
mod server;
#[path = "echo/stats.rs"]
mod stats;
#[path = "echo/svg.rs"]
mod svg;

use loadrun::{Load, Outcome};
use options::Options;
use results::{IdleResult, Point, PointResult, Run, ServerRuns};
use server::ServerSpec;

/// Headroom kept under `RLIMIT_NOFILE` for listeners, pipes and the like.
const FD_SLACK: u64 = 64;

/// Raises the soft descriptor limit to the hard one (children inherit it); returns it.
fn raise_nofile_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for getrlimit to fill in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit whose soft value equals its hard value.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    #[allow(clippy::unnecessary_cast)] // `rlim_t` is not `u64` on every target.
    let soft = limit.rlim_cur as u64;
    soft
}

/// Everything one bench invocation shares.
struct Bench {
    opts: Options,
    loadgen: PathBuf,
    servers: Vec<ServerSpec>,
    /// `(server core, load core)`, or `None` when running unpinned.
    cores: Option<(usize, usize)>,
    /// The CPU cap every server runs under (`--server-cpu`).
    cap: Option<cgroup::CpuCap>,
    /// The client's namespace and the veth pair to it (`--net veth`).
    veth: Option<netns::Veth>,
    notes: Vec<String>,
    mismatches: Vec<String>,
    done: usize,
    total: usize,
}

impl Bench {
    /// Starts a fresh server, runs one load against it and stops it.
    fn measure(&mut self, spec: &ServerSpec, load: &Load) -> Result<json::Object, String> {
        let ip = if self.veth.is_some() {
            netns::SERVER_IP
        } else {
            std::net::IpAddr::from([127, 0, 0, 1])
        };
        let server = server::start(spec, self.cores.map(|c| c.0), ip)
            .map_err(|e| format!("server did not start: {e}"))?;
        if let Some(cap) = &self.cap {
            cap.add(server.pid)?;
        }
        let outcome = loadrun::run(
            &self.loadgen,
            self.cores,
            self.veth.is_some(),
            &server,
            load,
        );
        drop(server);
        match outcome {
            Outcome::Done(o) => Ok(o),
            Outcome::Failed(e) => Err(e),
            Outcome::Mismatch(e) => {
                let msg = format!("ECHO MISMATCH ({}): {e}", spec.label());
                eprintln!("echo bench: {msg}");
                self.mismatches.push(msg.clone());
                Err(msg)
            }
        }
    }

    fn progress(&mut self, what: &str) {
        self.done += 1;
        eprintln!("[{:>3}/{}] {what}", self.done, self.total);
    }

    fn load(&self, p: Point, rate: Option<f64>) -> Load {
        Load {
            conns: p.conns,
            size: p.size,
            pipeline: p.pipeline,
            duration: self.opts.duration,
            warmup: self.opts.warmup,
            rate,
            idle: false,
            udp: self.opts.udp,
        }
    }

    /// All rounds of one mode at one point; `rate` `None` is saturation.
    fn rounds(&mut self, p: Point, rate: Option<f64>, runs: &mut [ServerRuns]) {
        let servers = self.servers.clone();
        for _ in 0..self.opts.repeats {
            for (spec, runs) in servers.iter().zip(runs.iter_mut()) {
                let mode = rate.map_or("saturation".to_string(), |r| {
                    format!("rate {}", stats::thousands(r))
                });
                let head = format!(
                    "{:<12} conns={:<6} size={:<6} pipeline={:<3} {mode}",
                    spec.label(),
                    p.conns,
                    p.size,
                    p.pipeline
                );
                match self.measure(spec, &self.load(p, rate)) {
                    Ok(o) => {
                        let run = Run::from_json(&o, self.veth.is_some());
                        let lost = if self.opts.udp {
                            format!(", {} datagrams lost", run.lost)
                        } else {
                            String::new()
                        };
                        self.progress(&format!(
                            "{head}: {} msgs/s, p99 {} µs, cpu {} µs/msg (server {:.0}%, load {:.0}% of a core){lost}",
                            stats::thousands(run.msgs_per_sec),
                            stats::sig3(run.p99_us),
                            run.cpu_us_per_msg.map_or("?".into(), stats::sig3),
                            run.server_util.unwrap_or(f64::NAN) * 100.0,
                            run.client_util * 100.0
                        ));
                        if rate.is_some() {
                            runs.rate.push(run);
                        } else {
                            runs.sat.push(run);
                        }
                    }
                    Err(e) => {
                        self.progress(&format!("{head}: FAILED: {e}"));
                        runs.failures.push(format!("a run failed: {e}"));
                    }
                }
            }
        }
    }

    fn point(&mut self, p: Point) -> PointResult {
        let mut runs: Vec<ServerRuns> = self
            .servers
            .iter()
            .map(|s| ServerRuns {
                label: s.label(),
                sat: Vec::new(),
                rate: Vec::new(),
                failures: Vec::new(),
            })
            .collect();
        self.rounds(p, None, &mut runs);
        // One rate for every server: a fraction of the reference's median saturation.
        let reference = runs.iter().find_map(results::median_sat);
        // Under a CPU cap the fixed-rate runs are skipped: a server throttled by the cgroup
        // would report the throttling's cost, not its own.
        let rate = reference
            .filter(|_| self.cap.is_none())
            .map(|r| (r * self.opts.rate_fraction).max(1.0).round());
        match rate {
            Some(r) => self.rounds(p, Some(r), &mut runs),
            None if self.cap.is_none() => self.done += self.opts.repeats * self.servers.len(),
            None => {}
        }
        PointResult {
            point: p,
            rate,
            servers: runs,
        }
    }

    fn idle(&mut self, conns: usize) -> Vec<IdleResult> {
        let servers = self.servers.clone();
        let mut out: Vec<IdleResult> = servers
            .iter()
            .map(|s| IdleResult {
                label: s.label(),
                conns,
                per_conn: Vec::new(),
                before: Vec::new(),
                after: Vec::new(),
                failures: Vec::new(),
            })
            .collect();
        for _ in 0..self.opts.repeats {
            for (spec, res) in servers.iter().zip(out.iter_mut()) {
                let load = Load {
                    conns,
                    size: 64,
                    pipeline: 1,
                    duration: self.opts.idle_hold,
                    warmup: 0.0,
                    rate: None,
                    idle: true,
                    udp: false,
                };
                let head = format!("{:<12} idle conns={conns}", spec.label());
                match self.measure(spec, &load) {
                    Ok(o) => {
                        let per = o.num("rss_per_conn").unwrap_or(f64::NAN);
                        let secs = o.num("connect_secs").unwrap_or(f64::NAN);
                        self.progress(&format!(
                            "{head}: {} bytes per connection (connected in {secs:.1} s)",
                            stats::thousands(per)
                        ));
                        res.per_conn.push(per);
                        res.before.extend(o.num("rss_before"));
                        res.after.extend(o.num("rss_after"));
                    }
                    Err(e) => {
                        self.progress(&format!("{head}: FAILED: {e}"));
                        res.failures.push(format!("a run failed: {e}"));
                    }
                }
            }
        }
        out
    }
}

/// Picks the servers that will run: tokio, and each gnet backend that starts as itself.
fn discover(
    opts: &Options,
    release: &Path,
    log_dir: &Path,
    notes: &mut Vec<String>,
) -> Vec<ServerSpec> {
    let all = std::iter::once("tokio").chain(server::GNET_BACKENDS);
    let mut specs = Vec::new();
    for name in all {
        if opts
            .servers
            .as_ref()
            .is_some_and(|s| !s.iter().any(|x| x == name))
        {
            continue;
        }
        let binary = match (name, opts.udp) {
            ("tokio", _) => release.join("tokio_echo"),
            (_, false) => release.join("examples/echo"),
            (_, true) => release.join("examples/udp_echo"),
        };
        let spec = ServerSpec {
            name: name.to_string(),
            binary,
            loops: opts.loops,
            log_dir: log_dir.to_path_buf(),
            udp: opts.udp,
        };
        match server::probe(&spec) {
            Ok(()) => {
                eprintln!("echo bench: {} is usable", spec.label());
                specs.push(spec);
            }
            Err(e) => {
                let note = format!("{} skipped: {e}", spec.label());
                eprintln!("echo bench: {note}");
                notes.push(note);
            }
        }
    }
    if let Some(wanted) = &opts.servers {
        for w in wanted {
            if w != "tokio" && !server::GNET_BACKENDS.contains(&w.as_str()) {
                notes.push(format!("unknown server {w:?} ignored"));
            }
        }
    }
    specs
}

fn main() -> ExitCode {
    let began = Instant::now();
    let opts = match options::parse(env::args().skip(1).collect()) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("echo bench: {e}");
            }
            eprint!("{}", options::USAGE);
            return ExitCode::from(if e.is_empty() { 0 } else { 2 });
        }
    };
    let mut notes = Vec::new();
    let fd_limit = raise_nofile_limit();
    // Relative to the workspace, whatever directory cargo runs the bench in.
    let out_dir = build::workspace_dir().join(&opts.out);
    let log_dir = out_dir.join("tmp");
    if let Err(e) = fs::create_dir_all(&log_dir) {
        eprintln!("echo bench: cannot create {}: {e}", log_dir.display());
        return ExitCode::FAILURE;
    }
    match build::build_examples() {
        Ok(None) => {}
        Ok(Some(note)) => {
            eprintln!("echo bench: {note}");
            notes.push(note);
        }
        Err(e) => {
            eprintln!("echo bench: {e}");
            return ExitCode::FAILURE;
        }
    }
    let release = build::release_dir();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pin = if !opts.pin {
        None
    } else if cores < 2
        || std::process::Command::new("taskset")
            .arg("-V")
            .output()
            .is_err()
    {
        notes.push("running unpinned: pinning needs taskset and two cores".into());
        None
    } else {
        Some((0, 1))
    };
    let servers = discover(&opts, &release, &log_dir, &mut notes);
    if servers.is_empty() {
        eprintln!("echo bench: no server is usable");
        return ExitCode::FAILURE;
    }
    let cap = match opts.server_cpu.map(cgroup::CpuCap::create).transpose() {
        Ok(cap) => cap,
        Err(e) => {
            eprintln!("echo bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let veth = match (opts.veth, pin) {
        (false, _) => None,
        (true, None) => {
            eprintln!(
                "echo bench: --net veth steers each side's packets to its core: it needs pinning"
            );
            return ExitCode::FAILURE;
        }
        (true, Some((server_core, load_core))) => {
            match netns::Veth::setup(server_core, load_core) {
                Ok(v) => Some(v),
                Err(e) => {
                    eprintln!("echo bench: --net veth: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let max_conns = fd_limit.saturating_sub(FD_SLACK) as usize;
    let mut points = Vec::new();
    for &conns in &opts.conns {
        if conns > max_conns {
            notes.push(format!(
                "{conns} connections skipped: RLIMIT_NOFILE is {fd_limit} even after raising it"
            ));
            continue;
        }
        for &size in &opts.sizes {
            for &pipeline in &opts.pipelines {
                points.push(Point {
                    conns,
                    size,
                    pipeline,
                });
            }
        }
    }
    let mut idle_conns = opts.idle_conns;
    if idle_conns > max_conns {
        notes.push(format!(
            "idle run reduced from {idle_conns} to {max_conns} connections (RLIMIT_NOFILE {fd_limit})"
        ));
        idle_conns = max_conns;
    }
    let per_round = servers.len() * opts.repeats;
    let modes = if cap.is_some() { 1 } else { 2 };
    let total = points.len() * modes * per_round + if idle_conns > 0 { per_round } else { 0 };
    let mut bench = Bench {
        opts,
        loadgen: release.join("loadgen"),
        servers,
        cores: pin,
        cap,
        veth,
        notes,
        mismatches: Vec::new(),
        done: 0,
        total,
    };
    let results: Vec<PointResult> = points.iter().map(|&p| bench.point(p)).collect();
    let idle = if idle_conns > 0 {
        bench.idle(idle_conns)
    } else {
        Vec::new()
    };
    let md = markdown::write_results(&bench, &results, &idle, began.elapsed().as_secs_f64());
    let cols = bench.opts.pipelines.len();
    let charts = [
        (
            "throughput.svg",
            results::chart(
                &results,
                "Echo throughput at saturation",
                "messages/s (median over rounds)",
                cols,
                results::median_sat,
            ),
        ),
        (
            "cpu_per_msg.svg",
            results::chart(
                &results,
                "Server CPU per message at a fixed rate",
                "µs of CPU per echoed message (median over rounds; lower is better)",
                cols,
                results::median_cpu,
            ),
        ),
    ];
    let mut written = vec![out_dir.join("results.md")];
    let mut io_ok = fs::write(&written[0], &md).is_ok();
    for (name, svg) in charts {
        let path = out_dir.join(name);
        io_ok &= fs::write(&path, svg).is_ok();
        written.push(path);
    }
    println!("{md}");
    for p in &written {
        eprintln!("echo bench: wrote {}", p.display());
    }
    if !io_ok {
        eprintln!("echo bench: could not write every result file");
        return ExitCode::FAILURE;
    }
    if !bench.mismatches.is_empty() {
        eprintln!(
            "echo bench: FAILED: {} run(s) saw echoed bytes differ",
            bench.mismatches.len()
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
