//! From the second outside review: a spurious EPOLLOUT (allowed by the epoll contract; the sim's `minimal`
//! mode injects them) for a connect still in progress.
use std::io::{self, IoSlice};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use refloop::framing::Lines;
use refloop::os::{Event as OsEvent, Interest, Linux, Os, Shutdown};
use refloop::{Config, Conn, ConnId, Disconnect, Endpoint, Handler, Server};

#[derive(Debug, Clone, Default)]
struct Spurious {
    /// Inject one spurious EPOLLOUT for the first connection slot at the next wait.
    armed: Arc<AtomicBool>,
}

struct Events {
    inner: <Linux as Os>::Events,
    extra: Vec<OsEvent>,
}

impl Os for Spurious {
    type Fd = OwnedFd;
    type Events = Events;
    fn raw(fd: &OwnedFd) -> i32 {
        Linux::raw(fd)
    }
    fn borrow_fd(fd: &OwnedFd) -> Option<BorrowedFd<'_>> {
        Linux::borrow_fd(fd)
    }
    fn epoll_create(&self) -> io::Result<OwnedFd> {
        Linux.epoll_create()
    }
    fn epoll_add(&self, e: &OwnedFd, fd: &OwnedFd, t: u64, i: Interest) -> io::Result<()> {
        Linux.epoll_add(e, fd, t, i)
    }
    fn epoll_modify(&self, e: &OwnedFd, fd: &OwnedFd, t: u64, i: Interest) -> io::Result<()> {
        Linux.epoll_modify(e, fd, t, i)
    }
    fn epoll_delete(&self, e: &OwnedFd, fd: &OwnedFd) -> io::Result<()> {
        Linux.epoll_delete(e, fd)
    }
    fn events(&self, c: usize) -> Events {
        Events {
            inner: Linux.events(c),
            extra: Vec::new(),
        }
    }
    fn event_count(e: &Events) -> usize {
        Linux::event_count(&e.inner) + e.extra.len()
    }
    fn event(e: &Events, i: usize) -> OsEvent {
        let n = Linux::event_count(&e.inner);
        if i < n {
            Linux::event(&e.inner, i)
        } else {
            e.extra[i - n]
        }
    }
    fn epoll_wait(&self, e: &OwnedFd, ev: &mut Events, t: i32) -> io::Result<()> {
        ev.extra.clear();
        if self.armed.swap(false, Ordering::Relaxed) {
            Linux.epoll_wait(e, &mut ev.inner, 0)?;
            // Slot 0, generation 1: the first connection the loop registers.
            ev.extra.push(OsEvent {
                token: 1 << 32,
                writable: true,
                ..OsEvent::default()
            });
            return Ok(());
        }
        Linux.epoll_wait(e, &mut ev.inner, t)
    }
    fn eventfd(&self) -> io::Result<OwnedFd> {
        Linux.eventfd()
    }
    fn eventfd_write(&self, fd: &OwnedFd, v: u64) -> io::Result<()> {
        Linux.eventfd_write(fd, v)
    }
    fn eventfd_read(&self, fd: &OwnedFd) -> io::Result<u64> {
        Linux.eventfd_read(fd)
    }
    fn listen(&self, at: &Endpoint, b: u32) -> io::Result<(OwnedFd, Endpoint)> {
        Linux.listen(at, b)
    }
    fn accept(&self, l: &OwnedFd) -> io::Result<(OwnedFd, Endpoint)> {
        Linux.accept(l)
    }
    fn connect(&self, t: &Endpoint) -> io::Result<(OwnedFd, bool)> {
        let r = Linux.connect(t);
        if matches!(r, Ok((_, true))) {
            self.armed.store(true, Ordering::Relaxed); // Relaxed: a one-shot flag on the loop thread only.
        }
        r
    }
    fn read(&self, fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
        Linux.read(fd, buf)
    }
    fn writev(&self, fd: &OwnedFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Linux.writev(fd, bufs)
    }
    fn shutdown(&self, fd: &OwnedFd, how: Shutdown) -> io::Result<()> {
        Linux.shutdown(fd, how)
    }
    fn take_error(&self, fd: &OwnedFd) -> io::Result<Option<io::Error>> {
        Linux.take_error(fd)
    }
    fn is_connected(&self, fd: &OwnedFd) -> io::Result<bool> {
        Linux.is_connected(fd)
    }
    fn unsent_in_kernel(&self, fd: &OwnedFd) -> io::Result<usize> {
        Linux.unsent_in_kernel(fd)
    }
    fn set_send_buffer(&self, fd: &OwnedFd, b: usize) -> io::Result<()> {
        Linux.set_send_buffer(fd, b)
    }
    fn set_recv_buffer(&self, fd: &OwnedFd, b: usize) -> io::Result<()> {
        Linux.set_recv_buffer(fd, b)
    }
    fn set_nodelay(&self, fd: &OwnedFd) -> io::Result<()> {
        Linux.set_nodelay(fd)
    }
    fn set_linger_zero(&self, fd: &OwnedFd) -> io::Result<()> {
        Linux.set_linger_zero(fd)
    }
    fn dup(&self, fd: &OwnedFd) -> io::Result<OwnedFd> {
        Linux.dup(fd)
    }
    fn open_spare(&self) -> io::Result<OwnedFd> {
        Linux.open_spare()
    }
    fn path_identity(&self, p: &Path) -> Option<u64> {
        Linux.path_identity(p)
    }
    fn remove_path(&self, p: &Path) -> io::Result<()> {
        Linux.remove_path(p)
    }
    fn install_termination_handler(&self, w: &OwnedFd) -> io::Result<()> {
        Linux.install_termination_handler(w)
    }
    fn termination_requested(&self) -> bool {
        Linux.termination_requested()
    }
    fn now(&self) -> Instant {
        Linux.now()
    }
}

struct Rec(mpsc::Sender<String>);
impl Handler<Lines> for Rec {
    fn on_connect(&mut self, c: &Conn<'_, Lines>) {
        let _ = self.0.send(format!("on_connect (peer {})", c.peer_addr()));
    }
    fn on_message(&mut self, _c: &Conn<'_, Lines>, m: String) {
        let _ = self.0.send(m);
    }
    fn on_disconnect(&mut self, _id: ConnId, d: Disconnect) {
        let _ = self.0.send(format!("on_disconnect {:?}", d.reason));
    }
    fn on_connect_failed(&mut self, _t: &Endpoint, e: io::Error) {
        let _ = self.0.send(format!("on_connect_failed {e}"));
    }
}

#[test]
fn s1_a_spurious_writable_event_does_not_complete_a_connect_in_progress() {
    // A listener whose accept queue is full: the loop's SYN is dropped, the connect stays in
    // SYN_SENT.
    let l = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    l.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    l.listen(0).unwrap();
    let target = l.local_addr().unwrap().as_socket().unwrap();
    let _filler = std::net::TcpStream::connect(target).unwrap();
    let os = Spurious::default();
    let cfg = Config {
        idle_timeout: Some(Duration::from_millis(1500)),
        ..Config::default()
    };
    let mut server = Server::with_os(os, Lines::new(1024), cfg).unwrap();
    server.connect(target).unwrap();
    let handle = server.handle();
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || server.run(Rec(tx)));
    let mut seen = Vec::new();
    // Bounded by the 1.5 s connect timeout.
    while let Ok(s) = rx.recv_timeout(Duration::from_secs(4)) {
        let done = s.starts_with("on_connect_failed") || s.starts_with("on_disconnect");
        seen.push(s);
        if done {
            break;
        }
    }
    handle.shutdown();
    t.join().unwrap().unwrap();
    println!("handler saw: {seen:?}");
    assert!(
        !seen.iter().any(|s| s.starts_with("on_connect ")),
        "premature on_connect: {seen:?}"
    );
}
