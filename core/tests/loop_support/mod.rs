//! Shared helpers for the event-loop tests: a recording handler, a loop on its own thread
//! (always joined), and line clients with bounded waits.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use refloop::framing::{Framing, Lines};
use refloop::{
    Config, Conn, ConnHandle, ConnId, Disconnect, Endpoint, Handler, LoopHandle, Server,
};

/// How long a test waits for something that should happen at once before calling it a stall.
pub const PATIENCE: Duration = Duration::from_secs(5);
/// How long a teeth test waits before concluding the known-bad variant stalled.
pub const STALL: Duration = Duration::from_millis(700);

/// What the recording handler saw, in order.
#[derive(Debug)]
pub enum Event<F: Framing> {
    Connected {
        id: ConnId,
        handle: ConnHandle<F>,
        outbound: bool,
        peer: Endpoint,
        dup: Option<OwnedFd>,
    },
    Message {
        id: ConnId,
        msg: F::Message,
    },
    Disconnected {
        id: ConnId,
        disconnect: Disconnect,
    },
    ConnectFailed {
        target: Endpoint,
        error: io::Error,
    },
    AcceptError {
        error: io::ErrorKind,
    },
}

/// A message callback that replaces echoing.
pub type OnMessage<F> = Box<dyn FnMut(&Conn<'_, F>, &<F as Framing>::Message) + Send>;

/// A handler that reports everything on a channel and optionally echoes.
pub struct Recorder<F: Framing> {
    pub tx: Sender<Event<F>>,
    pub echo: bool,
    /// Closes the connection when this message arrives.
    pub close_on: Option<F::Message>,
    /// Duplicates each connection's fd into the `Connected` event.
    pub dup_fds: bool,
    /// Called on each message instead of echoing it, when set.
    pub on_msg: Option<OnMessage<F>>,
}

impl<F: Framing> Recorder<F> {
    pub fn new(echo: bool) -> (Recorder<F>, Receiver<Event<F>>) {
        let (tx, rx) = mpsc::channel();
        (
            Recorder {
                tx,
                echo,
                close_on: None,
                dup_fds: false,
                on_msg: None,
            },
            rx,
        )
    }

    /// `n` recorders (one per loop of a group) reporting to one receiver, each set up by
    /// `setup`.
    pub fn group(
        n: usize,
        echo: bool,
        mut setup: impl FnMut(&mut Recorder<F>),
    ) -> (Vec<Recorder<F>>, Receiver<Event<F>>) {
        let (first, rx) = Recorder::new(echo);
        let mut all = Vec::with_capacity(n);
        for _ in 0..n {
            let mut r = Recorder {
                tx: first.tx.clone(),
                echo,
                close_on: None,
                dup_fds: false,
                on_msg: None,
            };
            setup(&mut r);
            all.push(r);
        }
        (all, rx)
    }
}

impl<F> Handler<F> for Recorder<F>
where
    F: Framing + Clone,
    F::Message: Clone + PartialEq,
{
    fn on_connect(&mut self, conn: &Conn<'_, F>) {
        let dup = self.dup_fds.then(|| {
            conn.socket()
                .expect("a real socket")
                .try_clone_to_owned()
                .expect("dup")
        });
        // Ignored: the test may have stopped listening.
        let _ = self.tx.send(Event::Connected {
            id: conn.id(),
            handle: conn.handle(),
            outbound: conn.is_outbound(),
            peer: conn.peer_addr().clone(),
            dup,
        });
    }

    fn on_message(&mut self, conn: &Conn<'_, F>, msg: F::Message) {
        if let Some(f) = self.on_msg.as_mut() {
            f(conn, &msg);
        } else if self.echo {
            conn.send(&msg).expect("echo re-encodes");
        }
        if self.close_on.as_ref() == Some(&msg) {
            conn.close();
        }
        let _ = self.tx.send(Event::Message { id: conn.id(), msg });
    }

    fn on_disconnect(&mut self, id: ConnId, disconnect: Disconnect) {
        let _ = self.tx.send(Event::Disconnected { id, disconnect });
    }

    fn on_connect_failed(&mut self, target: &Endpoint, error: io::Error) {
        let _ = self.tx.send(Event::ConnectFailed {
            target: target.clone(),
            error,
        });
    }

    fn on_accept_error(&mut self, error: &io::Error) {
        let _ = self.tx.send(Event::AcceptError {
            error: error.kind(),
        });
    }
}

/// How long [`Running::stop`] waits for the loop to exit before it fails the test as a hang
/// (a stuck loop must be a named failure within its bound, never a stuck test binary).
pub const WATCHDOG: Duration = Duration::from_secs(30);

/// A loop running on its own thread; [`Running::stop`] shuts it down and joins it, within
/// [`WATCHDOG`].
pub struct Running<F: Framing + Clone, H> {
    pub handle: LoopHandle<F>,
    pub addr: Option<SocketAddr>,
    thread: Option<JoinHandle<io::Result<H>>>,
    /// Disconnected when the loop thread ends, however it ends.
    done: Receiver<()>,
}

impl<F: Framing + Clone + Send + 'static, H: Handler<F> + Send + 'static> Running<F, H> {
    /// Runs `server` on a new thread.
    pub fn spawn(server: Server<F>, handler: H) -> Running<F, H> {
        let handle = server.handle();
        let addr = server.local_addr().ok();
        let (done_tx, done) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            // Dropped when `run` returns or unwinds, which is what `done` waits for.
            let _done = done_tx;
            server.run(handler)
        });
        Running {
            handle,
            addr,
            thread: Some(thread),
            done,
        }
    }
}

impl<F: Framing + Clone + Send + 'static, H: Handler<F> + Send + 'static> Running<F, Vec<H>> {
    /// Runs every loop of `group` on threads of its own, loop `i` with `handlers[i]`; `handle`
    /// is loop 0's, whose shutdown shuts the whole group down.
    pub fn spawn_group(group: refloop::Loops<F>, handlers: Vec<H>) -> Running<F, Vec<H>> {
        let handle = group
            .handle()
            .loop_handle(0)
            .expect("a group has a loop 0")
            .clone();
        let addr = group.local_addr().ok();
        let (done_tx, done) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            // Dropped when `run` returns or unwinds, which is what `done` waits for.
            let _done = done_tx;
            let mut handlers: Vec<Option<H>> = handlers.into_iter().map(Some).collect();
            group.run(|i| handlers[i].take().expect("one handler per loop"))
        });
        Running {
            handle,
            addr,
            thread: Some(thread),
            done,
        }
    }
}

impl<F: Framing + Clone, T> Running<F, T> {
    /// Shuts the loop down and returns its handler and the outcome of `run`.
    ///
    /// Panics, naming the hang, if the loop has not exited within [`WATCHDOG`].
    pub fn stop(self) -> io::Result<T> {
        self.handle.shutdown();
        self.join()
    }

    /// Waits for the loop to exit by itself (after a shutdown asked elsewhere), within
    /// [`WATCHDOG`].
    pub fn join(mut self) -> io::Result<T> {
        let thread = self.thread.take().expect("joined once");
        wait_exit(&self.done, WATCHDOG);
        thread.join().expect("loop thread panicked")
    }
}

/// Waits until the loop thread's `done` sender is gone, or panics after `within`.
fn wait_exit(done: &Receiver<()>, within: Duration) {
    match done.recv_timeout(within) {
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("hang: the loop did not exit within {within:?} of its shutdown")
        }
        // Disconnected: the thread ended. A value is never sent.
        Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {}
    }
}

impl<F: Framing + Clone, H> Drop for Running<F, H> {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.handle.shutdown();
            // Bounded: a test that is already failing must not hang on a stuck loop too.
            if let Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) =
                self.done.recv_timeout(WATCHDOG)
            {
                // Ignored: the test is already failing if we get here with a thread to join.
                let _ = thread.join();
            }
        }
    }
}

/// A lines server on 127.0.0.1 with `config`.
pub fn lines_server(config: Config) -> Server<Lines> {
    Server::bind("127.0.0.1:0", Lines::new(64 * 1024), config).expect("bind")
}

/// Receives the next event, or panics after `PATIENCE`.
pub fn next<F: Framing>(rx: &Receiver<Event<F>>) -> Event<F> {
    rx.recv_timeout(PATIENCE)
        .expect("no loop event within the patience bound")
}

/// Receives events until one matches `pick`, within `within`; returns `None` on timeout.
pub fn wait_for<F: Framing, T>(
    rx: &Receiver<Event<F>>,
    within: Duration,
    mut pick: impl FnMut(Event<F>) -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(event) => {
                if let Some(found) = pick(event) {
                    return Some(found);
                }
            }
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => return None,
        }
    }
}

/// Connects a blocking client with a read timeout of `PATIENCE`.
pub fn client(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(PATIENCE))
        .expect("read timeout");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// Reads exactly `n` lines, or fewer if the read times out / the stream ends.
pub fn read_lines(stream: &TcpStream, n: usize, timeout: Duration) -> Vec<String> {
    stream
        .set_read_timeout(Some(timeout))
        .expect("read timeout");
    let mut reader = BufReader::new(stream);
    let mut lines = Vec::new();
    while lines.len() < n {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) if line.ends_with('\n') => lines.push(line.trim_end_matches('\n').to_string()),
            Ok(_) => break,
            Err(_) => break,
        }
    }
    lines
}

/// Reads until EOF (or timeout/error); returns the bytes and whether EOF was seen.
pub fn read_to_eof(mut stream: &TcpStream, timeout: Duration) -> (Vec<u8>, bool) {
    stream
        .set_read_timeout(Some(timeout))
        .expect("read timeout");
    let mut all = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (all, true),
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return (all, false),
        }
    }
}

/// Writes `text` as one write.
pub fn send(mut stream: &TcpStream, text: &str) {
    stream.write_all(text.as_bytes()).expect("client write");
}
