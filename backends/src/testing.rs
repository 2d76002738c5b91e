//! Test helpers shared by the crate's tests and the engine's (not part of the public API).

#[cfg(all(target_os = "linux", feature = "uring"))]
pub use self::seccomp::{deny_io_uring, deny_syscalls};

#[cfg(all(target_os = "linux", feature = "uring"))]
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
