// The one table of platform and feature conditions, as `cfg` aliases, so that no file writes
// the same `target_os` list or feature combination twice. The `gnet` crate's `build.rs`
// includes this file: both crates see the same names, and since their Cargo features have
// the same names too (`gnet/kqueue` turns on `gnet-backends/kqueue`), the same values.
//
// | alias                 | holds when                                                      |
// |-----------------------|-----------------------------------------------------------------|
// | `gnet_kqueue_os`      | the target has kqueue: macOS, iOS, FreeBSD, NetBSD, OpenBSD, DragonFly |
// | `gnet_uring`          | Linux and the `uring` feature                                   |
// | `gnet_epoll`          | Linux and the `epoll` feature                                   |
// | `gnet_kqueue`         | `gnet_kqueue_os` and the `kqueue` feature                        |
// | `gnet_stdnet`         | the `stdnet` feature                                            |
// | `gnet_readiness`      | `gnet_epoll` or `gnet_kqueue`: the readiness engine is built      |
// | `gnet_epoll_instance` | Linux and `epoll` or `uring`: an epoll instance is built (io_uring accepts through one) |
// | `gnet_selector`       | `gnet_epoll_instance` or `gnet_kqueue`: a selector and the listener table |
// | `gnet_kq_user_waker`  | kqueue wakes with `EVFILT_USER` (macOS, iOS, FreeBSD)           |
// | `gnet_kq_pipe_waker`  | kqueue wakes with a pipe (NetBSD, OpenBSD, DragonFly)           |
// | `gnet_msg_nosignal`   | sends can say `MSG_NOSIGNAL` (Linux, Android, the BSDs); Apple's systems set `SO_NOSIGPIPE` per socket instead |
// | `gnet_no_accept4`     | no `accept4`: `accept`, then `fcntl` (Apple)                    |
// | `gnet_no_mreqn`       | no `ip_mreqn` in socket2: an IPv4 group is joined by address, not by interface index (NetBSD, OpenBSD, illumos, Solaris, ...) |
// | `gnet_keepalive_interval` | socket2 can set the keepalive interval (not OpenBSD, ...)   |
// | `gnet_keepalive_retries`  | socket2 can set the keepalive probe count (Linux, FreeBSD, macOS) |

use std::env;

/// Every alias, for `check-cfg`.
const ALIASES: &[&str] = &[
    "gnet_kqueue_os",
    "gnet_uring",
    "gnet_epoll",
    "gnet_kqueue",
    "gnet_stdnet",
    "gnet_readiness",
    "gnet_epoll_instance",
    "gnet_selector",
    "gnet_kq_user_waker",
    "gnet_kq_pipe_waker",
    "gnet_msg_nosignal",
    "gnet_no_accept4",
    "gnet_no_mreqn",
    "gnet_keepalive_interval",
    "gnet_keepalive_retries",
];

fn main() {
    // This file, also when the `gnet` crate includes it.
    println!("cargo:rerun-if-changed={}", file!());
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let feature =
        |name: &str| env::var_os(format!("CARGO_FEATURE_{}", name.to_uppercase())).is_some();
    let os_is = |list: &[&str]| list.contains(&os.as_str());

    let linux = os == "linux";
    let apple = os_is(&["macos", "ios"]);
    let kqueue_os = os_is(&["macos", "ios", "freebsd", "netbsd", "openbsd", "dragonfly"]);
    let uring = linux && feature("uring");
    let epoll = linux && feature("epoll");
    let kqueue = kqueue_os && feature("kqueue");
    let epoll_instance = linux && (feature("epoll") || feature("uring"));

    let table = [
        ("gnet_kqueue_os", kqueue_os),
        ("gnet_uring", uring),
        ("gnet_epoll", epoll),
        ("gnet_kqueue", kqueue),
        ("gnet_stdnet", feature("stdnet")),
        ("gnet_readiness", epoll || kqueue),
        ("gnet_epoll_instance", epoll_instance),
        ("gnet_selector", epoll_instance || kqueue),
        (
            "gnet_kq_user_waker",
            kqueue && os_is(&["macos", "ios", "freebsd"]),
        ),
        (
            "gnet_kq_pipe_waker",
            kqueue && os_is(&["netbsd", "openbsd", "dragonfly"]),
        ),
        (
            "gnet_msg_nosignal",
            os_is(&[
                "linux",
                "android",
                "freebsd",
                "netbsd",
                "openbsd",
                "dragonfly",
            ]),
        ),
        ("gnet_no_accept4", apple),
        // socket2 0.5's own lists, where it leaves these out.
        (
            "gnet_no_mreqn",
            os_is(&[
                "aix", "haiku", "illumos", "netbsd", "openbsd", "redox", "solaris", "nto",
                "espidf", "vita", "cygwin",
            ]),
        ),
        (
            "gnet_keepalive_interval",
            os_is(&[
                "android",
                "dragonfly",
                "freebsd",
                "fuchsia",
                "illumos",
                "ios",
                "visionos",
                "linux",
                "macos",
                "netbsd",
                "tvos",
                "watchos",
                "windows",
                "cygwin",
            ]),
        ),
        (
            "gnet_keepalive_retries",
            os_is(&["linux", "freebsd", "macos"]),
        ),
    ];
    for alias in ALIASES {
        println!("cargo::rustc-check-cfg=cfg({alias})");
    }
    for (alias, on) in table {
        debug_assert!(ALIASES.contains(&alias));
        if on {
            println!("cargo::rustc-cfg={alias}");
        }
    }
}
