//! Child processes for tests that change something process-wide (a resource limit, a signal,
//! a kill): the test re-runs itself as a child, selected with `--exact`, and talks to it over
//! its standard input and output, one line at a time.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gnet::BackendKind;

/// Set in a child's environment; its value names the role the child plays.
pub const ROLE: &str = "GNET_TEST_CHILD";

/// The role this process was started in, if it is a child.
pub fn role() -> Option<String> {
    std::env::var(ROLE).ok()
}

/// The `--exact` name of a `per_backend!` test.
pub fn test_name(kind: BackendKind, test: &str) -> String {
    format!("{}::{test}", kind.name())
}

/// Runs the test `name` of this test binary as a child in `role` until it exits, with
/// `GNET_BACKEND` removed and `env` added, and returns what it printed (standard output, then
/// standard error). Panics with that text if the child failed.
pub fn run_to_end(name: &str, role: &str, env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(std::env::current_exe().expect("the test binary's path"));
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env_remove("GNET_BACKEND");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("spawn the child test process");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child {name} failed:\n{text}");
    text
}

/// A running child test process.
pub struct Child {
    proc: std::process::Child,
    lines: mpsc::Receiver<String>,
    /// Everything the child printed so far (for failure messages).
    pub transcript: Vec<String>,
}

impl Child {
    /// Runs the test `name` of this test binary as a child in `role`, with `env` added.
    pub fn spawn(name: &str, role: &str, env: &[(&str, String)]) -> Child {
        let mut cmd = Command::new(std::env::current_exe().expect("the test binary's path"));
        cmd.args([name, "--exact", "--nocapture", "--test-threads=1"])
            .env(ROLE, role)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut proc = cmd.spawn().expect("spawn the child test process");
        let out = proc.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Child {
            proc,
            lines,
            transcript: Vec::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.id()
    }

    /// The next line containing `prefix` (other lines are kept in the transcript), with what
    /// comes after it; `None` after `timeout` or when the child's output ended. (Anywhere in
    /// the line: the test harness starts the child's first line with the test's name.)
    pub fn next_line(&mut self, prefix: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).ok()?;
            self.transcript.push(line.clone());
            if let Some(at) = line.find(prefix) {
                return Some(line[at + prefix.len()..].trim().to_string());
            }
        }
    }

    /// Like [`Child::next_line`], but panics with the transcript when the line never comes.
    pub fn expect_line(&mut self, prefix: &str, timeout: Duration) -> String {
        match self.next_line(prefix, timeout) {
            Some(rest) => rest,
            None => panic!(
                "the child did not print {prefix:?} within {timeout:?}; it printed:\n{}",
                self.transcript.join("\n")
            ),
        }
    }

    /// Lines printed so far that contain `prefix`, without waiting.
    pub fn drain_count(&mut self, prefix: &str) -> usize {
        while let Ok(line) = self.lines.try_recv() {
            self.transcript.push(line);
        }
        self.transcript
            .iter()
            .filter(|l| l.contains(prefix))
            .count()
    }

    /// Writes one line to the child's standard input.
    pub fn send(&mut self, line: &str) {
        let stdin = self.proc.stdin.as_mut().expect("piped stdin");
        writeln!(stdin, "{line}").expect("write to the child");
        stdin.flush().expect("flush to the child");
    }

    /// `SIGKILL`, then reaps the child.
    pub fn kill(mut self) -> ExitStatus {
        let _ = self.proc.kill();
        self.proc.wait().expect("reap the child")
    }

    /// Waits (bounded) for the child to exit by itself.
    pub fn wait(mut self, timeout: Duration) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.proc.try_wait().expect("try_wait") {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.transcript.push(line);
                }
                return (status, std::mem::take(&mut self.transcript));
            }
            if Instant::now() > deadline {
                let _ = self.proc.kill();
                panic!(
                    "the child did not exit within {timeout:?}; it printed:\n{}",
                    self.transcript.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Ok(None) = self.proc.try_wait() {
            let _ = self.proc.kill();
            let _ = self.proc.wait();
        }
    }
}

/// CPU time (user + system, in clock ticks) a process has used so far, from
/// `/proc/<pid>/stat`.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // The command name is in parentheses and may contain anything: fields start after it.
    let rest = &stat[stat.rfind(')').expect("a stat line") + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12th and 13th after the name.
    let utime: u64 = fields[11].parse().expect("utime");
    let stime: u64 = fields[12].parse().expect("stime");
    utime + stime
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
pub fn ticks_per_second() -> u64 {
    // SAFETY: `sysconf` takes no pointers.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).unwrap_or(100)
}

/// An example's binary: `target/<profile>/examples/<name>`, beside the `deps/` directory
/// that holds the running test binary. Panics, saying how to build it, when it is missing.
pub fn example_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .unwrap_or_else(|| panic!("no profile directory above {}", exe.display()));
    let path = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "the {name} example is not built at {}: `cargo test` builds it before the tests; \
         running one test file alone, run `cargo build --examples` first",
        path.display()
    );
    path
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("local_addr").port()
}
