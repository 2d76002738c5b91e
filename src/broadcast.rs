//! Reaching every connection of the engine from any thread: [`Engine::for_each_conn`],
//! [`Engine::broadcast`], [`Engine::broadcast_if`]. Each is one task per loop, which the loop
//! runs on its own thread at its next iteration over its own connections, so no lock is held
//! over the connections and nobody keeps a table of handles. (The same for one loop, from
//! its callbacks, without a thread hop: `Conn::for_each_conn`, `src/conn/peer.rs`.)

use std::any::{Any, TypeId};
use std::sync::Arc;

use bytes::Bytes;

use crate::conn::Peer;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::handle::ConnId;
use crate::handle::Task;

/// What [`Engine::for_each_conn`] hands each loop, inside a `Box<dyn Any + Send>` (the engine
/// is not generic over the context): the loop downcasts it to its handler's `Context`.
pub(crate) type SharedVisit<C> = Arc<dyn Fn(&mut Peer<'_, C>) + Send + Sync>;

/// The handler's `Context` type, remembered at start so that a visit for another type is
/// refused at the call rather than ignored on the loops.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ContextType {
    id: TypeId,
    name: &'static str,
}

impl ContextType {
    pub(crate) fn of<C: 'static>() -> Self {
        ContextType {
            id: TypeId::of::<C>(),
            name: std::any::type_name::<C>(),
        }
    }

    /// `Ok` if `C` is this type.
    pub(crate) fn check<C: 'static>(self) -> Result<()> {
        if TypeId::of::<C>() == self.id {
            Ok(())
        } else {
            Err(Error::WrongContext {
                expected: self.name,
                given: std::any::type_name::<C>(),
            })
        }
    }
}

/// What [`Engine::with_conn`] hands the connection's loop, type-erased in the same way.
pub(crate) type SendVisitOne<C> = Box<dyn FnOnce(&mut Peer<'_, C>) + Send>;

/// Takes the visit back out of a [`Task::With`] on a loop whose context is `C`.
pub(crate) fn downcast_one<C: 'static>(f: Box<dyn Any + Send>) -> Option<SendVisitOne<C>> {
    f.downcast::<SendVisitOne<C>>().ok().map(|f| *f)
}

/// Takes the visit back out of a [`Task::ForEach`] on a loop whose context is `C`.
pub(crate) fn downcast<C: 'static>(f: Box<dyn Any + Send>) -> Option<SharedVisit<C>> {
    f.downcast::<SharedVisit<C>>().ok().map(|f| *f)
}

impl Engine {
    /// Runs `f` on every connection of the engine (see [`Peer`] for which), from any thread:
    /// another thread, [`EventHandler::on_tick`](crate::EventHandler::on_tick), a callback
    /// of any loop. `C` must be the handler's
    /// [`Context`](crate::EventHandler::Context) type.
    ///
    /// Each loop runs `f` over its own connections, on its own thread, at its next
    /// iteration (so `f` is `Send + Sync`, and is called from several loops at once). There
    /// is no order between loops, nor with what other threads send meanwhile; connections a
    /// loop registers after it took the visit are not visited; the call does not wait, and
    /// says nothing of how many connections were reached (count them in `f` if needed).
    /// Loops that have already exited are skipped. What `f` writes behaves as a write from
    /// the connection's own callback, and a panic in `f` as in [`Conn::for_each_conn`].
    ///
    /// To reach the connections of the caller's own loop within this iteration, use
    /// [`Conn::for_each_conn`](crate::Conn::for_each_conn).
    ///
    /// # Errors
    /// [`Error::WrongContext`] if `C` is not the handler's `Context`;
    /// [`Error::EngineShutdown`] once the engine is stopping.
    ///
    /// [`Conn::for_each_conn`]: crate::Conn::for_each_conn
    pub fn for_each_conn<C: 'static>(
        &self,
        f: impl Fn(&mut Peer<'_, C>) + Send + Sync + 'static,
    ) -> Result<()> {
        self.inner.context.check::<C>()?;
        let f: SharedVisit<C> = Arc::new(f);
        self.to_every_loop(|| Task::ForEach {
            f: Box::new(f.clone()),
        })
    }

    /// Writes `data` to every connection of the engine ([`Engine::for_each_conn`] with
    /// [`Peer::write_bytes`]: one allocation shared by all), whatever the handler's context
    /// type.
    ///
    /// # Examples
    /// ```no_run
    /// use std::time::Duration;
    /// use gnet::{Action, Conn, Engine, EventHandler, Options};
    ///
    /// struct Clock;
    /// impl EventHandler for Clock {
    ///     type Context = ();
    ///     fn on_traffic(&self, c: &mut Conn<'_, ()>) -> Action {
    ///         c.discard(usize::MAX);
    ///         Action::None
    ///     }
    ///     fn on_tick(&self, engine: &Engine) -> (Duration, Action) {
    ///         let _ = engine.broadcast("tick\n");
    ///         (Duration::from_secs(1), Action::None)
    ///     }
    /// }
    ///
    /// gnet::run(Clock, "tcp://127.0.0.1:9000", Options::new().ticker(true)).unwrap();
    /// ```
    ///
    /// # Errors
    /// [`Error::EngineShutdown`] once the engine is stopping.
    pub fn broadcast(&self, data: impl Into<Bytes>) -> Result<()> {
        let data = data.into();
        self.to_every_loop(|| Task::Broadcast { data: data.clone() })
    }

    /// Writes `data` to every connection of the engine for which `pred` holds (it may look
    /// at the context, the id, the address, [`Peer::outbound_buffered`]).
    ///
    /// # Errors
    /// As [`Engine::for_each_conn`].
    pub fn broadcast_if<C: 'static>(
        &self,
        data: impl Into<Bytes>,
        pred: impl Fn(&Peer<'_, C>) -> bool + Send + Sync + 'static,
    ) -> Result<()> {
        let data = data.into();
        self.for_each_conn(move |p: &mut Peer<'_, C>| {
            if pred(p) {
                p.write_bytes(data.clone());
            }
        })
    }

    /// Runs `f` on the connection `id`, from any thread: the lookup by [`ConnId`] across
    /// loops. The connection's loop runs it on its own thread at its next iteration, if the
    /// connection is open then (see [`Peer`]); otherwise `f` is dropped uncalled. The call
    /// does not wait. From a callback of the same loop,
    /// [`Conn::with_conn`](crate::Conn::with_conn) does it within the iteration.
    ///
    /// # Errors
    /// [`Error::WrongContext`] if `C` is not the handler's `Context`;
    /// [`Error::ConnClosed`] for an id of no loop of this engine, or of a loop that has
    /// exited; [`Error::EngineShutdown`] once the engine is stopping.
    pub fn with_conn<C: 'static>(
        &self,
        id: ConnId,
        f: impl FnOnce(&mut Peer<'_, C>) + Send + 'static,
    ) -> Result<()> {
        self.inner.context.check::<C>()?;
        if self.is_stopping() {
            return Err(Error::EngineShutdown);
        }
        let l = self
            .inner
            .loops
            .get(id.loop_index())
            .ok_or(Error::ConnClosed)?;
        let f: SendVisitOne<C> = Box::new(f);
        l.push(Task::With {
            id: id.id(),
            f: Box::new(f),
        })
        .map_err(|_| Error::ConnClosed)
    }

    /// Queues the task `make` makes on every loop; a loop that has exited is skipped.
    fn to_every_loop(&self, make: impl Fn() -> Task) -> Result<()> {
        if self.is_stopping() {
            return Err(Error::EngineShutdown);
        }
        for l in &self.inner.loops {
            // Refused only by a loop that has exited: it has no connections left.
            let _ = l.push(make());
        }
        Ok(())
    }
}
