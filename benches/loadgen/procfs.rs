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

/// Clock ticks core `core` has spent idle (idle plus iowait) according to `stat`, the text
/// of `/proc/stat`.
///
/// The busy fields cannot be used instead: they are sampled by the scheduler tick, which a
/// tickless kernel stops while the core idles, so a core that is busy in bursts shorter
/// than a tick shows almost no busy ticks at all. The idle time is measured exactly.
fn idle_ticks(stat: &str, core: usize) -> Option<u64> {
    let name = format!("cpu{core}");
    let mut fields = stat
        .lines()
        .map(str::split_whitespace)
        .find_map(|mut f| (f.next() == Some(name.as_str())).then_some(f))?;
    // user nice system idle iowait ...
    let mut ticks = [0u64; 5];
    for t in &mut ticks {
        *t = fields.next()?.parse().ok()?;
    }
    Some(ticks[3] + ticks[4])
}

/// Seconds core `core` has spent idle since boot (reported in clock ticks of 10 ms). The
/// wall time between two readings minus the idle time between them is how busy the core
/// was, softirq work it did while no task ran (such as receive processing steered to it)
/// included, which a process's CPU time leaves out.
pub fn core_idle_secs(core: usize) -> io::Result<f64> {
    let stat = fs::read_to_string("/proc/stat")?;
    let ticks = idle_ticks(&stat, core).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no complete cpu{core} line in /proc/stat"),
        )
    })?;
    Ok(ticks as f64 / clock_ticks_per_sec())
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

#[cfg(test)]
mod tests {
    use super::idle_ticks;

    const STAT: &str = "cpu  900 0 900 9000 90 0 90 0 0 0
cpu0 100 1 200 5000 40 3 60 7 11 0
cpu1 800 0 700 4000 50 0 30 0 0 0
intr 12345
";

    #[test]
    fn idle_ticks_are_idle_plus_iowait() {
        assert_eq!(idle_ticks(STAT, 0), Some(5040));
        assert_eq!(idle_ticks(STAT, 1), Some(4050));
        // "cpu" (the total) is not core 1's line, nor is "cpu1" core 10's.
        assert_eq!(idle_ticks(STAT, 10), None);
        assert_eq!(idle_ticks("cpu0 1 2 3\n", 0), None);
    }

    #[test]
    fn this_machine_reports_core_0() {
        let a = super::core_idle_secs(0).expect("core 0 in /proc/stat");
        let b = super::core_idle_secs(0).unwrap();
        assert!(a > 0.0 && b >= a, "{a} then {b}");
    }
}
