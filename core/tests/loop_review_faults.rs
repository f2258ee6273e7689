//! A fault-injecting OS layer over the real kernel (from the second outside review): `accept4`
//! errors that a real kernel only produces under memory pressure, with the real sockets
//! otherwise.
mod loop_support;

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use loop_support::*;
use refloop::framing::Lines;
use refloop::os::{Event as OsEvent, Interest, Linux, Os, Shutdown};
use refloop::{Config, Conn, Endpoint, Handler, Server};

#[derive(Debug, Clone, Default)]
struct Faulty {
    /// errno values the next accept calls return, in order.
    accept_script: Arc<Mutex<VecDeque<i32>>>,
    /// While set, accept alternates EMFILE, ENOBUFS for ever.
    emfile_enobufs: Arc<AtomicBool>,
    /// Every call of read/accept/eventfd/epoll_wait/writev fails with EINTR once first.
    eintr: Arc<AtomicBool>,
    flip: Arc<AtomicU64>,
    accept_calls: Arc<AtomicU64>,
}

impl Faulty {
    fn eintr_now(&self) -> bool {
        self.eintr.load(Ordering::Relaxed)
            && self.flip.fetch_add(1, Ordering::Relaxed).is_multiple_of(2)
    }
}

fn err(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

impl Os for Faulty {
    type Fd = OwnedFd;
    type Events = <Linux as Os>::Events;
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
    fn events(&self, c: usize) -> Self::Events {
        Linux.events(c)
    }
    fn event_count(e: &Self::Events) -> usize {
        Linux::event_count(e)
    }
    fn event(e: &Self::Events, i: usize) -> OsEvent {
        Linux::event(e, i)
    }
    fn epoll_wait(&self, e: &OwnedFd, ev: &mut Self::Events, t: i32) -> io::Result<()> {
        if self.eintr_now() {
            return Err(err(libc_eintr()));
        }
        Linux.epoll_wait(e, ev, t)
    }
    fn eventfd(&self) -> io::Result<OwnedFd> {
        Linux.eventfd()
    }
    fn eventfd_write(&self, fd: &OwnedFd, v: u64) -> io::Result<()> {
        if self.eintr_now() {
            return Err(err(libc_eintr()));
        }
        Linux.eventfd_write(fd, v)
    }
    fn eventfd_read(&self, fd: &OwnedFd) -> io::Result<u64> {
        if self.eintr_now() {
            return Err(err(libc_eintr()));
        }
        Linux.eventfd_read(fd)
    }
    fn listen(&self, at: &Endpoint, b: u32) -> io::Result<(OwnedFd, Endpoint)> {
        Linux.listen(at, b)
    }
    fn accept(&self, l: &OwnedFd) -> io::Result<(OwnedFd, Endpoint)> {
        let n = self.accept_calls.fetch_add(1, Ordering::Relaxed);
        if self.emfile_enobufs.load(Ordering::Relaxed) {
            return Err(err(if n.is_multiple_of(2) {
                refloop::os::errno::EMFILE
            } else {
                refloop::os::errno::ENOBUFS
            }));
        }
        if let Some(code) = self.accept_script.lock().unwrap().pop_front() {
            return Err(err(code));
        }
        if self.eintr_now() {
            return Err(err(libc_eintr()));
        }
        Linux.accept(l)
    }
    fn connect(&self, t: &Endpoint) -> io::Result<(OwnedFd, bool)> {
        Linux.connect(t)
    }
    fn read(&self, fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
        if self.eintr_now() {
            return Err(err(libc_eintr()));
        }
        Linux.read(fd, buf)
    }
    fn writev(&self, fd: &OwnedFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if self.eintr_now() {
            return Err(err(libc_eintr()));
        }
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

fn libc_eintr() -> i32 {
    refloop::os::errno::EINTR
}

struct Echo {
    tx: std::sync::mpsc::Sender<String>,
    errors: u64,
    os: Faulty,
    stop_spin_after: u64,
}
impl Handler<Lines> for Echo {
    fn on_message(&mut self, conn: &Conn<'_, Lines>, msg: String) {
        conn.send(&msg).unwrap();
        let _ = self.tx.send(msg);
    }
    fn on_accept_error(&mut self, e: &io::Error) {
        self.errors += 1;
        if self.errors == self.stop_spin_after {
            let _ = self
                .tx
                .send(format!("{} accept errors, last: {e}", self.errors));
            self.os.emfile_enobufs.store(false, Ordering::Relaxed);
        }
    }
}

fn spawn(
    os: Faulty,
    stop_spin_after: u64,
) -> (
    refloop::LoopHandle<Lines>,
    std::net::SocketAddr,
    std::sync::mpsc::Receiver<String>,
    std::thread::JoinHandle<io::Result<Echo>>,
) {
    let mut server = Server::with_os(os.clone(), Lines::new(1024), Config::default()).unwrap();
    let addr = server.listen("127.0.0.1:0").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = server.handle();
    let t = std::thread::spawn(move || {
        server.run(Echo {
            tx,
            errors: 0,
            os,
            stop_spin_after,
        })
    });
    (handle, addr, rx, t)
}

/// F1: EMFILE then ENOBUFS on the reserve-fd accept: accept_all spins without returning to
/// epoll_wait (and calls on_accept_error each time) for as long as both last.
#[test]
fn f1_emfile_plus_enobufs_does_not_spin_inside_one_accept_pass() {
    let os = Faulty::default();
    os.emfile_enobufs.store(true, Ordering::Relaxed);
    let (handle, addr, rx, t) = spawn(os.clone(), 100_000);
    let turns_before = handle.stats().turns;
    let c = client(addr);
    let report = rx.recv_timeout(PATIENCE).ok();
    let turns_after = handle.stats().turns;
    println!(
        "handler: {report:?}; accept calls: {}; loop turns during them: {}",
        os.accept_calls.load(Ordering::Relaxed),
        turns_after - turns_before
    );
    send(&c, "still served?\n");
    println!(
        "echo after the fault cleared: {:?}",
        read_lines(&c, 1, PATIENCE)
    );
    handle.shutdown();
    t.join().unwrap().unwrap();
    assert!(
        report.is_none(),
        "one accept pass made 100000 failing accept calls without returning to epoll_wait"
    );
}

/// Check: one ENOBUFS with a client already in the backlog; the retry timer serves it.
#[test]
fn c2_enobufs_is_retried_on_a_timer() {
    let os = Faulty::default();
    os.accept_script
        .lock()
        .unwrap()
        .push_back(refloop::os::errno::ENOBUFS);
    let (handle, addr, _rx, t) = spawn(os, u64::MAX);
    let c = client(addr);
    send(&c, "hi\n");
    assert_eq!(read_lines(&c, 1, PATIENCE), vec!["hi"]);
    handle.shutdown();
    t.join().unwrap().unwrap();
}

/// Check: EINTR on every other read/accept/eventfd/epoll_wait/writev call.
#[test]
fn c3_eintr_everywhere_is_retried() {
    let os = Faulty::default();
    os.eintr.store(true, Ordering::Relaxed);
    let (handle, addr, _rx, t) = spawn(os, u64::MAX);
    let c = client(addr);
    for i in 0..50 {
        send(&c, &format!("m{i}\n"));
        assert_eq!(read_lines(&c, 1, PATIENCE), vec![format!("m{i}")]);
    }
    let s = handle.stats();
    println!("eintr retries counted by the loop: {}", s.eintr_retries);
    handle.shutdown();
    t.join().unwrap().unwrap();
    let _ = Duration::ZERO;
}
