//! Sending one request stream and collecting what comes back.
//!
//! To tell "closed" from "still open" without waiting for silence, the client follows the
//! stream with a sentinel, `ECHO <token>`: a server that kept the connection open answers it
//! last, and one that closed it never runs it. Reads are bounded by a timeout, which fails the
//! exchange.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

/// The sentinel's argument; no generated request contains it.
pub const SENTINEL_TOKEN: &[u8] = b"refloop-sentinel-7f3a";

/// How long one read may wait before the exchange counts as stalled.
pub const READ_BOUND: Duration = Duration::from_secs(10);

/// What one connection got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// Every reply byte before the sentinel's reply (or before the close).
    pub replies: Vec<u8>,
    /// Whether the server closed the connection instead of answering the sentinel.
    pub closed: bool,
}

fn sentinel() -> (Vec<u8>, Vec<u8>) {
    let n = SENTINEL_TOKEN.len();
    let mut request = format!("*2\r\n$4\r\nECHO\r\n${n}\r\n").into_bytes();
    request.extend_from_slice(SENTINEL_TOKEN);
    request.extend_from_slice(b"\r\n");
    let mut reply = format!("${n}\r\n").into_bytes();
    reply.extend_from_slice(SENTINEL_TOKEN);
    reply.extend_from_slice(b"\r\n");
    (request, reply)
}

/// Sends `stream` and the sentinel in one write, then reads until the sentinel's reply or EOF.
///
/// # Errors
///
/// Connect and write errors, and a read that waits longer than [`READ_BOUND`].
pub fn exchange(addr: SocketAddr, stream: &[u8]) -> io::Result<Exchange> {
    let (request, reply) = sentinel();
    let mut conn = TcpStream::connect(addr)?;
    conn.set_nodelay(true)?;
    conn.set_read_timeout(Some(READ_BOUND))?;
    let mut all = stream.to_vec();
    all.extend_from_slice(&request);
    conn.write_all(&all)?;
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match conn.read(&mut buf) {
            Ok(n) => n,
            // A reset after the server closed with our bytes unread: it closed.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => 0,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(Exchange {
                replies: got,
                closed: true,
            });
        }
        got.extend_from_slice(&buf[..n]);
        if got.ends_with(&reply) {
            got.truncate(got.len() - reply.len());
            // The connection stays open; dropping it closes our side.
            let _ = conn.shutdown(Shutdown::Both);
            return Ok(Exchange {
                replies: got,
                closed: false,
            });
        }
    }
}

/// Sends `stream` alone, with no sentinel, and reads until the server closes.
///
/// For streams that must end in a close (a protocol error that needs the bytes to stop, such
/// as a line over 64 KiB with no line end at all).
///
/// # Errors
///
/// Connect and write errors, and a read that waits longer than [`READ_BOUND`] (the server
/// kept the connection open).
pub fn exchange_until_close(addr: SocketAddr, stream: &[u8]) -> io::Result<Vec<u8>> {
    let mut conn = TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(READ_BOUND))?;
    conn.write_all(stream)?;
    let mut got = Vec::new();
    match conn.read_to_end(&mut got) {
        Ok(_) => Ok(got),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(got),
        Err(e) => Err(e),
    }
}

/// Sends one command and returns its whole reply (for set-up such as `FLUSHALL`).
///
/// # Errors
///
/// As [`exchange`]; a closed connection is an error here.
pub fn command(addr: SocketAddr, args: &[&[u8]]) -> io::Result<Vec<u8>> {
    let args: Vec<Vec<u8>> = args.iter().map(|a| a.to_vec()).collect();
    let got = exchange(addr, &super::gen::multibulk(&args))?;
    if got.closed {
        return Err(io::Error::other("the server closed the connection"));
    }
    Ok(got.replies)
}
