//! One named test per EPOLL-NOTES.md item that applies to a single loop, each driving real
//! loopback sockets into the situation, plus the teeth: the same scenario against the loop's
//! known-bad variant (`Config::known_bad`), asserting that the check fails there.
//!
//! No sleeps synchronise anything: every wait is a channel receive or a socket read with a
//! bound, and a bound that runs out is the stall the known-bad variants are expected to show.

mod loop_support;

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use loop_support::*;
use refloop::framing::{Framing, LengthPrefixed, Lines};
use refloop::reactor::KnownBad;
use refloop::{Config, ConnId, DisconnectReason, SendError, Server};

fn config(known_bad: KnownBad) -> Config {
    Config {
        known_bad,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Edge-triggered reads must drain.
// ---------------------------------------------------------------------------------------------

/// Sends 200 lines in one write to a loop whose read chunk is 16 bytes; returns how many echoes
/// came back before the stall bound.
fn burst_echoes(known_bad: KnownBad, wait: Duration) -> usize {
    let server = lines_server(Config {
        read_chunk: 16,
        ..config(known_bad)
    });
    let (handler, _rx) = Recorder::<Lines>::new(true);
    let running = Running::spawn(server, handler);
    let stream = client(running.addr.unwrap());
    let burst: String = (0..200).map(|i| format!("line-{i:04}\n")).collect();
    send(&stream, &burst);
    let got = read_lines(&stream, 200, wait);
    for (i, line) in got.iter().enumerate() {
        assert_eq!(line, &format!("line-{i:04}"), "echoes come back in order");
    }
    drop(stream);
    running.stop().expect("run");
    got.len()
}

#[test]
fn et_read_drains_a_burst_larger_than_one_read_chunk() {
    assert_eq!(burst_echoes(KnownBad::None, PATIENCE), 200);
}

#[test]
fn teeth_read_once_variant_stalls_on_the_tail_of_a_burst() {
    let got = burst_echoes(KnownBad::ReadOnce, STALL);
    assert!(
        got < 200,
        "read-once must leave the tail unread without a new edge, got {got}"
    );
}

#[test]
fn trickled_bytes_are_reassembled_into_whole_messages() {
    let server = lines_server(config(KnownBad::None));
    let (handler, rx) = Recorder::<Lines>::new(true);
    let running = Running::spawn(server, handler);
    let stream = client(running.addr.unwrap());
    let text = "a slow peer\nsends one byte at a time\n";
    for byte in text.as_bytes() {
        (&stream)
            .write_all(std::slice::from_ref(byte))
            .expect("write");
    }
    assert_eq!(
        read_lines(&stream, 2, PATIENCE),
        ["a slow peer", "sends one byte at a time"]
    );
    let msgs: Vec<String> = (0..2)
        .map(|_| {
            wait_for(&rx, PATIENCE, |e| match e {
                Event::Message { msg, .. } => Some(msg),
                _ => None,
            })
            .expect("message")
        })
        .collect();
    assert_eq!(
        msgs,
        ["a slow peer", "sends one byte at a time"],
        "one call per whole message"
    );
    drop(stream);
    running.stop().expect("run");
}

// ---------------------------------------------------------------------------------------------
// 2. Accept must drain too.
// ---------------------------------------------------------------------------------------------

/// Queues 64 clients before the loop's first wait, then counts the connects it reports.
fn queued_clients_accepted(known_bad: KnownBad, wait: Duration) -> usize {
    let server = lines_server(config(known_bad));
    let addr = server.local_addr().unwrap();
    let clients: Vec<TcpStream> = (0..64).map(|_| client(addr)).collect();
    let (handler, rx) = Recorder::<Lines>::new(true);
    let running = Running::spawn(server, handler);
    let deadline = Instant::now() + wait;
    let mut connected = 0;
    while connected < 64 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Event::Connected { .. }) => connected += 1,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    if connected == 64 {
        // Every queued client is also served, not just accepted.
        for c in &clients {
            send(c, "hi\n");
        }
        for c in &clients {
            assert_eq!(read_lines(c, 1, PATIENCE), ["hi"]);
        }
    }
    drop(clients);
    running.stop().expect("run");
    connected
}

#[test]
fn accept_drains_64_clients_queued_before_one_wakeup() {
    assert_eq!(queued_clients_accepted(KnownBad::None, PATIENCE), 64);
}

#[test]
fn teeth_accept_once_variant_strands_queued_clients() {
    let got = queued_clients_accepted(KnownBad::AcceptOnce, STALL);
    assert!(
        got < 64,
        "accept-once must strand clients queued behind one edge, got {got}"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Draining must not starve others.
// ---------------------------------------------------------------------------------------------

/// A busy client has 1024 lines waiting before the loop starts, a second client one line;
/// returns how many busy lines were delivered before the second client's line.
fn busy_lines_before_other(known_bad: KnownBad) -> usize {
    let server = lines_server(Config {
        read_chunk: 1024,
        fairness_budget: 4096,
        ..config(known_bad)
    });
    let addr = server.local_addr().unwrap();
    let busy = client(addr);
    let line = format!("{}\n", "b".repeat(63));
    let all: String = std::iter::repeat_n(line.as_str(), 1024).collect();
    // 64 KiB fits in the loopback socket buffers, so this write completes before the loop runs.
    send(&busy, &all);
    let other = client(addr);
    send(&other, "other\n");
    let (handler, rx) = Recorder::<Lines>::new(false);
    let running = Running::spawn(server, handler);
    let mut busy_id = None;
    let mut before = 0;
    let found = wait_for(&rx, PATIENCE, |e| match e {
        Event::Connected { id, .. } if busy_id.is_none() => {
            busy_id = Some(id);
            None
        }
        Event::Message { msg, .. } if msg == "other" => Some(()),
        Event::Message { id, .. } if Some(id) == busy_id => {
            before += 1;
            None
        }
        _ => None,
    });
    assert!(found.is_some(), "the other client's line arrives at all");
    let stats = running.handle.stats();
    drop((busy, other));
    running.stop().expect("run");
    if known_bad == KnownBad::None {
        assert!(
            stats.requeued > 0,
            "the busy connection went through the ready list"
        );
    }
    before
}

#[test]
fn busy_peer_does_not_starve_others_past_the_fairness_budget() {
    let before = busy_lines_before_other(KnownBad::None);
    // Budget 4096 bytes of 64-byte lines, plus one read chunk of slack: at most 80 lines.
    assert!(
        before <= 80,
        "{before} busy lines were served before the other client"
    );
}

#[test]
fn teeth_no_fairness_variant_serves_the_busy_peer_first() {
    let before = busy_lines_before_other(KnownBad::NoFairness);
    assert!(
        before > 80,
        "without a budget the busy peer is drained first, got {before}"
    );
}

// ---------------------------------------------------------------------------------------------
// 4 and 5. EPOLLOUT after EAGAIN, and partial writes.
// ---------------------------------------------------------------------------------------------

/// Asks for 2000 numbered 512-byte frames through a 4 KiB `SO_SNDBUF`; returns the frames read
/// back in order and intact before the first mismatch or stall, and the loop's partial writes.
fn frames_through_tiny_sndbuf(known_bad: KnownBad, wait: Duration) -> (usize, u64) {
    const FRAMES: usize = 2000;
    let framing = LengthPrefixed::new(1 << 20);
    let cfg = Config {
        send_buffer_size: Some(4096),
        // A stuck known-bad variant cannot flush; do not wait long for it at shutdown.
        close_linger: Duration::from_millis(200),
        shutdown_timeout: Duration::from_millis(200),
        ..config(known_bad)
    };
    let server = Server::bind("127.0.0.1:0", framing.clone(), cfg).unwrap();
    let (mut handler, _rx) = Recorder::<LengthPrefixed>::new(false);
    handler.on_msg = Some(Box::new(|conn, msg: &Vec<u8>| {
        if msg == b"go" {
            for i in 0..FRAMES {
                let mut frame = vec![(i % 251) as u8; 512];
                frame[..8].copy_from_slice(&(i as u64).to_be_bytes());
                conn.send(&frame).expect("encode");
            }
        }
    }));
    let running = Running::spawn(server, handler);
    let stream = client(running.addr.unwrap());
    (&stream).write_all(&[0, 0, 0, 2, b'g', b'o']).unwrap();
    let (bytes, _eof) = {
        stream.set_read_timeout(Some(wait)).unwrap();
        let mut all = Vec::new();
        let mut buf = [0u8; 65536];
        let want = FRAMES * 516;
        while all.len() < want {
            match std::io::Read::read(&mut &stream, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
        (all, false)
    };
    let mut intact = 0;
    let mut decoder = framing;
    let mut at = 0;
    while let Ok(refloop::framing::Decoded::Message(frame, used)) = decoder.decode(&bytes[at..]) {
        let mut want = vec![(intact % 251) as u8; 512];
        want[..8].copy_from_slice(&(intact as u64).to_be_bytes());
        if frame != want {
            break;
        }
        intact += 1;
        at += used;
    }
    let partial = running.handle.stats().partial_writes;
    drop(stream);
    running.stop().expect("run");
    (intact, partial)
}

#[test]
fn partial_writes_resume_at_the_exact_byte_under_a_tiny_sndbuf() {
    let (intact, partial) = frames_through_tiny_sndbuf(KnownBad::None, PATIENCE);
    println!("@@stat partial-writes tiny_sndbuf {partial}");
    assert!(partial > 0, "the scenario must force partial writes");
    assert_eq!(intact, 2000, "every frame arrives intact and in order");
}

#[test]
fn teeth_ignoring_epollout_strands_output_behind_eagain() {
    let (intact, partial) = frames_through_tiny_sndbuf(KnownBad::IgnoreWritable, STALL);
    assert!(partial > 0);
    assert!(
        intact < 2000,
        "without EPOLLOUT the rest never goes out, got {intact} frames"
    );
}

#[test]
fn teeth_dropping_the_rest_of_a_partial_write_corrupts_the_stream() {
    let (intact, partial) = frames_through_tiny_sndbuf(KnownBad::DropPartialWriteRest, STALL);
    assert!(partial > 0);
    assert!(
        intact < 2000,
        "the bad variant must lose or corrupt frames, got {intact} intact"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Closed, hung-up and error states.
// ---------------------------------------------------------------------------------------------

/// A client queues 300 lines and a FIN before the loop runs; returns the echoes it reads before
/// EOF, and the disconnect reason.
fn half_close_echoes(
    known_bad: KnownBad,
    wait: Duration,
) -> (usize, bool, Option<DisconnectReason>) {
    let server = lines_server(config(known_bad));
    let addr = server.local_addr().unwrap();
    let stream = client(addr);
    let all: String = (0..300).map(|i| format!("half-{i}\n")).collect();
    send(&stream, &all);
    // The last line has no newline: `decode_eof` must deliver it.
    send(&stream, "tail-without-newline");
    stream.shutdown(Shutdown::Write).unwrap();
    let (handler, rx) = Recorder::<Lines>::new(true);
    let running = Running::spawn(server, handler);
    let (bytes, eof) = read_to_eof(&stream, wait);
    let text = String::from_utf8(bytes).unwrap();
    let lines = text.lines().count();
    let reason = wait_for(&rx, wait, |e| match e {
        Event::Disconnected { disconnect, .. } => Some(disconnect.reason),
        _ => None,
    });
    running.stop().expect("run");
    (lines, eof, reason)
}

#[test]
fn half_close_delivers_the_rest_flushes_then_closes() {
    let (lines, eof, reason) = half_close_echoes(KnownBad::None, PATIENCE);
    assert_eq!(
        lines, 301,
        "300 lines plus the unterminated tail are echoed before the close"
    );
    assert!(eof, "the loop closes after flushing");
    assert!(
        matches!(reason, Some(DisconnectReason::PeerClosed)),
        "{reason:?}"
    );
}

#[test]
fn teeth_a_short_read_that_ignores_rdhup_never_sees_the_fin() {
    let (lines, eof, reason) = half_close_echoes(KnownBad::ShortReadIgnoresHangup, STALL);
    assert!(
        !eof && reason.is_none(),
        "the FIN behind the data raised no new edge, so the close never happens: {lines} lines, {reason:?}"
    );
}

#[test]
fn teeth_closing_at_once_on_rdhup_loses_the_replies() {
    // The variant closes with output pending, which the loop reports as a reset (no clean
    // EOF): what matters is that replies are lost.
    let (lines, _eof, _) = half_close_echoes(KnownBad::CloseOnReadHup, PATIENCE);
    assert!(
        lines < 301,
        "the bad variant drops pending output, got {lines} lines"
    );
}

#[test]
fn reset_by_peer_is_reported_with_the_unsent_byte_count() {
    let cfg = Config {
        send_buffer_size: Some(4096),
        ..config(KnownBad::None)
    };
    let server = lines_server(cfg);
    let (mut handler, rx) = Recorder::<Lines>::new(false);
    let reply = "r".repeat(1000);
    handler.on_msg = Some(Box::new(move |conn, _msg| {
        for _ in 0..2000 {
            conn.send(&reply).unwrap();
        }
    }));
    let running = Running::spawn(server, handler);
    let stream = client(running.addr.unwrap());
    send(&stream, "flood me\n");
    // Read a little, so the loop is mid-stream, then reset (SO_LINGER 0 turns close into RST).
    let mut first = [0u8; 1001];
    std::io::Read::read_exact(&mut &stream, &mut first).unwrap();
    let socket = socket2::SockRef::from(&stream);
    socket.set_linger(Some(Duration::ZERO)).unwrap();
    drop(stream);
    let disconnect = wait_for(&rx, PATIENCE, |e| match e {
        Event::Disconnected { disconnect, .. } => Some(disconnect),
        _ => None,
    })
    .expect("disconnect reported");
    assert!(
        matches!(disconnect.reason, DisconnectReason::Reset),
        "{:?}",
        disconnect.reason
    );
    let total = 2000 * 1001;
    assert!(
        disconnect.unsent_bytes > 0 && disconnect.unsent_bytes < total - 1001,
        "unsent {} of {total}",
        disconnect.unsent_bytes
    );
    running.stop().expect("run");
}

// ---------------------------------------------------------------------------------------------
// 7. EPOLL_CTL_DEL before close.
// ---------------------------------------------------------------------------------------------

/// The handler duplicates each connection's fd, then closes the first connection; its peer
/// keeps writing into the (still open) duplicate. Returns the stale events the loop saw.
fn stale_events_after_close_with_dup(known_bad: KnownBad) -> u64 {
    // The victim keeps its end open and writing, so the close ends at the linger bound.
    let linger = Duration::from_millis(50);
    let server = lines_server(Config {
        close_linger: linger,
        ..config(known_bad)
    });
    let (mut handler, rx) = Recorder::<Lines>::new(true);
    handler.dup_fds = true;
    handler.close_on = Some("close me".to_string());
    let running = Running::spawn(server, handler);
    let addr = running.addr.unwrap();
    let victim = client(addr);
    let Event::Connected { dup, .. } = next(&rx) else {
        panic!("expected a connect")
    };
    let dup = dup.expect("dup requested");
    send(&victim, "close me\n");
    wait_for(&rx, PATIENCE, |e| {
        matches!(e, Event::Disconnected { .. }).then_some(())
    })
    .expect("closed");
    // The duplicate keeps the file description (and, without DEL, its epoll registration) alive.
    for i in 0..5 {
        send(&victim, &format!("after close {i}\n"));
    }
    // A round trip on another connection: the loop has handled every earlier event after it.
    let probe = client(addr);
    send(&probe, "probe\n");
    assert_eq!(read_lines(&probe, 1, PATIENCE), ["probe"]);
    let stale = running.handle.stats().stale_events;
    drop((victim, probe, dup));
    running.stop().expect("run");
    stale
}

#[test]
fn epoll_del_before_close_silences_a_duplicated_fd() {
    assert_eq!(stale_events_after_close_with_dup(KnownBad::None), 0);
}

#[test]
fn teeth_close_without_del_keeps_reporting_events_for_the_dead_connection() {
    let stale = stale_events_after_close_with_dup(KnownBad::CloseWithoutDelete);
    assert!(
        stale > 0,
        "without EPOLL_CTL_DEL the duplicate keeps firing"
    );
}

// ---------------------------------------------------------------------------------------------
// 8. fd numbers are reused at once.
// ---------------------------------------------------------------------------------------------

/// Closes connection A, opens B in the same slot, then sends to A through its stale handle and
/// stale id. Returns what B's client receives first, and A's results.
fn stale_sends_after_reuse(known_bad: KnownBad) -> (Vec<String>, bool, bool) {
    let server = lines_server(config(known_bad));
    let (handler, rx) = Recorder::<Lines>::new(true);
    let running = Running::spawn(server, handler);
    let mut loop_handle = running.handle.clone();
    let addr = running.addr.unwrap();
    let a = client(addr);
    let Event::Connected {
        id: a_id,
        handle: mut a_handle,
        ..
    } = next(&rx)
    else {
        panic!()
    };
    drop(a);
    wait_for(&rx, PATIENCE, |e| match e {
        Event::Disconnected { id, .. } if id == a_id => Some(()),
        _ => None,
    })
    .expect("A closed");
    let b = client(addr);
    let Event::Connected {
        id: b_id,
        handle: mut b_handle,
        ..
    } = next(&rx)
    else {
        panic!()
    };
    assert_eq!(b_id.index(), a_id.index(), "B reuses A's slot");
    assert_ne!(b_id, a_id, "but not its id");
    let via_handle = a_handle.send("stale via handle".to_string());
    let via_id = loop_handle.send_to(a_id, "stale via id".to_string());
    b_handle.send("for B".to_string()).unwrap();
    let got = read_lines(&b, 1, PATIENCE);
    drop(b);
    running.stop().expect("run");
    (
        got,
        matches!(via_handle, Err(SendError::Closed(_))),
        matches!(via_id, Err(SendError::Closed(_))),
    )
}

#[test]
fn stale_handle_and_id_never_reach_a_new_connection_in_the_same_slot() {
    let (got, handle_closed, id_closed) = stale_sends_after_reuse(KnownBad::None);
    assert!(
        handle_closed,
        "a stale handle gets its message back as Closed"
    );
    assert!(id_closed, "a stale id gets its message back as Closed");
    assert_eq!(got, ["for B"], "B receives only its own message");
}

#[test]
fn teeth_ids_without_generation_deliver_stale_sends_to_the_new_connection() {
    let (got, handle_closed, id_closed) = stale_sends_after_reuse(KnownBad::NoGeneration);
    assert!(handle_closed, "the handle still owns A's closed queue");
    assert!(!id_closed, "the bad variant accepts the stale id");
    assert_eq!(got, ["stale via id"], "and B receives A's message");
}

// ---------------------------------------------------------------------------------------------
// 10. EINTR.
// ---------------------------------------------------------------------------------------------

/// Interrupts the loop thread with signals while a connection waits for its idle timeout;
/// returns how long the timeout took, the EINTR retries, and how `run` ended.
fn idle_timeout_under_signal_storm(known_bad: KnownBad) -> (Option<Duration>, u64, bool) {
    refloop::reactor::testing::install_noop_sigusr1().unwrap();
    let idle = Duration::from_millis(300);
    let server = lines_server(Config {
        idle_timeout: Some(idle),
        ..config(known_bad)
    });
    let (handler, rx) = Recorder::<Lines>::new(true);
    let running = Running::spawn(server, handler);
    let stream = client(running.addr.unwrap());
    let start = Instant::now();
    next(&rx);
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let handle = running.handle.clone();
    let storm = std::thread::spawn(move || {
        let mut sent = 0u64;
        // Paced by a bounded receive that doubles as the stop signal.
        while let Err(mpsc::RecvTimeoutError::Timeout) =
            stop_rx.recv_timeout(Duration::from_millis(2))
        {
            match handle.interrupt_loop_thread() {
                Ok(true) => sent += 1,
                _ => break,
            }
        }
        sent
    });
    let (_, eof) = read_to_eof(&stream, Duration::from_secs(3));
    let took = eof.then(|| start.elapsed());
    drop(stream);
    let stats = running.handle.stats();
    drop(stop_tx);
    let sent = storm.join().unwrap();
    assert!(sent > 0, "signals were sent");
    let ok = running.stop().is_ok();
    (took, stats.eintr_retries, ok)
}

#[test]
fn eintr_storm_neither_kills_the_loop_nor_delays_the_idle_timeout() {
    let (took, retries, ok) = idle_timeout_under_signal_storm(KnownBad::None);
    println!("@@stat eintr-retries signal_storm {retries}");
    assert!(ok, "run survives EINTR");
    assert!(retries > 0, "epoll_wait was interrupted and retried");
    let took = took.expect("the idle connection was closed");
    assert!(took >= Duration::from_millis(300), "not early: {took:?}");
    assert!(
        took < Duration::from_millis(2500),
        "not stretched by the storm: {took:?}"
    );
}

#[test]
fn teeth_eintr_treated_as_fatal_ends_run_with_an_error() {
    let (_, _, ok) = idle_timeout_under_signal_storm(KnownBad::EintrFatal);
    assert!(!ok, "the bad variant lets EINTR end the loop");
}

// ---------------------------------------------------------------------------------------------
// 11 to 14. The eventfd wake-up.
// ---------------------------------------------------------------------------------------------

/// A cross-thread send wakes the loop; between the loop's two wake-up steps a second send lands.
/// Returns the lines the client receives before the stall bound.
fn sends_around_the_wakeup(known_bad: KnownBad, wait: Duration) -> Vec<String> {
    let mut server = lines_server(config(known_bad));
    let (handle_tx, handle_rx) = mpsc::channel::<refloop::ConnHandle<Lines>>();
    let mut pending: Option<refloop::ConnHandle<Lines>> = None;
    let mut fired = false;
    server.set_wake_hook(move || {
        if fired {
            return;
        }
        if pending.is_none() {
            pending = handle_rx.try_recv().ok();
        }
        if let Some(h) = pending.as_mut() {
            fired = true;
            h.send("second".to_string()).unwrap();
        }
    });
    let (handler, rx) = Recorder::<Lines>::new(true);
    let running = Running::spawn(server, handler);
    let stream = client(running.addr.unwrap());
    let Event::Connected { mut handle, .. } = next(&rx) else {
        panic!()
    };
    handle_tx.send(handle.clone()).unwrap();
    handle.send("first".to_string()).unwrap();
    let got = read_lines(&stream, 2, wait);
    drop(stream);
    // A lost wake-up also strands the shutdown command behind it: write the eventfd directly.
    running.handle.wake_unconditionally().unwrap();
    running.stop().expect("run");
    got
}

#[test]
fn eventfd_is_reset_before_the_queues_are_drained() {
    assert_eq!(
        sends_around_the_wakeup(KnownBad::None, PATIENCE),
        ["first", "second"]
    );
}

#[test]
fn teeth_drain_before_eventfd_reset_loses_a_wakeup() {
    let got = sends_around_the_wakeup(KnownBad::DrainBeforeEventfdReset, STALL);
    assert_eq!(
        got,
        ["first"],
        "the second send's wake-up is eaten by the late reset"
    );
}

/// Sends 1000 messages through one handle; returns how many arrived before the stall bound and
/// how many eventfd writes the sends made.
fn burst_through_handle(known_bad: KnownBad, wait: Duration) -> (usize, u64) {
    let server = lines_server(config(known_bad));
    let (handler, rx) = Recorder::<Lines>::new(true);
    let running = Running::spawn(server, handler);
    let stream = client(running.addr.unwrap());
    let Event::Connected { mut handle, .. } = next(&rx) else {
        panic!()
    };
    let before = running.handle.stats().signals;
    for i in 0..1000 {
        handle.send(format!("m{i}")).unwrap();
    }
    let signals = running.handle.stats().signals - before;
    let got = read_lines(&stream, 1000, wait);
    assert!(
        got.iter().enumerate().all(|(i, l)| *l == format!("m{i}")),
        "in order"
    );
    drop(stream);
    // A skipped wake-up also strands the shutdown command behind it: write the eventfd directly.
    running.handle.wake_unconditionally().unwrap();
    running.stop().expect("run");
    (got.len(), signals)
}

#[test]
fn a_push_onto_an_empty_queue_wakes_the_loop() {
    let (got, signals) = burst_through_handle(KnownBad::None, PATIENCE);
    assert_eq!(got, 1000);
    assert!(signals >= 1);
}

#[test]
fn teeth_skipping_the_wakeup_strands_queued_messages() {
    let (got, _) = burst_through_handle(KnownBad::SkipWake, STALL);
    assert_eq!(got, 0, "nothing drains a queue the loop never heard about");
}

#[test]
fn only_the_first_push_on_an_empty_queue_writes_the_eventfd() {
    let (got, signals) = burst_through_handle(KnownBad::None, PATIENCE);
    assert_eq!(got, 1000);
    println!("@@stat eventfd-writes-per-1000-sends wake_coalescing {signals}");
    assert!(signals < 1000, "{signals} eventfd writes for 1000 sends");
}

#[test]
fn teeth_waking_on_every_push_makes_a_syscall_per_message() {
    let (got, signals) = burst_through_handle(KnownBad::WakeEveryPush, PATIENCE);
    assert_eq!(got, 1000, "wasteful, not wrong");
    assert!(signals >= 1000, "the check sees the difference: {signals}");
}

// ---------------------------------------------------------------------------------------------
// Loop-level behaviour the notes imply.
// ---------------------------------------------------------------------------------------------

#[test]
fn idle_connection_is_closed_with_idle_timeout() {
    let server = lines_server(Config {
        idle_timeout: Some(Duration::from_millis(150)),
        ..Config::default()
    });
    let (handler, rx) = Recorder::<Lines>::new(true);
    let running = Running::spawn(server, handler);
    let stream = client(running.addr.unwrap());
    let (_, eof) = read_to_eof(&stream, PATIENCE);
    assert!(eof, "the idle connection is closed");
    drop(stream);
    let reason = wait_for(&rx, PATIENCE, |e| match e {
        Event::Disconnected { disconnect, .. } => Some(disconnect.reason),
        _ => None,
    });
    assert!(
        matches!(reason, Some(DisconnectReason::IdleTimeout)),
        "{reason:?}"
    );
    running.stop().expect("run");
}

#[test]
fn oversized_frame_closes_the_connection_with_a_framing_error() {
    let server = Server::bind("127.0.0.1:0", Lines::new(100), Config::default()).unwrap();
    let (handler, rx) = Recorder::<Lines>::new(true);
    let running = Running::spawn(server, handler);
    let stream = client(running.addr.unwrap());
    send(&stream, "short\n");
    // 1 MiB without a newline: the loop must stop buffering at the limit.
    let flood = "x".repeat(1 << 20);
    // Ignored: the loop may reset the connection while we are still writing.
    let _ = (&stream).write_all(flood.as_bytes());
    // The earlier reply is flushed, then the loop shuts down its side (EOF for us).
    let (bytes, eof) = read_to_eof(&stream, PATIENCE);
    assert_eq!(bytes, b"short\n", "earlier replies are still flushed");
    assert!(eof);
    // Hanging up ends the loop's linger, and the close is reported.
    drop(stream);
    let reason = wait_for(&rx, PATIENCE, |e| match e {
        Event::Disconnected { disconnect, .. } => Some(disconnect.reason),
        _ => None,
    });
    match reason {
        Some(DisconnectReason::Framing(refloop::framing::FrameError::TooLong {
            limit, ..
        })) => {
            assert_eq!(limit, 100)
        }
        other => panic!("expected a too-long framing error, got {other:?}"),
    }
    running.stop().expect("run");
}

#[test]
fn unix_socket_listener_echoes_and_removes_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("echo.sock");
    let server = Server::bind_unix(&path, Lines::new(1024), Config::default()).unwrap();
    let (handler, _rx) = Recorder::<Lines>::new(true);
    let running = Running::spawn(server, handler);
    let mut stream = std::os::unix::net::UnixStream::connect(&path).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(b"over unix\n").unwrap();
    let mut reader = std::io::BufReader::new(&stream);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
    assert_eq!(line, "over unix\n");
    drop(stream);
    running.stop().expect("run");
    assert!(!path.exists(), "the socket path is removed at shutdown");
}

#[test]
fn ipv6_loopback_listener_reports_its_bound_address_and_echoes() {
    let Ok(server) = Server::bind("[::1]:0", Lines::new(1024), Config::default()) else {
        // FIXME: a host without IPv6 loopback cannot run this scenario; assert why.
        let probe = std::net::TcpListener::bind("[::1]:0");
        assert!(
            probe.is_err(),
            "IPv6 loopback works for std but not for the loop"
        );
        return;
    };
    let addr = server.local_addr().unwrap();
    assert!(addr.is_ipv6() && addr.port() != 0);
    let (handler, _rx) = Recorder::<Lines>::new(true);
    let running = Running::spawn(server, handler);
    let stream = client(addr);
    send(&stream, "v6\n");
    assert_eq!(read_lines(&stream, 1, PATIENCE), ["v6"]);
    drop(stream);
    running.stop().expect("run");
}

#[test]
fn outbound_connect_completes_and_a_refused_connect_is_reported() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap();
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let server: Server<Lines> = Server::new(Lines::new(1024), Config::default()).unwrap();
    let (handler, rx) = Recorder::<Lines>::new(false);
    let running = Running::spawn(server, handler);
    running.handle.connect(target).unwrap();
    running.handle.connect(refused).unwrap();
    let (peer, _) = listener.accept().unwrap();
    peer.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut connected = None;
    let mut failed = None;
    while connected.is_none() || failed.is_none() {
        match next(&rx) {
            Event::Connected {
                handle,
                outbound,
                peer,
                ..
            } => {
                assert!(outbound);
                assert_eq!(peer, refloop::Endpoint::Tcp(target));
                connected = Some(handle);
            }
            Event::ConnectFailed { target: t, error } => {
                assert_eq!(t, refloop::Endpoint::Tcp(refused));
                failed = Some(error.kind());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(failed, Some(std::io::ErrorKind::ConnectionRefused));
    connected
        .unwrap()
        .send("hello upstream".to_string())
        .unwrap();
    assert_eq!(read_lines(&peer, 1, PATIENCE), ["hello upstream"]);
    send(&peer, "hello back\n");
    let msg = wait_for(&rx, PATIENCE, |e| match e {
        Event::Message { msg, .. } => Some(msg),
        _ => None,
    });
    assert_eq!(msg.as_deref(), Some("hello back"));
    // Hang up first, so shutdown does not wait out its linger bound for this peer.
    drop(peer);
    running.stop().expect("run");
}

#[test]
fn shutdown_flushes_pending_output_closes_everything_and_returns() {
    let cfg = Config {
        send_buffer_size: Some(4096),
        ..Config::default()
    };
    let server = lines_server(cfg);
    let (mut handler, rx) = Recorder::<Lines>::new(false);
    let payload = "p".repeat(999);
    handler.on_msg = Some(Box::new(move |conn, _| {
        for _ in 0..500 {
            conn.send(&payload).unwrap();
        }
    }));
    let running = Running::spawn(server, handler);
    let stream = client(running.addr.unwrap());
    send(&stream, "go\n");
    next(&rx);
    wait_for(&rx, PATIENCE, |e| {
        matches!(e, Event::Message { .. }).then_some(())
    })
    .unwrap();
    // Shut down while ~500 KB are still queued behind a 4 KiB send buffer.
    running.handle.shutdown();
    let reader = std::thread::spawn(move || read_to_eof(&stream, PATIENCE));
    let handler = running.join().expect("run returns Ok");
    let (bytes, eof) = reader.join().unwrap();
    assert!(eof, "the connection is closed");
    assert_eq!(
        bytes.len(),
        500 * 1000,
        "all pending output was flushed before the close"
    );
    let reason = wait_for(&rx, Duration::ZERO, |e| match e {
        Event::Disconnected { disconnect, .. } => Some(disconnect),
        _ => None,
    })
    .expect("disconnect reported before run returned");
    assert!(matches!(reason.reason, DisconnectReason::Shutdown));
    assert_eq!(reason.unsent_bytes, 0);
    drop(handler);
}

#[test]
fn backpressure_returns_full_and_pauses_reading_until_output_drains() {
    let cfg = Config {
        high_watermark: 64 * 1024,
        low_watermark: 16 * 1024,
        send_buffer_size: Some(4096),
        ..Config::default()
    };
    let server = lines_server(cfg);
    let (handler, rx) = Recorder::<Lines>::new(true);
    let running = Running::spawn(server, handler);
    let stream = client(running.addr.unwrap());
    let Event::Connected { mut handle, .. } = next(&rx) else {
        panic!()
    };
    // The client does not read: output piles up until the handle is refused.
    let line = "f".repeat(1023);
    let mut accepted = 0usize;
    let full = loop {
        match handle.send(line.clone()) {
            Ok(()) => accepted += 1,
            Err(SendError::Full(msg)) => break msg,
            Err(other) => panic!("unexpected {other}"),
        }
        assert!(accepted < 10_000, "the high watermark never pushed back");
    };
    assert_eq!(full, line, "Full hands the message back");
    // Now read everything: every accepted message arrives, then sending works again.
    let got = read_lines(&stream, accepted, PATIENCE);
    assert_eq!(got.len(), accepted);
    // The loop credits the budget right after each write call returns, but this thread can
    // read those bytes before the loop thread runs again; within a bounded wait the credit
    // lands and the send is taken.
    let started = std::time::Instant::now();
    let mut msg = "after drain".to_string();
    loop {
        match handle.send(msg) {
            Ok(()) => break,
            Err(SendError::Full(back)) if started.elapsed() < PATIENCE => {
                msg = back;
                std::thread::yield_now();
            }
            Err(other) => panic!("a drained connection refused a send: {other}"),
        }
    }
    assert_eq!(read_lines(&stream, 1, PATIENCE), ["after drain"]);
    drop(stream);
    running.stop().expect("run");
}

#[test]
fn conn_ids_name_slot_and_generation() {
    let server = lines_server(Config::default());
    let (handler, rx) = Recorder::<Lines>::new(true);
    let running = Running::spawn(server, handler);
    let addr = running.addr.unwrap();
    let mut seen: Vec<ConnId> = Vec::new();
    for _ in 0..3 {
        let c = client(addr);
        let Event::Connected { id, .. } = next(&rx) else {
            panic!()
        };
        drop(c);
        wait_for(&rx, PATIENCE, |e| {
            matches!(e, Event::Disconnected { .. }).then_some(())
        })
        .unwrap();
        seen.push(id);
    }
    assert!(
        seen.iter().all(|id| id.index() == seen[0].index()),
        "the slot is reused: {seen:?}"
    );
    assert!(
        seen.windows(2)
            .all(|w| w[1].generation() > w[0].generation()),
        "{seen:?}"
    );
    running.stop().expect("run");
}

#[test]
fn connections_over_max_connections_wait_in_the_backlog_until_one_closes() {
    let server = lines_server(Config {
        max_connections: 2,
        ..Config::default()
    });
    let (handler, rx) = Recorder::<Lines>::new(true);
    let running = Running::spawn(server, handler);
    let addr = running.addr.unwrap();
    let first = client(addr);
    let second = client(addr);
    let third = client(addr);
    for c in [&first, &second, &third] {
        send(c, "queued\n");
    }
    assert_eq!(read_lines(&first, 1, PATIENCE), ["queued"]);
    assert_eq!(read_lines(&second, 1, PATIENCE), ["queued"]);
    // The third waits in the listen backlog: connected as far as TCP goes, but not served.
    assert!(
        read_lines(&third, 1, STALL).is_empty(),
        "over the limit, not served yet"
    );
    drop(first);
    // A close frees a slot and the loop accepts again without a new listener edge.
    assert_eq!(read_lines(&third, 1, PATIENCE), ["queued"]);
    let accepted = running.handle.stats().accepted;
    assert_eq!(accepted, 3);
    drop((second, third));
    drop(rx);
    running.stop().expect("run");
}

#[test]
fn outbound_connect_to_a_unix_socket_path_exchanges_messages() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("upstream.sock");
    let upstream = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let server: Server<Lines> = Server::new(Lines::new(1024), Config::default()).unwrap();
    let (handler, rx) = Recorder::<Lines>::new(true);
    let running = Running::spawn(server, handler);
    running.handle.connect(path.clone()).unwrap();
    let (peer, _) = upstream.accept().unwrap();
    peer.set_read_timeout(Some(PATIENCE)).unwrap();
    let Event::Connected {
        outbound,
        peer: seen,
        ..
    } = next(&rx)
    else {
        panic!("expected a connect")
    };
    assert!(outbound);
    assert_eq!(seen, refloop::Endpoint::Unix(Some(path)));
    (&peer).write_all(b"over a unix connect\n").unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(&peer), &mut line).unwrap();
    assert_eq!(line, "over a unix connect\n", "the loop's echo comes back");
    drop(peer);
    running.stop().expect("run");
}
