//! Command-line options of the load generator.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use super::payload::HEADER_LEN;

pub const USAGE: &str = "\
usage: loadgen --addr [tcp://|udp://]HOST:PORT [options]

  udp:// drives a UDP echo server: each of --conns is a connected UDP socket (its own
  source port) keeping --pipeline datagrams of --size bytes in flight

  --conns N                connections (default 50)
  --size BYTES             message size (default 64)
  --pipeline D             messages in flight per connection (default 1)
  --duration SECS          measured window (default 5)
  --warmup SECS            load before the window opens (default 1)
  --warmup-msgs N          the warm-up also lasts until every connection has had N
                           echoes, so that start-up effects (every connection's first
                           message at once, receive windows and allocators growing)
                           stay out of the window (default 10; 0 turns it off; the
                           wait gives up 10 s after --warmup)
  --rate M                 open loop: M messages/s over all connections, sent in
                           bursts of --pipeline messages; latency measured from each
                           message's scheduled send time; without it the load is
                           closed-loop at saturation
  --server-pid PID         also report the server's CPU per message (or its RSS with --idle)
  --server-core N          also report how busy core N was per message (wall time minus
                           its idle time in /proc/stat):
                           with the server pinned there, this includes the softirq work
                           the core does while the server sleeps (receive processing
                           steered to it), which the process's own CPU time misses
  --idle                   open the connections, echo once on each, hold them idle for
                           --duration and report the server's RSS per connection
  --connect-concurrency C  connections being opened at once (default 256)
  --connect-timeout SECS   give up if not all connections are up by then (default 30)
  --loss-timeout SECS      UDP: a datagram not echoed by then is counted lost and its
                           slot reused (default 0.2)
  --json                   print one JSON line instead of the text report
";

pub struct Args {
    pub addr: SocketAddr,
    /// `udp://` was asked for.
    pub udp: bool,
    pub loss_timeout: Duration,
    pub conns: usize,
    pub size: usize,
    pub pipeline: u64,
    pub duration: Duration,
    pub warmup: Duration,
    pub warmup_msgs: u64,
    pub rate: Option<f64>,
    pub server_pid: Option<u32>,
    pub server_core: Option<usize>,
    pub idle: bool,
    pub connect_concurrency: usize,
    pub connect_timeout: Duration,
    pub json: bool,
}

fn secs(text: &str) -> Result<Duration, String> {
    let v: f64 = text
        .parse()
        .map_err(|_| format!("not a number of seconds: {text}"))?;
    if !(0.0..=86_400.0).contains(&v) {
        return Err(format!("seconds out of range: {text}"));
    }
    Ok(Duration::from_secs_f64(v))
}

fn number<T: std::str::FromStr>(flag: &str, text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{flag}: not a valid number: {text}"))
}

/// The address and whether it names UDP (`udp://`); `tcp://` or no scheme is TCP.
fn resolve(text: &str) -> Result<(SocketAddr, bool), String> {
    let (text, udp) = match text.strip_prefix("udp://") {
        Some(rest) => (rest, true),
        None => (text.strip_prefix("tcp://").unwrap_or(text), false),
    };
    let addr = text
        .to_socket_addrs()
        .map_err(|e| format!("--addr {text}: {e}"))?
        .next()
        .ok_or_else(|| format!("--addr {text}: no address"))?;
    let private = match addr.ip() {
        std::net::IpAddr::V4(ip) => ip.is_private(),
        std::net::IpAddr::V6(_) => false,
    };
    if !addr.ip().is_loopback() && !private {
        return Err(format!(
            "--addr {addr}: only loopback and private (10/8, 172.16/12, 192.168/16) addresses are allowed"
        ));
    }
    Ok((addr, udp))
}

pub fn parse(argv: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        addr: "127.0.0.1:9000".parse().expect("literal address"),
        udp: false,
        loss_timeout: Duration::from_millis(200),
        conns: 50,
        size: 64,
        pipeline: 1,
        duration: Duration::from_secs(5),
        warmup: Duration::from_secs(1),
        warmup_msgs: 10,
        rate: None,
        server_pid: None,
        server_core: None,
        idle: false,
        connect_concurrency: 256,
        connect_timeout: Duration::from_secs(30),
        json: false,
    };
    let mut it = argv.into_iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--idle" => {
                args.idle = true;
                continue;
            }
            "--json" => {
                args.json = true;
                continue;
            }
            "-h" | "--help" => return Err(String::new()),
            _ => {}
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--addr" => (args.addr, args.udp) = resolve(&value)?,
            "--loss-timeout" => args.loss_timeout = secs(&value)?,
            "--conns" => args.conns = number(&flag, &value)?,
            "--size" => args.size = number(&flag, &value)?,
            "--pipeline" => args.pipeline = number(&flag, &value)?,
            "--duration" => args.duration = secs(&value)?,
            "--warmup" => args.warmup = secs(&value)?,
            "--warmup-msgs" => args.warmup_msgs = number(&flag, &value)?,
            "--rate" => args.rate = Some(number(&flag, &value)?),
            "--server-pid" => args.server_pid = Some(number(&flag, &value)?),
            "--server-core" => args.server_core = Some(number(&flag, &value)?),
            "--connect-concurrency" => args.connect_concurrency = number(&flag, &value)?,
            "--connect-timeout" => args.connect_timeout = secs(&value)?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if args.conns == 0 || args.conns > u32::MAX as usize {
        return Err("--conns must be at least 1".into());
    }
    if args.size == 0 || args.size > u32::MAX as usize {
        return Err("--size must be at least 1".into());
    }
    if args.pipeline == 0 {
        return Err("--pipeline must be at least 1".into());
    }
    if args.connect_concurrency == 0 {
        return Err("--connect-concurrency must be at least 1".into());
    }
    if let Some(rate) = args.rate {
        if !(rate.is_finite() && rate > 0.0) {
            return Err("--rate must be a positive number of messages per second".into());
        }
    }
    if args.udp && args.size < HEADER_LEN {
        return Err(format!(
            "--size must be at least {HEADER_LEN} with udp:// (each datagram carries its header)"
        ));
    }
    if args.udp && args.idle {
        return Err("--idle holds TCP connections; it has no UDP mode".into());
    }
    if args.idle && args.server_pid.is_none() {
        return Err("--idle needs --server-pid to read the server's RSS".into());
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::parse;

    fn args(list: &[&str]) -> Result<super::Args, String> {
        parse(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn loopback_and_private_addresses_only() {
        for ok in [
            "tcp://127.0.0.1:9000",
            "[::1]:9000",
            "10.199.0.1:80",
            "192.168.1.2:80",
        ] {
            assert!(args(&["--addr", ok]).is_ok(), "{ok} refused");
        }
        let err = args(&["--addr", "8.8.8.8:53"])
            .err()
            .expect("a public address refused");
        assert!(err.contains("only loopback and private"), "{err}");
    }

    #[test]
    fn udp_scheme_selects_udp_and_needs_a_header_sized_datagram() {
        let a = args(&["--addr", "udp://127.0.0.1:9000", "--size", "16"]).unwrap();
        assert!(a.udp);
        assert!(!args(&["--addr", "tcp://127.0.0.1:9000"]).unwrap().udp);
        let err = args(&["--addr", "udp://127.0.0.1:9000", "--size", "8"])
            .err()
            .expect("an 8-byte datagram refused");
        assert!(err.contains("at least 16"), "{err}");
    }

    #[test]
    fn server_core_is_parsed() {
        assert_eq!(args(&["--server-core", "3"]).unwrap().server_core, Some(3));
        assert_eq!(args(&[]).unwrap().server_core, None);
        assert!(args(&["--server-core", "x"]).is_err());
    }
}
