//! PLACEHOLDER: replaced by the real backend.
#![allow(missing_docs, unused_variables)]
use crate::*;
use std::{io, sync::Arc, time::Duration};

pub struct Uring;

impl Backend for Uring {
    const KIND: BackendKind = BackendKind::Uring;
    fn open(_c: &Config) -> Result<Self, OpenError> {
        Err(OpenError::Unavailable("not written yet".into()))
    }
    fn waker(&self) -> Arc<dyn Wake> {
        unimplemented!()
    }
    fn add_listener(&mut self, id: ListenerId, l: &Listener) -> io::Result<()> {
        unimplemented!()
    }
    fn remove_listener(&mut self, id: ListenerId) {
        unimplemented!()
    }
    fn add_conn(&mut self, id: ConnId, s: &Socket) -> io::Result<()> {
        unimplemented!()
    }
    fn send(&mut self, c: ConnId, b: Vec<bytes::Bytes>) {
        unimplemented!()
    }
    fn resume(&mut self, c: ConnId) {
        unimplemented!()
    }
    fn close(&mut self, c: ConnId) {
        unimplemented!()
    }
    fn poll<S: Sink>(&mut self, t: Option<Duration>, s: &mut S) -> io::Result<()> {
        unimplemented!()
    }
}
