//! `--server-cpu F`: the server under test runs in a CPU-bandwidth cgroup that lets it use at
//! most `F` of one core, so that at saturation the server, not the one-core load generator,
//! is the limit. On a 2-core machine this is the only way to measure a server's saturation
//! throughput when the load generator would otherwise saturate first.
//!
//! cgroup v1 (`/sys/fs/cgroup/cpu`, `cpu.cfs_quota_us`) and v2 (`cpu.max` with the `cpu`
//! controller available at `/sys/fs/cgroup`) are both handled; either needs root.

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

/// The bandwidth period: short, so that a throttled server pauses for at most a few ms.
const PERIOD_US: u64 = 10_000;

pub struct CpuCap {
    dir: PathBuf,
    fraction: f64,
    version: u8,
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    fs::write(path, value).map_err(|e| format!("writing {value:?} to {}: {e}", path.display()))
}

impl CpuCap {
    /// Creates the cgroup `gnet-echo-bench-<pid>` with a quota of `fraction` of a core.
    pub fn create(fraction: f64) -> Result<CpuCap, String> {
        if !(fraction > 0.0 && fraction < 1.0) {
            return Err("--server-cpu must be in (0, 1)".into());
        }
        let quota = ((fraction * PERIOD_US as f64).round() as u64).max(1_000);
        let name = format!("gnet-echo-bench-{}", std::process::id());
        let v1 = Path::new("/sys/fs/cgroup/cpu");
        let v2 = Path::new("/sys/fs/cgroup");
        let (dir, version) = if v1.join("cpu.cfs_quota_us").is_file() {
            let dir = v1.join(&name);
            fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
            write(&dir.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
            write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
            (dir, 1)
        } else if fs::read_to_string(v2.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "cpu"))
        {
            write(&v2.join("cgroup.subtree_control"), "+cpu")?;
            let dir = v2.join(&name);
            fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
            write(&dir.join("cpu.max"), &format!("{quota} {PERIOD_US}"))?;
            (dir, 2)
        } else {
            return Err(
                "--server-cpu needs the cgroup cpu controller (v1 at /sys/fs/cgroup/cpu or v2 \
                 at /sys/fs/cgroup); neither is mounted here"
                    .into(),
            );
        };
        Ok(CpuCap {
            dir,
            fraction: quota as f64 / PERIOD_US as f64,
            version,
        })
    }

    /// Moves process `pid`, with all its threads, into the cgroup.
    pub fn add(&self, pid: u32) -> Result<(), String> {
        write(&self.dir.join("cgroup.procs"), &pid.to_string())
    }

    /// The share of one core the server may use.
    pub fn fraction(&self) -> f64 {
        self.fraction
    }

    pub fn describe(&self) -> String {
        format!(
            "{:.0}% of a core ({} µs every {PERIOD_US} µs, cgroup v{} {})",
            self.fraction * 100.0,
            (self.fraction * PERIOD_US as f64).round(),
            self.version,
            self.dir.display()
        )
    }
}

impl Drop for CpuCap {
    fn drop(&mut self) {
        // The last server may still be exiting; an empty cgroup can be removed.
        for _ in 0..50 {
            if fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        eprintln!("echo bench: could not remove {}", self.dir.display());
    }
}
