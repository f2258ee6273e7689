//! Regression tests for the findings of the second outside review of the loop (R1-R5), each
//! the reviewer's own reproducer, which failed on the code before the fix.
mod loop_support;

use std::net::TcpStream;
use std::sync::mpsc;
use std::time::Duration;

use loop_support::*;
use refloop::framing::Lines;
use refloop::Config;

const TOTAL: usize = 120 * 1024;

/// A client with a 4 KiB receive buffer that has sent "bye".
fn small_client(addr: std::net::SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    TcpStream::from(socket)
}

fn big_reply_then_close() -> (Recorder<Lines>, mpsc::Receiver<Event<Lines>>) {
    let (mut handler, rx) = Recorder::<Lines>::new(false);
    handler.on_msg = Some(Box::new(|conn, msg: &String| {
        if msg == "bye" {
            for _ in 0..TOTAL / 1024 {
                conn.send(&"r".repeat(1023)).unwrap();
            }
            conn.close();
        }
    }));
    (handler, rx)
}

/// R1: a closing flush that hits the idle timeout is closed gracefully, not reset: the peer
/// reads a truncated reply that ends in a clean FIN.
#[test]
fn r1_flush_cut_by_idle_timeout_must_not_end_in_a_clean_fin() {
    let cfg = Config {
        send_buffer_size: Some(4096),
        idle_timeout: Some(Duration::from_millis(300)),
        ..Config::default()
    };
    let (handler, rx) = big_reply_then_close();
    let running = Running::spawn(lines_server(cfg), handler);
    let stream = small_client(running.addr.unwrap());
    let Event::Connected { id, .. } = next(&rx) else {
        panic!()
    };
    send(&stream, "bye\n");
    // Synchronise on the loop's own report, not on time: the close was abandoned.
    let d = wait_for(&rx, PATIENCE, |e| match e {
        Event::Disconnected { id: d, disconnect } if d == id => Some(disconnect),
        _ => None,
    })
    .expect("disconnect");
    println!("loop reported: {:?}", d);
    let (bytes, clean_eof) = read_to_eof(&stream, PATIENCE);
    println!(
        "peer read {} of {} bytes, clean EOF: {}",
        bytes.len(),
        TOTAL,
        clean_eof
    );
    assert!(
        bytes.len() == TOTAL || !clean_eof,
        "truncated reply ({} of {TOTAL} bytes, {} unsent per the loop) ended in a clean FIN",
        bytes.len(),
        d.unsent_bytes
    );
    running.stop().unwrap();
}

/// R1b: the same through the shutdown deadline.
#[test]
fn r1b_flush_cut_by_shutdown_timeout_must_not_end_in_a_clean_fin() {
    let cfg = Config {
        send_buffer_size: Some(4096),
        shutdown_timeout: Duration::from_millis(100),
        ..Config::default()
    };
    let (mut handler, rx) = Recorder::<Lines>::new(false);
    handler.on_msg = Some(Box::new(|conn, msg: &String| {
        if msg == "big" {
            for _ in 0..TOTAL / 1024 {
                conn.send(&"r".repeat(1023)).unwrap();
            }
        }
    }));
    let running = Running::spawn(lines_server(cfg), handler);
    let stream = small_client(running.addr.unwrap());
    let Event::Connected { .. } = next(&rx) else {
        panic!()
    };
    send(&stream, "big\n");
    let Event::Message { .. } = next(&rx) else {
        panic!()
    };
    // The loop exits once its shutdown deadline closes the connection.
    running.stop().unwrap();
    let (bytes, clean_eof) = read_to_eof(&stream, PATIENCE);
    println!(
        "peer read {} of {} bytes, clean EOF: {}",
        bytes.len(),
        TOTAL,
        clean_eof
    );
    assert!(
        bytes.len() == TOTAL || !clean_eof,
        "truncated reply ended in a clean FIN"
    );
}

/// R2: data queued before an RST arrives in the same event as EPOLLERR; Linux still lets it
/// be read, but the loop closes on SO_ERROR first and drops the message (EPOLL-NOTES 17).
#[test]
fn r2_data_before_an_rst_in_the_same_event_is_delivered() {
    let (mut handler, rx) = Recorder::<Lines>::new(false);
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (holding_tx, holding_rx) = mpsc::channel::<()>();
    handler.on_msg = Some(Box::new(move |_conn, msg: &String| {
        if msg == "hold" {
            holding_tx.send(()).unwrap();
            let _ = release_rx.recv_timeout(PATIENCE);
        }
    }));
    let running = Running::spawn(lines_server(Config::default()), handler);
    let addr = running.addr.unwrap();
    let gate = client(addr);
    let Event::Connected { .. } = next(&rx) else {
        panic!()
    };
    let victim = client(addr);
    let Event::Connected { id: victim_id, .. } = next(&rx) else {
        panic!()
    };
    send(&gate, "hold\n");
    holding_rx.recv_timeout(PATIENCE).unwrap();
    // The loop thread is held inside a callback: the data and the RST land before its next wait.
    send(&victim, "last words\n");
    socket2::SockRef::from(&victim)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(victim);
    release_tx.send(()).unwrap();
    let mut got = Vec::new();
    let d = wait_for(&rx, PATIENCE, |e| match e {
        Event::Message { id, msg } if id == victim_id => {
            got.push(msg);
            None
        }
        Event::Disconnected { id, disconnect } if id == victim_id => Some(disconnect),
        _ => None,
    })
    .expect("disconnect");
    println!("victim messages: {got:?}, disconnect: {d:?}");
    assert_eq!(got, vec!["last words".to_string()]);
    running.stop().unwrap();
}

/// R3: with idle_timeout None a closing connection whose peer stops reading is never closed,
/// so it holds its slot for ever: at max_connections the server stops serving anyone.
#[test]
fn r3_a_stuck_close_with_idle_timeout_none_is_bounded() {
    let cfg = Config {
        send_buffer_size: Some(4096),
        idle_timeout: None,
        close_linger: Duration::from_millis(50),
        shutdown_timeout: Duration::from_millis(100),
        max_connections: 1,
        ..Config::default()
    };
    let (handler, rx) = big_reply_then_close();
    let running = Running::spawn(lines_server(cfg), handler);
    let addr = running.addr.unwrap();
    let first = small_client(addr);
    let Event::Connected { .. } = next(&rx) else {
        panic!()
    };
    send(&first, "bye\n");
    let second = client(addr);
    send(&second, "hello\n");
    // 40 times close_linger.
    let served = wait_for(&rx, Duration::from_secs(2), |e| match e {
        Event::Connected { id, .. } => Some(id),
        _ => None,
    });
    println!("second client served: {served:?}");
    assert!(
        served.is_some(),
        "a peer that stopped reading after our close holds the only slot for ever"
    );
    running.stop().unwrap();
    drop(first);
}

/// R4: a short read is taken as proof that the receive queue is empty, but TCP also stops a
/// read at the urgent mark; the bytes queued behind it raise no new edge and are stranded.
#[test]
fn r4_bytes_behind_an_urgent_mark_are_not_stranded() {
    let (mut handler, rx) = Recorder::<Lines>::new(false);
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (holding_tx, holding_rx) = mpsc::channel::<()>();
    handler.on_msg = Some(Box::new(move |_conn, msg: &String| {
        if msg == "hold" {
            holding_tx.send(()).unwrap();
            let _ = release_rx.recv_timeout(PATIENCE);
        }
    }));
    let running = Running::spawn(lines_server(Config::default()), handler);
    let addr = running.addr.unwrap();
    let gate = client(addr);
    let Event::Connected { .. } = next(&rx) else {
        panic!()
    };
    let victim = client(addr);
    let Event::Connected { id: victim_id, .. } = next(&rx) else {
        panic!()
    };
    send(&gate, "hold\n");
    holding_rx.recv_timeout(PATIENCE).unwrap();
    send(&victim, "hello\n");
    socket2::SockRef::from(&victim)
        .send_out_of_band(b"!")
        .unwrap();
    send(&victim, "world\n");
    release_tx.send(()).unwrap();
    let mut got = Vec::new();
    let _ = wait_for(&rx, Duration::from_secs(2), |e| match e {
        Event::Message { id, msg } if id == victim_id => {
            got.push(msg);
            (got.len() == 2).then_some(())
        }
        _ => None,
    });
    println!("victim messages: {got:?}");
    assert_eq!(got, vec!["hello".to_string(), "world".to_string()]);
    running.stop().unwrap();
    drop(victim);
}

/// R2b: a connect-completion event that carries OUT|IN|ERR (the peer accepted, greeted and
/// reset): the loop reports the connect as failed and drops the greeting.
struct HoldOnFail {
    tx: mpsc::Sender<String>,
    release: mpsc::Receiver<()>,
}
impl refloop::Handler<Lines> for HoldOnFail {
    fn on_connect(&mut self, _c: &refloop::Conn<'_, Lines>) {
        let _ = self.tx.send("on_connect".into());
    }
    fn on_message(&mut self, _c: &refloop::Conn<'_, Lines>, msg: String) {
        let _ = self.tx.send(format!("message {msg}"));
    }
    fn on_disconnect(&mut self, _id: refloop::ConnId, d: refloop::Disconnect) {
        let _ = self.tx.send(format!("disconnect {:?}", d.reason));
    }
    fn on_connect_failed(&mut self, target: &refloop::Endpoint, error: std::io::Error) {
        if let refloop::Endpoint::Unix(None) = target {
            let _ = self.release.recv_timeout(PATIENCE);
        } else {
            let _ = self.tx.send(format!("connect failed: {error}"));
        }
    }
}

#[test]
fn r2b_a_connect_completion_with_greeting_and_rst_is_not_a_failed_connect() {
    let peer = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = peer.local_addr().unwrap();
    let mut server = refloop::Server::new(Lines::new(1024), Config::default()).unwrap();
    server.connect(target).unwrap();
    server.connect(refloop::Endpoint::Unix(None)).unwrap();
    let (tx, rx) = mpsc::channel();
    let (release_tx, release) = mpsc::channel();
    let handle = server.handle();
    let thread = std::thread::spawn(move || server.run(HoldOnFail { tx, release }));
    let (accepted, _) = peer.accept().unwrap();
    std::io::Write::write_all(&mut &accepted, b"hello\n").unwrap();
    socket2::SockRef::from(&accepted)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(accepted);
    release_tx.send(()).unwrap();
    let mut seen = Vec::new();
    while let Ok(s) = rx.recv_timeout(Duration::from_millis(700)) {
        seen.push(s);
    }
    println!("handler saw: {seen:?}");
    handle.shutdown();
    thread.join().unwrap().unwrap();
    assert!(
        seen.iter().any(|s| s == "message hello"),
        "greeting lost: {seen:?}"
    );
}

/// R5: values `Config::validate` once accepted, which then aborted the process in
/// `Server::new`.
#[test]
fn r5_events_capacity_too_large_to_allocate_is_an_error_not_an_abort() {
    let cfg = Config {
        events_capacity: i32::MAX as usize,
        ..Config::default()
    };
    assert!(cfg.validate().is_err(), "validate refuses it");
    let err = refloop::Server::new(Lines::new(1024), cfg).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("events_capacity"), "{err}");
}

#[test]
fn r5b_read_chunk_too_large_to_allocate_is_an_error_not_a_panic() {
    let cfg = Config {
        read_chunk: usize::MAX,
        fairness_budget: usize::MAX,
        ..Config::default()
    };
    assert!(cfg.validate().is_err(), "validate refuses it");
    let err = refloop::Server::new(Lines::new(1024), cfg).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("read_chunk"), "{err}");
}

/// The reviewer's check of the stalled-input path: stall + pause + FIN: every request answered in order, then EOF.
#[test]
fn c1_stalled_input_then_fin_all_answered_in_order() {
    let cfg = Config {
        high_watermark: 1024,
        low_watermark: 512,
        send_buffer_size: Some(4096),
        ..Config::default()
    };
    let (mut handler, rx) = Recorder::<Lines>::new(false);
    handler.on_msg = Some(Box::new(|conn, msg: &String| {
        conn.send(&format!("{msg}:{}", "y".repeat(700))).unwrap();
    }));
    let server = refloop::Server::bind("127.0.0.1:0", Lines::new(1024), cfg).unwrap();
    let running = Running::spawn(server, handler);
    let stream = small_client(running.addr.unwrap());
    let Event::Connected { .. } = next(&rx) else {
        panic!()
    };
    let mut all = String::new();
    for i in 0..2000 {
        all.push_str(&format!("{i}\n"));
    }
    let mut w = stream.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        std::io::Write::write_all(&mut w, all.as_bytes()).unwrap();
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let (bytes, eof) = read_to_eof(&stream, PATIENCE);
    writer.join().unwrap();
    let text = String::from_utf8(bytes).unwrap();
    let ids: Vec<usize> = text
        .lines()
        .map(|l| l.split(':').next().unwrap().parse().unwrap())
        .collect();
    println!("replies: {}, eof: {eof}", ids.len());
    assert!(eof);
    assert_eq!(ids, (0..2000).collect::<Vec<_>>());
    let d = wait_for(&rx, PATIENCE, |e| match e {
        Event::Disconnected { disconnect, .. } => Some(disconnect),
        _ => None,
    })
    .unwrap();
    println!("{d:?}");
    running.stop().unwrap();
}
