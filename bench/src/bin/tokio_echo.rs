//! The peer echo server: what a user would write with tokio instead of refloop.
//!
//! A current-thread tokio runtime (refloop's loop is single-threaded too), one task per
//! connection, and tokio-util's `Framed` codecs with the same wire format as refloop's echo
//! example.
//! Each connection is split into a `FramedRead` and a `FramedWrite` and joined with
//! `StreamExt::forward`, which feeds every frame that is ready and flushes once the reader
//! would block: the idiomatic, batching way to echo with tokio.
//!
//! With `--workers N` (N > 1) it runs tokio's multi-thread runtime with N worker threads
//! instead: what a tokio user does to use N cores (the peer of `echo --loops N`).
//!
//! Usage (the same as `cargo run --release -p refloop --example echo`):
//! `tokio_echo --addr 127.0.0.1:0 --framing length|lines [--max-frame N] [--workers N]`.
//! It prints `listening on <addr>` as its first line and exits cleanly on SIGINT or SIGTERM.

use std::io::{self, Write};
use std::process::ExitCode;

use futures_util::StreamExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec, LinesCodec};

#[derive(Debug, Clone, Copy)]
enum Framing {
    Length,
    Lines,
}

struct Args {
    addr: String,
    framing: Framing,
    max_frame: usize,
    workers: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut addr = "127.0.0.1:0".to_string();
    let mut framing = Framing::Length;
    let mut max_frame = 8 * 1024 * 1024;
    let mut workers = 1;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--addr" => addr = value("--addr")?,
            "--framing" => {
                framing = match value("--framing")?.as_str() {
                    "length" => Framing::Length,
                    "lines" => Framing::Lines,
                    other => {
                        return Err(format!(
                            "unknown framing {other:?}, expected length or lines"
                        ))
                    }
                }
            }
            "--max-frame" => {
                max_frame = value("--max-frame")?
                    .parse()
                    .map_err(|e| format!("bad --max-frame: {e}"))?
            }
            "--workers" => {
                workers = value("--workers")?
                    .parse()
                    .map_err(|e| format!("bad --workers: {e}"))?
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        addr,
        framing,
        max_frame,
        workers,
    })
}

async fn serve(stream: TcpStream, framing: Framing, max_frame: usize) {
    // Small-message echo latency depends on Nagle being off, as in refloop's loop.
    // Ignoring a failure is fine: it only affects latency, never correctness.
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    match framing {
        Framing::Length => {
            let codec = LengthDelimitedCodec::builder()
                .max_frame_length(max_frame)
                .new_codec();
            let reader = FramedRead::new(r, codec.clone()).map(|frame| frame.map(|b| b.freeze()));
            // The connection ends on EOF or on the first error; either way there is no one to
            // report it to but the peer, which sees the close.
            let _ = reader.forward(FramedWrite::new(w, codec)).await;
        }
        Framing::Lines => {
            let codec = LinesCodec::new_with_max_length(max_frame);
            let reader = FramedRead::new(r, codec.clone());
            // As above: the peer sees the close, and there is no one else to tell.
            let _ = reader.forward(FramedWrite::new(w, codec)).await;
        }
    }
}

async fn run(args: Args) -> io::Result<()> {
    // The handlers are installed before the address is printed: a harness that sends SIGTERM
    // as soon as it has read the address must get a clean exit, not the default action.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let listener = TcpListener::bind(&args.addr).await?;
    {
        let mut out = io::stdout().lock();
        writeln!(out, "listening on {}", listener.local_addr()?)?;
        out.flush()?;
    }
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(serve(stream, args.framing, args.max_frame));
                }
                // EMFILE and friends: report and keep serving the connections we have.
                Err(e) => {
                    eprintln!("accept failed: {e}");
                    tokio::task::yield_now().await;
                }
            },
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
        }
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tokio_echo: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = if args.workers > 1 {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.workers)
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let rt = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio_echo: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokio_echo: {e}");
            ExitCode::FAILURE
        }
    }
}
