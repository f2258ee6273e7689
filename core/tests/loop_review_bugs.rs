//! Real-socket regression tests for the bugs an outside review found in the shipped loop.
//!
//! Each test names the bug it pins; where the old behaviour is kept as a known-bad variant,
//! a teeth test shows the same check rejecting it. (Bug 3, a transient `ENOBUFS` from
//! `accept4`, cannot be provoked on a real kernel; the simulated kernel covers it.)

mod loop_support;

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use loop_support::*;
use refloop::framing::Lines;
use refloop::reactor::KnownBad;
use refloop::{Config, Conn, ConnId, Disconnect, Endpoint, Handler, Server};

/// A handler that reports messages, and blocks in `on_connect_failed` until released, so a
/// test can hold the loop thread between two steps of one turn.
struct Greeted {
    messages: Sender<String>,
    release: Receiver<()>,
}

impl Handler<Lines> for Greeted {
    fn on_message(&mut self, _conn: &Conn<'_, Lines>, msg: String) {
        // Ignored: the test may have stopped listening.
        let _ = self.messages.send(msg);
    }

    fn on_connect_failed(&mut self, _target: &Endpoint, _error: io::Error) {
        // Ignored: a dropped sender also releases the loop.
        let _ = self.release.recv_timeout(PATIENCE);
    }
}

/// Bug 1: the loop starts an outbound connect, then (in the same turn) is held while the
/// peer accepts and writes its greeting, so the next `epoll_wait` reports the connect's
/// completion (`EPOLLOUT`) and the greeting (`EPOLLIN`) in one event. Returns the greeting
/// if the handler got it.
fn greeting_after_connect(known_bad: KnownBad) -> Option<String> {
    let peer = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = peer.local_addr().unwrap();
    let mut server = Server::new(
        Lines::new(1024),
        Config {
            known_bad,
            ..Config::default()
        },
    )
    .unwrap();
    // Two commands drained in one batch: the real connect (in progress), then one that fails
    // at once, whose callback holds the loop thread.
    server.connect(target).unwrap();
    server.connect(Endpoint::Unix(None)).unwrap();
    let (messages_tx, messages) = mpsc::channel();
    let (release_tx, release) = mpsc::channel();
    let handle = server.handle();
    let thread = std::thread::spawn(move || {
        server.run(Greeted {
            messages: messages_tx,
            release,
        })
    });
    let (mut accepted, _) = peer.accept().unwrap();
    accepted.write_all(b"hello\n").unwrap();
    release_tx.send(()).unwrap();
    let got = messages.recv_timeout(STALL).ok();
    handle.shutdown();
    drop(accepted);
    thread.join().expect("loop thread").expect("run");
    got
}

#[test]
fn an_outbound_connect_whose_peer_speaks_first_delivers_the_greeting() {
    assert_eq!(
        greeting_after_connect(KnownBad::None).as_deref(),
        Some("hello")
    );
}

#[test]
fn teeth_a_connect_completion_that_skips_the_read_strands_the_greeting() {
    assert_eq!(greeting_after_connect(KnownBad::ConnectSkipsRead), None);
}

/// Bug 2: on "bye" the handler queues `TOTAL` bytes and closes; the peer reads them slowly,
/// 4 KiB per 10 ms, far longer than the 50 ms `close_linger`. With `peer_fin` the peer also
/// shuts down its write half first. Returns the bytes the peer got and whether it saw EOF.
fn slow_reader_after_close(known_bad: KnownBad, peer_fin: bool) -> (usize, bool) {
    const TOTAL: usize = 120 * 1024;
    let cfg = Config {
        send_buffer_size: Some(4096),
        close_linger: Duration::from_millis(50),
        known_bad,
        ..Config::default()
    };
    let (mut handler, rx) = Recorder::<Lines>::new(false);
    handler.on_msg = Some(Box::new(|conn, msg: &String| {
        if msg == "bye" {
            for _ in 0..TOTAL / 1024 {
                conn.send(&"r".repeat(1023))
                    .expect("a line within the limit");
            }
            conn.close();
        }
    }));
    let running = Running::spawn(lines_server(cfg), handler);
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&running.addr.unwrap().into()).unwrap();
    let mut stream = TcpStream::from(socket);
    let Event::Connected { .. } = next(&rx) else {
        panic!("expected a connect")
    };
    stream.write_all(b"bye\n").unwrap();
    if peer_fin {
        stream.shutdown(std::net::Shutdown::Write).unwrap();
    }
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut got = 0;
    let mut buf = [0u8; 4096];
    let eof = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got += n,
            Err(_) => break false,
        }
        // A slow reader: this is the peer's pace, not a synchronisation.
        std::thread::sleep(Duration::from_millis(10));
    };
    running.stop().expect("run");
    (got, eof)
}

#[test]
fn a_reader_slower_than_close_linger_gets_the_whole_reply_after_a_local_close() {
    assert_eq!(
        slow_reader_after_close(KnownBad::None, false),
        (120 * 1024, true)
    );
}

#[test]
fn a_reader_slower_than_close_linger_gets_the_whole_reply_after_its_own_fin() {
    assert_eq!(
        slow_reader_after_close(KnownBad::None, true),
        (120 * 1024, true)
    );
}

#[test]
fn teeth_a_flush_bounded_by_close_linger_truncates_a_slow_reader() {
    let (got, _) = slow_reader_after_close(KnownBad::LingerCutsFlush, false);
    assert!(got < 120 * 1024, "the known-bad flush must be cut: {got}");
}

/// A handler that panics on its first message.
struct Panics;

impl Handler<Lines> for Panics {
    fn on_message(&mut self, _conn: &Conn<'_, Lines>, _msg: String) {
        panic!("handler panics on purpose");
    }
}

/// Bug 4: once `run` has unwound, its thread may be gone and its id reused; the handle must
/// not signal it.
#[test]
fn after_run_unwinds_the_loop_handle_no_longer_names_its_thread() {
    let server = lines_server(Config::default());
    let handle = server.handle();
    let addr = server.local_addr().unwrap();
    let thread = std::thread::spawn(move || server.run(Panics));
    let mut client = TcpStream::connect(addr).unwrap();
    client.write_all(b"boom\n").unwrap();
    assert!(thread.join().is_err(), "the handler's panic unwinds run");
    assert!(
        !handle.interrupt_loop_thread().unwrap(),
        "no thread is signalled after run is gone"
    );
}

/// Bug 5: `Duration::MAX` means "never", not a panic.
#[test]
fn duration_max_timeouts_mean_never_and_the_loop_still_serves_and_shuts_down() {
    let cfg = Config {
        idle_timeout: Some(Duration::MAX),
        shutdown_timeout: Duration::MAX,
        close_linger: Duration::MAX,
        ..Config::default()
    };
    let (handler, rx) = Recorder::<Lines>::new(true);
    let running = Running::spawn(lines_server(cfg), handler);
    let client = client(running.addr.unwrap());
    let Event::Connected { .. } = next(&rx) else {
        panic!("expected a connect")
    };
    send(&client, "ping\n");
    assert_eq!(read_lines(&client, 1, PATIENCE), ["ping"]);
    drop(client);
    running.stop().expect("run");
}

/// Bugs 5 and 6: invalid values are rejected at construction, naming the field.
#[test]
fn invalid_config_values_are_rejected_with_an_error_naming_the_field() {
    let cases: Vec<(Config, &str)> = vec![
        (
            Config {
                low_watermark: 0,
                ..Config::default()
            },
            "low_watermark",
        ),
        (
            Config {
                low_watermark: 2 * 1024 * 1024,
                ..Config::default()
            },
            "low_watermark",
        ),
        (
            Config {
                read_chunk: 0,
                ..Config::default()
            },
            "read_chunk",
        ),
        (
            Config {
                fairness_budget: 0,
                ..Config::default()
            },
            "fairness_budget",
        ),
        (
            Config {
                max_connections: 0,
                ..Config::default()
            },
            "max_connections",
        ),
        (
            Config {
                events_capacity: 0,
                ..Config::default()
            },
            "events_capacity",
        ),
        (
            Config {
                max_frame_len: 0,
                ..Config::default()
            },
            "max_frame_len",
        ),
        (
            Config {
                idle_timeout: Some(Duration::ZERO),
                ..Config::default()
            },
            "idle_timeout",
        ),
    ];
    for (config, field) in cases {
        let err = Server::bind("127.0.0.1:0", Lines::new(64), config).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(
            err.to_string().contains(field),
            "the error names {field}: {err}"
        );
    }
    Config::default()
        .validate()
        .expect("the defaults are valid");
}

/// Bug 7: open and close `n` connections one after another; returns the timer heap's size
/// once the loop has seen every close.
fn timer_entries_after_closes(known_bad: KnownBad, n: usize) -> u64 {
    let (handler, rx) = Recorder::<Lines>::new(true);
    let running = Running::spawn(
        lines_server(Config {
            known_bad,
            ..Config::default()
        }),
        handler,
    );
    let addr = running.addr.unwrap();
    for _ in 0..n {
        drop(client(addr));
    }
    let mut closed = 0;
    while closed < n {
        if let Event::Disconnected { .. } = next(&rx) {
            closed += 1;
        }
    }
    // A round trip: the loop has waited again since the last close, refreshing the gauge.
    let probe = client(addr);
    send(&probe, "probe\n");
    assert_eq!(read_lines(&probe, 1, PATIENCE), ["probe"]);
    let entries = running.handle.stats().timer_entries;
    drop(probe);
    running.stop().expect("run");
    entries
}

#[test]
fn closed_connections_leave_no_timer_entries_behind() {
    let entries = timer_entries_after_closes(KnownBad::None, 500);
    // Twice the live connections (one probe) plus the compaction slack.
    assert!(
        entries <= 2 + 64,
        "{entries} timer entries for one live connection"
    );
}

#[test]
fn teeth_stale_timers_grow_with_the_closed_connections() {
    let entries = timer_entries_after_closes(KnownBad::StaleTimers, 500);
    assert!(
        entries >= 500,
        "the known-bad heap keeps every entry: {entries}"
    );
}

/// What an amplifying echo handler saw: the largest unsent output after any message.
struct Amplify {
    factor: usize,
    max_pending: Sender<usize>,
}

impl Handler<Lines> for Amplify {
    fn on_message(&mut self, conn: &Conn<'_, Lines>, msg: String) {
        for _ in 0..self.factor {
            conn.send(&msg).expect("a line within the limit");
        }
        // Ignored: the test may have stopped listening.
        let _ = self.max_pending.send(conn.pending_output());
    }

    fn on_disconnect(&mut self, _id: ConnId, _disconnect: Disconnect) {}
}

/// Bug 8: a peer that writes 192 KiB of 63-byte lines and does not read, against a 1 KiB
/// high watermark and a handler that answers each line `factor` times. Returns the largest
/// unsent output the handler saw.
fn max_unsent_within_a_pass(known_bad: KnownBad, factor: usize) -> usize {
    let cfg = Config {
        high_watermark: 1024,
        low_watermark: 512,
        send_buffer_size: Some(4096),
        known_bad,
        ..Config::default()
    };
    let (tx, rx) = mpsc::channel();
    let server = lines_server(cfg);
    let handle = server.handle();
    let addr = server.local_addr().unwrap();
    let thread = std::thread::spawn(move || {
        server.run(Amplify {
            factor,
            max_pending: tx,
        })
    });
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut stream = TcpStream::from(socket);
    let line = format!("{}\n", "a".repeat(62));
    let burst = line.repeat(192 * 1024 / 63);
    // The kernel takes what its buffers hold; the loop pauses reading, so the rest may block.
    stream.set_nonblocking(true).unwrap();
    let mut offered = burst.as_bytes();
    while !offered.is_empty() {
        match stream.write(offered) {
            Ok(n) => offered = &offered[n..],
            Err(_) => break,
        }
    }
    let mut max = 0;
    // Until the loop goes quiet: it has read all it will read before the peer drains.
    while let Ok(pending) = rx.recv_timeout(STALL) {
        max = max.max(pending);
    }
    handle.shutdown();
    drop(stream);
    thread.join().expect("loop thread").expect("run");
    max
}

#[test]
fn unsent_output_stays_within_the_high_watermark_plus_one_message_within_a_pass() {
    let max = max_unsent_within_a_pass(KnownBad::None, 1);
    assert!(max <= 1024 + 63, "unsent output reached {max} bytes");
}

#[test]
fn a_handler_that_sends_more_than_it_receives_is_bounded_too() {
    let max = max_unsent_within_a_pass(KnownBad::None, 8);
    assert!(max <= 1024 + 8 * 63, "unsent output reached {max} bytes");
}

#[test]
fn teeth_a_watermark_checked_between_passes_lets_output_grow_far_past_it() {
    let max = max_unsent_within_a_pass(KnownBad::WatermarkBetweenPasses, 1);
    assert!(max > 16 * 1024, "the known-bad pass must overshoot: {max}");
}

/// Bug 9: dropping a Unix-socket server leaves the socket file of a newer server alone.
#[test]
fn dropping_a_unix_server_keeps_the_socket_file_of_a_newer_server_at_the_same_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("srv.sock");
    let old = Server::bind_unix(&path, Lines::new(64), Config::default()).unwrap();
    // An operator (or a restart script) removes the file and a new server takes the path.
    std::fs::remove_file(&path).unwrap();
    let new = Server::bind_unix(&path, Lines::new(64), Config::default()).unwrap();
    drop(old);
    assert!(
        path.exists(),
        "the newer server's socket file is still there"
    );
    std::os::unix::net::UnixStream::connect(&path).expect("and it still accepts");
    drop(new);
    assert!(!path.exists(), "a server removes its own socket file");
}
