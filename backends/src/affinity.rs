//! Pinning the calling thread to one core.

use std::io;

/// Pins the calling thread to `core` (Linux: `sched_setaffinity`).
///
/// # Errors
/// Whatever the kernel reports (`EINVAL` for a core outside the allowed set);
/// `Unsupported` on platforms without thread affinity.
#[cfg(target_os = "linux")]
pub fn pin_current_thread(core: usize) -> io::Result<()> {
    if core >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("core {core} is beyond CPU_SETSIZE"),
        ));
    }
    // SAFETY: cpu_set_t is a plain bit array for which all-zero is a valid (empty) value.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `core` was checked against CPU_SETSIZE above, so CPU_SET stays inside `set`.
    unsafe { libc::CPU_SET(core, &mut set) };
    // SAFETY: pid 0 means the calling thread; `set` is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Pins the calling thread to `core`: not supported on this platform.
///
/// # Errors
/// Always `Unsupported`.
#[cfg(not(target_os = "linux"))]
pub fn pin_current_thread(core: usize) -> io::Result<()> {
    let _ = core;
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "thread affinity is not supported on this platform",
    ))
}
