//! EPOLL-NOTES 9: `EMFILE` on accept neither spins nor stalls, and the handler is told.
//!
//! This file holds exactly one test, so its process lowers `RLIMIT_NOFILE` without starving any
//! other test of fds (cargo runs test binaries one at a time); the limit is restored before the
//! test returns.

mod loop_support;

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use loop_support::*;
use refloop::framing::Lines;
use refloop::reactor::{testing, KnownBad};
use refloop::Config;

/// What happened to the queued clients.
#[derive(Debug)]
struct Outcome {
    /// Clients whose line was echoed.
    served: usize,
    /// Clients that saw EOF or a reset without an echo (accepted and closed by the reserve fd).
    turned_away: usize,
    /// Clients that got nothing before the bound: stranded in the backlog.
    stranded: usize,
    /// `EMFILE` notices the handler got.
    notices: usize,
    /// Loop turns over the whole episode (a spinning listener would rack these up).
    turns: u64,
    /// A client arriving after fds were freed is served.
    recovered: bool,
}

fn outcome_under_fd_exhaustion(known_bad: KnownBad, wait: Duration) -> Outcome {
    const CLIENTS: usize = 40;
    const ROOM: u64 = 10;
    let server = lines_server(Config {
        known_bad,
        ..Config::default()
    });
    let addr = server.local_addr().unwrap();
    // Every client connects (and sends its line) before the loop runs: all sit in the backlog.
    let clients: Vec<TcpStream> = (0..CLIENTS).map(|_| client(addr)).collect();
    for c in &clients {
        send(c, "ping\n");
    }
    let (handler, rx) = Recorder::<Lines>::new(true);
    let (soft, _hard) = testing::nofile_limit().unwrap();
    let open = testing::open_fd_count().unwrap() as u64;
    // Room for about ROOM accepted connections, then EMFILE.
    testing::set_nofile_soft_limit(open + ROOM).unwrap();
    let running = Running::spawn(server, handler);

    let mut served = Vec::new();
    let mut turned_away = 0;
    let mut stranded = 0;
    // One deadline for all clients, so stranded ones cost `wait` in total, not each.
    let deadline = std::time::Instant::now() + wait;
    for c in clients {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        c.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let mut buf = [0u8; 5];
        match (&c).read(&mut buf) {
            Ok(5) if &buf == b"ping\n" => served.push(c),
            Ok(0) => turned_away += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => turned_away += 1,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                stranded += 1
            }
            other => panic!("unexpected client read result {other:?}"),
        }
    }
    let mut notices = 0;
    while let Ok(event) = rx.try_recv() {
        if let Event::AcceptError { .. } = event {
            notices += 1;
        }
    }
    // Free fds: the served clients hang up and the loop closes their connections.
    let freed = served.len();
    drop(served);
    let mut closed = 0;
    while closed < freed {
        match next(&rx) {
            Event::Disconnected { .. } => closed += 1,
            Event::AcceptError { .. } => notices += 1,
            _ => {}
        }
    }
    let late = client(addr);
    send(&late, "late\n");
    let recovered = read_lines(&late, 1, wait) == ["late"];
    drop(late);
    let turns = running.handle.stats().turns;
    running.stop().expect("run");
    testing::set_nofile_soft_limit(soft).unwrap();
    Outcome {
        served: freed,
        turned_away,
        stranded,
        notices,
        turns,
        recovered,
    }
}

#[test]
fn emfile_on_accept_neither_spins_nor_stalls_and_the_handler_is_told() {
    let good = outcome_under_fd_exhaustion(KnownBad::None, PATIENCE);
    println!("@@stat emfile-turned-away reserve_fd {}", good.turned_away);
    assert!(good.served >= 1, "{good:?}");
    assert!(
        good.turned_away >= 1,
        "the reserve fd accepts and closes the excess: {good:?}"
    );
    assert_eq!(good.stranded, 0, "no client is left hanging: {good:?}");
    assert!(
        good.notices >= 1,
        "the handler hears about EMFILE: {good:?}"
    );
    assert!(good.turns < 500, "the listener does not spin: {good:?}");
    assert!(
        good.recovered,
        "a client arriving after fds are freed is served: {good:?}"
    );

    // Teeth: without the reserve fd the edge-triggered listener strands the queued clients.
    let bad = outcome_under_fd_exhaustion(KnownBad::NoReserveFd, STALL);
    assert!(
        bad.stranded >= 1,
        "the known-bad variant must strand clients: {bad:?}"
    );
    assert_eq!(bad.turned_away, 0, "{bad:?}");
}
