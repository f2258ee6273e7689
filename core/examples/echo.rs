//! An echo server on the refloop event loop: every decoded message goes back to its sender,
//! encoded with the same framing.
//!
//! ```text
//! cargo run --release -p refloop --example echo -- --addr 127.0.0.1:0 --framing length|lines [--max-frame N] [--loops N] [--sharing reuseport|exclusive]
//! ```
//!
//! `--loops N` runs N loops on N threads sharing the address (default 1: one loop on the main
//! thread); `--sharing` picks how (default `reuseport`, one `SO_REUSEPORT` listener per loop).
//! The first line of stdout is `listening on <addr>`. `SIGINT` or `SIGTERM` shuts the loop down
//! gracefully (pending echoes are flushed) and the process exits with status 0.

use std::io::{self, Write};
use std::process::ExitCode;

use refloop::framing::{Framing, LengthPrefixed, Lines};
use refloop::{
    Config, Conn, ConnId, Disconnect, DisconnectReason, Handler, Loops, Server, Sharing,
};

const USAGE: &str = "usage: echo --addr HOST:PORT --framing length|lines [--max-frame N] [--unix PATH] [--loops N] [--sharing reuseport|exclusive]";

struct Args {
    addr: Option<String>,
    unix: Option<String>,
    framing: String,
    max_frame: usize,
    loops: usize,
    sharing: Sharing,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: None,
        unix: None,
        framing: String::new(),
        max_frame: 8 * 1024 * 1024,
        loops: 1,
        sharing: Sharing::ReusePort,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => args.addr = Some(value()?),
            "--unix" => args.unix = Some(value()?),
            "--framing" => args.framing = value()?,
            "--max-frame" => {
                let v = value()?;
                args.max_frame = v.parse().map_err(|e| format!("--max-frame {v}: {e}"))?;
            }
            "--loops" => {
                let v = value()?;
                args.loops = v.parse().map_err(|e| format!("--loops {v}: {e}"))?;
                if args.loops == 0 {
                    return Err("--loops must be at least 1".to_string());
                }
            }
            "--sharing" => {
                args.sharing = match value()?.as_str() {
                    "reuseport" => Sharing::ReusePort,
                    "exclusive" => Sharing::Exclusive,
                    other => return Err(format!("unknown --sharing {other:?}")),
                }
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.addr.is_none() && args.unix.is_none() {
        return Err("--addr or --unix is required".to_string());
    }
    Ok(args)
}

/// Echoes each message; closes a connection whose message cannot be re-encoded.
struct Echo;

impl<F: Framing + Clone> Handler<F> for Echo {
    fn on_message(&mut self, conn: &Conn<'_, F>, msg: F::Message) {
        if let Err(e) = conn.send(&msg) {
            eprintln!("echo: {}: cannot re-encode message: {e}", conn.id());
            conn.close();
        }
    }

    fn on_disconnect(&mut self, id: ConnId, reason: Disconnect) {
        match reason.reason {
            DisconnectReason::PeerClosed
            | DisconnectReason::Closed
            | DisconnectReason::Shutdown => {}
            other => eprintln!("echo: {id}: {other} ({} bytes unsent)", reason.unsent_bytes),
        }
    }

    fn on_accept_error(&mut self, error: &io::Error) {
        eprintln!("echo: accept failed: {error}");
    }
}

fn serve<F: Framing + Clone + Send>(args: &Args, framing: F) -> io::Result<()> {
    let config = Config {
        max_frame_len: args.max_frame,
        ..Config::default()
    };
    if args.loops > 1 {
        return serve_loops(args, framing, config);
    }
    let mut server = Server::new(framing, config)?;
    let local = match (&args.addr, &args.unix) {
        (Some(addr), _) => server.listen(addr.as_str())?.to_string(),
        (None, Some(path)) => {
            server.listen_unix(path)?;
            path.clone()
        }
        (None, None) => unreachable!("parse_args requires one of them"),
    };
    server.shutdown_on_termination_signals()?;
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "listening on {local}")?;
    stdout.flush()?;
    drop(stdout);
    server.run(Echo)?;
    Ok(())
}

/// `--loops N`: a group of loops sharing the address.
fn serve_loops<F: Framing + Clone + Send>(
    args: &Args,
    framing: F,
    config: Config,
) -> io::Result<()> {
    let mut group = Loops::new(args.loops, framing, config)?;
    let local = match (&args.addr, &args.unix) {
        (Some(addr), _) => group.listen(addr.as_str(), args.sharing)?.to_string(),
        (None, Some(path)) => {
            group.listen_unix(path)?;
            path.clone()
        }
        (None, None) => unreachable!("parse_args requires one of them"),
    };
    group.shutdown_on_termination_signals()?;
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "listening on {local}")?;
    stdout.flush()?;
    drop(stdout);
    group.run(|_| Echo)?;
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(why) => {
            if !why.is_empty() {
                eprintln!("echo: {why}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match args.framing.as_str() {
        "length" => serve(&args, LengthPrefixed::new(args.max_frame)),
        "lines" => serve(&args, Lines::new(args.max_frame)),
        other => {
            eprintln!("echo: unknown framing {other:?} (expected length or lines)\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo: {e}");
            ExitCode::FAILURE
        }
    }
}
