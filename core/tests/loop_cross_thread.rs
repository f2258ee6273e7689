//! Cross-thread sends from several threads while connections close, with exactly-once
//! accounting: every message a `ConnHandle::send` accepted is either read by the peer or counted
//! in `on_disconnect`; every other message came back to its sender as `Closed` or `Full`.

mod loop_support;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::sync::mpsc;

use loop_support::*;
use refloop::framing::Lines;
use refloop::reactor::KnownBad;
use refloop::{Config, ConnHandle, ConnId, Disconnect, SendError};

const CONNS: usize = 4;
const SENDERS: usize = 3;
const PER_SENDER: usize = 3000;
/// A bound that only a loop that never closes would reach.
const MAX_ROUNDS: usize = 10_000_000;

/// What one sender thread got back for one connection.
#[derive(Default)]
struct Tally {
    ok: Vec<String>,
    closed: usize,
    full: usize,
}

/// A small watermark so that `Full` really happens while the peers read.
fn racing_config() -> Config {
    Config {
        high_watermark: 8 * 1024,
        low_watermark: 2 * 1024,
        ..Config::default()
    }
}

#[test]
fn cross_thread_sends_are_accounted_exactly_once_while_connections_close() {
    let server = lines_server(racing_config());
    let (mut handler, rx) = Recorder::<Lines>::new(false);
    handler.close_on = Some("bye".to_string());
    let running = Running::spawn(server, handler);
    sends_race_closes_exactly_once(running.addr.unwrap(), &rx);
    running.stop().expect("run");
}

/// The multi-loop twin: the same check over two `SO_REUSEPORT` loops, whose connections (and
/// so the handles the senders use) are spread over both.
#[test]
fn cross_thread_sends_are_accounted_exactly_once_while_connections_close_on_two_loops() {
    let group = refloop::Loops::bind(
        "127.0.0.1:0",
        2,
        refloop::Sharing::ReusePort,
        Lines::new(64 * 1024),
        racing_config(),
    )
    .expect("bind");
    let (recorders, rx) = Recorder::<Lines>::group(2, false, |r| {
        r.close_on = Some("bye".to_string());
    });
    let running = Running::spawn_group(group, recorders);
    let addr = running.addr.unwrap();
    // The kernel places each connection on a loop by a hash of its addresses; rerun until
    // the connections span both loops (4 connections all land on one loop 1 time in 8).
    let mut spanned = false;
    for _ in 0..8 {
        let ids = sends_race_closes_exactly_once(addr, &rx);
        if ids.iter().any(|id| id.loop_index() == 0) && ids.iter().any(|id| id.loop_index() == 1) {
            spanned = true;
            break;
        }
    }
    assert!(spanned, "the connections never spanned both loops");
    let handlers = running.stop().expect("run");
    assert_eq!(handlers.len(), 2, "shutdown returns every loop's handler");
}

/// Senders race the closes of `CONNS` connections to `addr`; checks exactly-once accounting
/// from the events on `rx`.
fn sends_race_closes_exactly_once(
    addr: std::net::SocketAddr,
    rx: &mpsc::Receiver<Event<Lines>>,
) -> Vec<ConnId> {
    // Each peer reads everything; after 50 lines it asks the loop to close the connection,
    // while the senders are still going, then reads on until EOF.
    let mut peers = Vec::new();
    let mut handles: Vec<ConnHandle<Lines>> = Vec::new();
    let mut ids: Vec<ConnId> = Vec::new();
    for _ in 0..CONNS {
        let stream = client(addr);
        let Event::Connected { id, handle, .. } = next(rx) else {
            panic!("expected a connect")
        };
        ids.push(id);
        handles.push(handle);
        peers.push(std::thread::spawn(move || {
            let mut lines = Vec::new();
            let mut reader = BufReader::new(&stream);
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) => break,
                    Ok(_) => {
                        assert!(
                            line.ends_with('\n'),
                            "a whole line, never a torn one: {line:?}"
                        );
                        line.pop();
                        lines.push(line);
                        if lines.len() == 50 {
                            (&stream).write_all(b"bye\n").unwrap();
                        }
                    }
                    Err(e) => panic!("peer read failed: {e}"),
                }
            }
            lines
        }));
    }

    let (tally_tx, tally_rx) = mpsc::channel::<(usize, usize, Tally)>();
    let senders: Vec<_> = (0..SENDERS)
        .map(|t| {
            let mut handles: Vec<ConnHandle<Lines>> = handles.clone();
            let tally_tx = tally_tx.clone();
            std::thread::spawn(move || {
                let mut tallies: Vec<Tally> = (0..CONNS).map(|_| Tally::default()).collect();
                let mut open = [true; CONNS];
                // Send until every connection has refused a message: each peer asks for its
                // close after 50 lines, so this ends however the threads are scheduled, and the
                // sends always race the closes.
                let mut i = 0;
                while open.iter().any(|&o| o) {
                    assert!(i < MAX_ROUNDS, "the connections never closed");
                    i += 1;
                    for (c, handle) in handles.iter_mut().enumerate() {
                        if !open[c] {
                            continue;
                        }
                        let msg = format!("s{t}-c{c}-{i}");
                        match handle.send(msg.clone()) {
                            Ok(()) => tallies[c].ok.push(msg),
                            Err(SendError::Closed(back)) => {
                                assert_eq!(back, msg, "Closed hands the message back");
                                tallies[c].closed += 1;
                                open[c] = false;
                            }
                            Err(SendError::Full(back)) => {
                                assert_eq!(back, msg, "Full hands the message back");
                                tallies[c].full += 1;
                            }
                            Err(other) => panic!("unexpected {other}"),
                        }
                    }
                }
                for (c, tally) in tallies.into_iter().enumerate() {
                    tally_tx.send((t, c, tally)).unwrap();
                }
            })
        })
        .collect();
    drop(tally_tx);
    drop(handles);
    for sender in senders {
        sender.join().unwrap();
    }
    let mut tallies: HashMap<(usize, usize), Tally> = HashMap::new();
    for (t, c, tally) in tally_rx {
        tallies.insert((t, c), tally);
    }
    let received: Vec<Vec<String>> = peers.into_iter().map(|p| p.join().unwrap()).collect();

    let mut disconnects: HashMap<ConnId, Disconnect> = HashMap::new();
    while disconnects.len() < CONNS {
        if let Event::Disconnected { id, disconnect } = next(rx) {
            disconnects.insert(id, disconnect);
        }
    }

    let (mut total_ok, mut total_closed, mut total_full) = (0, 0, 0);
    for c in 0..CONNS {
        let got = &received[c];
        let unique: HashSet<&String> = got.iter().collect();
        assert_eq!(
            unique.len(),
            got.len(),
            "conn {c}: no message is delivered twice"
        );
        let mut ok: HashSet<&String> = HashSet::new();
        for t in 0..SENDERS {
            let tally = &tallies[&(t, c)];
            total_ok += tally.ok.len();
            total_closed += tally.closed;
            total_full += tally.full;
            ok.extend(tally.ok.iter());
            // Per producer, the queue keeps order.
            let prefix = format!("s{t}-");
            let seq: Vec<usize> = got
                .iter()
                .filter(|l| l.starts_with(&prefix))
                .map(|l| l.rsplit('-').next().unwrap().parse().unwrap())
                .collect();
            assert!(
                seq.windows(2).all(|w| w[0] < w[1]),
                "conn {c}, sender {t}: in order"
            );
        }
        assert!(
            unique.iter().all(|l| ok.contains(*l)),
            "conn {c}: only accepted messages arrive"
        );
        let d = &disconnects[&ids[c]];
        assert_eq!(
            ok.len(),
            got.len() + d.undelivered_messages,
            "conn {c}: every accepted message is delivered or counted undelivered ({:?})",
            d.reason
        );
        if d.undelivered_messages == 0 {
            assert_eq!(
                d.unsent_bytes, 0,
                "conn {c}: nothing delivered was left unsent"
            );
        }
    }
    println!("@@stat cross-thread-ok exactly_once {total_ok}");
    println!("@@stat cross-thread-closed exactly_once {total_closed}");
    println!("@@stat cross-thread-full exactly_once {total_full}");
    assert_eq!(
        total_closed,
        SENDERS * CONNS,
        "every sender saw every connection close"
    );
    ids
}

/// Per connection: bytes accepted by `send`, bytes the peer read, and `unsent_bytes`.
fn accepted_read_unsent(known_bad: KnownBad) -> Vec<(usize, usize, usize)> {
    // Peers that stop reading: the loop's close makes no write progress for `close_linger`
    // (there is no idle timeout), so it resets the connection and counts as unsent both what
    // it held and what the kernel held unacknowledged. What the peer's kernel acknowledged
    // stays readable after the reset, so peer bytes + unsent = accepted.
    let cfg = Config {
        send_buffer_size: Some(4096),
        high_watermark: 256 * 1024,
        low_watermark: 64 * 1024,
        idle_timeout: None,
        close_linger: std::time::Duration::from_millis(100),
        known_bad,
        ..Config::default()
    };
    let server = lines_server(cfg);
    let (mut handler, rx) = Recorder::<Lines>::new(false);
    handler.close_on = Some("bye".to_string());
    let running = Running::spawn(server, handler);
    let addr = running.addr.unwrap();
    let mut streams = Vec::new();
    let mut handles: Vec<ConnHandle<Lines>> = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..2 {
        // A small receive buffer, so the kernel cannot absorb the piled-up output.
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&addr.into()).unwrap();
        streams.push(std::net::TcpStream::from(socket));
        let Event::Connected { id, handle, .. } = next(&rx) else {
            panic!("expected a connect")
        };
        ids.push(id);
        handles.push(handle);
    }
    let senders: Vec<_> = (0..SENDERS)
        .map(|t| {
            let mut handles = handles.clone();
            std::thread::spawn(move || {
                let mut ok_bytes = vec![0usize; handles.len()];
                for i in 0..PER_SENDER {
                    for (c, handle) in handles.iter_mut().enumerate() {
                        let msg = format!("s{t}-c{c}-{i}-{}", "x".repeat(100));
                        let len = msg.len() + 1;
                        if handle.send(msg).is_ok() {
                            ok_bytes[c] += len;
                        }
                    }
                }
                ok_bytes
            })
        })
        .collect();
    let ok_bytes: Vec<usize> = senders.into_iter().fold(vec![0; 2], |mut acc, s| {
        for (a, b) in acc.iter_mut().zip(s.join().unwrap()) {
            *a += b;
        }
        acc
    });
    // Ask for the close while output is piled up to the watermark and nobody reads.
    for stream in &streams {
        send(stream, "bye\n");
    }
    drop(handles);
    let mut disconnects: HashMap<ConnId, Disconnect> = HashMap::new();
    while disconnects.len() < 2 {
        if let Event::Disconnected { id, disconnect } = next(&rx) {
            disconnects.insert(id, disconnect);
        }
    }
    // Only now read what the kernel holds and still delivers.
    let mut out = Vec::new();
    for (c, stream) in streams.iter().enumerate() {
        // A reset (the loop gave up) or, for the known-bad variant that counts nothing, a FIN.
        let (bytes, _eof) = read_to_eof(stream, PATIENCE);
        out.push((ok_bytes[c], bytes.len(), disconnects[&ids[c]].unsent_bytes));
    }
    running.stop().expect("run");
    out
}

#[test]
fn unsent_bytes_are_counted_exactly_when_a_close_cannot_flush() {
    for (c, (accepted, read, unsent)) in
        accepted_read_unsent(KnownBad::None).into_iter().enumerate()
    {
        assert!(unsent > 0, "conn {c}: the scenario must leave bytes unsent");
        assert_eq!(
            accepted,
            read + unsent,
            "conn {c}: accepted = delivered + counted unsent"
        );
    }
}

#[test]
fn teeth_a_close_that_forgets_its_unsent_bytes_breaks_the_accounting() {
    let counts = accepted_read_unsent(KnownBad::UncountedUnsent);
    assert!(
        counts
            .iter()
            .any(|&(accepted, read, unsent)| accepted != read + unsent),
        "the check must see bytes that vanished: {counts:?}"
    );
}

/// Found by the integration schedules: a connection that closed with unsent output over the
/// high watermark kept its pending-bytes budget, so its handles answered `Full` (try later)
/// instead of `Closed` (never). A sender retrying on `Full` would retry forever.
#[test]
fn a_handle_to_a_connection_closed_over_its_watermark_answers_closed_not_full() {
    let cfg = Config {
        send_buffer_size: Some(4096),
        high_watermark: 8 * 1024,
        low_watermark: 2 * 1024,
        idle_timeout: None,
        close_linger: std::time::Duration::from_millis(50),
        ..Config::default()
    };
    let (mut handler, rx) = Recorder::<Lines>::new(false);
    // On "bye", queue far more output than the kernel can absorb for a peer that never reads,
    // then close: the close makes no write progress for `close_linger`, so the connection
    // dies over its watermark.
    handler.on_msg = Some(Box::new(|conn, msg: &String| {
        if msg == "bye" {
            for _ in 0..16 {
                conn.send(&"w".repeat(60_000))
                    .expect("a line within the limit");
            }
        }
    }));
    handler.close_on = Some("bye".to_string());
    let running = Running::spawn(lines_server(cfg), handler);
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&running.addr.unwrap().into()).unwrap();
    let stream = std::net::TcpStream::from(socket);
    let Event::Connected { id, mut handle, .. } = next(&rx) else {
        panic!("expected a connect")
    };
    send(&stream, "bye\n");
    let unsent = wait_for(&rx, PATIENCE, |e| match e {
        Event::Disconnected {
            id: gone,
            disconnect,
        } if gone == id => Some(disconnect.unsent_bytes),
        _ => None,
    });
    let unsent = unsent.expect("the close did not happen within the patience bound");
    assert!(
        unsent > 8 * 1024,
        "the scenario must close over the watermark: {unsent} unsent"
    );
    let after = handle.send("after the close".to_string());
    assert!(
        matches!(after, Err(SendError::Closed(_))),
        "a closed connection must answer Closed, whatever budget it died with: {after:?}"
    );
    drop(stream);
    running.stop().expect("run");
}
