//! The conformance suite: the [`Backend`](crate::Backend) contract as tests, written once,
//! generic over the backend, and run on every backend compiled in.
//!
//! Each test is a `fn name<B: Backend>()` in the file of its topic (`accept`, `receive`,
//! `send`, `close`, `wait`; `datagram` and `connect`, on Unix) and is instantiated below once
//! per backend, as
//! `conformance::<backend>::<name>`, so a failure names its backend. Tests drive the backend
//! through a [`Fixture`](fixture::Fixture), as a loop would: it owns the sockets, calls
//! `close` once, drops a socket only after `closed`, and knows the backend's counters at rest.
//! Its [`Recorder`](sink::Recorder) checks the contract's per-connection rules on every report.
//!
//! To add a backend: one more line in `per_backend!` below, naming its module, its type and
//! the `cfg` it is compiled under. Its own tests then only cover its own machinery.

pub(crate) mod fixture;
pub(crate) mod peer;
pub(crate) mod sink;

mod accept;
mod close;
#[cfg(unix)]
mod connect;
#[cfg(unix)]
mod datagram;
mod receive;
mod send;
mod wait;

pub(crate) use fixture::Fixture;
pub(crate) use sink::{Ev, Recorder};

/// Instantiates every listed test for one backend, in a module named after it.
macro_rules! instantiate {
    ($backend:ident, $ty:ty, #[$on:meta], $( $(#[$attr:meta])* $file:ident::$test:ident ),+) => {
        #[$on]
        mod $backend {
            $(
                $(#[$attr])*
                #[test]
                fn $test() {
                    super::$file::$test::<$ty>()
                }
            )+
        }
    };
}

/// Instantiates every listed test once per backend compiled in.
macro_rules! per_backend {
    ($( $(#[$attr:meta])* $file:ident::$test:ident ),+ $(,)?) => {
        instantiate!(uring, crate::uring::Uring,
            #[cfg(gnet_uring)], $( $(#[$attr])* $file::$test ),+);
        instantiate!(epoll, crate::epoll::Epoll,
            #[cfg(gnet_epoll)], $( $(#[$attr])* $file::$test ),+);
        instantiate!(kqueue, crate::kqueue::Kqueue,
            #[cfg(gnet_kqueue)], $( $(#[$attr])* $file::$test ),+);
        instantiate!(stdnet, crate::stdnet::StdNet,
            #[cfg(gnet_stdnet)], $( $(#[$attr])* $file::$test ),+);
    };
}

per_backend!(
    accept::accepts_tcp,
    #[cfg(unix)]
    accept::accepts_unix,
    accept::removed_listener_accepts_nothing_and_frees_its_port,
    #[cfg(unix)]
    accept::listener_that_cannot_accept_is_reported_once,
    receive::receives_tcp_in_order,
    #[cfg(unix)]
    receive::receives_unix_in_order,
    receive::receives_what_arrived_before_add_conn,
    receive::slices_fit_the_read_buffer,
    receive::eof_after_all_data,
    #[cfg(unix)]
    receive::reset_is_one_failed,
    receive::pause_stops_receiving_until_resume,
    send::sends_a_batch_in_order,
    send::sends_in_the_order_handed_in,
    #[cfg(unix)]
    send::large_send_completes_when_the_peer_reads,
    #[cfg(unix)]
    send::send_to_a_reset_peer_fails_once,
    close::close_reaps_an_idle_connection,
    close::close_during_a_send_in_flight,
    close::close_right_after_a_send,
    close::close_after_eof,
    #[cfg(unix)]
    close::close_after_failed,
    #[cfg(unix)]
    close::close_many_in_every_state,
    close::stale_id_gets_nothing_of_the_old,
    wait::wakes_from_another_thread,
    wait::wakes_coalesce,
    #[cfg(unix)]
    wait::idle_poll_sleeps_its_timeout,
    wait::zero_timeout_does_not_block,
    #[cfg(unix)]
    datagram::datagrams_arrive_one_by_one_with_their_source,
    #[cfg(unix)]
    datagram::a_datagram_larger_than_the_buffer_is_reported_truncated,
    #[cfg(unix)]
    datagram::send_to_keeps_datagrams_whole_and_in_order,
    #[cfg(unix)]
    datagram::a_datagram_that_cannot_be_sent_does_not_stop_the_others,
    #[cfg(unix)]
    datagram::an_icmp_error_does_not_kill_a_connected_socket,
    #[cfg(unix)]
    datagram::pause_and_resume_datagrams,
    #[cfg(unix)]
    datagram::close_a_paused_datagram_socket,
    #[cfg(unix)]
    connect::connect_then_serve_the_connection,
    #[cfg(unix)]
    connect::connect_refused_reports_the_error,
    #[cfg(unix)]
    connect::close_cancels_a_connect,
    #[cfg(unix)]
    connect::connect_unix_and_udp,
);
