//! io_uring under a small memlock limit, for real: each test runs in a child process that
//! [`limit_locked_memory`] puts where an unprivileged user is (no `CAP_IPC_LOCK`, a small
//! `RLIMIT_MEMLOCK`, a user id of its own), so that the kernel charges the rings to the limit
//! and refuses what does not fit. Measured on 6.18: a ring of the default 1024 entries with
//! the default 256 ring buffers needs 35 pages (140 KiB), 256 entries 10 pages, 128 entries 6,
//! the smallest the backend steps down to (64 entries) 4 pages.
//!
//! `Auto` must serve on a smaller ring when one fits, on epoll when none does, and say so
//! once; an explicit `uring` must fail with the same advice.
#![cfg(all(gnet_uring, gnet_epoll))]

use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

mod util;

use gnet::{BackendChoice, BackendKind, Error, Options, Running};
use gnet_backends::testing::limit_locked_memory;
use gnet_backends::uring::Uring;
use gnet_backends::{Backend, Config};
use util::{Client, PlainEcho};

/// Below the 16 KiB the smallest ring the backend steps down to needs: nothing fits.
const TOO_SMALL: u64 = 12 * 1024;
/// The limit older distributions give unprivileged users.
const OLD_DEFAULT: u64 = 64 * 1024;

/// Runs one child at a time: without root the children share the user's memlock count.
static ONE_CHILD: Mutex<()> = Mutex::new(());

/// In the parent: runs `test` in a child process and returns its output (stdout, then
/// stderr, where gnet's warnings go without a logger). In the child: `None`.
fn in_child(test: &str) -> Option<String> {
    if util::child::role().is_some() {
        return None;
    }
    let _one = ONE_CHILD.lock().unwrap_or_else(|p| p.into_inner());
    let text = util::child::run_to_end(test, "memlock", &[]);
    assert!(text.contains("CHILD-OK"), "child did not finish:\n{text}");
    println!("{text}");
    Some(text)
}

/// In the child: the unprivileged-memlock situation, or a loud failure saying why not.
fn limit(bytes: u64) {
    let uid = limit_locked_memory(bytes)
        .unwrap_or_else(|e| panic!("cannot set up the memlock situation (run as root?): {e}"));
    println!("child: uid {uid}, RLIMIT_MEMLOCK {bytes} bytes, no CAP_IPC_LOCK");
}

fn start(opts: Options) -> gnet::Result<Option<Running>> {
    gnet::start(PlainEcho, &["tcp://127.0.0.1:0"], opts.honour_env(false))
}

/// Echoes over `n` fresh connections (round robin spreads them over the loops).
fn serves(running: &Running, n: usize) {
    for i in 0..n {
        let mut c = Client::connect(&running.engine().addrs()[0]);
        c.echo(format!("still serving {i}").as_bytes());
    }
}

/// The submission queue entries of every io_uring instance this process has open, read from
/// `/proc/self/fdinfo` (`SqMask` is the entries less one).
fn rings_in_use() -> Vec<u32> {
    let mut entries = Vec::new();
    for fd in std::fs::read_dir("/proc/self/fd").expect("read /proc/self/fd") {
        let fd = fd.unwrap();
        let Ok(target) = std::fs::read_link(fd.path()) else {
            continue; // closed since the directory was read
        };
        if target.to_string_lossy() != "anon_inode:[io_uring]" {
            continue;
        }
        let info = std::fs::read_to_string(Path::new("/proc/self/fdinfo").join(fd.file_name()))
            .expect("read the ring's fdinfo");
        let mask = info
            .lines()
            .find_map(|l| l.strip_prefix("SqMask:"))
            .unwrap_or_else(|| panic!("no SqMask in fdinfo:\n{info}"));
        let mask = u32::from_str_radix(mask.trim().trim_start_matches("0x"), 16).unwrap();
        entries.push(mask + 1);
    }
    entries.sort_unstable();
    entries
}

/// The lines of `text` holding `needle`.
fn lines_with<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.contains(needle)).collect()
}

/// What every memlock message must tell: the limit, its value, and fixes one can apply.
fn assert_names_the_fixes(msg: &str, value: &str) {
    for needle in [
        "RLIMIT_MEMLOCK",
        value,
        "ulimit -l",
        "limits.conf",
        "LimitMEMLOCK=",
        "--ulimit memlock",
        "CAP_IPC_LOCK",
    ] {
        assert!(msg.contains(needle), "message lacks {needle:?}: {msg}");
    }
}

#[test]
fn auto_falls_back_to_epoll_when_no_ring_fits_the_memlock_limit() {
    if let Some(out) = in_child("auto_falls_back_to_epoll_when_no_ring_fits_the_memlock_limit") {
        let warned = lines_with(&out, "using epoll");
        assert_eq!(warned.len(), 1, "one warning expected:\n{out}");
        assert_names_the_fixes(warned[0], "12 KiB");
        return;
    }
    limit(TOO_SMALL);
    let running = start(Options::new())
        .expect("Auto must start on epoll")
        .expect("running");
    assert_eq!(running.engine().backend(), BackendKind::Epoll);
    let why = running
        .engine()
        .fallback_reason()
        .expect("a fallback reason")
        .to_string();
    assert_names_the_fixes(&why, "12 KiB");
    serves(&running, 1);
    running.stop().unwrap();
    println!("CHILD-OK auto: {why}");
}

#[test]
fn explicit_uring_fails_with_the_memlock_hint() {
    if in_child("explicit_uring_fails_with_the_memlock_hint").is_some() {
        return;
    }
    limit(TOO_SMALL);
    let explicit = start(Options::new().backend(BackendChoice::Only(BackendKind::Uring)));
    let reason = match explicit {
        Err(Error::BackendUnavailable {
            backend: BackendKind::Uring,
            reason,
        }) => reason,
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("uring must not start when no ring fits the memlock limit"),
    };
    assert_names_the_fixes(&reason, "12 KiB");
    // `Auto` gives the same advice, then falls back. (Which call was refused last may differ:
    // the ring the explicit attempt closed is still charged for a few milliseconds.)
    let running = start(Options::new()).unwrap().unwrap();
    let why = running.engine().fallback_reason().unwrap_or_default();
    let advice = |m: &str| m[m.find("RLIMIT_MEMLOCK").unwrap()..].to_string();
    assert_eq!(
        advice(why),
        advice(&reason),
        "Auto and explicit advise differently"
    );
    running.stop().unwrap();
    println!("CHILD-OK explicit: {reason}");
}

#[test]
fn auto_runs_io_uring_on_a_smaller_ring_under_64_kib() {
    if let Some(out) = in_child("auto_runs_io_uring_on_a_smaller_ring_under_64_kib") {
        let warned = lines_with(&out, "ring reduced");
        assert_eq!(warned.len(), 1, "one warning expected:\n{out}");
        assert!(
            warned[0].contains("from 1024 down to 256 submission entries"),
            "{}",
            warned[0]
        );
        assert_names_the_fixes(warned[0], "64 KiB");
        return;
    }
    limit(OLD_DEFAULT);
    let running = start(Options::new()).expect("Auto").expect("running");
    assert_eq!(running.engine().backend(), BackendKind::Uring);
    assert_eq!(running.engine().fallback_reason(), None);
    assert_eq!(rings_in_use(), [256]);
    serves(&running, 3);
    running.stop().unwrap();
    println!("CHILD-OK reduced");
}

#[test]
fn auto_gives_every_loop_the_same_smaller_ring() {
    if let Some(out) = in_child("auto_gives_every_loop_the_same_smaller_ring") {
        let warned = lines_with(&out, "reduced");
        assert_eq!(warned.len(), 1, "one warning expected:\n{out}");
        assert!(
            warned[0].contains("rings of the 2 loops reduced from 1024 down to 128"),
            "{}",
            warned[0]
        );
        return;
    }
    // 16 pages: 256 entries (10 pages) and 128 (6) would fit, but the loops get one size.
    limit(OLD_DEFAULT);
    let t = Instant::now();
    let running = start(Options::new().loops(2))
        .expect("Auto")
        .expect("running");
    println!("child: started in {:?}", t.elapsed());
    assert_eq!(running.engine().backend(), BackendKind::Uring);
    assert_eq!(rings_in_use(), [128, 128]);
    serves(&running, 4);
    running.stop().unwrap();
    println!("CHILD-OK two loops");
}

#[test]
fn auto_falls_back_to_epoll_when_the_loops_rings_do_not_fit_together() {
    let name = "auto_falls_back_to_epoll_when_the_loops_rings_do_not_fit_together";
    if let Some(out) = in_child(name) {
        let warned = lines_with(&out, "using epoll");
        assert_eq!(warned.len(), 1, "one warning expected:\n{out}");
        return;
    }
    // One ring fits under 64 KiB, eight (of 4 pages at the least) do not: before the probe
    // opened a ring per loop it passed with one, and the loops' rings failed the engine.
    limit(OLD_DEFAULT);
    let t = Instant::now();
    let running = start(Options::new().loops(8))
        .expect("Auto must start on epoll")
        .expect("running");
    println!("child: started in {:?}", t.elapsed());
    assert_eq!(running.engine().backend(), BackendKind::Epoll);
    let why = running.engine().fallback_reason().unwrap().to_string();
    assert_names_the_fixes(&why, "64 KiB");
    assert!(
        why.contains("8 loops take a ring each") && why.contains("Options::loops"),
        "{why}"
    );
    serves(&running, 8);
    running.stop().unwrap();
    println!("CHILD-OK eight loops: {why}");
}

/// Opens the backend in the child, which must succeed.
fn open(config: &Config) -> Uring {
    Uring::open(config).unwrap_or_else(|e| panic!("io_uring must open: {e}"))
}

#[test]
fn the_backend_steps_down_to_the_ring_that_fits_and_waits_for_closed_rings() {
    let name = "the_backend_steps_down_to_the_ring_that_fits_and_waits_for_closed_rings";
    if in_child(name).is_some() {
        return;
    }
    // 10 pages: exactly a ring of 256 entries and its buffer ring; the refused attempts at
    // 1024 and 512 entries must have left nothing charged.
    limit(40 * 1024);
    let ring = open(&Config::default());
    assert_eq!((ring.ring_entries(), ring.ring_buffers()), (256, 256));
    let why = ring.reduced().expect("a reduced ring says why").to_string();
    assert!(why.contains("RLIMIT_MEMLOCK 40 KiB"), "{why}");
    // The kernel returns a closed ring's memory some 20 ms later: the next open starts at the
    // size that fitted and waits for it instead of shrinking further.
    drop(ring);
    let again = open(&Config::default());
    assert_eq!(again.ring_entries(), 256);
    println!("CHILD-OK {why}");
}

#[test]
fn the_backend_registers_fewer_ring_buffers_when_they_do_not_fit() {
    if in_child("the_backend_registers_fewer_ring_buffers_when_they_do_not_fit").is_some() {
        return;
    }
    // 16 pages: 256 entries take 9, 4096 ring buffers would take 16 more, 1024 take 4.
    limit(OLD_DEFAULT);
    let mut config = Config::default();
    config.ring_buffers = 4096;
    let ring = open(&config);
    assert_eq!((ring.ring_entries(), ring.ring_buffers()), (256, 1024));
    println!("CHILD-OK {}", ring.reduced().unwrap());
}

#[test]
fn the_backend_shrinks_the_ring_when_not_even_its_buffers_fit() {
    if in_child("the_backend_shrinks_the_ring_when_not_even_its_buffers_fit").is_some() {
        return;
    }
    // 9 pages: a ring of 256 entries (9) leaves no page for its buffer ring; it is closed
    // and one of 128 (5, and 1 for the buffers) opens once the first one's memory is back.
    limit(36 * 1024);
    let ring = open(&Config::default());
    assert_eq!((ring.ring_entries(), ring.ring_buffers()), (128, 256));
    println!("CHILD-OK {}", ring.reduced().unwrap());
}
