//! A graceful stop on SIGINT and SIGTERM ([`Options::stop_on_signals`]).
//!
//! The handlers come from `signal-hook`, which keeps what runs inside them async-signal-safe.
//! For each of the two signals, an engine that asks for it registers, in this order:
//!
//! 1. an action that runs the signal's default (terminating the process) once armed;
//! 2. an action that arms it;
//! 3. a way to tell the engine's watcher thread: signal-hook's iterator on Unix, a flag the
//!    thread polls every 100 ms on Windows (where signal-hook has no iterator).
//!
//! The first signal leaves 1 unarmed and arms it, and the watcher calls [`Engine::stop`]; a
//! second one (either signal) while the engine stops meets 1 armed and ends the process at
//! once, inside the handler, however busy the watcher is. When the engine has shut down the
//! watcher thread is told to end and joined, and every action is unregistered, so engines
//! started one after another each get their own. signal-hook leaves its handler installed
//! with nothing to do, though: once the last such engine has shut down, SIGINT and SIGTERM
//! are ignored rather than fatal.

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::options::Options;

fn needs_feature() -> Error {
    Error::InvalidOptions(
        "Options::stop_on_signals needs gnet's `signal` Cargo feature (on by default): enable \
         it, or call Engine::stop from your own signal handling"
            .into(),
    )
}

/// Refuses [`Options::stop_on_signals`] in a build that cannot honour it, before anything is
/// bound.
pub(crate) fn check(opts: &Options) -> Result<()> {
    if opts.stop_on_signals && !cfg!(feature = "signal") {
        return Err(needs_feature());
    }
    Ok(())
}

/// An engine's signal watcher: none yet, running, or gone with the engine.
#[derive(Default)]
pub(crate) struct Slot {
    #[cfg(feature = "signal")]
    state: std::sync::Mutex<imp::State>,
}

#[cfg(not(feature = "signal"))]
impl Slot {
    pub(crate) fn watch(&self, _engine: &Engine) -> Result<()> {
        Err(needs_feature())
    }

    pub(crate) fn close(&self) {}
}

#[cfg(feature = "signal")]
impl Slot {
    /// Starts watching SIGINT and SIGTERM for `engine`, unless the engine has already shut
    /// down (then [`Slot::close`] ran and there is nothing left to stop).
    pub(crate) fn watch(&self, engine: &Engine) -> Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*state, imp::State::Idle) {
            let engine = engine.clone();
            let watcher = imp::Watcher::start(imp::open, move |sig| imp::first(&engine, sig))?;
            *state = imp::State::Watching(watcher);
        }
        Ok(())
    }

    /// Ends the watcher (joins its thread, unregisters its actions); later calls to
    /// [`Slot::watch`] do nothing.
    pub(crate) fn close(&self) {
        let state = std::mem::replace(
            &mut *self.state.lock().unwrap_or_else(|p| p.into_inner()),
            imp::State::Closed,
        );
        if let imp::State::Watching(w) = state {
            w.close();
        }
    }
}

#[cfg(feature = "signal")]
mod imp {
    use std::io;
    use std::os::raw::c_int;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::thread::{self, JoinHandle};

    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::{flag, low_level, SigId};

    use crate::engine::Engine;

    #[cfg(not(windows))]
    pub(super) use self::iter::open;
    #[cfg(windows)]
    pub(super) use self::poll::open;

    const SIGNALS: [c_int; 2] = [SIGINT, SIGTERM];

    #[derive(Default)]
    pub(super) enum State {
        #[default]
        Idle,
        Watching(Watcher),
        Closed,
    }

    /// The watcher's side of a way of waiting: blocks until the first signal, `None` once
    /// closed.
    pub(super) type Wait = Box<dyn FnOnce() -> Option<c_int> + Send>;
    /// The engine's side: makes the wait return `None`.
    pub(super) type Close = Box<dyn Fn() + Send>;
    /// Opens a way of waiting; actions it needs go into the `Actions`.
    pub(super) type Open = fn(&mut Actions) -> io::Result<(Wait, Close)>;

    /// Registered signal-hook actions, unregistered when dropped.
    #[derive(Default)]
    pub(super) struct Actions(Vec<SigId>);

    impl Actions {
        pub(super) fn push(&mut self, id: SigId) {
            self.0.push(id);
        }
    }

    impl Drop for Actions {
        fn drop(&mut self) {
            for id in self.0.drain(..) {
                low_level::unregister(id);
            }
        }
    }

    pub(super) struct Watcher {
        close: Close,
        thread: JoinHandle<()>,
        // Dropped last, after the thread is gone.
        _actions: Actions,
    }

    impl Watcher {
        /// Registers the actions, opens the wait and starts the watcher thread, which calls
        /// `on_first` with the first signal. On an error, what was registered is undone.
        pub(super) fn start(
            open: Open,
            on_first: impl FnOnce(c_int) + Send + 'static,
        ) -> io::Result<Watcher> {
            let mut actions = Actions::default();
            let armed = Arc::new(AtomicBool::new(false));
            for sig in SIGNALS {
                // Registered first, so it runs before the second action on every signal: the
                // first signal finds it unarmed.
                actions.push(flag::register_conditional_default(sig, armed.clone())?);
                actions.push(flag::register(sig, armed.clone())?);
            }
            let (wait, close) = open(&mut actions)?;
            let thread = thread::Builder::new()
                .name("gnet-signals".into())
                .spawn(move || {
                    if let Some(sig) = wait() {
                        on_first(sig);
                    }
                })?;
            Ok(Watcher {
                close,
                thread,
                _actions: actions,
            })
        }

        pub(super) fn close(self) {
            (self.close)();
            if self.thread.join().is_err() {
                log::error!("gnet: the signal watcher thread panicked");
            }
        }
    }

    /// The first signal: log it and stop the engine.
    pub(super) fn first(engine: &Engine, sig: c_int) {
        let name = low_level::signal_name(sig).unwrap_or("a signal");
        if engine.is_stopping() {
            log::info!(
                target: "gnet::signal",
                "gnet: {name} received while the engine is already stopping; a second signal \
                 exits at once"
            );
        } else {
            log::info!(
                target: "gnet::signal",
                "gnet: {name} received: stopping gracefully; a second signal exits at once"
            );
        }
        let _ = engine.stop();
    }

    /// Unix: signal-hook's iterator, woken by the handler through a socket pair.
    #[cfg(not(windows))]
    mod iter {
        use super::*;
        use signal_hook::iterator::Signals;

        pub(in super::super) fn open(_: &mut Actions) -> io::Result<(Wait, Close)> {
            let mut signals = Signals::new(SIGNALS)?;
            let handle = signals.handle();
            let wait: Wait = Box::new(move || {
                let sig = signals.forever().next();
                // After `close`, a signal may still come out; the engine is gone by then.
                sig.filter(|_| !signals.is_closed())
            });
            Ok((wait, Box::new(move || handle.close())))
        }
    }

    /// A flag set by the handler, polled by the watcher thread. Windows only has this; on
    /// Unix it is compiled for its tests.
    #[cfg(any(windows, test))]
    pub(super) mod poll {
        use super::*;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::mpsc::{self, RecvTimeoutError};
        use std::time::Duration;

        const INTERVAL: Duration = Duration::from_millis(100);

        pub(in super::super) fn open(actions: &mut Actions) -> io::Result<(Wait, Close)> {
            // The last signal seen (0 for none: no signal has that number).
            let seen = Arc::new(AtomicUsize::new(0));
            for sig in SIGNALS {
                let n = usize::try_from(sig).expect("signal numbers are positive");
                actions.push(flag::register_usize(sig, seen.clone(), n)?);
            }
            let (quit_tx, quit_rx) = mpsc::channel::<()>();
            let wait: Wait = Box::new(move || loop {
                match quit_rx.recv_timeout(INTERVAL) {
                    Err(RecvTimeoutError::Timeout) => {
                        let n = seen.load(Ordering::SeqCst);
                        if n != 0 {
                            return c_int::try_from(n).ok();
                        }
                    }
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return None,
                }
            });
            let close: Close = Box::new(move || {
                let _ = quit_tx.send(());
            });
            Ok((wait, close))
        }
    }
}

#[cfg(all(test, feature = "signal", unix))]
mod tests {
    use std::sync::mpsc;
    use std::sync::Mutex;
    use std::time::Duration;

    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::low_level::raise;

    use super::imp::{self, Open, Watcher};

    /// One test at a time: a signal raised while another test's watcher is armed would end
    /// the test process.
    static SERIAL: Mutex<()> = Mutex::new(());

    /// Both ways of waiting: the iterator (Unix) and the polled flag (Windows).
    const OPENERS: [(&str, Open); 2] = [("iterator", imp::open), ("poll", imp::poll::open)];

    fn first_signal_reaches_the_watcher(sig: i32) {
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        for (name, open) in OPENERS {
            let (tx, rx) = mpsc::channel();
            let w = Watcher::start(open, move |s| tx.send(s).unwrap()).unwrap();
            // The handler runs on this thread before raise returns.
            raise(sig).unwrap();
            let got = rx.recv_timeout(Duration::from_secs(5));
            assert_eq!(got, Ok(sig), "{name}: the watcher did not see signal {sig}");
            w.close();
            assert!(rx.try_recv().is_err(), "{name}: a second report");
            // Closed, the actions are gone: an armed one would end this process now.
            raise(sig).unwrap();
        }
    }

    #[test]
    fn sigterm_reaches_the_watcher() {
        first_signal_reaches_the_watcher(SIGTERM);
    }

    #[test]
    fn sigint_reaches_the_watcher() {
        first_signal_reaches_the_watcher(SIGINT);
    }

    #[test]
    fn close_without_a_signal_ends_the_thread() {
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        for (name, open) in OPENERS {
            let (tx, rx) = mpsc::channel();
            let w = Watcher::start(open, move |s| tx.send(s).unwrap()).unwrap();
            let (done_tx, done_rx) = mpsc::channel();
            std::thread::spawn(move || {
                w.close();
                done_tx.send(()).unwrap();
            });
            assert_eq!(
                done_rx.recv_timeout(Duration::from_secs(5)),
                Ok(()),
                "{name}: close did not end the watcher thread"
            );
            assert!(
                rx.try_recv().is_err(),
                "{name}: a signal reported without one"
            );
        }
    }
}
