//! One run of the load generator against a running server.

use std::path::Path;

use super::json::{self, Object};
use super::netns::Veth;
use super::server::{pinned, Running};

/// Echoes every connection must have had before a window opens (`loadgen --warmup-msgs`):
/// at 10,000 connections a round trip can take 150 ms, and the first second of a run is a
/// start-up transient for every server.
pub const WARMUP_MSGS: u64 = 10;

/// What to ask the load generator for.
pub struct Load {
    pub conns: usize,
    pub size: usize,
    pub pipeline: u64,
    pub duration: f64,
    pub warmup: f64,
    /// Open-loop rate; `None` runs at saturation.
    pub rate: Option<f64>,
    pub idle: bool,
    /// `udp://` rather than `tcp://`.
    pub udp: bool,
}

pub enum Outcome {
    Done(Object),
    /// The echoed bytes differed from what was sent.
    Mismatch(String),
    Failed(String),
}

/// Seconds to allow for opening `conns` connections: generous for a server that accepts at
/// a few thousand per second, short enough that one that cannot hold them fails fast.
fn connect_timeout(conns: usize) -> u64 {
    (conns as u64 / 1000).clamp(5, 30)
}

/// Runs `loadgen` against `server`: pinned to the load core of `cores` (server core, load
/// core) when given, and inside the veth pair's namespace with `veth`.
pub fn run(
    loadgen: &Path,
    cores: Option<(usize, usize)>,
    veth: bool,
    server: &Running,
    load: &Load,
) -> Outcome {
    let load_core = cores.map(|c| c.1);
    let mut cmd = if veth {
        let mut c = Veth::exec();
        if let Some(core) = load_core {
            c.arg("taskset").arg("-c").arg(core.to_string());
        }
        c.arg(loadgen);
        c
    } else {
        pinned(load_core, loadgen)
    };
    if let Some((server_core, _)) = cores {
        cmd.arg("--server-core").arg(server_core.to_string());
    }
    cmd.arg("--addr")
        .arg(format!(
            "{}://{}",
            if load.udp { "udp" } else { "tcp" },
            server.addr
        ))
        .arg("--conns")
        .arg(load.conns.to_string())
        .arg("--size")
        .arg(load.size.to_string())
        .arg("--pipeline")
        .arg(load.pipeline.to_string())
        .arg("--duration")
        .arg(load.duration.to_string())
        .arg("--warmup")
        .arg(load.warmup.to_string())
        .arg("--warmup-msgs")
        .arg(WARMUP_MSGS.to_string())
        .arg("--server-pid")
        .arg(server.pid.to_string())
        .arg("--connect-timeout")
        .arg(connect_timeout(load.conns).to_string())
        .arg("--json");
    if let Some(rate) = load.rate {
        cmd.arg("--rate").arg(format!("{rate:.0}"));
    }
    if load.idle {
        cmd.arg("--idle");
    }
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) => return Outcome::Failed(format!("cannot run {}: {e}", loadgen.display())),
    };
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if out.status.code() == Some(2) {
        return Outcome::Mismatch(stderr);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().rev().find_map(json::parse) {
        Some(obj) if out.status.success() => Outcome::Done(obj),
        _ => Outcome::Failed(format!("loadgen exited with {}: {stderr}", out.status)),
    }
}
