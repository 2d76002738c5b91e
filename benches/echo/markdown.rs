//! `results.md`: how the runs were made, then the tables.

use std::env;
use std::fs;

use super::results::{self, IdleResult, PointResult};
use super::{loadrun, Bench};

fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cc = fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control").unwrap_or_default();
    format!(
        "{cpu}, {cores} cores, Linux {}, TCP congestion control {}",
        kernel.trim(),
        cc.trim()
    )
}

pub fn write_results(
    bench: &Bench,
    points: &[PointResult],
    idle: &[IdleResult],
    secs: f64,
) -> String {
    let o = &bench.opts;
    let reference = bench.servers[0].label();
    let args: Vec<String> = env::args().skip(1).filter(|a| a != "--bench").collect();
    let mut md = String::from(if o.udp {
        "# UDP echo benchmark: gnet and tokio\n\n"
    } else {
        "# Echo benchmark: gnet and tokio\n\n"
    });
    md.push_str(&format!(
        "`cargo bench --bench echo -- {}` on {}; took {:.0} s.\n\n",
        args.join(" "),
        machine(),
        secs
    ));
    md.push_str(&format!(
        "- Every run starts a fresh server with `--loops {}`{}.\n\
         - `loadgen` (one thread, mio) checks every echoed byte. Saturation runs are closed loop \
         with `pipeline` messages in flight per connection; fixed-rate runs are open loop at \
         {:.0}% of {reference}'s median saturation throughput at that point, the same rate for \
         every server, with latency measured from each message's scheduled send time.\n\
         - {}\n\
         - {} round(s) of {} s measured after a warm-up of at least {} s that also lasts until \
         every connection has had {} echoes, so that start-up effects stay out of the window; \
         rounds alternate the servers; cells show median (min–max) when there is more than one \
         round.\n",
        o.loops,
        match bench.cores {
            Some((s, l)) => format!(", pinned to core {s}; the load generator to core {l}"),
            None => ", unpinned".to_string(),
        },
        o.rate_fraction * 100.0,
        match &bench.veth {
            None => "CPU µs/msg is the server's CPU time over the measured window (per-thread \
                     schedstat, or utime+stime from /proc/PID/stat) divided by the messages \
                     echoed in it."
                .to_string(),
            Some(v) => format!(
                "Network: {}. CPU µs/msg is the busy time of the server's core over the \
                 measured window (the window's length minus the core's idle time in \
                 /proc/stat, 10 ms resolution; the receive processing the core does while \
                 the server sleeps counts too) divided by the messages echoed in it; server \
                 utilisation is that core's.",
                v.describe()
            ),
        },
        o.repeats,
        o.duration,
        o.warmup,
        loadrun::WARMUP_MSGS
    ));
    if let Some(cap) = &bench.cap {
        md.push_str(&format!(
            "- Every server runs capped at {}, so that at saturation the server, not the load \
             generator, is the limit; server utilisation is out of that share. Fixed-rate runs are \
             skipped under the cap (a throttled server's CPU per message measures the \
             throttling).\n",
            cap.describe()
        ));
    }
    if o.udp {
        md.push_str(
            "- UDP: each connection is a connected UDP socket of the load generator (its own \
             source port) keeping `pipeline` datagrams in flight; every echoed datagram is checked \
             whole. A datagram not echoed within 200 ms is counted lost and its slot reused.\n",
        );
        let lost: Vec<String> = bench
            .servers
            .iter()
            .map(|s| {
                let n: f64 = points
                    .iter()
                    .flat_map(|p| &p.servers)
                    .filter(|r| r.label == s.label())
                    .flat_map(|r| r.sat.iter().chain(&r.rate))
                    .map(|r| r.lost)
                    .sum();
                format!("{} {n}", s.label())
            })
            .collect();
        md.push_str(&format!(
            "- Datagrams lost while measuring, over all runs: {}.\n",
            lost.join(", ")
        ));
    }
    for n in &bench.notes {
        md.push_str(&format!("- Note: {n}\n"));
    }
    for m in &bench.mismatches {
        md.push_str(&format!("- **{m}**\n"));
    }
    md.push_str("\n## Throughput, CPU per message and latency\n\n");
    md.push_str(&results::throughput_table(
        points,
        &reference,
        bench.cap.as_ref().map_or(1.0, |c| c.fraction()),
    ));
    if !idle.is_empty() {
        md.push_str("\n## Memory per idle connection\n\n");
        md.push_str("Server RSS (VmRSS) before the connections and after each has echoed once and sat idle.\n\n");
        md.push_str(&results::idle_table(idle));
    }
    md.push_str(
        "\n## Charts\n\n![throughput](throughput.svg)\n\n![CPU per message](cpu_per_msg.svg)\n",
    );
    md
}
