//! Test helpers shared by the crate's tests and the engine's (not part of the public API).

#[cfg(gnet_uring)]
pub use self::memlock::limit_locked_memory;

/// Makes every io_uring backend opened in this process from now on see a kernel without the
/// opcodes named (`"RECVMSG"`, `"SENDMSG"`, `"CONNECT"`), as an older or restricted kernel
/// would: the features that need them are reported unavailable. Irreversible in practice:
/// meant for a child process of a test.
#[cfg(gnet_uring)]
pub fn pretend_io_uring_lacks(names: &[&str]) {
    crate::uring::hide_opcodes_in_process(names);
}
#[cfg(gnet_uring)]
pub use self::seccomp::{deny_io_uring, deny_syscalls};

#[cfg(gnet_uring)]
mod memlock {
    use std::io;

    /// Bit of `CAP_IPC_LOCK` in the capability sets (`linux/capability.h`).
    const CAP_IPC_LOCK: u32 = 14;
    /// The user ids [`limit_locked_memory`] switches to start here (plus the process id).
    const UID_BASE: u32 = 2_000_000_000;

    /// Puts this process where an unprivileged user under a small memlock limit is: the
    /// kernel charges io_uring's rings to `RLIMIT_MEMLOCK` and refuses (`ENOMEM`) what does not
    /// fit. Sets the limit, soft and hard, to `bytes`; then, when running as root, switches
    /// every thread to a user id of its own (`2,000,000,000 +` the process id), which drops
    /// all capabilities, `CAP_IPC_LOCK` included (a process with it is charged nothing).
    ///
    /// The kernel adds up the locked memory of all processes of a user: a user id no other
    /// process runs as keeps concurrent tests (and whatever else runs as root) out of the
    /// count, and the count starts at zero. The process stays dumpable, so that it can read
    /// its own `/proc/self/fdinfo`. Without root only the limit is lowered, and other
    /// processes of the same user share it. Irreversible: meant for a child process of a
    /// test. Returns the user id the process runs as now.
    ///
    /// # Errors
    /// `setrlimit` or `setuid` failing, or `CAP_IPC_LOCK` still effective afterwards (a
    /// non-root process given it by file capabilities): the situation could not be set up,
    /// and a test relying on it must fail rather than pass for the wrong reason.
    pub fn limit_locked_memory(bytes: u64) -> io::Result<u32> {
        let limit = libc::rlimit {
            rlim_cur: bytes,
            rlim_max: bytes,
        };
        // SAFETY: `limit` is a valid rlimit that outlives the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) } != 0 {
            return Err(context("setrlimit(RLIMIT_MEMLOCK)"));
        }
        // SAFETY: no arguments.
        let mut uid = unsafe { libc::geteuid() };
        if uid == 0 {
            uid = UID_BASE + std::process::id();
            // SAFETY: an integer argument. glibc (and musl) apply it to every thread of the
            // process, as POSIX requires, so no thread keeps root.
            if unsafe { libc::setuid(uid) } != 0 {
                return Err(context("setuid"));
            }
            // A change of user id makes /proc/self/{fd,fdinfo} root's; the tests read them.
            // SAFETY: PR_SET_DUMPABLE takes integer arguments only.
            if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) } != 0 {
                return Err(context("prctl(PR_SET_DUMPABLE)"));
            }
        }
        let effective = effective_caps()?;
        if effective & (1 << CAP_IPC_LOCK) != 0 {
            return Err(io::Error::other(format!(
                "CAP_IPC_LOCK is still effective (CapEff {effective:x}) for uid {uid}: io_uring \
                 would not be charged to RLIMIT_MEMLOCK"
            )));
        }
        Ok(uid)
    }

    /// The effective capability set of this thread, from `/proc/thread-self/status`.
    fn effective_caps() -> io::Result<u64> {
        let status = std::fs::read_to_string("/proc/thread-self/status")?;
        let hex = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .ok_or_else(|| io::Error::other("no CapEff line in /proc/thread-self/status"))?;
        u64::from_str_radix(hex.trim(), 16)
            .map_err(|e| io::Error::other(format!("CapEff {hex:?}: {e}")))
    }

    fn context(call: &str) -> io::Error {
        let e = io::Error::last_os_error();
        io::Error::new(e.kind(), format!("{call}: {e}"))
    }
}

#[cfg(gnet_uring)]
mod seccomp {
    use std::io;

    /// `AUDIT_ARCH_*` of the build target: `EM_*` | 64-bit | little-endian.
    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64

    /// Offsets in `struct seccomp_data`.
    const NR_OFFSET: u32 = 0;
    const ARCH_OFFSET: u32 = 4;

    fn stmt(code: u32, k: u32) -> libc::sock_filter {
        libc::sock_filter {
            code: code as u16,
            jt: 0,
            jf: 0,
            k,
        }
    }

    fn jeq(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt,
            jf,
            k,
        }
    }

    /// Makes `io_uring_setup`, `io_uring_enter` and `io_uring_register` fail with `EPERM` for
    /// every current and future thread of this process, the way a container's seccomp profile
    /// or `kernel.io_uring_disabled` does. Everything else stays allowed. Irreversible: meant
    /// for a child process of a test.
    ///
    /// # Errors
    /// As [`deny_syscalls`].
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    pub fn deny_io_uring() -> io::Result<()> {
        deny_syscalls(&[
            libc::SYS_io_uring_setup,
            libc::SYS_io_uring_enter,
            libc::SYS_io_uring_register,
        ])
    }

    /// Makes the system calls numbered `nrs` (at most 200) fail with `EPERM` for every current
    /// and future thread of this process; everything else stays allowed. Irreversible: meant
    /// for a child process of a test.
    ///
    /// # Errors
    /// `prctl(PR_SET_NO_NEW_PRIVS)` or `seccomp(SECCOMP_SET_MODE_FILTER)` failing, or another
    /// thread that could not be synchronised.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    pub fn deny_syscalls(nrs: &[libc::c_long]) -> io::Result<()> {
        assert!(nrs.len() <= 200, "a jump offset is one byte");
        let eperm = libc::SECCOMP_RET_ERRNO | (libc::EPERM as u32 & libc::SECCOMP_RET_DATA);
        let allow = libc::SECCOMP_RET_ALLOW;
        let ld = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
        let mut filter = vec![
            // A foreign architecture's syscall numbers mean something else: deny them all.
            stmt(ld, ARCH_OFFSET),
            jeq(AUDIT_ARCH, 1, 0),
            stmt(libc::BPF_RET | libc::BPF_K, eperm),
            stmt(ld, NR_OFFSET),
        ];
        // Each match jumps over the remaining matches and the "allow" to the final "deny".
        for (i, &nr) in nrs.iter().enumerate() {
            filter.push(jeq(nr as u32, (nrs.len() - i) as u8, 0));
        }
        filter.push(stmt(libc::BPF_RET | libc::BPF_K, allow));
        filter.push(stmt(libc::BPF_RET | libc::BPF_K, eperm));
        let prog = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_mut_ptr(),
        };
        // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `prog` points at `filter`, both alive for the duration of the call, which
        // copies the program into the kernel; the other arguments are integers.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_TSYNC,
                &prog as *const libc::sock_fprog,
            )
        };
        match r {
            0 => Ok(()),
            r if r < 0 => Err(io::Error::last_os_error()),
            tid => Err(io::Error::other(format!(
                "seccomp TSYNC: thread {tid} could not be synchronised"
            ))),
        }
    }

    /// Other architectures: not implemented.
    ///
    /// # Errors
    /// Always `Unsupported`.
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    pub fn deny_io_uring() -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "deny_io_uring: only x86_64 and aarch64",
        ))
    }

    /// Other architectures: not implemented.
    ///
    /// # Errors
    /// Always `Unsupported`.
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    pub fn deny_syscalls(_nrs: &[libc::c_long]) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "deny_syscalls: only x86_64 and aarch64",
        ))
    }
}
