//! The echo harness checks what it measures: a correct server yields figures, a server that
//! corrupts or drops an echo fails the run, and the tokio peer server speaks both framings and
//! exits cleanly on SIGTERM.
//!
//! No test asserts an absolute time or rate.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use refloop_bench::loadgen::{self, LoadConfig, Wire};
use refloop_bench::server::ServerCmd;

/// How a test server treats the byte stream it echoes.
#[derive(Clone, Copy)]
enum Fault {
    None,
    /// Flips one bit of the byte at this stream offset.
    Corrupt(usize),
    /// Leaves out the bytes in `start..start + len`.
    Drop(usize, usize),
}

/// A blocking echo server on its own threads; returns its address and the acceptor thread,
/// which serves exactly `conns` connections and joins their threads.
fn echo_server(conns: usize, fault: Fault) -> (SocketAddr, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = thread::spawn(move || {
        let mut handles = Vec::new();
        for _ in 0..conns {
            let (stream, _) = listener.accept().unwrap();
            handles.push(thread::spawn(move || serve(stream, fault)));
        }
        for h in handles {
            h.join().unwrap();
        }
    });
    (addr, acceptor)
}

fn serve(mut stream: TcpStream, fault: Fault) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut offset = 0usize;
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut out = Vec::with_capacity(n);
        for (i, b) in buf[..n].iter().enumerate() {
            let at = offset + i;
            match fault {
                Fault::Corrupt(x) if at == x => out.push(b ^ 1),
                Fault::Drop(start, len) if (start..start + len).contains(&at) => {}
                _ => out.push(*b),
            }
        }
        offset += n;
        // The client resets its connections when a run ends, so a failed write is the
        // normal end of this connection.
        if stream.write_all(&out).is_err() {
            return;
        }
    }
}

fn config(addr: SocketAddr, wire: Wire, conns: usize) -> LoadConfig {
    LoadConfig {
        addr,
        wire,
        conns,
        depth: 8,
        payload: 32,
        threads: 1,
        warmup: Duration::from_millis(30),
        measure: Duration::from_millis(300),
    }
}

#[test]
fn load_generator_measures_a_correct_echo_server() {
    let (addr, server) = echo_server(3, Fault::None);
    let r = loadgen::run(&config(addr, Wire::Length, 3), || 1.0).unwrap();
    server.join().unwrap();
    assert!(r.measured_msgs > 0, "no echoes measured");
    assert!(r.total_msgs >= r.measured_msgs);
    assert_eq!(
        r.latency_ns.count(),
        r.measured_msgs,
        "one latency sample per measured echo"
    );
    assert_eq!(r.window, (1.0, 1.0), "the window hook ran at both edges");
}

fn expect_invalid_data(result: io::Result<loadgen::LoadResult>) {
    match result {
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}"),
        Ok(r) => panic!("a faulty server produced figures: {} msgs", r.total_msgs),
    }
}

#[test]
fn load_generator_rejects_a_server_that_corrupts_an_echo() {
    // This offset lies inside the sequence number of the third 36-byte message.
    let (addr, server) = echo_server(1, Fault::Corrupt(4 + 36 * 2 + 3));
    expect_invalid_data(loadgen::run(&config(addr, Wire::Length, 1), || 0.0));
    server.join().unwrap();
}

#[test]
fn load_generator_rejects_a_server_that_drops_a_message() {
    // The second message disappears whole; the stream stays well-framed but skips a sequence.
    let (addr, server) = echo_server(1, Fault::Drop(36, 36));
    expect_invalid_data(loadgen::run(&config(addr, Wire::Length, 1), || 0.0));
    server.join().unwrap();
}

#[test]
fn load_generator_rejects_a_lines_server_that_corrupts_an_echo() {
    let (addr, server) = echo_server(1, Fault::Corrupt(33 + 5));
    expect_invalid_data(loadgen::run(&config(addr, Wire::Lines, 1), || 0.0));
    server.join().unwrap();
}

fn tokio_echo() -> ServerCmd {
    ServerCmd {
        name: "tokio",
        program: PathBuf::from(env!("CARGO_BIN_EXE_tokio_echo")),
    }
}

#[test]
fn tokio_peer_echoes_both_framings_and_exits_cleanly_on_sigterm() {
    for wire in [Wire::Length, Wire::Lines] {
        let server = tokio_echo().start(wire, None).unwrap();
        let cpu0 = server.cpu_seconds().unwrap();
        let r = loadgen::run(&config(server.addr, wire, 4), || 0.0).unwrap();
        assert!(r.measured_msgs > 0, "{wire:?}: no echoes measured");
        assert!(server.rss_bytes().unwrap() > 0);
        assert!(server.cpu_seconds().unwrap() >= cpu0);
        server.stop().unwrap();
    }
}

#[test]
fn server_start_reports_a_program_that_prints_no_address() {
    // `true` exits at once without printing `listening on <addr>`.
    let cmd = ServerCmd {
        name: "true",
        program: PathBuf::from("true"),
    };
    let err = cmd.start(Wire::Length, None).unwrap_err();
    assert!(
        err.to_string().contains("instead of `listening on <addr>`"),
        "{err}"
    );
}
