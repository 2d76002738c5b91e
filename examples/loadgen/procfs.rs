//! What the load generator reads from `/proc`, and the descriptor limit it raises.

use std::fs;
use std::io;

/// CPU time a process has used, from two sources.
#[derive(Clone, Copy, Default)]
pub struct CpuSample {
    /// `utime + stime` from `/proc/PID/stat`, in seconds (clock-tick resolution, 10 ms).
    pub stat_secs: f64,
    /// The sum of `/proc/PID/task/*/schedstat` run times, in seconds (nanosecond
    /// resolution; `None` when the kernel does not provide it).
    pub sched_secs: Option<f64>,
}

impl CpuSample {
    /// The CPU time between `self` and the later sample `end`, from the finest source both
    /// samples have.
    pub fn until(&self, end: &CpuSample) -> f64 {
        match (self.sched_secs, end.sched_secs) {
            (Some(a), Some(b)) => b - a,
            _ => end.stat_secs - self.stat_secs,
        }
    }
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions; it only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// `utime + stime` of `pid` (or `"self"`) in seconds.
fn stat_cpu_secs(pid: &str) -> io::Result<f64> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses; the fields start after the last ')'.
    let rest = text
        .rfind(')')
        .map(|i| &text[i + 1..])
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    let field = |n: usize| -> io::Result<u64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed stat"))
    };
    Ok((field(14)? + field(15)?) as f64 / clock_ticks_per_sec())
}

/// Sum of the on-CPU nanoseconds of every thread of `pid`, in seconds.
fn sched_cpu_secs(pid: &str) -> Option<f64> {
    let mut total: u64 = 0;
    for entry in fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = entry.ok()?.path().join("schedstat");
        // A thread that exited since read_dir simply no longer counts.
        let Ok(text) = fs::read_to_string(path) else {
            continue;
        };
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    (total > 0).then_some(total as f64 / 1e9)
}

pub fn cpu_sample(pid: &str) -> io::Result<CpuSample> {
    Ok(CpuSample {
        stat_secs: stat_cpu_secs(pid)?,
        sched_secs: sched_cpu_secs(pid),
    })
}

/// `VmRSS` of `pid`, in bytes.
pub fn vm_rss_bytes(pid: &str) -> io::Result<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS in status"))
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for getrlimit to fill in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: `limit` is a valid rlimit whose soft value does not exceed its hard value.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    #[allow(clippy::unnecessary_cast)] // `rlim_t` is not `u64` on every target.
    let soft = limit.rlim_cur as u64;
    Ok(soft)
}
