//! Tests of the io_uring backend's own machinery over loopback sockets: reused send
//! operations, the read budget of a poll, what an idle connection keeps armed, set-up, and
//! the waits. The contract itself is tested by the conformance suite (`crate::conformance`);
//! these tests drive the backend through its fixture too.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Uring;
use crate::conformance::peer::tcp_client;
use crate::conformance::Fixture;
use crate::contract::{Backend, Config, Id, OpenError};
use crate::socket::Addr;

/// The backend in the conformance suite's fixture.
pub(super) type Fx = Fixture<Uring>;

/// The listener [`listen`] registers.
pub(super) const LISTENER: Id = Id(0);

pub(super) fn config(ring_buffers: u16, read_buffer_size: usize) -> Config {
    Config {
        read_buffer_size,
        ring_buffers,
        ring_entries: 256,
        ..Config::default()
    }
}

/// A loopback TCP listener registered as [`LISTENER`].
pub(super) fn listen(fx: &mut Fx) -> (crate::socket::Listener, SocketAddr) {
    fx.listen_tcp(LISTENER)
}

/// Connects a client to `addr` and adds the server side the backend accepted as
/// `Id::new(index, 1)`.
pub(super) fn connect(fx: &mut Fx, addr: SocketAddr, index: usize) -> (TcpStream, Id) {
    let client = tcp_client(addr);
    let (socket, peer) = fx.accept(LISTENER);
    assert_eq!(peer, Addr::Inet(client.local_addr().unwrap()));
    let id = Id::new(index, 1);
    fx.add(id, socket);
    (client, id)
}

#[test]
fn uring_reused_send_operations_carry_only_their_own_bytes() {
    let mut fx = Fx::open(config(16, 4096));
    let id = Id::new(0, 1);
    let mut client = fx.tcp_pair(id);
    let mut expected = Vec::new();
    // Alternate many-segment, single-segment and empty sends so that a recycled operation
    // with a longer iovec array is reused for a shorter one (and the other way round).
    for round in 0..40u8 {
        let bufs: Vec<Bytes> = match round % 3 {
            0 => (0..7)
                .map(|k| Bytes::from(vec![round ^ k; 100 + usize::from(k)]))
                .collect(),
            1 => vec![Bytes::from(vec![round; 3000])],
            _ => vec![Bytes::new(), Bytes::new()],
        };
        for b in &bufs {
            expected.extend_from_slice(b);
        }
        fx.send(id, bufs);
        let sends = usize::from(round) + 1;
        fx.pump("sent", |r, _| r.sent_count(id) == sends);
        let spare = fx.backend.spare_sends.len();
        assert!(spare <= 1, "{spare} spare sends");
    }
    let mut back = vec![0u8; expected.len()];
    client.read_exact(&mut back).unwrap();
    assert_eq!(back, expected);
    // Every sent buffer came back for reuse.
    assert_eq!(fx.rec.reclaimed().1, expected.len());
    let spare = &fx.backend.spare_sends;
    assert_eq!(spare.len(), 1);
    assert!(spare
        .iter()
        .all(|op| op.total == 0 && op.remaining().is_empty()));
}

#[test]
fn uring_poll_read_budget_leaves_the_rest_for_the_next_poll() {
    // Plain receives: the budget is checked per completion, and a bundle may fill many
    // buffers in one.
    let cfg = Config {
        poll_read_budget: 48,
        recv_bundles: false,
        ..config(64, 16)
    };
    let mut fx = Fx::open(cfg);
    let (a, b) = (Id::new(0, 1), Id::new(1, 1));
    let mut ca = fx.tcp_pair(a);
    let mut cb = fx.tcp_pair(b);
    ca.write_all(&[1; 100]).unwrap();
    cb.write_all(&[2; 100]).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let mut polls = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while fx.rec.len(a) < 100 || fx.rec.len(b) < 100 {
        assert!(Instant::now() < deadline, "timed out");
        let before = fx.rec.len(a) + fx.rec.len(b);
        fx.backend
            .poll(Some(Duration::from_millis(20)), &mut fx.rec)
            .unwrap();
        let got = fx.rec.len(a) + fx.rec.len(b) - before;
        // The budget is checked after each completion: one buffer (16 bytes) may overshoot.
        assert!(
            got < 48 + 16,
            "one poll delivered {got} bytes over a 48-byte budget"
        );
        polls += 1;
    }
    assert!(
        polls >= 4,
        "200 bytes at under 64 per poll take 4 polls, took {polls}"
    );
    assert_eq!(fx.rec.bytes(a), [1; 100]);
    assert_eq!(fx.rec.bytes(b), [2; 100]);
    fx.assert_holding_no_buffer(2);
}

/// An idle connection is one armed receive and holds no buffer; its close cancels it.
#[test]
fn uring_an_idle_connection_is_one_armed_receive() {
    let mut fx = Fx::open(config(8, 4096));
    let (_l, addr) = listen(&mut fx);
    let standing = fx.stats().ops_in_flight;
    assert_eq!(standing, 2, "the polls on the waker and on the listeners");
    let (_client, id) = connect(&mut fx, addr, 5);
    fx.settle(Duration::from_millis(15));
    let s = fx.stats();
    assert_eq!((s.conns, s.ops_in_flight), (1, 3), "{s:?}");
    fx.assert_holding_no_buffer(1);
    fx.close_and_wait(id);
    fx.assert_reaped();
}

#[test]
fn uring_open_reports_setup_flags() {
    let u = Uring::open(&Config::default()).expect("io_uring opens here");
    eprintln!("io_uring setup flags: {}", u.setup_flags());
    let s = u.stats();
    assert_eq!((s.buffers_total, s.buffers_free), (256, 256));
    // An invalid configuration is an operator error, not a fallback.
    let bad = Config {
        ring_buffers: 3,
        ..Config::default()
    };
    assert!(matches!(Uring::open(&bad), Err(OpenError::Failed(_))));
}

use crate::testing;

/// Set in a child process started by [`run_in_child`].
const CHILD: &str = "GNET_URING_TEST_CHILD";

/// True in the child process; in the parent, runs test `name` (a path such as
/// `uring::tests::x`) alone in a fresh process of this test binary, asserts that it passed and
/// returns its standard output, or `None` in the child.
pub(super) fn run_in_child(name: &str) -> Option<String> {
    if std::env::var_os(CHILD).is_some() {
        return None;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "child ran no test:\n{stdout}");
    Some(stdout)
}

#[test]
fn uring_seccomp_denial_is_unavailable() {
    let name = concat!(module_path!(), "::uring_seccomp_denial_is_unavailable");
    if let Some(stdout) = run_in_child(name.split_once("::").map_or(name, |(_, rest)| rest)) {
        assert!(stdout.contains("child: Unavailable"), "{stdout}");
        assert!(stdout.contains("EPERM"), "{stdout}");
        return;
    }
    testing::deny_io_uring().expect("installing the seccomp filter");
    match Uring::open(&Config::default()) {
        Err(OpenError::Unavailable(why)) => {
            assert!(why.contains("EPERM"), "{why}");
            println!("child: Unavailable: {why}");
        }
        Err(e) => panic!("expected Unavailable, got {e:?}"),
        Ok(_) => panic!("io_uring opened despite the seccomp filter"),
    }
}

/// The start-up probe keeps `IORING_ENTER_NO_IOWAIT` where the kernel has it (6.15+) and drops
/// it where the kernel refuses it, and every kind of wait still behaves: a zero wait returns
/// at once, a timed one after its timeout, an unbounded one on a wake-up.
#[test]
fn uring_waits_keep_out_of_iowait_where_the_kernel_allows() {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let version = super::probe::parse_release(&release).expect("a kernel release");
    let mut fx = Fx::open(config(8, 1024));
    assert_eq!(
        fx.backend.waits_without_iowait(),
        version >= (6, 15),
        "kernel {version:?}"
    );
    let t = Instant::now();
    fx.backend.poll(Some(Duration::ZERO), &mut fx.rec).unwrap();
    fx.backend.poll(Some(Duration::ZERO), &mut fx.rec).unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "a zero wait blocked"
    );
    let t = Instant::now();
    fx.backend
        .poll(Some(Duration::from_millis(30)), &mut fx.rec)
        .unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(25),
        "a timed wait returned early"
    );
    let waker = fx.backend.waker();
    let t0 = Instant::now();
    let th = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        waker.wake().unwrap();
    });
    while fx.rec.woken() == 0 {
        fx.backend.poll(None, &mut fx.rec).unwrap();
    }
    assert!(t0.elapsed() >= Duration::from_millis(25));
    th.join().unwrap();
}
