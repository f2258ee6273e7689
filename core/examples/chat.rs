//! A chat server over a group of loops: every line a client sends goes to every client, on
//! every loop. It is the smallest real use of handles across loops.
//!
//! ```text
//! cargo run --release -p refloop --example chat -- --addr 127.0.0.1:0 [--loops N]
//! ```
//!
//! The first line of stdout is `listening on <addr>`. Each line is delivered as
//! `<sender's conn id>: <line>`. `SIGINT` or `SIGTERM` shuts every loop down and the process
//! exits with status 0.
//!
//! The loops share one registry of the open connections' handles. A handler on any loop
//! sends to a connection on any other through its [`refloop::ConnHandle`]: the message is
//! encoded on the sending loop's thread and queued for the loop that owns the connection,
//! which alone writes its socket.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use refloop::framing::Lines;
use refloop::{Config, Conn, ConnHandle, ConnId, Disconnect, Handler, Loops, SendError, Sharing};

const USAGE: &str = "usage: chat --addr HOST:PORT [--loops N]";

/// The open connections of every loop.
type Members = Arc<Mutex<BTreeMap<ConnId, ConnHandle<Lines>>>>;

struct Chat {
    members: Members,
}

impl Chat {
    fn members(&self) -> std::sync::MutexGuard<'_, BTreeMap<ConnId, ConnHandle<Lines>>> {
        // A panicking handler cannot leave the map half-updated: every update is one call.
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Handler<Lines> for Chat {
    fn on_connect(&mut self, conn: &Conn<'_, Lines>) {
        self.members().insert(conn.id(), conn.handle());
    }

    fn on_message(&mut self, conn: &Conn<'_, Lines>, line: String) {
        let text = format!("{}: {line}", conn.id());
        // Clone the handles out, so no lock is held while encoding.
        let members: Vec<ConnHandle<Lines>> = self.members().values().cloned().collect();
        for mut member in members {
            match member.send(text.clone()) {
                Ok(()) => {}
                // Gone, or too far behind to take more: this member misses the line.
                Err(SendError::Closed(_)) | Err(SendError::Full(_)) => {}
                Err(e) => eprintln!("chat: {}: {e}", member.id()),
            }
        }
    }

    fn on_disconnect(&mut self, id: ConnId, _reason: Disconnect) {
        self.members().remove(&id);
    }
}

fn parse_args() -> Result<(String, usize), String> {
    let (mut addr, mut loops) = (None, 1);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => addr = Some(value()?),
            "--loops" => {
                let v = value()?;
                loops = v.parse().map_err(|e| format!("--loops {v}: {e}"))?;
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok((addr.ok_or("--addr is required")?, loops))
}

fn serve(addr: &str, loops: usize) -> io::Result<()> {
    let mut group = Loops::new(loops, Lines::new(64 * 1024), Config::default())?;
    let local = group.listen(addr, Sharing::ReusePort)?;
    group.shutdown_on_termination_signals()?;
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "listening on {local}")?;
    stdout.flush()?;
    drop(stdout);
    let members = Members::default();
    group.run(|_| Chat {
        members: Arc::clone(&members),
    })?;
    Ok(())
}

fn main() -> ExitCode {
    let (addr, loops) = match parse_args() {
        Ok(args) => args,
        Err(why) => {
            if !why.is_empty() {
                eprintln!("chat: {why}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match serve(&addr, loops) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat: {e}");
            ExitCode::FAILURE
        }
    }
}
