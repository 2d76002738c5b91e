//! The peer's side of the suite's connections: blocking clients with timeouts, payloads, and
//! the socket options the tests need (small buffers, a reset on close).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Read and write timeout of every client socket: a bug fails a test instead of hanging it.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A blocking TCP client connected to `addr`, with [`IO_TIMEOUT`].
pub(crate) fn tcp_client(addr: SocketAddr) -> TcpStream {
    let c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    c.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    c
}

/// `len` bytes that differ with `seed`, and with the position modulo a prime (so a chunk
/// delivered twice, or at the wrong place, shows).
pub(crate) fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| ((i + seed * 7) % 251) as u8).collect()
}

/// A small deterministic generator (xorshift64*): the same "random" sizes on every run.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// A number in `1..=max`.
    pub(crate) fn upto(&mut self, max: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (r % max as u64) as usize + 1
    }
}

/// Writes `data` in pieces of random sizes up to `max_piece`, flushing each.
pub(crate) fn write_in_pieces(mut w: impl Write, data: &[u8], max_piece: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut rest = data;
    while !rest.is_empty() {
        let n = rng.upto(max_piece).min(rest.len());
        w.write_all(&rest[..n]).expect("peer write");
        rest = &rest[n..];
    }
}

/// Reads exactly `len` bytes.
pub(crate) fn read_n(mut r: impl Read, len: usize) -> Vec<u8> {
    let mut got = vec![0; len];
    r.read_exact(&mut got).expect("peer read");
    got
}

/// What a read returns within `wait`: `Some(n)` for `n` bytes (0: end of stream), `None` when
/// nothing came; an error other than a timeout is returned as is.
pub(crate) fn read_within(s: &TcpStream, wait: Duration) -> io::Result<Option<usize>> {
    s.set_read_timeout(Some(wait))?;
    let r = (&*s).read(&mut [0; 64]);
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    match r {
        Ok(n) => Ok(Some(n)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

#[cfg(unix)]
pub(crate) use self::unix::*;

#[cfg(unix)]
mod unix {
    use std::os::fd::{AsRawFd, BorrowedFd};
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A socket path under the temporary directory, unique in this process, removed on drop.
    pub(crate) struct TempPath(pub(crate) PathBuf);

    impl TempPath {
        pub(crate) fn new(what: &str) -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let name = format!("gnet-conf-{}-{what}-{n}.sock", std::process::id());
            let path = std::env::temp_dir().join(name);
            let _ = std::fs::remove_file(&path);
            TempPath(path)
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn set_opt<T>(fd: BorrowedFd<'_>, name: libc::c_int, value: T) {
        // SAFETY: `fd` is open for the borrow; the value points to a `T` that lives through
        // the call and is valid for reads of `size_of::<T>()` bytes, the length passed.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                name,
                (&value as *const T).cast(),
                std::mem::size_of::<T>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0, "setsockopt: {}", std::io::Error::last_os_error());
    }

    /// Shrinks `SO_SNDBUF` (the kernel doubles it and applies a minimum of a few KiB).
    pub(crate) fn set_sndbuf(fd: BorrowedFd<'_>, bytes: libc::c_int) {
        set_opt(fd, libc::SO_SNDBUF, bytes);
    }

    /// Shrinks `SO_RCVBUF`.
    pub(crate) fn set_rcvbuf(fd: BorrowedFd<'_>, bytes: libc::c_int) {
        set_opt(fd, libc::SO_RCVBUF, bytes);
    }

    /// `SO_LINGER` 0: closing the socket resets the connection.
    pub(crate) fn reset_on_close(fd: BorrowedFd<'_>) {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        set_opt(fd, libc::SO_LINGER, linger);
    }

    /// Whether the descriptor is non-blocking and close-on-exec.
    pub(crate) fn nonblocking_and_cloexec(fd: BorrowedFd<'_>) -> (bool, bool) {
        // SAFETY: `fd` is open for the borrow; `F_GETFL` and `F_GETFD` take no pointer.
        let (fl, fd_flags) = unsafe {
            (
                libc::fcntl(fd.as_raw_fd(), libc::F_GETFL),
                libc::fcntl(fd.as_raw_fd(), libc::F_GETFD),
            )
        };
        assert!(
            fl >= 0 && fd_flags >= 0,
            "fcntl: {}",
            std::io::Error::last_os_error()
        );
        (fl & libc::O_NONBLOCK != 0, fd_flags & libc::FD_CLOEXEC != 0)
    }

    /// Shuts a listening socket down: every `accept` on it then fails with `EINVAL`.
    pub(crate) fn shutdown_listener(fd: BorrowedFd<'_>) {
        // SAFETY: `fd` is open for the borrow; `shutdown` takes no pointer.
        let r = unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_RD) };
        assert_eq!(r, 0, "shutdown: {}", std::io::Error::last_os_error());
    }

    /// CPU time the calling thread has used.
    pub(crate) fn thread_cpu_time() -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid `timespec` the call writes into; it outlives the call.
        let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        assert_eq!(r, 0, "clock_gettime: {}", std::io::Error::last_os_error());
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }
}
