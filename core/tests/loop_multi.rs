//! One loop per core: `Loops` with `SO_REUSEPORT` listeners or one `EPOLLEXCLUSIVE` listener
//! (EPOLL-NOTES 15 and 16), handles across loops, and a group shutdown that returns every
//! handler.

mod loop_support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

use loop_support::*;
use refloop::framing::Lines;
use refloop::reactor::KnownBad;
use refloop::{Config, Conn, ConnHandle, ConnId, Disconnect, Handler, Loops, Sharing, Stats};

/// An echo handler that reports, for every callback, the connection and the thread it ran on.
struct Where {
    loop_index: usize,
    seen: Sender<(ConnId, usize, ThreadId)>,
}

impl Handler<Lines> for Where {
    fn on_connect(&mut self, conn: &Conn<'_, Lines>) {
        self.note(conn.id());
    }

    fn on_message(&mut self, conn: &Conn<'_, Lines>, msg: String) {
        self.note(conn.id());
        conn.send(&msg).expect("a line within the limit");
    }

    fn on_disconnect(&mut self, id: ConnId, _disconnect: Disconnect) {
        self.note(id);
    }
}

impl Where {
    fn note(&self, id: ConnId) {
        // Ignored: the test may have stopped listening.
        let _ = self
            .seen
            .send((id, self.loop_index, std::thread::current().id()));
    }
}

/// A round trip: the echo of one line.
fn round_trip(stream: &TcpStream, reader: &mut BufReader<&TcpStream>, line: &str) {
    let mut stream = stream;
    stream.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut got = String::new();
    reader.read_line(&mut got).unwrap();
    assert_eq!(got, format!("{line}\n"));
}

/// Runs `n` clients against a two-loop group, one after another, each making a round trip and
/// staying open (so both loops are idle in `epoll_wait` whenever the next client connects).
/// Returns every loop's counters and the callbacks seen.
fn sequential_clients(
    sharing: Sharing,
    known_bad: KnownBad,
    n: usize,
) -> (Vec<Stats>, Vec<(ConnId, usize, ThreadId)>) {
    let group = Loops::bind(
        "127.0.0.1:0",
        2,
        sharing,
        Lines::new(1024),
        Config {
            known_bad,
            ..Config::default()
        },
    )
    .expect("bind");
    let addr = group.local_addr().unwrap();
    let handle = group.handle();
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        group.run(|loop_index| Where {
            loop_index,
            seen: tx.clone(),
        })
    });
    let mut clients = Vec::new();
    for i in 0..n {
        let stream = TcpStream::connect(addr).unwrap();
        let mut reader = BufReader::new(&stream);
        round_trip(&stream, &mut reader, &format!("client {i}"));
        drop(reader);
        clients.push(stream);
    }
    let stats = handle.stats();
    drop(clients);
    handle.shutdown();
    let handlers = thread.join().expect("group thread").expect("run");
    assert_eq!(handlers.len(), 2, "shutdown returns every loop's handler");
    drop(handlers);
    (stats, rx.try_iter().collect())
}

/// How many of `n` connections each loop got.
fn spread(sharing: Sharing, known_bad: KnownBad, n: usize) -> Vec<u64> {
    let (stats, _) = sequential_clients(sharing, known_bad, n);
    stats.iter().map(|s| s.accepted).collect()
}

#[test]
fn both_sharing_modes_spread_connections_and_starve_no_loop() {
    for sharing in [Sharing::ReusePort, Sharing::Exclusive] {
        let per_loop = spread(sharing, KnownBad::None, 1000);
        println!("@@stat spread-of-1000 {sharing:?} {per_loop:?}");
        assert_eq!(per_loop.iter().sum::<u64>(), 1000);
        assert!(
            per_loop.iter().all(|&n| n >= 350),
            "{sharing:?}: every loop gets at least 35%: {per_loop:?}"
        );
    }
}

#[test]
fn teeth_an_exclusive_listener_without_balancing_gives_one_loop_most_clients() {
    let per_loop = spread(Sharing::Exclusive, KnownBad::NoAcceptBalance, 1000);
    println!("@@stat spread-of-1000 Exclusive-unbalanced {per_loop:?}");
    assert!(
        per_loop.iter().any(|&n| n < 350),
        "the kernel's wake-up order alone is lopsided: {per_loop:?}"
    );
}

/// EPOLL-NOTES 16: `EPOLLONESHOT` is for an fd that several threads may handle; here a
/// connection lives on one loop for its whole life, so every callback for it runs on one
/// thread, the thread of the loop its id names.
#[test]
fn every_callback_for_a_connection_runs_on_its_own_loop_thread() {
    let (_, seen) = sequential_clients(Sharing::ReusePort, KnownBad::None, 300);
    let mut threads: BTreeMap<ConnId, BTreeSet<(usize, String)>> = BTreeMap::new();
    for (id, loop_index, thread) in seen {
        assert_eq!(
            id.loop_index(),
            loop_index,
            "the id names the loop it lives on"
        );
        threads
            .entry(id)
            .or_default()
            .insert((loop_index, format!("{thread:?}")));
    }
    assert_eq!(threads.len(), 300, "every connection was seen");
    for (id, on) in &threads {
        assert_eq!(on.len(), 1, "{id}: callbacks on one thread only: {on:?}");
    }
    let loops: BTreeSet<usize> = threads.values().flatten().map(|(l, _)| *l).collect();
    assert_eq!(loops.len(), 2, "both loops served connections");
}

/// A chat handler: every line goes to every connection of every loop, through the
/// connections' handles (a registry shared by the loops) or, for connections it knows only by
/// id, through `LoopHandle::send_to`.
/// Every open connection of every loop, by id.
type Members = Arc<Mutex<Vec<(ConnId, ConnHandle<Lines>)>>>;

struct Chat {
    members: Members,
    by_id: bool,
}

impl Handler<Lines> for Chat {
    fn on_connect(&mut self, conn: &Conn<'_, Lines>) {
        self.members
            .lock()
            .unwrap()
            .push((conn.id(), conn.handle()));
    }

    fn on_message(&mut self, conn: &Conn<'_, Lines>, msg: String) {
        let members: Vec<_> = self.members.lock().unwrap().clone();
        let mut loop_handle = conn.loop_handle();
        for (id, mut handle) in members {
            let line = format!("{}: {msg}", conn.id().loop_index());
            let sent = if self.by_id {
                loop_handle.send_to(id, line)
            } else {
                handle.send(line)
            };
            sent.expect("every member is open");
        }
    }
}

fn chat_reaches_every_loop(by_id: bool) {
    let group = Loops::bind(
        "127.0.0.1:0",
        2,
        Sharing::ReusePort,
        Lines::new(1024),
        Config::default(),
    )
    .unwrap();
    let addr = group.local_addr().unwrap();
    let handle = group.handle();
    let members = Arc::new(Mutex::new(Vec::new()));
    let shared = Arc::clone(&members);
    let thread = std::thread::spawn(move || {
        group.run(|_| Chat {
            members: Arc::clone(&shared),
            by_id,
        })
    });
    // Connect until both loops have a member (the kernel hashes connections to listeners).
    let mut clients = Vec::new();
    while clients.len() < 64 {
        clients.push(TcpStream::connect(addr).unwrap());
        let loops: BTreeSet<usize> = wait_members(&members, clients.len())
            .iter()
            .map(|id| id.loop_index())
            .collect();
        if loops.len() == 2 {
            break;
        }
    }
    let ids = wait_members(&members, clients.len());
    assert_eq!(
        ids.iter()
            .map(|id| id.loop_index())
            .collect::<BTreeSet<_>>()
            .len(),
        2,
        "members on both loops"
    );
    (&clients[0]).write_all(b"hello\n").unwrap();
    let speaker_loop = ids[0].loop_index();
    for client in &clients {
        client.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut line = String::new();
        BufReader::new(client).read_line(&mut line).unwrap();
        assert_eq!(line, format!("{speaker_loop}: hello\n"));
    }
    handle.shutdown();
    drop(clients);
    let handlers = thread.join().unwrap().unwrap();
    assert_eq!(handlers.len(), 2);
}

/// Waits (bounded) until `n` members registered; returns their ids in order.
fn wait_members(members: &Mutex<Vec<(ConnId, ConnHandle<Lines>)>>, n: usize) -> Vec<ConnId> {
    let started = std::time::Instant::now();
    loop {
        let ids: Vec<ConnId> = members.lock().unwrap().iter().map(|(id, _)| *id).collect();
        if ids.len() >= n {
            return ids;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "only {} of {n} members",
            ids.len()
        );
        std::thread::yield_now();
    }
}

#[test]
fn a_handle_on_one_loop_reaches_connections_on_every_loop() {
    chat_reaches_every_loop(false);
}

#[test]
fn loop_handle_send_to_routes_an_id_to_the_loop_it_names() {
    chat_reaches_every_loop(true);
}

#[test]
fn a_group_of_zero_loops_is_rejected_with_an_error() {
    let err = Loops::new(0, Lines::new(64), Config::default()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

/// A shutdown asked of one loop (here from a handler) stops the whole group.
#[test]
fn one_loop_shutting_down_stops_the_group() {
    let group = Loops::bind(
        "127.0.0.1:0",
        2,
        Sharing::ReusePort,
        Lines::new(64),
        Config::default(),
    )
    .unwrap();
    let handle = group.handle();
    handle.loop_handle(1).unwrap().shutdown();
    let handlers = group.run(|loop_index| Where {
        loop_index,
        seen: mpsc::channel().0,
    });
    assert_eq!(handlers.unwrap().len(), 2);
}
