//! A context that is always there without an `unwrap`, on every backend:
//! `Conn::context_or_default` and `Conn::context_or_insert_with` make it on first use and
//! return the one already set afterwards.

mod util;

use gnet::{Action, BackendKind, Conn, EventHandler};
use util::{opts, Client, Server};

/// Counts messages in a context made on first use: `d` with `Default` (from 0), `i` with
/// `context_or_insert_with` (from 100); replies with the count.
struct Counter;

impl EventHandler for Counter {
    type Context = u64;

    fn on_traffic(&self, c: &mut Conn<'_, u64>) -> Action {
        let how = c.next_all().to_vec();
        let count = match how.as_slice() {
            b"d" => c.context_or_default(),
            b"i" => c.context_or_insert_with(|| 100),
            other => panic!("unexpected {other:?}"),
        };
        *count += 1;
        let reply = format!("{count}\n");
        c.write(reply.as_bytes());
        Action::None
    }
}

fn context_made_on_first_use(kind: BackendKind) {
    let s = Server::start(Counter, &[util::TCP], opts(kind));
    let ask = |c: &mut Client, how: &[u8], want: &[u8]| c.write_all_and_expect(how, want);
    let mut a = s.connect(0);
    ask(&mut a, b"d", b"1\n");
    ask(&mut a, b"d", b"2\n");
    ask(&mut a, b"i", b"3\n");
    let mut b = s.connect(0);
    ask(&mut b, b"i", b"101\n");
    ask(&mut b, b"d", b"102\n");
    s.stop().unwrap();
}

per_backend!(context_made_on_first_use);
