//! Measurement, not a regression bench: for 4-256 KiB payloads on TCP over loopback, does
//! `IORING_OP_SEND_ZC` (optionally from a registered buffer) save sender CPU or raise
//! throughput compared with plain `IORING_OP_SEND` and a `send(2)` loop?
//!
//! `cargo bench -p gnet-backends --bench send_zc [-- --duration SECS] [--nagle]`
//!
//! Sender thread pinned to core 0, receiver thread (plain `read(2)` into 256 KiB) pinned to
//! core 1. Each (size, variant) runs 3 times, variants alternating, each run for `--duration`
//! seconds (default 1) after a 200 ms warm-up. "In flight" is the number of payload buffers
//! in rotation: a SEND buffer is reused at its CQE, a SEND_ZC buffer only after its
//! notification CQE. The payload is a constant filler, so with several sends in flight their
//! order on the stream does not matter here. `--nagle` leaves TCP_NODELAY off.

#[cfg(target_os = "linux")]
fn main() {
    linux::main();
}

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("send_zc: io_uring measurement, Linux only; nothing to do on this platform");
}

#[cfg(target_os = "linux")]
mod linux {
    use std::fs;
    use std::io;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::{AsRawFd, RawFd};
    use std::sync::OnceLock;
    use std::thread;
    use std::time::{Duration, Instant};

    use io_uring::{cqueue, opcode, types, IoUring, Probe};

    const SIZES: [usize; 4] = [4 << 10, 16 << 10, 64 << 10, 256 << 10];
    const REPS: usize = 3;
    const WARMUP: Duration = Duration::from_millis(200);
    const RECV_BUF: usize = 256 << 10;
    const MIB: f64 = 1024.0 * 1024.0;
    const RING_ENTRIES: u32 = 32; // >= the deepest variant

    /// `IORING_SEND_ZC_REPORT_USAGE` (include/uapi/linux/io_uring.h: `1U << 3`), a `zc_flags`
    /// bit (`sqe->ioprio`): ask the kernel to report in the notification whether it copied.
    const IORING_SEND_ZC_REPORT_USAGE: u16 = 1 << 3;
    /// `IORING_NOTIF_USAGE_ZC_COPIED` (include/uapi/linux/io_uring.h: `1U << 31`), set in a
    /// notification CQE's `res` when the data was copied instead of sent zero-copy.
    const IORING_NOTIF_USAGE_ZC_COPIED: u32 = 1 << 31;

    #[derive(Clone, Copy, PartialEq)]
    enum Kind {
        Syscall,
        Send,
        SendZc,
        SendZcFixed,
    }

    #[derive(Clone, Copy)]
    struct Variant(&'static str, Kind, usize); // name, kind, sends in flight

    const VARIANTS: [Variant; 8] = [
        Variant("send(2) loop", Kind::Syscall, 1),
        Variant("OP_SEND", Kind::Send, 1),
        Variant("OP_SEND", Kind::Send, 4),
        Variant("OP_SEND_ZC", Kind::SendZc, 4),
        Variant("OP_SEND_ZC + fixed buf", Kind::SendZcFixed, 4),
        Variant("OP_SEND", Kind::Send, 16),
        Variant("OP_SEND_ZC", Kind::SendZc, 16),
        Variant("OP_SEND_ZC + fixed buf", Kind::SendZcFixed, 16),
    ];

    /// One run: [MB/s, sender, receiver, all CPU µs per MiB], notification CQEs, copied.
    type Sample = ([f64; 4], u64, u64);

    /// Reports and exits without unwinding, so no buffer the kernel may still read is freed.
    fn fatal(what: &str, err: impl std::fmt::Display) -> ! {
        eprintln!("send_zc: {what}: {err}");
        std::process::exit(1)
    }

    fn cpu_ns(clock: libc::clockid_t) -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec that outlives the call.
        if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
            fatal("clock_gettime", io::Error::last_os_error());
        }
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }

    /// Run time (ns, /proc/PID/schedstat) of ksoftirqd/0 and /1: softirq work (loopback TCP
    /// receive processing) deferred to them instead of running inside our threads' clocks.
    fn ksoftirqd_ns() -> u64 {
        static PIDS: OnceLock<Vec<String>> = OnceLock::new();
        let pids = PIDS.get_or_init(|| {
            let comm = |p: &String| fs::read_to_string(format!("/proc/{p}/comm")).ok();
            let all = fs::read_dir("/proc").into_iter().flatten().flatten();
            let pids = all.filter_map(|d| d.file_name().into_string().ok());
            let is_softirqd = |c: String| matches!(c.trim(), "ksoftirqd/0" | "ksoftirqd/1");
            pids.filter(|p| comm(p).is_some_and(is_softirqd)).collect()
        });
        let run = |p: &String| fs::read_to_string(format!("/proc/{p}/schedstat")).ok();
        let first = |s: String| s.split_whitespace().next()?.parse::<u64>().ok();
        pids.iter().filter_map(|p| run(p).and_then(first)).sum()
    }

    fn pin(core: usize) {
        if let Err(e) = gnet_backends::pin_current_thread(core) {
            eprintln!("send_zc: warning: cannot pin to core {core} (sched_setaffinity): {e}");
        }
    }

    #[derive(Clone, Copy)]
    struct Mark {
        t: Instant,
        bytes: u64,
        cpu: u64,
        all_cpu: u64,
    }

    /// The sender's clock: warm-up, then the measured window, bracketed by `Mark`s.
    struct Phases {
        warm_end: Instant,
        dur: Duration,
        start: Option<Mark>,
        end: Option<Mark>,
    }

    impl Phases {
        /// Advances by wall time given the bytes sent so far; false once the window is over.
        fn tick(&mut self, bytes: u64) -> bool {
            if self.end.is_some() {
                return false;
            }
            let t = Instant::now();
            let mark = || Mark {
                t,
                bytes,
                cpu: cpu_ns(libc::CLOCK_THREAD_CPUTIME_ID),
                all_cpu: cpu_ns(libc::CLOCK_PROCESS_CPUTIME_ID) + ksoftirqd_ns(),
            };
            match self.start {
                None if t >= self.warm_end => {
                    self.start = Some(mark());
                }
                Some(s) if t >= s.t + self.dur => {
                    self.end = Some(mark());
                    return false;
                }
                _ => {}
            }
            true
        }
    }

    fn run_syscall(fd: RawFd, buf: &[u8], ph: &mut Phases) {
        let mut total = 0u64;
        while ph.tick(total) {
            let mut off = 0;
            while off < buf.len() {
                let rest = &buf[off..];
                // SAFETY: `rest` is live and initialised; send(2) reads only `rest.len()` bytes.
                let n =
                    unsafe { libc::send(fd, rest.as_ptr().cast(), rest.len(), libc::MSG_NOSIGNAL) };
                match n {
                    0.. => (off, total) = (off + n as usize, total + n as u64),
                    _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
                    _ => fatal("send(2)", io::Error::last_os_error()),
                }
            }
        }
    }

    /// One buffer per slot; a slot is reusable once its send completed in full and, for
    /// SEND_ZC, every notification for it has arrived.
    struct Slot {
        off: usize,
        in_flight: bool,
        notifs: i32,
    }

    /// Returns (notification CQEs, notifications flagged IORING_NOTIF_USAGE_ZC_COPIED).
    fn run_uring(fd: RawFd, kind: Kind, depth: usize, size: usize, ph: &mut Phases) -> (u64, u64) {
        // Declared before `ring`, so it is dropped after the ring; every op is reaped below.
        let buf = vec![0xa5u8; size * depth];
        let mut ring = IoUring::new(RING_ENTRIES).unwrap_or_else(|e| fatal("IoUring::new", e));
        if kind == Kind::SendZcFixed {
            let iov = |c: &[u8]| libc::iovec {
                iov_base: c.as_ptr() as *mut _,
                iov_len: c.len(),
            };
            let iovs: Vec<libc::iovec> = buf.chunks(size).map(iov).collect();
            // SAFETY: each iovec covers a disjoint chunk of `buf`, which is neither moved nor
            // freed until after `ring` (and with it the registration) is dropped.
            unsafe { ring.submitter().register_buffers(&iovs) }
                .unwrap_or_else(|e| fatal("register_buffers", e));
        }
        let idle = || Slot {
            off: size,
            in_flight: false,
            notifs: 0,
        };
        let mut slots: Vec<Slot> = (0..depth).map(|_| idle()).collect();
        let (mut total, mut notifs, mut copied, mut running) = (0u64, 0u64, 0u64, true);
        loop {
            for (i, s) in slots.iter_mut().enumerate() {
                if s.in_flight || !running || (s.off == size && s.notifs != 0) {
                    continue;
                }
                if s.off == size {
                    s.off = 0; // previous payload fully sent and released: start a new one
                }
                let chunk = &buf[i * size + s.off..(i + 1) * size];
                let (fd, ptr, len) = (types::Fd(fd), chunk.as_ptr(), chunk.len() as u32);
                let sqe = match kind {
                    Kind::Send => opcode::Send::new(fd, ptr, len)
                        .flags(libc::MSG_NOSIGNAL)
                        .build(),
                    Kind::SendZc | Kind::SendZcFixed => opcode::SendZc::new(fd, ptr, len)
                        .flags(libc::MSG_NOSIGNAL)
                        .zc_flags(IORING_SEND_ZC_REPORT_USAGE)
                        .buf_index((kind == Kind::SendZcFixed).then_some(i as u16))
                        .build(),
                    Kind::Syscall => unreachable!(),
                };
                // SAFETY: the SQE points into `buf` (slot `i`, registered as fixed buffer `i`
                // for the fixed variant), which is not written and stays alive until this op's
                // CQE and any notification are reaped: the loop only exits when no slot has an
                // op or notification outstanding, and errors exit the process without unwinding.
                unsafe { ring.submission().push(&sqe.user_data(i as u64)) }
                    .unwrap_or_else(|e| fatal("SQ push", e));
                s.in_flight = true;
            }
            if !slots.iter().any(|s| s.in_flight || s.notifs != 0) {
                break; // only reachable once stopped: while running every slot is busy
            }
            match ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => fatal("io_uring_enter", e),
            }
            for cqe in ring.completion() {
                let (res, flags) = (cqe.result(), cqe.flags());
                let s = &mut slots[cqe.user_data() as usize];
                if cqueue::notif(flags) {
                    s.notifs -= 1;
                    notifs += 1;
                    copied += u64::from(res as u32 & IORING_NOTIF_USAGE_ZC_COPIED != 0);
                    continue;
                }
                s.in_flight = false;
                if cqueue::more(flags) {
                    s.notifs += 1; // a notification CQE will follow; buffer still in use
                }
                if res >= 0 {
                    s.off += res as usize; // short send: the remainder is resubmitted above
                    total += res as u64;
                } else if ![libc::EINTR, libc::EAGAIN, libc::ENOBUFS].contains(&-res) {
                    fatal("send CQE", io::Error::from_raw_os_error(-res));
                }
            }
            running = running && ph.tick(total);
        }
        drop(ring);
        (notifs, copied)
    }

    /// Reads until EOF; returns (bytes, thread CPU ns) over the whole connection. Both are
    /// taken over the warm-up too, which leaves the per-MiB ratio essentially unchanged.
    fn receive(rx: TcpStream) -> (u64, u64) {
        pin(1);
        let (mut buf, mut total) = (vec![0u8; RECV_BUF], 0u64);
        let cpu0 = cpu_ns(libc::CLOCK_THREAD_CPUTIME_ID);
        loop {
            // SAFETY: `buf` is a live, writable allocation of `buf.len()` bytes.
            let n = unsafe { libc::read(rx.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            match n {
                0 => return (total, cpu_ns(libc::CLOCK_THREAD_CPUTIME_ID) - cpu0),
                1.. => total += n as u64,
                _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
                _ => fatal("read(2)", io::Error::last_os_error()),
            }
        }
    }

    fn run_once(v: Variant, size: usize, dur: Duration, nagle: bool) -> Sample {
        let Variant(_, kind, depth) = v;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| fatal("bind", e));
        let addr = listener.local_addr().unwrap_or_else(|e| fatal("addr", e));
        let tx = TcpStream::connect(addr).unwrap_or_else(|e| fatal("connect", e));
        let (rx, _) = listener.accept().unwrap_or_else(|e| fatal("accept", e));
        tx.set_nodelay(!nagle)
            .unwrap_or_else(|e| fatal("TCP_NODELAY", e));
        let receiver = thread::spawn(move || receive(rx));
        let sender = thread::spawn(move || {
            pin(0);
            let warm_end = Instant::now() + WARMUP;
            let mut ph = Phases {
                warm_end,
                dur,
                start: None,
                end: None,
            };
            let zc = match kind {
                Kind::Syscall => {
                    run_syscall(tx.as_raw_fd(), &vec![0xa5u8; size], &mut ph);
                    (0, 0)
                }
                _ => run_uring(tx.as_raw_fd(), kind, depth, size, &mut ph),
            };
            drop(tx); // EOF for the receiver; every send has been reaped
            (ph.start.zip(ph.end).expect("measured window"), zc)
        });
        let ((s, e), (notifs, copied)) = sender.join().expect("sender thread");
        let (rcv_bytes, rcv_cpu) = receiver.join().expect("receiver thread");
        let mib = (e.bytes - s.bytes) as f64 / MIB;
        let per_mib = |ns: u64, mib: f64| ns as f64 / 1e3 / mib;
        let mb_s = (e.bytes - s.bytes) as f64 / (e.t - s.t).as_secs_f64() / 1e6;
        let rcv = per_mib(rcv_cpu, rcv_bytes as f64 / MIB);
        let snd = per_mib(e.cpu - s.cpu, mib);
        let all = per_mib(e.all_cpu - s.all_cpu, mib);
        ([mb_s, snd, rcv, all], notifs, copied)
    }

    /// "median (min–max)" of the runs.
    fn cell(mut xs: Vec<f64>) -> String {
        xs.sort_by(f64::total_cmp);
        let (lo, med, hi) = (xs[0], xs[xs.len() / 2], xs[xs.len() - 1]);
        format!("{med:.0} ({lo:.0}–{hi:.0})")
    }

    /// `--duration SECS` (default 1); `--nagle` leaves TCP_NODELAY off (gnet turns it on).
    /// Anything else, such as the `--bench` that cargo appends, is ignored.
    fn parse_args() -> (Duration, bool) {
        let args: Vec<String> = std::env::args().collect();
        let secs = args
            .iter()
            .position(|a| a == "--duration")
            .map(|i| args.get(i + 1));
        let secs = match secs.map(|s| s.map(|s| s.parse::<f64>())) {
            None => 1.0,
            Some(Some(Ok(s))) if s > 0.0 && s.is_finite() => s,
            _ => fatal("--duration", "expects a positive number of seconds"),
        };
        let nagle = args.iter().any(|a| a == "--nagle");
        (Duration::from_secs_f64(secs), nagle)
    }

    pub fn main() {
        let (dur, nagle) = parse_args();
        let mut probe = Probe::new();
        let ring: io::Result<IoUring> = IoUring::new(8);
        match ring.and_then(|r| r.submitter().register_probe(&mut probe)) {
            Ok(()) if probe.is_supported(opcode::SendZc::CODE) => {}
            Ok(()) => return println!("send_zc: IORING_OP_SEND_ZC unsupported; nothing measured"),
            Err(e) => return println!("send_zc: io_uring unavailable ({e}); nothing measured"),
        }
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        println!("## send(2) vs IORING_OP_SEND vs IORING_OP_SEND_ZC, TCP over loopback\n");
        let (nodelay, secs) = (if nagle { "off" } else { "on" }, dur.as_secs_f64());
        println!(
            "Linux {}, TCP_NODELAY {nodelay}, sender on core 0, receiver (read(2), 256 KiB) on \
             core 1. {REPS} runs per cell, variants alternating, {secs:.1} s each after {} ms \
             warm-up; cells are median (min–max). CPU in µs per MiB sent: sender and receiver \
             threads' CLOCK_THREAD_CPUTIME_ID; all = CLOCK_PROCESS_CPUTIME_ID + ksoftirqd/0,1 \
             run time; over the sender's window (receiver: its whole connection). ZC notifs: \
             notification CQEs with IORING_NOTIF_USAGE_ZC_COPIED / all, summed over runs \
             (warm-up included).\n",
            kernel.trim(),
            WARMUP.as_millis()
        );
        println!(
            "| payload | variant | in flight | MB/s | sender CPU µs/MiB | receiver CPU µs/MiB \
             | all CPU µs/MiB | ZC notifs copied / total |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for size in SIZES {
            let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); VARIANTS.len()];
            for rep in 1..=REPS {
                for (i, v) in VARIANTS.iter().enumerate() {
                    eprintln!("send_zc: {} KiB {} x{} run {rep}", size >> 10, v.0, v.2);
                    samples[i].push(run_once(*v, size, dur, nagle));
                }
            }
            for (&Variant(name, kind, depth), s) in VARIANTS.iter().zip(&samples) {
                let col = |k: usize| cell(s.iter().map(|x| x.0[k]).collect());
                let (n, c) = s.iter().fold((0, 0), |(n, c), x| (n + x.1, c + x.2));
                let zc = match kind {
                    Kind::SendZc | Kind::SendZcFixed => format!("{c} / {n}"),
                    _ => "–".to_owned(),
                };
                let (mb, snd, rcv, all, kib) = (col(0), col(1), col(2), col(3), size >> 10);
                println!("| {kib} KiB | {name} | {depth} | {mb} | {snd} | {rcv} | {all} | {zc} |");
            }
        }
    }
}
