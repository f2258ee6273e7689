//! A redis-compatible key-value server on the refloop event loop, speaking RESP through
//! [`refloop::framing::Resp`].
//!
//! ```text
//! cargo run --release -p refloop --example kv -- --addr 127.0.0.1:0 [--max-bulk N]
//! ```
//!
//! The first line of stdout is `listening on <addr>`. `SIGINT` or `SIGTERM` shuts the loop down
//! gracefully and the process exits with status 0.
//! `--max-bulk` is redis's `proto-max-bulk-len` (default 512 MiB).
//!
//! It answers the commands every default `redis-benchmark` test and `redis-cli` need, byte for
//! byte as redis-server 7.0 does (see `commands.rs` for the list and for what differs).
//! Unlike redis, a declared bulk costs nothing until its bytes arrive, and a client that
//! pipelines without reading is paused by the loop's high watermark instead of growing its
//! output buffer without limit.

mod collections;
mod commands;
mod reply;
mod strings;

use std::io::{self, Write};
use std::process::ExitCode;

use refloop::framing::resp::{Message, Reply, DEFAULT_MAX_BULK};
use refloop::framing::Resp;
use refloop::{Config, Conn, ConnId, Disconnect, DisconnectReason, Handler, Server};

use commands::{Outcome, Store};

const USAGE: &str = "usage: kv --addr HOST:PORT [--max-bulk N]";

struct Args {
    addr: String,
    max_bulk: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut addr = None;
    let mut max_bulk = DEFAULT_MAX_BULK;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => addr = Some(value()?),
            "--max-bulk" => {
                let v = value()?;
                max_bulk = v.parse().map_err(|e| format!("--max-bulk {v}: {e}"))?;
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let addr = addr.ok_or_else(|| "--addr is required".to_string())?;
    Ok(Args { addr, max_bulk })
}

/// The handler: one store, and a reply buffer reused for every reply.
struct Kv {
    store: Store,
    /// The reply being built; handed to the loop inside a `Reply::Raw` and taken back.
    out: Vec<u8>,
}

impl Kv {
    /// Sends what `out` holds, keeping the buffer for the next reply.
    fn flush(&mut self, conn: &Conn<'_, Resp>) {
        if self.out.is_empty() {
            return;
        }
        let msg = Message::Reply(Reply::Raw(std::mem::take(&mut self.out)));
        // `Raw` replies always encode: the bytes are written as they are.
        let sent = conn.send(&msg);
        if let Message::Reply(Reply::Raw(mut buf)) = msg {
            buf.clear();
            self.out = buf;
        }
        if sent.is_err() {
            conn.close();
        }
    }
}

impl Handler<Resp> for Kv {
    fn on_message(&mut self, conn: &Conn<'_, Resp>, msg: Message) {
        match msg {
            Message::Command(args) => {
                let outcome = self.store.execute(conn.id(), &args, &mut self.out);
                self.flush(conn);
                match outcome {
                    Outcome::Open => {}
                    // QUIT: the reply goes out, then the connection closes.
                    Outcome::CloseAfterReply => conn.close(),
                    // `POST` or `Host:`: redis's cross-protocol guard closes without a reply.
                    Outcome::CloseNow => conn.close(),
                }
            }
            Message::Empty => {}
            Message::ProtocolError(error) => {
                self.out.extend_from_slice(&error.reply());
                self.flush(conn);
                conn.close();
            }
            // A client never sends a reply; the decoder never yields one.
            Message::Reply(_) => conn.close(),
        }
    }

    fn on_disconnect(&mut self, id: ConnId, reason: Disconnect) {
        self.store.forget(id);
        match reason.reason {
            DisconnectReason::PeerClosed
            | DisconnectReason::Closed
            | DisconnectReason::Shutdown
            | DisconnectReason::Reset => {}
            other => eprintln!("kv: {id}: {other} ({} bytes unsent)", reason.unsent_bytes),
        }
    }

    fn on_accept_error(&mut self, error: &io::Error) {
        eprintln!("kv: accept failed: {error}");
    }
}

fn serve(args: &Args) -> io::Result<()> {
    let framing = Resp::new(args.max_bulk);
    let config = Config {
        // Redis keeps idle clients forever (`timeout 0`).
        idle_timeout: None,
        ..Config::default()
    };
    let mut server = Server::new(framing, config)?;
    let local = server.listen(args.addr.as_str())?;
    server.shutdown_on_termination_signals()?;
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "listening on {local}")?;
    stdout.flush()?;
    drop(stdout);
    server.run(Kv {
        store: Store::new(args.max_bulk),
        out: Vec::with_capacity(4096),
    })?;
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(why) => {
            if !why.is_empty() {
                eprintln!("kv: {why}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match serve(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kv: {e}");
            ExitCode::FAILURE
        }
    }
}
