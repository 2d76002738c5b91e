//! Parsing of `scheme://address` strings.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use crate::error::{Error, Result};

/// A parsed listen address.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ListenAddr {
    /// A TCP address (`tcp`, `tcp4`, `tcp6`), resolved.
    Tcp(SocketAddr),
    /// A Unix-domain socket path (`unix`).
    Unix(PathBuf),
    /// A UDP address (`udp`, `udp4`, `udp6`), resolved. A multicast address joins its group.
    Udp(SocketAddr),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "tcp://{a}"),
            ListenAddr::Unix(p) => write!(f, "unix://{}", p.display()),
            ListenAddr::Udp(a) => write!(f, "udp://{a}"),
        }
    }
}

fn invalid(addr: &str, reason: &str) -> Error {
    Error::InvalidAddress {
        addr: addr.to_string(),
        reason: reason.to_string(),
    }
}

impl ListenAddr {
    /// Parses `tcp://host:port`, `tcp4://…`, `tcp6://…`, `udp://host:port`, `udp4://…`,
    /// `udp6://…` or `unix:///path` (also `unix://relative/path`).
    ///
    /// # Errors
    /// [`Error::UnsupportedProtocol`] for an unknown scheme; [`Error::InvalidAddress`] for a
    /// missing scheme, host or port, a path on a tcp or udp address,
    /// a control character, or a name that does not resolve.
    ///
    /// # Examples
    /// ```
    /// use gnet::ListenAddr;
    /// let a = ListenAddr::parse("tcp://127.0.0.1:9000").unwrap();
    /// assert_eq!(a.to_string(), "tcp://127.0.0.1:9000");
    /// assert!(ListenAddr::parse("tulip://x:1").is_err());
    /// ```
    pub fn parse(s: &str) -> Result<ListenAddr> {
        if s.chars().any(|c| c.is_control()) {
            return Err(invalid(s, "contains a control character"));
        }
        let Some((scheme, rest)) = s.split_once("://") else {
            return Err(invalid(
                s,
                "missing scheme: write tcp://host:port or unix:///path",
            ));
        };
        let scheme_lc = scheme.to_ascii_lowercase();
        match scheme_lc.as_str() {
            "tcp" | "tcp4" | "tcp6" => parse_inet(s, &scheme_lc, rest).map(ListenAddr::Tcp),
            "udp" | "udp4" | "udp6" => parse_inet(s, &scheme_lc, rest).map(ListenAddr::Udp),
            "unix" => {
                if rest.is_empty() {
                    return Err(invalid(s, "missing socket path"));
                }
                Ok(ListenAddr::Unix(PathBuf::from(rest)))
            }
            _ => Err(Error::UnsupportedProtocol {
                addr: s.to_string(),
                scheme: scheme.to_string(),
            }),
        }
    }
}

/// `host:port` of a `tcp*` or `udp*` address; the family from the scheme's suffix.
fn parse_inet(s: &str, scheme: &str, rest: &str) -> Result<SocketAddr> {
    let proto = &scheme[..3];
    if rest.is_empty() {
        return Err(invalid(s, "missing host and port"));
    }
    if rest.contains('/') || rest.contains('?') || rest.contains('#') {
        return Err(invalid(
            s,
            &format!("a {proto} address takes host:port, not a path"),
        ));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && !p.contains(']') => (h, p),
        _ => return Err(invalid(s, "missing port")),
    };
    let port: u16 = port
        .parse()
        .map_err(|_| invalid(s, "the port is not a number from 0 to 65535"))?;
    let host = match (host.strip_prefix('['), host.ends_with(']')) {
        (Some(inner), true) => {
            let inner = &inner[..inner.len() - 1];
            if inner.is_empty() || inner.contains(['[', ']']) {
                return Err(invalid(s, "nothing usable between the brackets"));
            }
            inner
        }
        (None, false) if host.contains(':') => {
            return Err(invalid(
                s,
                &format!("an IPv6 address takes brackets before its port: {proto}://[::1]:9000"),
            ))
        }
        (None, false) => host,
        _ => return Err(invalid(s, "unbalanced brackets around the host")),
    };
    let host = if host.is_empty() {
        if scheme.ends_with('6') {
            "::"
        } else {
            "0.0.0.0"
        }
    } else {
        host
    };
    let want_v4 = scheme.ends_with('4');
    let want_v6 = scheme.ends_with('6');
    let candidates = (host, port)
        .to_socket_addrs()
        .map_err(|e| invalid(s, &format!("cannot resolve host {host:?}: {e}")))?;
    let mut fallback = None;
    for a in candidates {
        if (want_v4 && a.is_ipv4()) || (want_v6 && a.is_ipv6()) {
            return Ok(a);
        }
        if !want_v4 && !want_v6 && fallback.is_none() {
            fallback = Some(a);
        }
    }
    fallback.ok_or_else(|| {
        invalid(
            s,
            &format!("host {host:?} has no address of the family {scheme} asks for"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_good_addresses() {
        assert_eq!(
            ListenAddr::parse("tcp://127.0.0.1:80").unwrap(),
            ListenAddr::Tcp("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(
            ListenAddr::parse("tcp6://[::1]:0").unwrap(),
            ListenAddr::Tcp("[::1]:0".parse().unwrap())
        );
        assert_eq!(
            ListenAddr::parse("tcp4://localhost:9").unwrap(),
            ListenAddr::Tcp("127.0.0.1:9".parse().unwrap())
        );
        assert_eq!(
            ListenAddr::parse("unix:///tmp/a.sock").unwrap(),
            ListenAddr::Unix("/tmp/a.sock".into())
        );
        assert_eq!(
            ListenAddr::parse("tcp://:7").unwrap(),
            ListenAddr::Tcp("0.0.0.0:7".parse().unwrap())
        );
        assert_eq!(
            ListenAddr::parse("udp://127.0.0.1:53").unwrap(),
            ListenAddr::Udp("127.0.0.1:53".parse().unwrap())
        );
        assert_eq!(
            ListenAddr::parse("udp6://[::1]:0").unwrap(),
            ListenAddr::Udp("[::1]:0".parse().unwrap())
        );
        assert_eq!(
            ListenAddr::parse("udp4://:9").unwrap(),
            ListenAddr::Udp("0.0.0.0:9".parse().unwrap())
        );
    }

    #[test]
    fn rejects_bad_addresses_with_the_right_error() {
        for bad in [
            "howdy",
            "tcp://",
            "tcp://host:port/path",
            "tcp://127.0.0.1:1/x",
            "unix://",
            "tcp://127.0.0.1",
            "tcp://127.0.0.1:99999",
            "tcp://:foo",
            "tcp://127.0.0.1:1\u{7}",
            "tcp://[::1:9000",
            "tcp://::1]:9000",
            "tcp://::1:9000",
            "tcp://[]:9000",
            "tcp://[[::1]]:9000",
        ] {
            let e = ListenAddr::parse(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidAddress { .. }), "{bad}: {e:?}");
            assert!(e.to_string().contains("invalid network address"));
        }
        for bad in ["tulip://127.0.0.1:1", "http://x:1"] {
            let e = ListenAddr::parse(bad).unwrap_err();
            assert!(
                matches!(e, Error::UnsupportedProtocol { .. }),
                "{bad}: {e:?}"
            );
        }
    }
}
