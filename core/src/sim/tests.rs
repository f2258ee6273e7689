use super::*;
use crate::framing::Lines;
use crate::{Config, Conn, ConnId, Disconnect, DisconnectReason, Handler, Server};
use std::sync::Mutex;

fn tcp(addr: &str) -> Endpoint {
    Endpoint::Tcp(addr.parse().expect("a valid address"))
}

fn kernel() -> Kernel {
    Kernel::new(KernelConfig::default())
}

/// A listener, a connected client (peer side) and the accepted server-side socket.
fn pair(k: &Kernel) -> (Fd, Fd, Fd) {
    let (listener, addr) = k.listen(&tcp("127.0.0.1:0"), 16).unwrap();
    let client = k.peer().connect(&addr).unwrap();
    let (server, _) = k.accept(&listener).unwrap();
    (listener, client, server)
}

fn wait(k: &Kernel, epoll: &Fd, timeout_ms: i32) -> Vec<Event> {
    let mut events = k.events(64);
    k.epoll_wait(epoll, &mut events, timeout_ms).unwrap();
    events.as_slice().to_vec()
}

fn errno_of<T: fmt::Debug>(r: io::Result<T>) -> i32 {
    r.expect_err("the call must fail")
        .raw_os_error()
        .expect("an errno")
}

#[test]
fn reads_return_what_is_there_up_to_the_buffer_given() {
    let k = kernel();
    let (_l, client, server) = pair(&k);
    assert_eq!(k.peer().write(&client, b"hello world").unwrap(), 11);
    let mut buf = [0u8; 4];
    assert_eq!(k.read(&server, &mut buf).unwrap(), 4);
    assert_eq!(&buf, b"hell");
    let mut buf = [0u8; 64];
    assert_eq!(
        k.read(&server, &mut buf).unwrap(),
        7,
        "a short read: all that is left"
    );
    assert_eq!(&buf[..7], b"o world");
    assert_eq!(errno_of(k.read(&server, &mut buf)), errno::EAGAIN);
}

#[test]
fn writes_take_the_send_buffer_plus_the_peers_free_receive_space_then_eagain() {
    let k = kernel();
    let (_l, client, server) = pair(&k);
    k.set_send_buffer(&server, 100).unwrap();
    k.peer().set_recv_buffer(&client, 50).unwrap();
    let big = vec![7u8; 1000];
    assert_eq!(
        k.writev(&server, &[IoSlice::new(&big)]).unwrap(),
        150,
        "a partial write of exactly the room there is"
    );
    assert_eq!(k.buffered(&server), Some((0, 100)));
    assert_eq!(k.buffered(&client), Some((50, 0)));
    assert_eq!(
        errno_of(k.writev(&server, &[IoSlice::new(&big)])),
        errno::EAGAIN
    );
    // Reading makes room, and the queued bytes follow into the receive buffer.
    let (got, end) = k.peer().read_available(&client);
    assert_eq!((got.len(), end), (150, ReadEnd::WouldBlock));
    assert_eq!(k.buffered_total(), 0);
}

#[test]
fn half_close_delivers_eof_after_the_data_and_the_other_direction_still_works() {
    let k = kernel();
    let (_l, client, server) = pair(&k);
    k.peer().write(&client, b"last words").unwrap();
    k.peer().shutdown(&client, Shutdown::Write).unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(k.read(&server, &mut buf).unwrap(), 10);
    assert_eq!(k.read(&server, &mut buf).unwrap(), 0, "EOF after the data");
    assert_eq!(
        errno_of(k.peer().write(&client, b"x")),
        errno::EPIPE,
        "the shut half refuses writes"
    );
    assert_eq!(k.writev(&server, &[IoSlice::new(b"reply")]).unwrap(), 5);
    let (got, end) = k.peer().read_available(&client);
    assert_eq!((got.as_slice(), end), (&b"reply"[..], ReadEnd::WouldBlock));
}

#[test]
fn a_linger_zero_close_resets_the_peer_with_err_and_hup_and_econnreset() {
    let k = kernel();
    let (_l, client, server) = pair(&k);
    let epoll = k.epoll_create().unwrap();
    k.epoll_add(&epoll, &server, 1, Interest::BOTH).unwrap();
    assert_eq!(wait(&k, &epoll, 0).len(), 1, "writable at ADD");
    k.peer().reset(client);
    let events = wait(&k, &epoll, 0);
    assert_eq!(events.len(), 1);
    let e = events[0];
    assert!(e.error && e.hup && e.read_hup && e.readable, "{e}");
    let err = k.take_error(&server).unwrap().expect("a pending error");
    assert_eq!(err.raw_os_error(), Some(errno::ECONNRESET));
    let mut buf = [0u8; 8];
    assert_eq!(
        k.read(&server, &mut buf).unwrap(),
        0,
        "EOF once the error is taken"
    );
    assert_eq!(
        errno_of(k.writev(&server, &[IoSlice::new(b"x")])),
        errno::EPIPE
    );
}

#[test]
fn closing_with_unread_input_resets_the_peer_instead_of_a_fin() {
    let k = kernel();
    let (_l, client, server) = pair(&k);
    k.peer().write(&client, b"unread").unwrap();
    drop(server);
    let mut buf = [0u8; 8];
    assert_eq!(
        errno_of(k.peer().read(&client, &mut buf)),
        errno::ECONNRESET
    );
}

#[test]
fn data_sent_to_a_closed_socket_is_answered_by_a_reset() {
    let k = kernel();
    let (_l, client, server) = pair(&k);
    drop(server);
    let mut buf = [0u8; 8];
    assert_eq!(k.peer().read(&client, &mut buf).unwrap(), 0, "the FIN");
    assert_eq!(
        k.peer().write(&client, b"late").unwrap(),
        4,
        "the write itself succeeds"
    );
    assert_eq!(
        errno_of(k.peer().write(&client, b"later")),
        errno::EPIPE,
        "the RST came back (EPIPE: the FIN had arrived first)"
    );
}

#[test]
fn a_full_tcp_backlog_leaves_connects_pending_until_accept_makes_room() {
    let k = kernel();
    let (listener, addr) = k.listen(&tcp("127.0.0.1:0"), 1).unwrap();
    // Linux admits backlog + 1.
    let a = k.peer().connect(&addr).unwrap();
    let b = k.peer().connect(&addr).unwrap();
    let c = k.peer().connect(&addr).unwrap();
    assert_eq!(
        errno_of(k.peer().write(&c, b"x")),
        errno::EAGAIN,
        "still connecting"
    );
    let (_sa, _) = k.accept(&listener).unwrap();
    assert_eq!(
        k.peer().write(&c, b"x").unwrap(),
        1,
        "admitted after accept"
    );
    let (_sb, _) = k.accept(&listener).unwrap();
    let (sc, _) = k.accept(&listener).unwrap();
    let mut buf = [0u8; 4];
    assert_eq!(k.read(&sc, &mut buf).unwrap(), 1);
    assert_eq!(errno_of(k.accept(&listener)), errno::EAGAIN);
    drop((a, b));
}

#[test]
fn a_full_unix_backlog_fails_connect_with_eagain() {
    let k = kernel();
    let path = Endpoint::Unix(Some("/sim/sock".into()));
    let (listener, _) = k.listen(&path, 0).unwrap();
    let _a = k.peer().connect(&path).unwrap();
    let _b = k.peer().connect(&path).unwrap();
    assert_eq!(errno_of(k.peer().connect(&path)), errno::EAGAIN);
    assert!(k.path_identity(Path::new("/sim/sock")).is_some());
    drop(listener);
    assert_eq!(
        errno_of(k.peer().connect(&path)),
        errno::ECONNREFUSED,
        "the file stays, nobody listens"
    );
    k.remove_path(Path::new("/sim/sock")).unwrap();
    assert_eq!(errno_of(k.peer().connect(&path)), errno::ENOENT);
}

#[test]
fn a_connect_with_no_listener_is_refused_through_so_error_and_epollerr() {
    let k = kernel();
    let (fd, in_progress) = k.connect(&tcp("127.0.0.1:9")).unwrap();
    assert!(in_progress);
    let epoll = k.epoll_create().unwrap();
    k.epoll_add(&epoll, &fd, 1, Interest::BOTH).unwrap();
    let events = wait(&k, &epoll, 0);
    assert!(events[0].error && events[0].hup, "{}", events[0]);
    let err = k.take_error(&fd).unwrap().expect("refused");
    assert_eq!(err.raw_os_error(), Some(errno::ECONNREFUSED));
}

#[test]
fn a_connect_to_an_unreachable_address_never_completes() {
    let k = kernel();
    let (_l, addr) = k.listen(&tcp("127.0.0.1:0"), 16).unwrap();
    let Endpoint::Tcp(sa) = addr else {
        unreachable!()
    };
    k.set_unreachable(sa);
    let (fd, _) = k.connect(&addr).unwrap();
    let epoll = k.epoll_create().unwrap();
    k.epoll_add(&epoll, &fd, 1, Interest::BOTH).unwrap();
    assert!(wait(&k, &epoll, 60_000).is_empty());
    assert_eq!(
        k.elapsed(),
        Duration::from_secs(60),
        "the wait ran out in virtual time"
    );
    assert!(k.take_error(&fd).unwrap().is_none());
}

#[test]
fn a_finite_wait_with_nothing_ready_advances_virtual_time_instantly() {
    let k = kernel();
    let epoll = k.epoll_create().unwrap();
    let before = k.now();
    let real = Instant::now();
    assert!(wait(&k, &epoll, 300_000).is_empty());
    assert_eq!(k.now() - before, Duration::from_secs(300));
    assert!(real.elapsed() < Duration::from_secs(5), "no real waiting");
}

#[test]
fn the_nth_call_fault_fails_exactly_that_call_and_no_other() {
    let k = kernel();
    let (listener, addr) = k.listen(&tcp("127.0.0.1:0"), 16).unwrap();
    for _ in 0..3 {
        let _keep = k.peer().connect(&addr).unwrap();
        std::mem::forget(_keep);
    }
    k.fail_nth(Call::Accept, 2, errno::ENOBUFS);
    assert!(k.accept(&listener).is_ok());
    assert_eq!(errno_of(k.accept(&listener)), errno::ENOBUFS);
    assert!(k.accept(&listener).is_ok(), "the backlog is intact");
    assert!(k.accept(&listener).is_ok());
    assert_eq!(errno_of(k.accept(&listener)), errno::EAGAIN);
    assert_eq!(k.faults_injected(), 1);
}

#[test]
fn seeded_probabilistic_faults_repeat_exactly_for_one_seed() {
    let run = |seed| {
        let k = Kernel::new(KernelConfig {
            seed,
            ..KernelConfig::default()
        });
        k.fail_randomly(Call::EventfdRead, 300_000, errno::EINTR);
        let fd = k.eventfd().unwrap();
        (0..64)
            .map(|_| {
                k.eventfd_write(&fd, 1).unwrap();
                k.eventfd_read(&fd).is_ok()
            })
            .collect::<Vec<bool>>()
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8), "the seed matters");
    assert!(run(7).iter().any(|ok| !ok) && run(7).iter().any(|ok| *ok));
}

#[test]
#[should_panic(expected = "cannot fail with")]
fn a_fault_the_man_page_does_not_allow_is_refused() {
    kernel().fail_next(Call::EpollWait, errno::ECONNRESET);
}

#[test]
fn fd_numbers_are_lowest_free_and_reused_at_once_up_to_the_limit() {
    let k = kernel();
    let a = k.eventfd().unwrap();
    let b = k.eventfd().unwrap();
    let c = k.eventfd().unwrap();
    assert_eq!((a.raw(), b.raw(), c.raw()), (3, 4, 5));
    drop(b);
    let d = k.eventfd().unwrap();
    assert_eq!(d.raw(), 4, "the closed number comes back first");
    k.set_fd_limit(6);
    assert_eq!(errno_of(k.eventfd()), errno::EMFILE);
    let (listener, addr) = {
        k.set_fd_limit(7);
        k.listen(&tcp("127.0.0.1:0"), 4).unwrap()
    };
    assert_eq!(
        errno_of(k.accept(&listener)),
        errno::EMFILE,
        "accept allocates its fd before it looks at the backlog"
    );
    drop(d);
    assert_eq!(errno_of(k.accept(&listener)), errno::EAGAIN);
    drop(addr);
}

#[test]
fn a_dup_keeps_producing_events_after_the_registered_number_is_closed_without_del() {
    let k = kernel();
    let (_l, client, server) = pair(&k);
    let epoll = k.epoll_create().unwrap();
    k.epoll_add(&epoll, &server, 42, Interest::READABLE)
        .unwrap();
    let dup = k.dup(&server).unwrap();
    let number = server.raw();
    drop(server);
    k.peer().write(&client, b"x").unwrap();
    let events = wait(&k, &epoll, 0);
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].token, 42,
        "the closed number's registration still fires"
    );
    assert_eq!(
        errno_of(k.epoll_delete(&epoll, &dup)),
        errno::ENOENT,
        "the item is keyed by the old number"
    );
    // The number is reused at once by an unrelated file.
    let other = k.eventfd().unwrap();
    assert_eq!(other.raw(), number);
    drop(dup);
    k.peer().write(&client, b"y").unwrap_err();
    assert!(
        wait(&k, &epoll, 0).is_empty(),
        "the last close removed the item"
    );
}

#[test]
fn linux_mode_raises_an_edge_per_arrival_and_minimal_mode_only_when_readiness_rises() {
    for (mode, second_edge) in [(Mode::Linux, true), (Mode::Minimal, false)] {
        let k = Kernel::new(KernelConfig {
            mode,
            ..KernelConfig::default()
        });
        let (_l, client, server) = pair(&k);
        let epoll = k.epoll_create().unwrap();
        k.epoll_add(&epoll, &server, 1, Interest::READABLE).unwrap();
        k.peer().write(&client, b"a").unwrap();
        assert_eq!(wait(&k, &epoll, 0).len(), 1, "{mode:?}: the first edge");
        k.peer().write(&client, b"b").unwrap();
        assert_eq!(
            wait(&k, &epoll, 0).len() == 1,
            second_edge,
            "{mode:?}: an arrival on a readable socket"
        );
    }
}

#[test]
fn linux_mode_coalesces_wakeups_until_the_wait_collects_them() {
    let k = kernel();
    let (_l, client, server) = pair(&k);
    let epoll = k.epoll_create().unwrap();
    k.epoll_add(&epoll, &server, 1, Interest::READABLE).unwrap();
    for _ in 0..5 {
        k.peer().write(&client, b"a").unwrap();
    }
    k.peer().shutdown(&client, Shutdown::Write).unwrap();
    let events = wait(&k, &epoll, 0);
    assert_eq!(events.len(), 1, "one event for six wake-ups");
    assert!(
        events[0].readable && events[0].read_hup,
        "data + RDHUP in one"
    );
    assert!(wait(&k, &epoll, 0).is_empty());
}

#[test]
fn epollout_rises_only_after_a_write_found_the_buffer_full_and_half_of_it_drained() {
    let k = kernel();
    let (_l, client, server) = pair(&k);
    k.set_send_buffer(&server, 100).unwrap();
    k.peer().set_recv_buffer(&client, 100).unwrap();
    let epoll = k.epoll_create().unwrap();
    k.epoll_add(&epoll, &server, 1, Interest::BOTH).unwrap();
    assert!(wait(&k, &epoll, 0)[0].writable, "ADD reports it writable");
    // Room never ran out: reading produces no EPOLLOUT edge.
    k.writev(&server, &[IoSlice::new(&[1; 10])]).unwrap();
    k.peer().read_available(&client);
    assert!(wait(&k, &epoll, 0).is_empty());
    // Fill everything: 100 in the peer, 100 queued.
    assert_eq!(k.peer().write_some(&client, &[]).unwrap(), 0);
    let mut sent = 0;
    while let Ok(n) = k.writev(&server, &[IoSlice::new(&[2; 64])]) {
        sent += n;
    }
    assert_eq!(sent, 200);
    let mut buf = [0u8; 10];
    k.peer().read(&client, &mut buf).unwrap();
    // 10 moved: 90 queued, 10 free: not yet writeable (free >= queued / 2).
    assert!(wait(&k, &epoll, 0).is_empty());
    let mut buf = [0u8; 40];
    k.peer().read(&client, &mut buf).unwrap();
    // 50 queued, 50 free.
    let events = wait(&k, &epoll, 0);
    assert_eq!(events.len(), 1);
    assert!(events[0].writable);
}

#[test]
fn an_eventfd_counts_every_write_wakes_each_time_and_overflows_with_eagain() {
    let k = kernel();
    let fd = k.eventfd().unwrap();
    let epoll = k.epoll_create().unwrap();
    k.epoll_add(&epoll, &fd, 9, Interest::READABLE).unwrap();
    assert!(wait(&k, &epoll, 0).is_empty());
    assert_eq!(errno_of(k.eventfd_read(&fd)), errno::EAGAIN);
    k.eventfd_write(&fd, 2).unwrap();
    assert_eq!(wait(&k, &epoll, 0).len(), 1);
    k.eventfd_write(&fd, 3).unwrap();
    assert_eq!(
        wait(&k, &epoll, 0).len(),
        1,
        "a write to a set counter wakes too"
    );
    assert_eq!(k.eventfd_read(&fd).unwrap(), 5);
    k.eventfd_write(&fd, u64::MAX - 1).unwrap();
    assert_eq!(errno_of(k.eventfd_write(&fd, 1)), errno::EAGAIN);
    assert_eq!(k.eventfd_read(&fd).unwrap(), u64::MAX - 1);
    assert_eq!(k.calls(Call::EventfdWrite), 4);
}

#[test]
fn a_wait_forever_with_a_driver_that_has_nothing_to_do_is_a_stall_error() {
    let k = kernel();
    let epoll = k.epoll_create().unwrap();
    k.set_driver(|_: &Kernel, _: &Wait| DriverStep::Wait);
    let mut events = k.events(4);
    let err = k.epoll_wait(&epoll, &mut events, -1).unwrap_err();
    assert!(Stall::is(&err), "{err}");
    assert!(k.stall().is_some());
}

#[test]
fn a_driver_sleep_moves_virtual_time_and_is_asked_again() {
    let k = kernel();
    let epoll = k.epoll_create().unwrap();
    let fd = k.eventfd().unwrap();
    k.epoll_add(&epoll, &fd, 1, Interest::READABLE).unwrap();
    let wake = k.dup(&fd).unwrap();
    let mut steps = 0;
    k.set_driver(move |k: &Kernel, w: &Wait| {
        steps += 1;
        match steps {
            1 => DriverStep::Sleep(Duration::from_secs(3)),
            2 => {
                assert_eq!(w.now, Duration::from_secs(3));
                k.eventfd_write(&wake, 1).unwrap();
                DriverStep::Again
            }
            _ => DriverStep::Wait,
        }
    });
    assert_eq!(wait(&k, &epoll, -1).len(), 1);
    assert_eq!(k.elapsed(), Duration::from_secs(3));
}

#[test]
fn a_blocked_wait_without_a_driver_wakes_for_another_threads_eventfd_write() {
    let k = kernel();
    let epoll = k.epoll_create().unwrap();
    let fd = Arc::new(k.eventfd().unwrap());
    k.epoll_add(&epoll, &fd, 5, Interest::READABLE).unwrap();
    let writer = {
        let (k, fd) = (k.clone(), Arc::clone(&fd));
        std::thread::spawn(move || k.eventfd_write(&fd, 1).unwrap())
    };
    let events = wait(&k, &epoll, -1);
    writer.join().unwrap();
    assert_eq!(events[0].token, 5);
}

// ---------------------------------------------------------------------------------------------
// The real loop over the sim
// ---------------------------------------------------------------------------------------------

struct Echo {
    disconnects: Arc<Mutex<Vec<String>>>,
}

impl Handler<Lines> for Echo {
    fn on_message(&mut self, conn: &Conn<'_, Lines>, msg: String) {
        conn.send(&msg).unwrap();
    }

    fn on_disconnect(&mut self, _id: ConnId, d: Disconnect) {
        let reason = match d.reason {
            DisconnectReason::IdleTimeout => "idle".to_string(),
            other => other.to_string(),
        };
        self.disconnects.lock().unwrap().push(reason);
    }
}

/// A client that sends `lines`, reads the echo, then shuts the loop down and closes.
fn echo_run(seed: u64) -> (Vec<u8>, String) {
    echo_over(KernelConfig {
        seed,
        send_buffer: 7,
        recv_buffer: 5,
        ..KernelConfig::default()
    })
}

fn echo_over(config: KernelConfig) -> (Vec<u8>, String) {
    let k = Kernel::new(config);
    let mut server = Server::with_os(k.clone(), Lines::new(1024), Config::default()).unwrap();
    let addr = Endpoint::Tcp(server.listen("127.0.0.1:0").unwrap());
    let handle = server.handle();
    let got = Arc::new(Mutex::new(Vec::new()));
    let sent = b"hello\nworld, a longer line than any buffer\n".to_vec();
    let mut client: Option<Fd> = None;
    let mut offset = 0;
    let mut done = false;
    let mut ended = false;
    {
        let got = Arc::clone(&got);
        let mut steps = 0u64;
        k.set_driver(move |k: &Kernel, _: &Wait| {
            steps += 1;
            if steps > 100_000 {
                let trace = k.trace();
                let head: Vec<&str> = trace.lines().take(150).collect();
                panic!(
                    "no end after {steps} driver steps; trace head:\n{}",
                    head.join("\n")
                );
            }
            let peer = k.peer();
            if ended {
                return DriverStep::Wait;
            }
            let Some(fd) = client.as_ref() else {
                client = Some(peer.connect(&addr).unwrap());
                return DriverStep::Again;
            };
            let mut progress = false;
            if offset < sent.len() {
                let n = peer.write_some(fd, &sent[offset..]).unwrap();
                offset += n;
                progress |= n > 0;
            }
            let (bytes, end) = peer.read_available(fd);
            progress |= !bytes.is_empty();
            let mut got = got.lock().unwrap();
            got.extend_from_slice(&bytes);
            if !done && got.len() == sent.len() {
                done = true;
                handle.shutdown();
                return DriverStep::Again;
            }
            if end == ReadEnd::Eof {
                client = None;
                ended = true;
                return DriverStep::Wait;
            }
            if progress {
                DriverStep::Again
            } else {
                DriverStep::Wait
            }
        });
    }
    let disconnects = Arc::new(Mutex::new(Vec::new()));
    if let Err(e) = server.run(Echo {
        disconnects: Arc::clone(&disconnects),
    }) {
        panic!("the loop failed: {e}; trace:\n{}", k.trace());
    }
    k.clear_driver();
    let got = got.lock().unwrap().clone();
    (got, k.trace())
}

#[test]
fn the_real_server_echoes_lines_over_the_sim_through_tiny_buffers() {
    let (got, trace) = echo_run(1);
    assert_eq!(got, b"hello\nworld, a longer line than any buffer\n");
    assert!(
        trace.contains("EAGAIN"),
        "the tiny buffers forced partial I/O"
    );
}

#[test]
fn the_same_seeded_scenario_gives_the_same_trace_byte_for_byte() {
    let (_, first) = echo_run(3);
    let (_, second) = echo_run(3);
    assert!(!first.is_empty());
    if first != second {
        let line = first
            .lines()
            .zip(second.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        panic!("the traces differ from line {line}");
    }
}

#[test]
fn a_five_minute_idle_timeout_completes_instantly_in_virtual_time() {
    let k = kernel();
    let config = Config {
        idle_timeout: Some(Duration::from_secs(300)),
        ..Config::default()
    };
    let mut server = Server::with_os(k.clone(), Lines::new(64), config).unwrap();
    let addr = Endpoint::Tcp(server.listen("127.0.0.1:0").unwrap());
    let handle = server.handle();
    let mut client = None;
    let mut closed_at = None;
    let closed = Arc::new(Mutex::new(None));
    {
        let closed = Arc::clone(&closed);
        k.set_driver(move |k: &Kernel, _: &Wait| {
            let peer = k.peer();
            let Some(fd) = client.as_ref() else {
                client = Some(peer.connect(&addr).unwrap());
                return DriverStep::Again;
            };
            if closed_at.is_none() {
                if let (_, ReadEnd::Eof) = peer.read_available(fd) {
                    closed_at = Some(k.elapsed());
                    *closed.lock().unwrap() = closed_at;
                    client = None;
                    handle.shutdown();
                    return DriverStep::Again;
                }
            }
            DriverStep::Wait
        });
    }
    let real = Instant::now();
    let disconnects = Arc::new(Mutex::new(Vec::new()));
    server
        .run(Echo {
            disconnects: Arc::clone(&disconnects),
        })
        .unwrap();
    assert!(real.elapsed() < Duration::from_secs(10));
    assert_eq!(*disconnects.lock().unwrap(), vec!["idle".to_string()]);
    let at = closed
        .lock()
        .unwrap()
        .expect("the idle connection was closed");
    assert_eq!(
        at,
        Duration::from_secs(300),
        "closed exactly at the idle timeout"
    );
}

#[test]
fn a_loop_over_the_sim_without_a_driver_serves_a_client_on_another_thread() {
    let k = kernel();
    let config = Config {
        idle_timeout: None,
        ..Config::default()
    };
    let mut server = Server::with_os(k.clone(), Lines::new(64), config).unwrap();
    let addr = Endpoint::Tcp(server.listen("127.0.0.1:0").unwrap());
    let handle = server.handle();
    let disconnects = Arc::new(Mutex::new(Vec::new()));
    let echo = Echo {
        disconnects: Arc::clone(&disconnects),
    };
    let loop_thread = std::thread::spawn(move || server.run(echo).map(drop));
    // This thread is the client; it polls its socket through its own epoll instance, blocking
    // on the kernel's condition variable.
    let peer = k.peer();
    let fd = peer.connect(&addr).unwrap();
    let epoll = k.epoll_create().unwrap();
    k.epoll_add(&epoll, &fd, 1, Interest::READABLE).unwrap();
    assert_eq!(peer.write(&fd, b"ping\n").unwrap(), 5);
    let mut got = Vec::new();
    while got != b"ping\n" {
        wait(&k, &epoll, -1);
        got.extend(peer.read_available(&fd).0);
    }
    handle.shutdown();
    // The loop lingers for our FIN: send it.
    peer.shutdown(&fd, Shutdown::Write).unwrap();
    loop_thread.join().unwrap().unwrap();
    assert_eq!(disconnects.lock().unwrap().len(), 1);
}

#[test]
fn the_real_server_echoes_over_the_minimal_mode_with_spurious_and_held_back_events() {
    for seed in 0..20 {
        let (got, trace) = echo_over(KernelConfig {
            mode: Mode::Minimal,
            seed,
            send_buffer: 7,
            recv_buffer: 5,
            spurious_ppm: 300_000,
            defer_ppm: 300_000,
            ..KernelConfig::default()
        });
        assert_eq!(
            got, b"hello\nworld, a longer line than any buffer\n",
            "seed {seed}"
        );
        assert!(trace.contains("EAGAIN"));
    }
}

#[test]
fn minimal_mode_injects_spurious_events_from_the_seed() {
    let run = |seed| {
        let k = Kernel::new(KernelConfig {
            mode: Mode::Minimal,
            seed,
            spurious_ppm: 500_000,
            ..KernelConfig::default()
        });
        let (_l, _client, server) = pair(&k);
        let epoll = k.epoll_create().unwrap();
        k.epoll_add(&epoll, &server, 1, Interest::READABLE).unwrap();
        (0..32)
            .map(|_| wait(&k, &epoll, 0).len())
            .collect::<Vec<_>>()
    };
    let events = run(11);
    assert!(events.contains(&1), "spurious events come");
    assert!(events.contains(&0), "not on every wait");
    assert_eq!(
        events,
        run(11),
        "the same seed gives the same spurious events"
    );
}

#[test]
fn minimal_mode_can_hold_an_edge_back_so_that_several_flags_arrive_in_one_event() {
    // With every item held back while there is something else to report, the data edge of
    // the first socket waits until its FIN has come too.
    let k = Kernel::new(KernelConfig {
        mode: Mode::Minimal,
        defer_ppm: 1_000_000,
        ..KernelConfig::default()
    });
    let (_l, client, server) = pair(&k);
    let epoll = k.epoll_create().unwrap();
    k.epoll_add(&epoll, &server, 1, Interest::READABLE).unwrap();
    k.peer().write(&client, b"data").unwrap();
    k.peer().shutdown(&client, Shutdown::Write).unwrap();
    let events = wait(&k, &epoll, 0);
    assert_eq!(events.len(), 1);
    assert!(events[0].readable && events[0].read_hup, "{}", events[0]);
}

#[test]
fn a_kernel_handle_is_send_sync_and_cheap_to_clone() {
    fn send_sync<T: Send + Sync + Clone>() {}
    send_sync::<Kernel>();
    send_sync::<Peer>();
    fn send_sync_fd<T: Send + Sync>() {}
    send_sync_fd::<Fd>();
    assert_eq!(std::mem::size_of::<Kernel>(), std::mem::size_of::<usize>());
}

#[test]
fn counters_show_calls_per_kind_and_bytes_buffered_per_socket() {
    let k = kernel();
    let (_l, client, server) = pair(&k);
    k.peer().write(&client, b"12345").unwrap();
    assert_eq!(k.buffered(&server), Some((5, 0)));
    assert_eq!(k.buffered(&client), Some((0, 0)));
    assert_eq!(k.buffered_total(), 5);
    assert_eq!(k.calls(Call::Accept), 1);
    assert_eq!(k.peer_calls(Call::Write), 1);
    assert_eq!(
        k.calls(Call::Write),
        0,
        "the peer's calls are counted apart"
    );
}

#[test]
fn minimal_mode_raises_an_edge_when_a_read_empties_the_buffer_and_queued_bytes_refill_it() {
    let k = Kernel::new(KernelConfig {
        mode: Mode::Minimal,
        ..KernelConfig::default()
    });
    let (_l, client, server) = pair(&k);
    k.set_recv_buffer(&server, 4).unwrap();
    let epoll = k.epoll_create().unwrap();
    k.epoll_add(&epoll, &server, 1, Interest::READABLE).unwrap();
    assert_eq!(k.peer().write(&client, b"12345678").unwrap(), 8);
    assert_eq!(wait(&k, &epoll, 0).len(), 1);
    let mut buf = [0u8; 64];
    assert_eq!(
        k.read(&server, &mut buf).unwrap(),
        4,
        "a short read: the buffer is empty"
    );
    assert_eq!(
        wait(&k, &epoll, 0).len(),
        1,
        "the refill went from empty to readable: an edge"
    );
    assert_eq!(k.read(&server, &mut buf).unwrap(), 4);
}

#[test]
fn a_driver_that_asks_again_without_doing_anything_ends_in_a_stall_not_a_spin() {
    let k = kernel();
    let epoll = k.epoll_create().unwrap();
    k.set_driver(|_: &Kernel, _: &Wait| DriverStep::Again);
    let mut events = k.events(4);
    let err = k.epoll_wait(&epoll, &mut events, -1).unwrap_err();
    assert!(Stall::is(&err), "{err}");
}

#[test]
fn descriptors_and_buffers_are_counted_per_side() {
    let k = kernel();
    let (_l, client, server) = pair(&k);
    assert_eq!(k.open_fds_of(Side::Os), 2, "listener and accepted socket");
    assert_eq!(k.open_fds_of(Side::Peer), 1);
    k.peer().write(&client, b"abc").unwrap();
    assert_eq!(k.os_sockets(), vec![(server.raw(), 3, 0)]);
}
