//! No fd leaks: after a loop has accepted, connected, failed to connect, been reset, closed
//! connections from both sides and shut down, the process has exactly the fds it had before.
//!
//! This file holds exactly one test, so nothing else in its process opens or closes fds while
//! it counts them (cargo runs test binaries one at a time).

mod loop_support;

use std::net::Shutdown;
use std::time::Duration;

use loop_support::*;
use refloop::framing::Lines;
use refloop::reactor::testing;
use refloop::{Config, Server};

/// One busy life of a loop: every way a connection can end, then shutdown.
fn busy_loop_life() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leak.sock");
    let mut server = Server::bind("127.0.0.1:0", Lines::new(1024), Config::default()).unwrap();
    server.listen_unix(&path).unwrap();
    let refused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    server.connect(upstream.local_addr().unwrap()).unwrap();
    server.connect(refused).unwrap();
    let (mut handler, rx) = Recorder::<Lines>::new(true);
    handler.close_on = Some("close".to_string());
    let running = Running::spawn(server, handler);
    let addr = running.addr.unwrap();
    let (upstream_peer, _) = upstream.accept().unwrap();

    // Closed by the peer, after an echo.
    let a = client(addr);
    send(&a, "a\n");
    assert_eq!(read_lines(&a, 1, PATIENCE), ["a"]);
    a.shutdown(Shutdown::Write).unwrap();
    assert!(read_to_eof(&a, PATIENCE).1);
    // Closed by the handler.
    let b = client(addr);
    send(&b, "close\n");
    assert!(read_to_eof(&b, PATIENCE).1);
    // Hanging up ends the loop's linger after its close.
    drop(b);
    // Reset by the peer.
    let c = client(addr);
    send(&c, "c\n");
    assert_eq!(read_lines(&c, 1, PATIENCE), ["c"]);
    socket2::SockRef::from(&c)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(c);
    // Over Unix, still open at shutdown.
    let d = std::os::unix::net::UnixStream::connect(&path).unwrap();
    // Still open at shutdown.
    let e = client(addr);
    send(&e, "e\n");
    assert_eq!(read_lines(&e, 1, PATIENCE), ["e"]);

    let mut closed = 0;
    let mut failed = 0;
    while closed < 3 || failed < 1 {
        match next(&rx) {
            Event::Disconnected { .. } => closed += 1,
            Event::ConnectFailed { .. } => failed += 1,
            _ => {}
        }
    }
    // Well-behaved peers: read to EOF, then hang up, which ends the loop's bounded linger.
    let readers = [
        std::thread::spawn(move || read_to_eof(&e, PATIENCE).1),
        std::thread::spawn(move || read_to_eof(&upstream_peer, PATIENCE).1),
        std::thread::spawn(move || {
            d.set_read_timeout(Some(PATIENCE)).unwrap();
            std::io::Read::read_to_end(&mut &d, &mut Vec::new()).is_ok()
        }),
    ];
    running.stop().expect("run");
    for reader in readers {
        assert!(
            reader.join().unwrap(),
            "shutdown closes every open connection"
        );
    }
    drop((a, upstream));
}

#[test]
fn no_fd_leaks_across_accept_connect_reset_close_and_shutdown() {
    // The first life opens whatever the runtime opens lazily, once.
    busy_loop_life();
    let before = testing::open_fd_count().unwrap();
    for _ in 0..3 {
        busy_loop_life();
    }
    let after = testing::open_fd_count().unwrap();
    assert_eq!(
        after, before,
        "fds open before and after three loop lifetimes"
    );
}
