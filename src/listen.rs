//! Creating listeners (socket2 keeps this free of `unsafe`).

use gnet_backends::{Listener, Socket};
use socket2::{Domain, Protocol, SockAddr, Type};

use crate::addr::ListenAddr;
use crate::error::{Error, Result};
use crate::options::Options;

fn ctx(addr: &ListenAddr, what: &str, e: std::io::Error) -> Error {
    Error::Io(std::io::Error::new(e.kind(), format!("{what} {addr}: {e}")))
}

/// What a listen address becomes: a stream listener, or a bound datagram socket (which
/// receives without accepting).
#[derive(Debug)]
pub(crate) enum Endpoint {
    Listener(Listener),
    Datagram(Socket),
}

impl Endpoint {
    /// A second handle (a `dup`).
    pub(crate) fn try_clone(&self) -> std::io::Result<Endpoint> {
        match self {
            Endpoint::Listener(l) => l.try_clone().map(Endpoint::Listener),
            Endpoint::Datagram(s) => s.try_clone().map(Endpoint::Datagram),
        }
    }

    /// The bound address (port 0 resolved).
    fn local_addr(&self) -> std::io::Result<gnet_backends::Addr> {
        match self {
            Endpoint::Listener(l) => l.local_addr(),
            Endpoint::Datagram(s) => s.local_addr(),
        }
    }
}

/// Binds (and for streams listens on) `addr`, non-blocking; for a Unix address, with the
/// socket file it created.
pub(crate) fn bind(
    addr: &ListenAddr,
    opts: &Options,
    reuse_port: bool,
) -> Result<(Endpoint, Option<UnixFile>)> {
    match addr {
        ListenAddr::Udp(a) => bind_udp(addr, *a, opts).map(|s| (Endpoint::Datagram(s), None)),
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
            Ok((Endpoint::Listener(Listener::Tcp(s.into())), None))
        }
        #[cfg(unix)]
        ListenAddr::Unix(path) => {
            claim_unix_path(addr, path)?;
            let s = socket2::Socket::new(Domain::UNIX, Type::STREAM, None)
                .map_err(|e| ctx(addr, "socket for", e))?;
            let sa = SockAddr::unix(path).map_err(|e| ctx(addr, "address", e))?;
            s.bind(&sa).map_err(|e| ctx(addr, "bind", e))?;
            // From here the file is ours: removed on any failure below, and at shutdown.
            let file = UnixFile::created(path);
            s.listen(opts.backlog)
                .map_err(|e| ctx(addr, "listen on", e))?;
            s.set_nonblocking(true)
                .map_err(|e| ctx(addr, "O_NONBLOCK on", e))?;
            Ok((Endpoint::Listener(Listener::Unix(s.into())), file))
        }
        #[cfg(not(unix))]
        ListenAddr::Unix(_) => Err(Error::Unsupported("Unix sockets on this platform")),
    }
}

/// A UDP socket for `a`: `SO_REUSEPORT` always (every loop binds its own, and the kernel
/// spreads datagrams over them), `SO_BROADCAST`, and for a multicast address membership of
/// its group on `Options::multicast_interface`.
fn bind_udp(addr: &ListenAddr, a: std::net::SocketAddr, opts: &Options) -> Result<Socket> {
    let s = socket2::Socket::new(Domain::for_address(a), Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| ctx(addr, "socket for", e))?;
    s.set_reuse_address(opts.reuse_addr)
        .map_err(|e| ctx(addr, "SO_REUSEADDR on", e))?;
    #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
    s.set_reuse_port(true)
        .map_err(|e| ctx(addr, "SO_REUSEPORT on", e))?;
    s.set_broadcast(true)
        .map_err(|e| ctx(addr, "SO_BROADCAST on", e))?;
    if let Some(n) = opts.recv_buffer {
        s.set_recv_buffer_size(n)
            .map_err(|e| ctx(addr, "SO_RCVBUF on", e))?;
    }
    if let Some(n) = opts.send_buffer {
        s.set_send_buffer_size(n)
            .map_err(|e| ctx(addr, "SO_SNDBUF on", e))?;
    }
    s.bind(&SockAddr::from(a))
        .map_err(|e| ctx(addr, "bind", e))?;
    match a.ip() {
        std::net::IpAddr::V4(group) if group.is_multicast() => {
            join_v4(&s, &group, opts.multicast_interface)
                .map_err(|e| ctx(addr, "join the multicast group of", e))?;
        }
        std::net::IpAddr::V6(group) if group.is_multicast() => {
            s.join_multicast_v6(&group, opts.multicast_interface)
                .map_err(|e| ctx(addr, "join the multicast group of", e))?;
        }
        _ => {}
    }
    s.set_nonblocking(true)
        .map_err(|e| ctx(addr, "O_NONBLOCK on", e))?;
    Ok(Socket::Udp(s.into()))
}

/// Joins an IPv4 multicast group on the interface of index `interface` (0: the system's
/// choice).
#[cfg(not(gnet_no_mreqn))]
fn join_v4(s: &socket2::Socket, group: &std::net::Ipv4Addr, interface: u32) -> std::io::Result<()> {
    s.join_multicast_v4_n(group, &socket2::InterfaceIndexOrAddress::Index(interface))
}

/// Joins an IPv4 multicast group on the interface of index `interface`: without `ip_mreqn`
/// only the system's choice (0) can be asked for.
#[cfg(gnet_no_mreqn)]
fn join_v4(s: &socket2::Socket, group: &std::net::Ipv4Addr, interface: u32) -> std::io::Result<()> {
    if interface != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "an IPv4 multicast interface by index needs ip_mreqn, which this system lacks",
        ));
    }
    s.join_multicast_v4(group, &std::net::Ipv4Addr::UNSPECIFIED)
}

/// A socket to dial `addr` with: not connected, non-blocking, close-on-exec (socket2).
pub(crate) fn dial_socket(addr: &ListenAddr) -> std::io::Result<Socket> {
    match addr {
        ListenAddr::Tcp(a) => {
            let s =
                socket2::Socket::new(Domain::for_address(*a), Type::STREAM, Some(Protocol::TCP))?;
            s.set_nonblocking(true)?;
            Ok(Socket::Tcp(s.into()))
        }
        ListenAddr::Udp(a) => {
            let s =
                socket2::Socket::new(Domain::for_address(*a), Type::DGRAM, Some(Protocol::UDP))?;
            s.set_nonblocking(true)?;
            Ok(Socket::Udp(s.into()))
        }
        #[cfg(unix)]
        ListenAddr::Unix(_) => {
            let s = socket2::Socket::new(Domain::UNIX, Type::STREAM, None)?;
            s.set_nonblocking(true)?;
            Ok(Socket::Unix(s.into()))
        }
        #[cfg(not(unix))]
        ListenAddr::Unix(_) => Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "Unix sockets on this platform",
        )),
    }
}

/// The address an endpoint actually got (port 0 resolved).
pub(crate) fn bound_addr(e: &Endpoint, asked: &ListenAddr) -> ListenAddr {
    match (e.local_addr(), asked) {
        (Ok(gnet_backends::Addr::Inet(a)), ListenAddr::Udp(_)) => ListenAddr::Udp(a),
        (Ok(gnet_backends::Addr::Inet(a)), _) => ListenAddr::Tcp(a),
        _ => asked.clone(),
    }
}

/// Makes sure a Unix listener may bind `path`: nothing there, or a socket nobody answers on
/// (left by a server that died), which is removed. A socket a server answers on is refused
/// with `EADDRINUSE` (binding over it would leave that server running unreachable), and
/// anything else that is not a socket (a regular file, a directory) is refused and left alone.
#[cfg(unix)]
fn claim_unix_path(addr: &ListenAddr, path: &std::path::Path) -> Result<()> {
    use std::io::ErrorKind;
    use std::os::unix::fs::FileTypeExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ctx(addr, "inspect the socket path of", e)),
    };
    let refuse = |kind: ErrorKind, why: &str| {
        Err(Error::Io(std::io::Error::new(
            kind,
            format!("bind {addr}: {} {why}", path.display()),
        )))
    };
    if !meta.file_type().is_socket() {
        return refuse(
            ErrorKind::AlreadyExists,
            "exists and is not a socket; it is left alone: choose another path or remove it",
        );
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => refuse(
            ErrorKind::AddrInUse,
            "is a socket another server answers on (address in use); stop it first",
        ),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            // Nobody listens: a file left by a server that did not clean up.
            log::debug!("gnet: removing the stale socket file {}", path.display());
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != ErrorKind::NotFound => {
                    Err(ctx(addr, "remove the stale socket file of", e))
                }
                _ => Ok(()),
            }
        }
        Err(e) => Err(ctx(addr, "probe the existing socket file of", e)),
    }
}

/// The socket file a Unix listener created, removed when this is dropped (at shutdown, or when
/// starting fails) — but only if the path still names that same file, so that a server never
/// deletes the socket of another one that took the path over since.
#[derive(Debug)]
pub(crate) struct UnixFile {
    #[cfg(unix)]
    path: std::path::PathBuf,
    /// Device and inode of the file as created; `None` if they could not be read.
    #[cfg(unix)]
    id: Option<(u64, u64)>,
}

impl UnixFile {
    #[cfg(unix)]
    fn created(path: &std::path::Path) -> Option<UnixFile> {
        Some(UnixFile {
            path: path.to_path_buf(),
            id: file_id(path),
        })
    }
}

#[cfg(unix)]
fn file_id(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

impl Drop for UnixFile {
    fn drop(&mut self) {
        #[cfg(unix)]
        if self.id.is_some() && file_id(&self.path) == self.id {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
