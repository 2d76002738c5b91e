//! Example servers as child processes, for tests that stop them with signals: their output
//! collected line by line, their exit awaited with a bound. Shared by `tests/signals.rs` and
//! the benchmarks package's test of `tokio_echo` (which includes this file by path), so it
//! depends on nothing but std and libc.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex, Once};
use std::time::{Duration, Instant};

/// How long a child gets to print its first line, or a line awaited on stderr.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(20);

/// Raises the soft descriptor limit to the hard one, once per process (a child inherits it),
/// and checks that it is at least `need`.
pub fn raise_nofile_limit(need: usize) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit into the valid, exclusively borrowed `lim`.
        let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
        assert_eq!(rc, 0, "getrlimit: {}", io::Error::last_os_error());
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            // SAFETY: setrlimit only reads the valid rlimit behind the shared reference.
            let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
            assert_eq!(rc, 0, "setrlimit: {}", io::Error::last_os_error());
        }
        let need = need as libc::rlim_t;
        assert!(
            lim.rlim_cur >= need,
            "the descriptor limit is {} and these tests need {need}: raise `ulimit -n`",
            lim.rlim_cur
        );
    });
}

/// Sends `sig` to the child.
pub fn send_signal(child: &Child, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
    // SAFETY: kill has no memory-safety obligations. The child has not been waited for yet
    // (its pid cannot have been reused by another process).
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}): {}", io::Error::last_os_error());
}

/// An example server running as a child process, its output collected by two threads.
pub struct EchoProcess {
    pub child: Child,
    pub what: String,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    stderr_lines: mpsc::Receiver<String>,
}

impl EchoProcess {
    /// Starts the program at `path` with `args` and waits for its first line, which must
    /// start with `first_line`.
    pub fn spawn(path: &Path, args: &[String], first_line: &str) -> EchoProcess {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let mut cmd = Command::new(path);
        cmd.args(args)
            .env("RUST_LOG", "info")
            .env_remove("GNET_BACKEND")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let what = format!("{name} {}", args.join(" "));
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (first_tx, first_rx) = mpsc::channel();
        let (err_tx, stderr_lines) = mpsc::channel();
        collect_lines(child.stdout.take().unwrap(), stdout.clone(), first_tx);
        collect_lines(child.stderr.take().unwrap(), stderr.clone(), err_tx);
        let mut p = EchoProcess {
            child,
            what,
            stdout,
            stderr,
            stderr_lines,
        };
        let first = match first_rx.recv_timeout(WAIT_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let status = p.wait_exit(Duration::from_secs(5));
                panic!(
                    "{} printed no first line (exit status {status:?}); stderr:\n{}",
                    p.what,
                    p.stderr_text()
                );
            }
        };
        assert!(
            first.starts_with(first_line),
            "{}: first line {first:?} does not start with {first_line:?}",
            p.what
        );
        p
    }

    pub fn stdout_text(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Waits up to `limit` for the child to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if start.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits (bounded) for a line on stderr that contains `needle`.
    pub fn wait_stderr(&self, needle: &str) {
        let deadline = Instant::now() + WAIT_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return,
                Ok(_) => {}
                Err(_) => panic!(
                    "{}: no line with {needle:?} on stderr; stderr:\n{}",
                    self.what,
                    self.stderr_text()
                ),
            }
        }
    }

    /// Waits for the stdout and stderr threads to see end of file (after the child exited).
    pub fn output_done(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&self.stdout) > 1 || Arc::strong_count(&self.stderr) > 1 {
            assert!(
                Instant::now() < deadline,
                "{}: its output did not end after it exited",
                self.what
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for EchoProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads lines from `from` into `into` on a thread of its own; each line also goes to `tx`.
pub fn collect_lines(
    from: impl Read + Send + 'static,
    into: Arc<Mutex<Vec<String>>>,
    tx: mpsc::Sender<String>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            into.lock().unwrap().push(line.clone());
            let _ = tx.send(line);
        }
    });
}
