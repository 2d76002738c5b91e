//! A connection's socket options, as Go gnet's `Conn` has them.

use super::Conn;
use crate::error::{Error, Result};

#[cfg(unix)]
impl<C> Conn<'_, C> {
    fn sock(&self) -> socket2::SockRef<'_> {
        socket2::SockRef::from(&self.st.socket)
    }

    fn tcp_only(&self) -> Result<()> {
        if self.is_tcp() {
            Ok(())
        } else {
            Err(Error::Unsupported("TCP option on a non-TCP connection"))
        }
    }

    /// The raw descriptor (still owned by gnet: do not close it).
    pub fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.st.socket.as_raw_fd()
    }

    /// A duplicate of the descriptor (close-on-exec), owned by the caller.
    ///
    /// # Errors
    /// Whatever `dup` reports.
    pub fn dup(&self) -> Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        Ok(self.st.socket.as_fd().try_clone_to_owned()?)
    }

    /// `TCP_NODELAY`.
    ///
    /// # Errors
    /// [`Error::Unsupported`] on a Unix-domain connection; the kernel's error otherwise.
    pub fn set_nodelay(&self, on: bool) -> Result<()> {
        self.tcp_only()?;
        Ok(self.sock().set_nodelay(on)?)
    }

    /// TCP keepalive: `None` turns it off; otherwise idle time, probe interval and count.
    /// Durations under one second are rejected.
    ///
    /// # Errors
    /// [`Error::Unsupported`] on a Unix-domain connection; [`Error::InvalidOptions`] for a
    /// duration under a second; the kernel's error otherwise.
    pub fn set_keepalive(
        &self,
        keepalive: Option<(std::time::Duration, std::time::Duration, u32)>,
    ) -> Result<()> {
        self.tcp_only()?;
        match keepalive {
            None => Ok(self.sock().set_keepalive(false)?),
            Some((idle, interval, count)) => {
                let second = std::time::Duration::from_secs(1);
                if idle < second || interval < second {
                    return Err(Error::InvalidOptions(
                        "keepalive durations must be at least one second".into(),
                    ));
                }
                let ka = socket2::TcpKeepalive::new().with_time(idle);
                #[cfg(gnet_keepalive_interval)]
                let ka = ka.with_interval(interval);
                #[cfg(not(gnet_keepalive_interval))]
                let _ = interval;
                #[cfg(gnet_keepalive_retries)]
                let ka = ka.with_retries(count);
                #[cfg(not(gnet_keepalive_retries))]
                let _ = count;
                Ok(self.sock().set_tcp_keepalive(&ka)?)
            }
        }
    }

    /// `SO_LINGER`: `None` turns it off.
    ///
    /// # Errors
    /// The kernel's error.
    pub fn set_linger(&self, linger: Option<std::time::Duration>) -> Result<()> {
        Ok(self.sock().set_linger(linger)?)
    }

    /// `SO_RCVBUF`.
    ///
    /// # Errors
    /// The kernel's error.
    pub fn set_read_buffer(&self, bytes: usize) -> Result<()> {
        Ok(self.sock().set_recv_buffer_size(bytes)?)
    }

    /// `SO_SNDBUF`.
    ///
    /// # Errors
    /// The kernel's error.
    pub fn set_write_buffer(&self, bytes: usize) -> Result<()> {
        Ok(self.sock().set_send_buffer_size(bytes)?)
    }
}
