//! The client side of a schedule: non-blocking loopback sockets driven one step at a time.
//!
//! Clients never block: a write that meets a full socket buffer leaves the rest in an outbox that
//! later steps (and the final drain) push out, so a schedule in which nobody reads cannot deadlock
//! the executor.
//! Writes use `send(MSG_NOSIGNAL)`, so writing to a connection the server has dropped yields
//! `EPIPE` rather than a `SIGPIPE` (the fuzz target runs under libFuzzer's `main`, which does not
//! ignore `SIGPIPE` the way Rust's does).

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use super::Buffer;

/// The smallest `SO_RCVBUF` a client asks for on an established connection.
///
/// The window scale is fixed at the handshake; shrinking the receive buffer of an established
/// connection far below the window it advertised makes the peer fall back to zero-window probes
/// with exponential backoff, and 180 KiB then takes seconds to cross loopback (measured for a
/// request of 1 byte: 10.2 s; 4 KiB: 2.8 s; 16 KiB: 0.12 s; 32 KiB: 7 ms).
/// The server's own small `SO_SNDBUF` ([`Tuning::server_sndbuf`](super::Tuning::server_sndbuf))
/// is what forces partial writes.
pub const MIN_RCVBUF: u32 = 32 * 1024;

/// What one read returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// This many bytes arrived.
    Data(usize),
    /// Nothing is there yet.
    WouldBlock,
    /// The server closed its end (FIN).
    Eof,
    /// The server reset the connection (RST) or the socket reported another error.
    Reset,
}

/// One client connection.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    outbox: VecDeque<Vec<u8>>,
    /// The first piece of `outbox` was written up to here.
    sent_of_front: usize,
    write_failed: bool,
}

impl Client {
    /// Connects to `addr`, with `TCP_NODELAY` (so small pieces go out as written, with no Nagle
    /// delay) and non-blocking I/O.
    ///
    /// # Errors
    ///
    /// Returns the connect error, or a timeout when the server's accept queue is full.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        Ok(Client {
            stream,
            outbox: VecDeque::new(),
            sent_of_front: 0,
            write_failed: false,
        })
    }

    /// The client's local address, which the server sees as the peer address.
    ///
    /// # Errors
    ///
    /// Returns the `getsockname` error.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    /// Sends `pieces` in order, one `send` each (yielding the thread between two pieces when
    /// `yields` is set), and queues whatever the socket does not take.
    ///
    /// Returns how many pieces went out in full before the socket pushed back.
    pub fn send_pieces(&mut self, pieces: Vec<Vec<u8>>, yields: bool) -> usize {
        let mut written = 0;
        for (i, piece) in pieces.into_iter().enumerate() {
            if i > 0 && yields {
                std::thread::yield_now();
            }
            self.outbox.push_back(piece);
            if self.flush() {
                written += 1;
            }
        }
        written
    }

    /// Writes as much of the outbox as the socket takes now; true when the outbox is empty.
    pub fn flush(&mut self) -> bool {
        while let Some(front) = self.outbox.front() {
            if self.write_failed {
                // The server dropped the connection: nothing queued can be delivered any more.
                self.outbox.clear();
                self.sent_of_front = 0;
                break;
            }
            let rest = &front[self.sent_of_front..];
            if rest.is_empty() {
                self.outbox.pop_front();
                self.sent_of_front = 0;
                continue;
            }
            match send_nosignal(&self.stream, rest) {
                Ok(n) => {
                    self.sent_of_front += n;
                    if self.sent_of_front == front.len() {
                        self.outbox.pop_front();
                        self.sent_of_front = 0;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.write_failed = true,
            }
        }
        true
    }

    /// Whether bytes are still waiting in the outbox.
    pub fn has_unsent(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// Whether a write failed (`EPIPE`, `ECONNRESET`): the server has dropped the connection.
    pub fn write_failed(&self) -> bool {
        self.write_failed
    }

    /// Reads once, at most `buf.len()` bytes.
    pub fn read_once(&mut self, buf: &mut [u8]) -> ReadOutcome {
        loop {
            match self.stream.read(buf) {
                Ok(0) => return ReadOutcome::Eof,
                Ok(n) => return ReadOutcome::Data(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::WouldBlock,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return ReadOutcome::Reset,
            }
        }
    }

    /// Waits until one of `clients` is readable, or writable where its flag is set, for at most
    /// `timeout`; true when one became ready.
    pub fn wait_any(clients: &[(&Client, bool)], timeout: Duration) -> bool {
        let mut fds: Vec<libc::pollfd> = clients
            .iter()
            .map(|(c, want_write)| libc::pollfd {
                fd: c.stream.as_raw_fd(),
                events: if *want_write {
                    libc::POLLIN | libc::POLLOUT
                } else {
                    libc::POLLIN
                },
                revents: 0,
            })
            .collect();
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        let count = libc::nfds_t::try_from(fds.len()).unwrap_or(libc::nfds_t::MAX);
        // SAFETY: `fds` holds `count` initialised `pollfd`s and lives across the call, which only
        // writes their `revents`; every fd stays open because `clients` borrows its `Client`.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), count, ms) };
        n > 0
    }

    /// Shuts down the write half: the server sees a FIN, the client keeps reading.
    ///
    /// # Errors
    ///
    /// Returns the `shutdown` error (for example when the server already reset the connection).
    pub fn half_close(&mut self) -> io::Result<()> {
        self.stream.shutdown(Shutdown::Write)
    }

    /// Sets `SO_LINGER` to zero, so that dropping the client sends an RST instead of a FIN.
    ///
    /// # Errors
    ///
    /// Returns the `setsockopt` error.
    pub fn set_linger_zero(&self) -> io::Result<()> {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        setsockopt(&self.stream, libc::SOL_SOCKET, libc::SO_LINGER, &linger)
    }

    /// Asks the kernel for a socket buffer of `bytes` (it doubles and clamps the request);
    /// receive buffers are not shrunk below [`MIN_RCVBUF`].
    ///
    /// # Errors
    ///
    /// Returns the `setsockopt` error.
    pub fn shrink_buffer(&self, which: Buffer, bytes: u32) -> io::Result<()> {
        let (opt, bytes) = match which {
            Buffer::Send => (libc::SO_SNDBUF, bytes),
            Buffer::Recv => (libc::SO_RCVBUF, bytes.max(MIN_RCVBUF)),
        };
        let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        setsockopt(&self.stream, libc::SOL_SOCKET, opt, &value)
    }
}

/// `send(2)` with `MSG_NOSIGNAL` and `MSG_DONTWAIT`.
fn send_nosignal(stream: &TcpStream, data: &[u8]) -> io::Result<usize> {
    // SAFETY: the pointer and length describe the live slice `data`, which `send` only reads; the
    // fd is open because `stream` is borrowed for the whole call.
    let n = unsafe {
        libc::send(
            stream.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        // Reason: `send` returns at most `data.len()` on success, which fits in `usize`.
        Ok(n as usize)
    }
}

/// `setsockopt(2)` with a value of type `T`.
fn setsockopt<T>(
    stream: &TcpStream,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    let len = libc::socklen_t::try_from(std::mem::size_of::<T>()).expect("option values are small");
    // SAFETY: `value` points to a live, initialised `T` of exactly `len` bytes, which the kernel
    // only reads; the fd is open because `stream` is borrowed for the whole call.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The open file descriptors of this process, with what each one refers to (`socket:[…]`,
/// `anon_inode:[eventpoll]`, a path), read from `/proc/self/fd`.
///
/// # Errors
///
/// Returns the error from reading `/proc/self/fd`.
pub fn open_fds() -> io::Result<Vec<(u32, String)>> {
    let own_dir = format!("/proc/{}/fd", std::process::id());
    let mut fds = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let entry = entry?;
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // An entry can vanish between the listing and the read-back; it is skipped.
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        // The directory handle `read_dir` itself holds is not one of ours to count.
        if target == own_dir {
            continue;
        }
        fds.push((fd, target));
    }
    fds.sort();
    Ok(fds)
}
