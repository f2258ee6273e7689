//! One loop per core: a group of single-threaded loops sharing listening addresses.
//!
//! Each loop of a [`Loops`] is a whole [`Server`] on a thread of its own, exactly as alone: it
//! owns its epoll instance, its eventfd and its connections.
//! A connection lives on the loop that accepted (or connected) it for its whole life, so no
//! fd is ever handled by two threads, and `EPOLLONESHOT` (EPOLL-NOTES 16) is not needed.
//! What the loops share is the listening address, in one of two ways ([`Sharing`]), and the
//! routing of handles: a [`ConnId`] names its loop, so a [`LoopHandle::send_to`] on any loop,
//! or a [`ConnHandle`](super::ConnHandle) on any thread, reaches the connection wherever it
//! lives.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::{Config, ConnId, Endpoint, Handler, LoopHandle, SendError, Server, Stats};
use crate::framing::Framing;
use crate::os::{Linux, Os};

/// How the loops of a [`Loops`] share one listening address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sharing {
    /// One `SO_REUSEPORT` listener per loop: the kernel spreads new connections over them by
    /// a hash of the connection's addresses (nginx's `reuseport`). TCP only. A loop that is
    /// busy, or at `max_connections`, keeps its hashed share of new clients waiting in its own
    /// backlog: there is no hand-over between listeners.
    #[default]
    ReusePort,
    /// One listener, registered in every loop's epoll with `EPOLLEXCLUSIVE` (Linux 4.5), so one
    /// connection wakes one loop rather than all of them (EPOLL-NOTES 15).
    Exclusive,
}

/// `n` loops, each on its own thread, sharing listeners.
///
/// Each loop is a whole [`Server`] on a thread of its own, exactly as alone. A connection lives
/// on the loop that accepted (or connected) it for its whole life, so no fd is ever handled by
/// two threads and `EPOLLONESHOT` is not needed. Its [`ConnId`] names its loop, so a
/// [`LoopHandle::send_to`] on any loop, or a [`ConnHandle`](super::ConnHandle) on any thread,
/// reaches it wherever it lives.
///
/// # Examples
///
/// ```
/// use refloop::framing::Lines;
/// use refloop::{Config, Conn, Handler, Loops, Sharing};
///
/// struct Echo;
/// impl Handler<Lines> for Echo {
///     fn on_message(&mut self, conn: &Conn<'_, Lines>, line: String) {
///         let _ = conn.send(&line);
///     }
/// }
///
/// let loops = Loops::bind("127.0.0.1:0", 2, Sharing::ReusePort, Lines::new(1024), Config::default())?;
/// let handle = loops.handle();
/// handle.shutdown(); // (a real server would shut down later)
/// let handlers = loops.run(|_loop_index| Echo)?;
/// assert_eq!(handlers.len(), 2);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Loops<F: Framing + Clone, O: Os = Linux> {
    servers: Vec<Server<F, O>>,
}

impl<F: Framing + Clone> Loops<F> {
    /// `loops` loops over the real kernel, with no listeners yet.
    ///
    /// # Errors
    ///
    /// As [`Loops::with_os`].
    pub fn new(loops: usize, framing: F, config: Config) -> io::Result<Loops<F>> {
        Loops::with_os(Linux, loops, framing, config)
    }

    /// `loops` loops listening on TCP `addr`, shared as `sharing` says.
    ///
    /// # Errors
    ///
    /// As [`Loops::new`] and [`Loops::listen`].
    pub fn bind(
        addr: impl ToSocketAddrs,
        loops: usize,
        sharing: Sharing,
        framing: F,
        config: Config,
    ) -> io::Result<Loops<F>> {
        let mut group = Loops::new(loops, framing, config)?;
        group.listen(addr, sharing)?;
        Ok(group)
    }
}

impl<F: Framing + Clone, O: Os> Loops<F, O> {
    /// `loops` loops over `os`, with no listeners yet.
    ///
    /// # Errors
    ///
    /// Fails with [`io::ErrorKind::InvalidInput`] unless `1 <= loops <= 65535`, or as
    /// [`Server::with_os`].
    pub fn with_os(os: O, loops: usize, framing: F, config: Config) -> io::Result<Loops<F, O>> {
        if loops == 0 || loops > usize::from(u16::MAX) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "invalid loops: must be between 1 and 65535",
            ));
        }
        let instance = super::next_instance();
        let servers = (0..loops)
            .map(|i| {
                Server::build(
                    os.clone(),
                    framing.clone(),
                    config.clone(),
                    i as u16,
                    instance,
                )
            })
            .collect::<io::Result<Vec<_>>>()?;
        let all: Vec<_> = servers.iter().map(|s| Arc::downgrade(s.shared())).collect();
        for server in &servers {
            // Each group's loops are new here, so their sibling lists are still unset.
            let _ = server.shared().siblings.set(all.clone());
        }
        Ok(Loops { servers })
    }

    /// How many loops.
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Always `false`: a group has at least one loop.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Adds a TCP listener on `addr`, shared by every loop as `sharing` says; returns the bound
    /// address.
    ///
    /// # Errors
    ///
    /// Fails if the address cannot be resolved or bound (with [`Sharing::ReusePort`], also if
    /// the OS layer has no `SO_REUSEPORT`).
    pub fn listen(&mut self, addr: impl ToSocketAddrs, sharing: Sharing) -> io::Result<SocketAddr> {
        let addr = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address to bind"))?;
        match sharing {
            Sharing::ReusePort => {
                let os = self.servers[0].os().clone();
                let (first, local) = os.listen_reuse_port(&Endpoint::Tcp(addr), LISTEN_BACKLOG)?;
                let Endpoint::Tcp(bound) = local else {
                    return Err(io::Error::other("a TCP listener reported a unix address"));
                };
                // Every other loop binds the port the first one got (port 0 picks one).
                let mut fds = vec![first];
                for _ in 1..self.servers.len() {
                    fds.push(
                        os.listen_reuse_port(&Endpoint::Tcp(bound), LISTEN_BACKLOG)?
                            .0,
                    );
                }
                for (k, fd) in fds.into_iter().enumerate() {
                    if let Err(e) =
                        self.servers[k].add_listener(fd, Endpoint::Tcp(bound), None, false)
                    {
                        self.roll_back(k);
                        return Err(e);
                    }
                }
                Ok(bound)
            }
            Sharing::Exclusive => {
                let os = self.servers[0].os().clone();
                let (fd, local) = os.listen(&Endpoint::Tcp(addr), LISTEN_BACKLOG)?;
                let Endpoint::Tcp(bound) = local else {
                    return Err(io::Error::other("a TCP listener reported a unix address"));
                };
                self.share_exclusive(fd, local, None)?;
                Ok(bound)
            }
        }
    }

    /// Adds a Unix-domain listener at `path`, registered in every loop with `EPOLLEXCLUSIVE`
    /// (`SO_REUSEPORT` does not apply to Unix sockets).
    ///
    /// # Errors
    ///
    /// Fails if `path` cannot be bound.
    pub fn listen_unix(&mut self, path: impl AsRef<Path>) -> io::Result<()> {
        let path = path.as_ref();
        let os = self.servers[0].os().clone();
        let (fd, local) = os.listen(&Endpoint::Unix(Some(path.to_path_buf())), LISTEN_BACKLOG)?;
        let unix_path = os
            .path_identity(path)
            .map(|identity| (path.to_path_buf(), identity));
        self.share_exclusive(fd, local, unix_path)
    }

    /// Registers `fd` in every loop, the others through duplicates of it (one open file
    /// description, so one backlog); only loop 0 removes a Unix socket file.
    fn share_exclusive(
        &mut self,
        fd: O::Fd,
        local: Endpoint,
        unix_path: Option<(std::path::PathBuf, u64)>,
    ) -> io::Result<()> {
        let os = self.servers[0].os().clone();
        let mut fds = Vec::with_capacity(self.servers.len());
        for _ in 1..self.servers.len() {
            fds.push(os.dup(&fd)?);
        }
        self.servers[0].add_listener(fd, local.clone(), unix_path, true)?;
        for (k, fd) in fds.into_iter().enumerate() {
            if let Err(e) = self.servers[k + 1].add_listener(fd, local.clone(), None, true) {
                self.roll_back(k + 1);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Removes the listener just added to loops `0..k`, so that every loop keeps the same
    /// listeners at the same indices (a hand-over names a listener by index).
    fn roll_back(&mut self, k: usize) {
        for server in &mut self.servers[..k] {
            server.remove_last_listener();
        }
    }

    /// The address of the first TCP listener.
    ///
    /// # Errors
    ///
    /// As [`Server::local_addr`].
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.servers[0].local_addr()
    }

    /// [`Server::set_wake_hook`] for loop `i` (tests only).
    #[doc(hidden)]
    pub fn set_wake_hook(&mut self, i: usize, hook: impl FnMut() + Send + 'static) {
        if let Some(server) = self.servers.get_mut(i) {
            server.set_wake_hook(hook);
        }
    }

    /// A handle to every loop of the group, for any thread.
    pub fn handle(&self) -> LoopsHandle<F> {
        LoopsHandle {
            loops: self.servers.iter().map(Server::handle).collect(),
            next: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Makes `SIGINT` and `SIGTERM` shut the whole group down gracefully (see
    /// [`Server::shutdown_on_termination_signals`]; loop 0 owns the signals and tells the
    /// others).
    ///
    /// # Errors
    ///
    /// As [`Server::shutdown_on_termination_signals`].
    pub fn shutdown_on_termination_signals(&mut self) -> io::Result<()> {
        self.servers[0].shutdown_on_termination_signals()
    }

    /// Runs every loop on a thread of its own (`refloop-loop-<i>`), with the handler
    /// `make(i)` builds for loop `i`, until the group shuts down; returns the handlers in loop
    /// order.
    ///
    /// The loops live and die together: when one begins a shutdown (asked through any
    /// handle, a termination signal, or its `run` failing), it tells the others.
    ///
    /// # Errors
    ///
    /// The first error a loop's `run` returned, once every loop has stopped.
    ///
    /// # Panics
    ///
    /// If a handler panics, the other loops are shut down and joined, then the panic is
    /// resumed on this thread.
    pub fn run<H, M>(self, mut make: M) -> io::Result<Vec<H>>
    where
        H: Handler<F> + Send,
        M: FnMut(usize) -> H,
        F: Send,
        O::Fd: Send,
        O::Events: Send,
    {
        let handle = self.handle();
        let handlers: Vec<H> = (0..self.servers.len()).map(&mut make).collect();
        let outcomes: Vec<std::thread::Result<io::Result<H>>> = std::thread::scope(|scope| {
            let threads: Vec<_> = self
                .servers
                .into_iter()
                .zip(handlers)
                .enumerate()
                .map(|(i, (server, handler))| {
                    let handle = handle.clone();
                    std::thread::Builder::new()
                        .name(format!("refloop-loop-{i}"))
                        .spawn_scoped(scope, move || {
                            // However this loop ends, the others must not outlive it.
                            let _stop = StopGroup(handle);
                            server.run(handler)
                        })
                })
                .collect();
            if threads.iter().any(Result::is_err) {
                // A loop thread could not start: the others must not wait for it.
                handle.shutdown();
            }
            threads
                .into_iter()
                .map(|t| match t {
                    Ok(t) => t.join(),
                    Err(e) => Ok(Err(e)),
                })
                .collect()
        });
        let mut handlers = Vec::with_capacity(outcomes.len());
        let mut first_error = None;
        let mut first_panic = None;
        for outcome in outcomes {
            match outcome {
                Ok(Ok(h)) => handlers.push(h),
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(panic) => {
                    first_panic.get_or_insert(panic);
                }
            }
        }
        if let Some(panic) = first_panic {
            std::panic::resume_unwind(panic);
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(handlers),
        }
    }
}

/// Shuts the group down when dropped: on a loop thread's every way out.
struct StopGroup<F: Framing>(LoopsHandle<F>);

impl<F: Framing> Drop for StopGroup<F> {
    fn drop(&mut self) {
        self.0.shutdown();
    }
}

/// The backlog each shared listener asks `listen(2)` for.
const LISTEN_BACKLOG: u32 = 1024;

/// A handle to every loop of a [`Loops`], for any thread.
pub struct LoopsHandle<F> {
    loops: Vec<LoopHandle<F>>,
    /// Round-robin cursor for outbound connects.
    next: Arc<AtomicUsize>,
}

impl<F: Clone> Clone for LoopsHandle<F> {
    fn clone(&self) -> Self {
        LoopsHandle {
            loops: self.loops.clone(),
            next: Arc::clone(&self.next),
        }
    }
}

impl<F> std::fmt::Debug for LoopsHandle<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopsHandle")
            .field("loops", &self.loops.len())
            .finish_non_exhaustive()
    }
}

impl<F: Framing> LoopsHandle<F> {
    /// Shuts every loop down gracefully (see [`LoopHandle::shutdown`]).
    pub fn shutdown(&self) {
        for handle in &self.loops {
            handle.shutdown();
        }
    }

    /// The handle of loop `i`.
    pub fn loop_handle(&self, i: usize) -> Option<&LoopHandle<F>> {
        self.loops.get(i)
    }

    /// Encodes `msg` on this thread and queues it for connection `id`, on whichever loop it
    /// lives.
    ///
    /// # Errors
    ///
    /// As [`LoopHandle::send_to`].
    pub fn send_to(&mut self, id: ConnId, msg: F::Message) -> Result<(), SendError<F::Message>> {
        match self.loops.get_mut(id.loop_index()) {
            Some(handle) => handle.send_to(id, msg),
            None => Err(SendError::Closed(msg)),
        }
    }

    /// Starts an outbound connect on the next loop, round robin.
    ///
    /// # Errors
    ///
    /// As [`LoopHandle::connect`].
    pub fn connect(&self, target: impl Into<Endpoint>) -> io::Result<()> {
        // Relaxed: only spreads connects over the loops; it orders nothing.
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.loops.len();
        self.loops[i].connect(target)
    }

    /// Every loop's counters, in loop order.
    pub fn stats(&self) -> Vec<Stats> {
        self.loops.iter().map(LoopHandle::stats).collect()
    }
}
