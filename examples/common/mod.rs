//! What the examples share: the logger, the common flags (`--addr`, `--loops`, `--backend`),
//! the first line (backend and addresses), and waiting for a graceful stop on SIGINT/SIGTERM.
#![allow(dead_code)] // Each example uses part of it.

use std::io::Write;

use gnet::{BackendChoice, BackendKind, Engine, Options, Running};

/// `RUST_LOG` decides, `info` when unset (so the backend fallback and warnings show).
pub fn init_logger() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
}

/// The flags every example takes, plus whatever else was on the command line.
pub struct Args {
    pub addrs: Vec<String>,
    pub opts: Options,
    /// Flags this module does not know, with their values, in order, for the example.
    pub rest: Vec<(String, Option<String>)>,
}

/// Ends the example with `name: msg` and exit status 2 (a bad command line).
pub fn bad_arg(name: &str, msg: &str) -> ! {
    eprintln!("{name}: {msg}");
    std::process::exit(2)
}

/// The number `value` of `flag` (one of [`Args::rest`]), or the end of the example saying
/// that `flag` takes `what`.
pub fn number<T: std::str::FromStr>(name: &str, flag: &str, value: Option<&str>, what: &str) -> T {
    value
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| bad_arg(name, &format!("{flag} takes {what}")))
}

/// Parses `--addr URL` (repeatable; `default_addr` when none), `--loops N`,
/// `--backend auto|uring|epoll|stdnet`; `takes_value` says which other flags take a value.
/// Exits with a usage message on an error.
pub fn parse(name: &str, usage: &str, default_addr: &str, takes_value: &[&str]) -> Args {
    let fail = |msg: &str| -> ! {
        eprintln!("{name}: {msg}");
        eprintln!(
            "usage: {name} [--addr URL]... [--loops N] [--backend auto|uring|epoll|stdnet] {usage}"
        );
        std::process::exit(2)
    };
    let mut args = Args {
        addrs: Vec::new(),
        opts: Options::new().stop_on_signals(cfg!(feature = "signal")),
        rest: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| fail(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--addr" => args.addrs.push(value()),
            "--loops" => {
                let n = value()
                    .parse()
                    .unwrap_or_else(|_| fail("--loops takes a number"));
                args.opts = args.opts.clone().loops(n);
            }
            "--backend" => {
                let v = value();
                let choice = if v == "auto" {
                    BackendChoice::Auto
                } else {
                    BackendChoice::Only(
                        BackendKind::parse(&v).unwrap_or_else(|| fail("unknown backend")),
                    )
                };
                args.opts = args.opts.clone().backend(choice);
            }
            "-h" | "--help" => fail("help"),
            other if takes_value.contains(&other) => {
                let v = value();
                args.rest.push((flag.clone(), Some(v)));
            }
            other if other.starts_with("--") => args.rest.push((flag.clone(), None)),
            other => fail(&format!("unknown argument {other}")),
        }
    }
    if args.addrs.is_empty() {
        args.addrs.push(default_addr.to_string());
    }
    args
}

/// Prints the first line: the example's name, the backend and the bound addresses.
pub fn announce(name: &str, engine: &Engine) {
    let bound: Vec<String> = engine.addrs().iter().map(|a| a.to_string()).collect();
    let mut out = std::io::stdout().lock();
    let _ = write!(
        out,
        "gnet {name}: backend={} addr={} loops={}",
        engine.backend(),
        bound.join(","),
        engine.num_loops()
    );
    if let Some(why) = engine.fallback_reason() {
        let _ = write!(out, " fallback=\"{why}\"");
    }
    let _ = writeln!(out);
    let _ = out.flush();
}

/// Starts `handler` on the addresses, prints the first line, waits for the engine to stop
/// (SIGINT/SIGTERM), exits non-zero on an error.
pub fn serve<H: gnet::EventHandler>(name: &str, handler: H, args: Args) {
    let refs: Vec<&str> = args.addrs.iter().map(String::as_str).collect();
    let running = match gnet::start(handler, &refs, args.opts) {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::exit(1);
        }
    };
    announce(name, running.engine());
    wait(name, running);
}

/// Waits for `running` to stop; exits non-zero on an error.
pub fn wait(name: &str, running: Running) {
    if let Err(e) = running.wait() {
        eprintln!("{name}: {e}");
        std::process::exit(1);
    }
}
