//! Creating listeners (socket2 keeps this free of `unsafe`).

use gnet_backends::Listener;
use socket2::{Domain, Protocol, SockAddr, Type};

use crate::addr::ListenAddr;
use crate::error::{Error, Result};
use crate::options::Options;

fn ctx(addr: &ListenAddr, what: &str, e: std::io::Error) -> Error {
    Error::Io(std::io::Error::new(e.kind(), format!("{what} {addr}: {e}")))
}

/// Binds and listens on `addr`, non-blocking.
pub(crate) fn bind(addr: &ListenAddr, opts: &Options, reuse_port: bool) -> Result<Listener> {
    match addr {
        ListenAddr::Tcp(a) => {
            let s =
                socket2::Socket::new(Domain::for_address(*a), Type::STREAM, Some(Protocol::TCP))
                    .map_err(|e| ctx(addr, "socket for", e))?;
            s.set_reuse_address(opts.reuse_addr)
                .map_err(|e| ctx(addr, "SO_REUSEADDR on", e))?;
            #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
            if reuse_port {
                s.set_reuse_port(true)
                    .map_err(|e| ctx(addr, "SO_REUSEPORT on", e))?;
            }
            #[cfg(not(all(unix, not(any(target_os = "solaris", target_os = "illumos")))))]
            let _ = reuse_port;
            s.bind(&SockAddr::from(*a))
                .map_err(|e| ctx(addr, "bind", e))?;
            s.listen(opts.backlog)
                .map_err(|e| ctx(addr, "listen on", e))?;
            s.set_nonblocking(true)
                .map_err(|e| ctx(addr, "O_NONBLOCK on", e))?;
            Ok(Listener::Tcp(s.into()))
        }
        #[cfg(unix)]
        ListenAddr::Unix(path) => {
            use std::os::unix::fs::FileTypeExt;
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                if meta.file_type().is_socket() {
                    let _ = std::fs::remove_file(path);
                }
            }
            let s = socket2::Socket::new(Domain::UNIX, Type::STREAM, None)
                .map_err(|e| ctx(addr, "socket for", e))?;
            let sa = SockAddr::unix(path).map_err(|e| ctx(addr, "address", e))?;
            s.bind(&sa).map_err(|e| ctx(addr, "bind", e))?;
            s.listen(opts.backlog)
                .map_err(|e| ctx(addr, "listen on", e))?;
            s.set_nonblocking(true)
                .map_err(|e| ctx(addr, "O_NONBLOCK on", e))?;
            Ok(Listener::Unix(s.into()))
        }
        #[cfg(not(unix))]
        ListenAddr::Unix(_) => Err(Error::Unsupported("Unix sockets on this platform")),
    }
}

/// The address a listener actually got (port 0 resolved).
pub(crate) fn bound_addr(l: &Listener, asked: &ListenAddr) -> ListenAddr {
    match (l.local_addr(), asked) {
        (Ok(gnet_backends::Addr::Inet(a)), _) => ListenAddr::Tcp(a),
        _ => asked.clone(),
    }
}

/// Removes the socket file of a Unix listener.
pub(crate) fn cleanup(addr: &ListenAddr) {
    if let ListenAddr::Unix(p) = addr {
        let _ = std::fs::remove_file(p);
    }
}
