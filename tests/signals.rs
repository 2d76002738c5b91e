//! Stopping on SIGINT/SIGTERM (`Options::stop_on_signals`), in this process: engines started
//! one after another each get the signal and leave no watcher behind, and a build without the
//! `signal` feature refuses the option.
// Without the feature only the last test is compiled.
#![cfg_attr(not(feature = "signal"), allow(dead_code, unused_imports))]

mod util;

use util::{Client, PlainEcho, TCP};

/// This process's threads named like the signal watcher.
fn watcher_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim_end() == "gnet-signals")
        .count()
}

/// Four engines in turn, in this process, stopped in turn by a SIGTERM raised here and by
/// `Running::stop`: each ends its connection with a FIN, shuts down and takes its watcher
/// thread with it (one still waiting for a signal would keep its engine alive; a handler
/// action left armed by an earlier engine would end this process at the next signal). Not
/// per backend: the tests of this file run side by side, and a signal raised here reaches
/// every engine of the process.
#[cfg(feature = "signal")]
#[test]
fn engines_one_after_another_each_stop_on_sigterm() {
    let kind = util::instantiated_backends()[0];
    for i in 0..4 {
        let running = match gnet::start(PlainEcho, &[TCP], util::opts(kind).stop_on_signals(true)) {
            Ok(Some(r)) => r,
            Ok(None) => panic!("engine {i}: on_boot asked for shutdown"),
            Err(e) => panic!("engine {i} did not start: {e}"),
        };
        util::wait_until("the watcher thread", || watcher_threads() == 1);
        let mut c = Client::connect(&running.engine().addrs()[0]);
        c.echo(b"before the signal");
        let by_signal = i % 2 == 0;
        if by_signal {
            signal_hook::low_level::raise(libc::SIGTERM).expect("raise SIGTERM");
        } else {
            running.engine().stop().expect("Engine::stop");
        }
        assert_eq!(c.read_to_eof(), b"", "engine {i}: bytes after the echo");
        util::wait_running(running).unwrap_or_else(|e| panic!("engine {i}: {e}"));
        assert_eq!(
            watcher_threads(),
            0,
            "engine {i} (stopped by a signal: {by_signal}) left its watcher thread"
        );
    }
}

/// Without the `signal` feature the option is an error at start, not ignored.
#[cfg(not(feature = "signal"))]
#[test]
fn without_the_feature_stop_on_signals_is_refused() {
    let opts = gnet::Options::new().stop_on_signals(true);
    match gnet::start(PlainEcho, &[TCP], opts) {
        Err(gnet::Error::InvalidOptions(why)) => {
            assert!(why.contains("`signal` Cargo feature"), "the message: {why}")
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("started with stop_on_signals in a build without the signal feature"),
    }
}
