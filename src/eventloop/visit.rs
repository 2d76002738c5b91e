//! Visits of the loop's connections ([`Peer`]): all of them for `Conn::for_each_conn` and the
//! engine's `for_each_conn` and `broadcast` tasks, one for `Conn::with_conn`. What a visit
//! writes or closes is flushed with the rest of the iteration's output.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::Bytes;
use gnet_backends::Id;

use super::callbacks::panic_message;
use super::Core;
use crate::conn::Peer;
use crate::error::Error;
use crate::handler::{CloseCause, EventHandler};
use crate::local::VisitOne;

impl<H: EventHandler> Core<H> {
    /// Runs `f` on every connection a visit shows (see [`Peer::visible`]), in table order. A
    /// panic resets the connection being visited and ends the visit.
    pub(super) fn visit_all(&mut self, f: &mut dyn FnMut(&mut Peer<'_, H::Context>)) {
        let (pool, shared, dirty) = (&mut self.local.pool, &self.shared, &mut self.dirty);
        let mut panicked = None;
        for st in self.conns.conns_mut() {
            if !Peer::visible(st) {
                continue;
            }
            let r = catch_unwind(AssertUnwindSafe(|| f(&mut Peer::new(st, pool, shared))));
            if st.dirty || st.close_requested {
                dirty.push(st.id);
            }
            if let Err(p) = r {
                panicked = Some((st.id, panic_message(&*p)));
                break;
            }
        }
        if let Some((id, msg)) = panicked {
            self.visit_panicked(id, msg);
        }
    }

    /// Runs `f` on the connection `id` if a visit shows it.
    pub(super) fn visit_one(&mut self, id: Id, f: VisitOne<H::Context>) {
        let Some(st) = self.conns.conn_mut(id).filter(|s| Peer::visible(s)) else {
            return;
        };
        let r = catch_unwind(AssertUnwindSafe(|| {
            f(&mut Peer::new(st, &mut self.local.pool, &self.shared));
        }));
        if st.dirty || st.close_requested {
            self.mark(id);
        }
        if let Err(p) = r {
            self.visit_panicked(id, panic_message(&*p));
        }
    }

    fn visit_panicked(&mut self, id: Id, msg: String) {
        log::error!("gnet: a visit of the loop's connections panicked, resetting {id}: {msg}");
        self.fail(id, CloseCause::Error(Error::HandlerPanic(msg)));
    }

    /// An [`Engine::for_each_conn`](crate::Engine::for_each_conn) task.
    pub(super) fn for_each_task(&mut self, f: Box<dyn Any + Send>) {
        // The engine checked the type at the call: a mismatch here is a bug of gnet's.
        let Some(f) = crate::broadcast::downcast::<H::Context>(f) else {
            return log::error!(
                "gnet: loop {}: a visit for another context type",
                self.index
            );
        };
        self.visit_all(&mut |p| f(p));
    }

    /// An [`Engine::with_conn`](crate::Engine::with_conn) task.
    pub(super) fn with_task(&mut self, id: Id, f: Box<dyn Any + Send>) {
        // Checked at the call, as for `for_each_task`.
        let Some(f) = crate::broadcast::downcast_one::<H::Context>(f) else {
            return log::error!(
                "gnet: loop {}: a visit for another context type",
                self.index
            );
        };
        self.visit_one(id, f);
    }

    /// An [`Engine::broadcast`](crate::Engine::broadcast) task.
    pub(super) fn broadcast_task(&mut self, data: Bytes) {
        self.visit_all(&mut |p| p.write_bytes(data.clone()));
    }
}
