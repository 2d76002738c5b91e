//! `--net veth`: the load generator in a network namespace of its own, joined to the server
//! by a veth pair, so that each side pays for receiving its own packets.
//!
//! Over loopback the sender's core runs the receiver's half of the stack: a server's reply
//! is received into the client's socket, and the client's ACKs are processed, on the
//! server's core and in the server's time slice, so "server CPU per message" includes
//! client work, more of it for a server whose pattern makes the client receive more
//! segments or ACKs. Here a packet crosses the pair into the other side's receive queue and
//! receive packet steering (`rps_cpus`) hands it to the receiving side's core, as a NIC
//! interrupting that core would. The server's own receive processing then runs in softirq
//! on its core, often while the server sleeps, which its process CPU time does not count:
//! the CPU column switches to the busy time of the server's core (`loadgen --server-core`).
//!
//! The steering costs an inter-processor interrupt per batch of packets; in a virtual
//! machine each one is an exit to the hypervisor, which dominates small-message rows.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

/// The namespace the load generator runs in.
const NS: &str = "gnet-bench";
/// The server's end of the pair (in the bench's namespace) and the client's (in `NS`).
const SERVER_IF: &str = "gnb-srv";
const CLIENT_IF: &str = "gnb-cli";
pub const SERVER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 199, 0, 1));
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 199, 0, 2);

/// The namespace and the pair, removed again on drop.
pub struct Veth {
    /// TCP congestion control in the server's and in the client's namespace.
    pub congestion: (String, String),
}

/// Runs `ip ARGS` and returns what it printed.
fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip (iproute2): {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `sh -c script` inside the client's namespace, where `/sys/class/net` shows its
/// devices, and returns what it printed.
fn in_ns(script: &str) -> Result<String, String> {
    ip(&["netns", "exec", NS, "sh", "-c", script])
}

/// The `rps_cpus` mask that names one core.
fn mask(core: usize) -> String {
    format!("{:x}", 1u128 << core.min(127))
}

impl Veth {
    /// Creates the namespace and the pair, steering packets that arrive for the server to
    /// `server_core` and those for the client to `load_core`. Needs root and iproute2.
    pub fn setup(server_core: usize, load_core: usize) -> Result<Veth, String> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("--net veth needs root (it creates a network namespace)".into());
        }
        // Whatever a run killed before its clean-up left behind.
        let _ = ip(&["netns", "del", NS]);
        let _ = ip(&["link", "del", SERVER_IF]);
        ip(&["netns", "add", NS])?;
        // From here a failed step leaves nothing behind: dropping `veth` deletes the namespace.
        let mut veth = Veth {
            congestion: (String::new(), String::new()),
        };
        let server_net = format!("{SERVER_IP}/30");
        let client_net = format!("{CLIENT_IP}/30");
        let steps: [&[&str]; 6] = [
            &[
                "link", "add", SERVER_IF, "type", "veth", "peer", "name", CLIENT_IF, "netns", NS,
            ],
            &["addr", "add", &server_net, "dev", SERVER_IF],
            &["link", "set", SERVER_IF, "up"],
            &["-n", NS, "addr", "add", &client_net, "dev", CLIENT_IF],
            &["-n", NS, "link", "set", CLIENT_IF, "up"],
            &["-n", NS, "link", "set", "lo", "up"],
        ];
        for step in steps {
            ip(step)?;
        }
        let rps = format!("/sys/class/net/{SERVER_IF}/queues/rx-0/rps_cpus");
        fs::write(&rps, mask(server_core)).map_err(|e| format!("{rps}: {e}"))?;
        in_ns(&format!(
            "echo {} > /sys/class/net/{CLIENT_IF}/queues/rx-0/rps_cpus",
            mask(load_core)
        ))?;
        let cc = "/proc/sys/net/ipv4/tcp_congestion_control";
        let server_cc = fs::read_to_string(cc)
            .unwrap_or_default()
            .trim()
            .to_string();
        let client_cc = in_ns(&format!("cat {cc}"))?;
        veth.congestion = (server_cc, client_cc);
        Ok(veth)
    }

    /// The command prefix that runs a program in the client's namespace.
    pub fn exec() -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", NS]);
        c
    }

    pub fn describe(&self) -> String {
        format!(
            "the load generator runs in network namespace {NS}, joined to the server by a veth \
             pair ({SERVER_IP} ↔ {CLIENT_IP}); receive packet steering hands each side's \
             packets to its own core; TCP congestion control {} (server) / {} (client)",
            self.congestion.0, self.congestion.1
        )
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        // Deleting the namespace deletes the client's end, and with it the pair.
        if let Err(e) = ip(&["netns", "del", NS]) {
            eprintln!("echo bench: cleaning up: {e}");
        }
    }
}
