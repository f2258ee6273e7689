//! Your own `Handler` over the simulated kernel, in an ordinary program (or `#[test]`).
//!
//! A line server that answers in upper case runs on this thread over `refloop::sim::Kernel`.
//! The client is a `Driver`: the kernel asks it for the world's next steps each time the loop
//! waits, so the whole run is single-threaded and deterministic, and the loop's 5-minute
//! idle timeout, which this client runs into on purpose, passes in virtual time at once.
//!
//! ```sh
//! cargo run -p refloop --example sim_echo
//! ```

use std::time::Instant;

use refloop::framing::Lines;
use refloop::sim::{DriverStep, Fd, Kernel, KernelConfig, ReadEnd, Wait};
use refloop::{Config, Conn, ConnId, Disconnect, Endpoint, Handler, Server};

struct Shout;

impl Handler<Lines> for Shout {
    fn on_message(&mut self, conn: &Conn<'_, Lines>, line: String) {
        // Upper case never adds a newline, so the line always encodes.
        conn.send(&line.to_uppercase())
            .expect("a line without a newline");
    }

    fn on_disconnect(&mut self, id: ConnId, reason: Disconnect) {
        println!("{id} closed: {}", reason.reason);
    }
}

fn main() -> std::io::Result<()> {
    let kernel = Kernel::new(KernelConfig {
        // Tiny buffers: every read and write is partial.
        send_buffer: 3,
        recv_buffer: 3,
        ..KernelConfig::default()
    });
    let mut server = Server::with_os(kernel.clone(), Lines::new(1024), Config::default())?;
    let addr = Endpoint::Tcp(server.listen("127.0.0.1:0")?);
    let handle = server.handle();

    let request = b"hello\nsimulated world\n";
    let mut client: Option<Fd> = None;
    let mut sent = 0;
    let mut reply = Vec::new();
    kernel.set_driver(move |k: &Kernel, _wait: &Wait| {
        let peer = k.peer();
        let Some(fd) = &client else {
            client = Some(peer.connect(&addr).expect("the listener is there"));
            return DriverStep::Again;
        };
        let wrote = peer
            .write_some(fd, &request[sent..])
            .expect("the loop reads");
        sent += wrote;
        let (bytes, end) = peer.read_available(fd);
        reply.extend_from_slice(&bytes);
        if end == ReadEnd::Eof {
            // The loop closed the idle connection: we are done.
            println!("reply: {:?}", String::from_utf8_lossy(&reply));
            println!("closed after {:?} of virtual time", k.elapsed());
            client = None;
            handle.shutdown();
            return DriverStep::Again;
        }
        if wrote > 0 || !bytes.is_empty() {
            DriverStep::Again
        } else {
            // Nothing to do until the loop acts: let the wait run (in virtual time).
            DriverStep::Wait
        }
    });

    let started = Instant::now();
    server.run(Shout)?;
    println!(
        "{} kernel calls traced, {:?} of real time",
        kernel.trace_lines(),
        started.elapsed()
    );
    Ok(())
}
