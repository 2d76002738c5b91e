//! Reaching other connections, on every backend: an engine-wide broadcast over several loops
//! (every client gets it exactly once), a broadcast filtered on the context, a visit from a
//! callback that reaches the other connections of its own loop and no others, a lookup by
//! id (from a callback, and from any thread over loops), a visit from `on_tick`, a visit that
//! closes, one that panics, and the wrong context type refused at the call.

mod util;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gnet::{Action, BackendKind, Bytes, Conn, ConnId, Engine, Error, EventHandler};
use util::{opts, wait_until, Client, Server};

/// What the handler shares with the test.
#[derive(Default)]
struct Shared {
    opened: AtomicU32,
    /// Connection number → id, for `with_conn`.
    ids: Mutex<HashMap<u32, ConnId>>,
    /// `on_tick` visits every connection once when set.
    tick_visit: AtomicBool,
}

/// Numbers its connections (the context) and greets each with `"<loop> <number>\n"`. A line
/// from a client is relayed, according to its first word, to every other connection of its
/// loop (`all ...`, answered `sent`) or to the connection of that number (`<n> ...`).
struct Hub(Arc<Shared>);

impl EventHandler for Hub {
    type Context = u32;

    fn on_open(&self, c: &mut Conn<'_, u32>) -> Action {
        let n = self.0.opened.fetch_add(1, Ordering::SeqCst);
        c.set_context(n);
        self.0.ids.lock().unwrap().insert(n, c.id());
        c.write(format!("{} {n}\n", c.id().loop_index()).as_bytes());
        Action::None
    }

    fn on_traffic(&self, c: &mut Conn<'_, u32>) -> Action {
        let line = String::from_utf8(c.next_all().to_vec()).expect("utf-8");
        let (to, rest) = line.split_once(' ').expect("a word and the rest");
        let rest = Bytes::from(rest.to_string());
        let me = c.id();
        if to == "all" {
            c.for_each_conn(move |p| {
                if p.id() != me {
                    p.write_bytes(rest.clone());
                }
            });
            // Flushed in the same iteration as what the visit writes.
            c.write(b"sent\n");
        } else {
            let n: u32 = to.parse().expect("a connection number");
            let id = self.0.ids.lock().unwrap()[&n];
            c.with_conn(id, move |p| p.write_bytes(rest))
                .expect("with_conn on this loop");
        }
        Action::None
    }

    fn on_tick(&self, engine: &Engine) -> (Duration, Action) {
        if self.0.tick_visit.swap(false, Ordering::SeqCst) {
            engine
                .for_each_conn::<u32>(|p| {
                    let n = *p.context().expect("numbered in on_open");
                    p.write(format!("tick {n}\n").as_bytes());
                })
                .expect("for_each_conn from on_tick");
        }
        (Duration::from_millis(5), Action::None)
    }
}

/// A client of the hub, with the loop and the number the greeting gave it.
struct Member {
    client: Client,
    loop_index: usize,
    n: u32,
}

impl Member {
    fn line(&mut self) -> String {
        let mut out = Vec::new();
        let mut b = [0u8; 1];
        while out.last() != Some(&b'\n') {
            match self.client.read(&mut b) {
                Ok(1) => out.push(b[0]),
                Ok(_) => panic!("end of stream after {:?}", String::from_utf8_lossy(&out)),
                Err(e) => panic!("read after {:?}: {e}", String::from_utf8_lossy(&out)),
            }
        }
        String::from_utf8(out).expect("utf-8")
    }

    fn expect(&mut self, want: &str) {
        let got = self.line();
        assert_eq!(got, want, "member {} on loop {}", self.n, self.loop_index);
    }

    fn send(&mut self, line: &str) {
        self.client.write_all(line.as_bytes()).expect("write");
    }
}

/// Starts a hub with `loops` loops (and a ticker) and connects `n` members to it.
fn hub(kind: BackendKind, loops: usize, n: usize) -> (Server, Arc<Shared>, Vec<Member>) {
    let shared = Arc::new(Shared::default());
    let s = Server::start(
        Hub(shared.clone()),
        &[util::TCP],
        opts(kind).loops(loops).ticker(true),
    );
    let mut members: Vec<Member> = (0..n)
        .map(|_| {
            let mut m = Member {
                client: s.connect(0),
                loop_index: 0,
                n: 0,
            };
            let greeting = m.line();
            let (l, n) = greeting.trim_end().split_once(' ').expect("a greeting");
            (m.loop_index, m.n) = (l.parse().unwrap(), n.parse().unwrap());
            m
        })
        .collect();
    members.sort_by_key(|m| m.n);
    wait_until("every member opened", || {
        shared.opened.load(Ordering::SeqCst) == n as u32
    });
    (s, shared, members)
}

fn broadcast_reaches_every_connection_on_every_loop(kind: BackendKind) {
    let (s, _, mut members) = hub(kind, 4, 40);
    for l in 0..4 {
        assert!(
            members.iter().any(|m| m.loop_index == l),
            "no connection on loop {l}"
        );
    }
    s.engine.broadcast("hello\n").expect("broadcast");
    // A second one: whoever got the first twice reads it in place of this one.
    s.engine
        .broadcast(Bytes::from_static(b"again\n"))
        .expect("broadcast");
    for m in &mut members {
        m.expect("hello\n");
        m.expect("again\n");
    }
    s.stop().unwrap();
}

fn broadcast_if_filters_on_the_context(kind: BackendKind) {
    let (s, _, mut members) = hub(kind, 2, 10);
    s.engine
        .broadcast_if::<u32>("even\n", |p| p.context().is_some_and(|n| n % 2 == 0))
        .expect("broadcast_if");
    s.engine.broadcast("all\n").expect("broadcast");
    for m in &mut members {
        if m.n % 2 == 0 {
            m.expect("even\n");
        }
        m.expect("all\n");
    }
    s.stop().unwrap();
}

fn for_each_from_a_callback_reaches_its_own_loop(kind: BackendKind) {
    let (s, _, mut members) = hub(kind, 2, 6);
    let from = members[0].loop_index;
    members[0].send("all hi\n");
    members[0].expect("sent\n");
    // Then something for everyone, sent by the engine: it comes first to those the relay
    // must not reach (the sender, the other loop).
    s.engine.broadcast("end\n").expect("broadcast");
    for (i, m) in members.iter_mut().enumerate() {
        if i != 0 && m.loop_index == from {
            m.expect("hi\n");
        }
        m.expect("end\n");
    }
    s.stop().unwrap();
}

fn with_conn_reaches_one_connection_by_id(kind: BackendKind) {
    // One loop: every connection is reachable from every other one.
    let (s, _, mut members) = hub(kind, 1, 3);
    members[0].send("2 for two\n");
    members[2].expect("for two\n");
    members[2].send("0 back\n");
    members[0].expect("back\n");
    s.engine.broadcast("end\n").expect("broadcast");
    members[1].expect("end\n");
    s.stop().unwrap();
}

/// `Engine::with_conn` from the test's thread reaches one connection on whichever loop it
/// is, and only it; an id of no loop is refused.
fn engine_with_conn_reaches_one_connection_on_any_loop(kind: BackendKind) {
    let (s, shared, mut members) = hub(kind, 3, 6);
    let ids = shared.ids.lock().unwrap().clone();
    for m in &members {
        let id = ids[&m.n];
        let n = m.n;
        s.engine
            .with_conn::<u32>(id, move |p| {
                let ctx = *p.context().expect("numbered in on_open");
                p.write(format!("only {n} {ctx}\n").as_bytes());
            })
            .expect("with_conn");
    }
    for m in &mut members {
        let want = format!("only {} {}\n", m.n, m.n);
        m.expect(&want);
    }
    // An id from an engine with more loops names no loop of this one.
    let (s4, shared4, members4) = hub(kind, 4, 8);
    let on_loop_3 = members4
        .iter()
        .find(|m| m.loop_index == 3)
        .expect("a client on loop 3");
    let far = shared4.ids.lock().unwrap()[&on_loop_3.n];
    assert!(matches!(
        s.engine.with_conn::<u32>(far, |_| {}),
        Err(Error::ConnClosed)
    ));
    s4.stop().unwrap();
    assert!(matches!(
        s.engine.with_conn::<u64>(ids[&0], |_| {}),
        Err(Error::WrongContext { .. })
    ));
    s.engine.broadcast("end\n").expect("broadcast");
    for m in &mut members {
        m.expect("end\n");
    }
    s.stop().unwrap();
}

fn for_each_from_on_tick(kind: BackendKind) {
    let (s, shared, mut members) = hub(kind, 3, 9);
    shared.tick_visit.store(true, Ordering::SeqCst);
    for m in &mut members {
        let want = format!("tick {}\n", m.n);
        m.expect(&want);
    }
    wait_until("the tick's visit taken", || {
        !shared.tick_visit.load(Ordering::SeqCst)
    });
    s.engine.broadcast("end\n").expect("broadcast");
    for m in &mut members {
        m.expect("end\n");
    }
    s.stop().unwrap();
}

fn a_visit_can_close(kind: BackendKind) {
    let (s, _, mut members) = hub(kind, 2, 6);
    s.engine
        .for_each_conn::<u32>(|p| {
            if p.context().is_some_and(|n| n % 3 == 0) {
                p.write(b"bye\n");
                p.close();
            }
        })
        .expect("for_each_conn");
    s.engine.broadcast("end\n").expect("broadcast");
    for m in &mut members {
        if m.n % 3 == 0 {
            m.expect("bye\n");
            let rest = m.client.read_until_closed();
            assert!(rest.is_empty(), "after the close: {rest:?}");
        } else {
            m.expect("end\n");
        }
    }
    s.stop().unwrap();
}

fn a_panicking_visit_resets_the_connection_it_visited(kind: BackendKind) {
    let (s, _, mut members) = hub(kind, 1, 3);
    s.engine
        .for_each_conn::<u32>(|p| {
            p.write(b"visited\n");
            assert_ne!(p.context(), Some(&1), "a visit panics on connection 1");
        })
        .expect("for_each_conn");
    let got = members[1].client.read_until_reset();
    assert!(got.is_empty(), "before the reset: {got:?}");
    // The loop goes on; the visit may have stopped before the others.
    s.engine.broadcast("end\n").expect("broadcast");
    for i in [0, 2] {
        let mut line = members[i].line();
        if line == "visited\n" {
            line = members[i].line();
        }
        assert_eq!(line, "end\n", "member {i}");
    }
    s.stop().unwrap();
}

fn the_wrong_context_type_is_refused(kind: BackendKind) {
    let (s, _, mut members) = hub(kind, 2, 2);
    match s.engine.for_each_conn::<String>(|p| p.write(b"wrong\n")) {
        Err(Error::WrongContext { expected, given }) => {
            assert_eq!((expected, given), ("u32", "alloc::string::String"));
        }
        other => panic!("for_each_conn::<String> on a u32 engine: {other:?}"),
    }
    assert!(matches!(
        s.engine.broadcast_if::<u64>("wrong\n", |_| true),
        Err(Error::WrongContext { .. })
    ));
    // Dialing and enrolling check the context the same way, at the call.
    assert!(matches!(
        s.engine
            .dial("tcp://127.0.0.1:1", Some(String::from("wrong"))),
        Err(Error::WrongContext { .. })
    ));
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stream = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    assert!(matches!(
        s.engine.enroll(gnet::Socket::Tcp(stream), Some(7u64)),
        Err(Error::WrongContext { .. })
    ));
    s.engine.broadcast("right\n").expect("broadcast");
    for m in &mut members {
        m.expect("right\n");
    }
    let engine = s.engine.clone();
    s.stop().unwrap();
    assert!(matches!(
        engine.broadcast("late\n"),
        Err(Error::EngineShutdown)
    ));
}

per_backend!(
    broadcast_reaches_every_connection_on_every_loop,
    broadcast_if_filters_on_the_context,
    for_each_from_a_callback_reaches_its_own_loop,
    with_conn_reaches_one_connection_by_id,
    for_each_from_on_tick,
    engine_with_conn_reaches_one_connection_on_any_loop,
    a_visit_can_close,
    a_panicking_visit_resets_the_connection_it_visited,
    the_wrong_context_type_is_refused,
);
