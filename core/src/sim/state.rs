//! The simulated kernel's state and the semantics of every call.
//!
//! Everything here runs under the kernel's one lock; nothing here blocks, sleeps or calls out.
//! Maps are `BTreeMap`s and queues are `VecDeque`s, so iteration order (and with it every
//! trace) depends only on the sequence of calls.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::{Call, Fault, FaultRule, KernelConfig as Config, Mode, Side, When};
use crate::os::{errno, Event, Interest, Shutdown};
use crate::reactor::Endpoint;

// epoll flag bits, as Linux numbers them (used only inside the simulation and in traces).
pub(super) const IN: u32 = 0x001;
pub(super) const OUT: u32 = 0x004;
pub(super) const ERR: u32 = 0x008;
pub(super) const HUP: u32 = 0x010;
pub(super) const RDHUP: u32 = 0x2000;

/// Identifies one open file description (what epoll tracks), never reused.
pub(super) type FileId = u64;

/// The peer's descriptors are numbered from here.
pub(super) const PEER_FD_BASE: i32 = 1 << 20;

pub(super) fn os_err(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// A small, fast, seedable generator (SplitMix64), so a seed fixes every random choice.
#[derive(Debug, Clone)]
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// True with probability `ppm` parts per million.
    pub(super) fn chance(&mut self, ppm: u32) -> bool {
        ppm > 0 && (self.next_u64() % 1_000_000) < u64::from(ppm)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    Tcp,
    Unix,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Conn {
    /// `SYN_SENT`: a connect that has not completed (queued behind a full backlog, or to an
    /// address that never answers).
    Connecting,
    /// Connected (possibly half-closed either way).
    Established,
    /// `TCP_CLOSE`: reset, refused, or fully closed.
    Closed,
}

#[derive(Debug)]
pub(super) struct Socket {
    pub(super) family: Family,
    pub(super) local: Endpoint,
    pub(super) remote: Endpoint,
    pub(super) conn: Conn,
    /// The other end, while it exists.
    pub(super) peer: Option<FileId>,
    /// Received bytes not yet read.
    pub(super) rcv: VecDeque<u8>,
    pub(super) rcv_cap: usize,
    /// Written bytes not yet moved into the peer's receive buffer.
    pub(super) snd: VecDeque<u8>,
    pub(super) snd_cap: usize,
    /// `RCV_SHUTDOWN`: FIN received, `SHUT_RD`, or reset.
    pub(super) rd_shut: bool,
    /// The peer's FIN arrived (as opposed to a local `SHUT_RD`).
    pub(super) fin_received: bool,
    /// `SEND_SHUTDOWN`.
    pub(super) wr_shut: bool,
    /// Our FIN waits behind `snd`.
    pub(super) fin_pending: bool,
    /// `SO_ERROR` / `sk_err`.
    pub(super) error: Option<i32>,
    /// `SOCK_NOSPACE`: a write found the buffer full; the next room raises `EPOLLOUT`.
    pub(super) nospace: bool,
    pub(super) linger_zero: bool,
    /// Waiting in this listener's queues (not yet accepted).
    pub(super) listener: Option<FileId>,
    /// Every descriptor is closed; the socket lives on only to flush `snd` and send its FIN.
    pub(super) orphan: bool,
}

impl Socket {
    fn new(family: Family, local: Endpoint, remote: Endpoint, cfg: &Config) -> Socket {
        Socket {
            family,
            local,
            remote,
            conn: Conn::Connecting,
            peer: None,
            rcv: VecDeque::new(),
            rcv_cap: cfg.recv_buffer,
            snd: VecDeque::new(),
            snd_cap: cfg.send_buffer,
            rd_shut: false,
            fin_received: false,
            wr_shut: false,
            fin_pending: false,
            error: None,
            nospace: false,
            linger_zero: false,
            listener: None,
            orphan: false,
        }
    }

    /// `sk_stream_is_writeable`: free space at least half of what is queued.
    fn writeable(&self) -> bool {
        let free = self.snd_cap.saturating_sub(self.snd.len());
        free > 0 && free >= self.snd.len() / 2
    }

    /// `tcp_poll`.
    fn mask(&self) -> u32 {
        let mut m = 0;
        if (self.rd_shut && self.wr_shut) || self.conn == Conn::Closed {
            m |= HUP;
        }
        if self.rd_shut {
            m |= IN | RDHUP;
        }
        if self.conn != Conn::Connecting {
            if !self.rcv.is_empty() {
                m |= IN;
            }
            if self.wr_shut || self.conn == Conn::Closed || self.writeable() {
                m |= OUT;
            }
        }
        if self.error.is_some() {
            m |= ERR;
        }
        m
    }
}

#[derive(Debug)]
pub(super) struct Listener {
    pub(super) family: Family,
    pub(super) local: Endpoint,
    pub(super) backlog: usize,
    /// Established connections waiting for `accept` (server-side sockets).
    pub(super) ready: VecDeque<FileId>,
    /// Client sockets whose SYN found the accept queue full (TCP): they stay `Connecting`.
    pub(super) syns: VecDeque<FileId>,
}

impl Listener {
    /// `sk_acceptq_is_full`: Linux admits `backlog + 1` connections.
    fn full(&self) -> bool {
        self.ready.len() > self.backlog
    }
}

#[derive(Debug)]
pub(super) struct Item {
    pub(super) token: u64,
    /// Requested flags, `ERR | HUP` always included.
    pub(super) events: u32,
    pub(super) exclusive: bool,
    /// On the ready list.
    pub(super) queued: bool,
}

#[derive(Debug, Default)]
pub(super) struct Epoll {
    /// Keyed like Linux's epitems: the file description and the fd number it was added under.
    pub(super) items: BTreeMap<(FileId, i32), Item>,
    pub(super) ready: VecDeque<(FileId, i32)>,
}

#[derive(Debug)]
pub(super) enum Kind {
    Socket(Socket),
    Listener(Listener),
    Epoll(Epoll),
    EventFd(u64),
    /// A regular file (`/dev/null`), for the loop's spare descriptor.
    Spare,
}

#[derive(Debug)]
pub(super) struct File {
    /// Descriptors that refer to this description.
    pub(super) refs: usize,
    pub(super) kind: Kind,
    /// For `minimal` mode: the mask at the last check, to find rising edges.
    pub(super) last_mask: u32,
}

#[derive(Debug)]
pub(super) struct PathEntry {
    pub(super) inode: u64,
    pub(super) listener: Option<FileId>,
}

/// Counters the kit reads.
#[derive(Debug, Default, Clone)]
pub(super) struct Counters {
    pub(super) calls: BTreeMap<(Side, Call), u64>,
    pub(super) faults: u64,
}

#[derive(Debug)]
pub(super) struct State {
    pub(super) cfg: Config,
    pub(super) now: Duration,
    pub(super) fds: BTreeMap<i32, FileId>,
    pub(super) files: BTreeMap<FileId, File>,
    next_file: FileId,
    next_inode: u64,
    next_port: u16,
    next_ephemeral: u16,
    pub(super) tcp: BTreeMap<SocketAddr, FileId>,
    pub(super) paths: BTreeMap<PathBuf, PathEntry>,
    pub(super) unreachable: BTreeSet<SocketAddr>,
    pub(super) rules: Vec<FaultRule>,
    pub(super) rng: Rng,
    pub(super) counters: Counters,
    pub(super) trace: String,
    pub(super) trace_lines: u64,
    /// FNV-1a of the trace text.
    pub(super) trace_hash: u64,
    /// `epoll_wait` calls blocked on the condition variable.
    pub(super) waiters: usize,
    /// Bumped by every change a blocked `epoll_wait` may be waiting for.
    pub(super) generation: u64,
    pub(super) stalled: Option<String>,
    /// Who makes the call under way (whose descriptor table it allocates from).
    pub(super) current: Side,
}

impl State {
    pub(super) fn new(cfg: Config) -> State {
        State {
            rng: Rng::new(cfg.seed),
            now: Duration::ZERO,
            fds: BTreeMap::new(),
            files: BTreeMap::new(),
            next_file: 1,
            next_inode: 1,
            next_port: 40000,
            next_ephemeral: 50000,
            tcp: BTreeMap::new(),
            paths: BTreeMap::new(),
            unreachable: BTreeSet::new(),
            rules: Vec::new(),
            counters: Counters::default(),
            trace: String::new(),
            trace_lines: 0,
            trace_hash: 0xcbf2_9ce4_8422_2325,
            waiters: 0,
            generation: 0,
            stalled: None,
            current: Side::Os,
            cfg,
        }
    }

    // -----------------------------------------------------------------------------------------
    // Trace, counters, faults
    // -----------------------------------------------------------------------------------------

    pub(super) fn log(&mut self, side: Side, line: std::fmt::Arguments<'_>) {
        self.trace_lines += 1;
        if !self.cfg.trace {
            return;
        }
        let mut text = String::new();
        let secs = self.now.as_secs();
        let nanos = self.now.subsec_nanos();
        // Writing to a String cannot fail.
        let _ = write!(text, "{secs}.{nanos:09} {}{line}", side.prefix());
        for b in text.bytes().chain(std::iter::once(b'\n')) {
            self.trace_hash ^= u64::from(b);
            self.trace_hash = self.trace_hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.trace.push_str(&text);
        self.trace.push('\n');
    }

    /// Counts one call and returns the fault the plan injects into it, if any.
    pub(super) fn enter(&mut self, side: Side, call: Call) -> Option<Fault> {
        self.current = side;
        let n = {
            let count = self.counters.calls.entry((side, call)).or_insert(0);
            *count += 1;
            *count
        };
        if side != Side::Os {
            return None;
        }
        let mut hit = None;
        for rule in &mut self.rules {
            if rule.call != call || rule.spent {
                continue;
            }
            let fires = match rule.when {
                When::Nth(k) => {
                    if n == k {
                        rule.spent = true;
                        true
                    } else {
                        false
                    }
                }
                When::Next => {
                    rule.spent = true;
                    true
                }
                When::Chance(ppm) => self.rng.chance(ppm),
            };
            if fires {
                hit = Some(rule.fault);
                break;
            }
        }
        self.rules.retain(|r| !r.spent);
        if hit.is_some() {
            self.counters.faults += 1;
        }
        hit
    }

    fn bump(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    // -----------------------------------------------------------------------------------------
    // Descriptors
    // -----------------------------------------------------------------------------------------

    /// The lowest free descriptor number, as Linux hands them out, in the table of the side
    /// making the current call: the [`Side::Peer`] is another process, with its own table from
    /// [`PEER_FD_BASE`] and no limit, so that clients neither take the loop's numbers nor
    /// count against its `RLIMIT_NOFILE`.
    fn free_fd(&self) -> io::Result<i32> {
        let (first, end) = match self.current {
            Side::Os => (self.cfg.first_fd, PEER_FD_BASE),
            Side::Peer => (PEER_FD_BASE, i32::MAX),
        };
        let mut n = first;
        for (&fd, _) in self.fds.range(first..end) {
            if fd != n {
                break;
            }
            n += 1;
        }
        if self.current == Side::Os && (n as u64 >= self.cfg.fd_limit || n >= PEER_FD_BASE) {
            return Err(os_err(errno::EMFILE));
        }
        Ok(n)
    }

    fn check_fd(&self) -> io::Result<()> {
        self.free_fd()?;
        if let Some(limit) = self.cfg.file_limit {
            if self.files.len() as u64 >= limit {
                return Err(os_err(errno::ENFILE));
            }
        }
        Ok(())
    }

    fn new_file(&mut self, kind: Kind) -> FileId {
        let id = self.next_file;
        self.next_file += 1;
        self.files.insert(
            id,
            File {
                refs: 0,
                kind,
                last_mask: 0,
            },
        );
        id
    }

    fn install(&mut self, file: FileId) -> io::Result<i32> {
        let fd = self.free_fd()?;
        self.fds.insert(fd, file);
        if let Some(f) = self.files.get_mut(&file) {
            f.refs += 1;
        }
        Ok(fd)
    }

    pub(super) fn file_of(&self, fd: i32) -> io::Result<FileId> {
        self.fds
            .get(&fd)
            .copied()
            .ok_or_else(|| os_err(errno::EBADF))
    }

    fn sock(&self, id: FileId) -> Option<&Socket> {
        match self.files.get(&id).map(|f| &f.kind) {
            Some(Kind::Socket(s)) => Some(s),
            _ => None,
        }
    }

    fn sock_mut(&mut self, id: FileId) -> Option<&mut Socket> {
        match self.files.get_mut(&id).map(|f| &mut f.kind) {
            Some(Kind::Socket(s)) => Some(s),
            _ => None,
        }
    }

    fn sock_of(&self, fd: i32) -> io::Result<FileId> {
        let id = self.file_of(fd)?;
        match self.files.get(&id).map(|f| &f.kind) {
            Some(Kind::Socket(_)) => Ok(id),
            Some(Kind::Listener(_)) => Err(os_err(errno::ENOTCONN)),
            _ => Err(os_err(errno::ENOTSOCK)),
        }
    }

    pub(super) fn dup(&mut self, fd: i32) -> io::Result<i32> {
        let id = self.file_of(fd)?;
        // A duplicate lives in the table of the original.
        self.current = if fd >= PEER_FD_BASE {
            Side::Peer
        } else {
            Side::Os
        };
        self.install(id)
    }

    /// `close(2)`: the description goes when its last descriptor does.
    pub(super) fn close(&mut self, fd: i32) -> io::Result<()> {
        let id = self.fds.remove(&fd).ok_or_else(|| os_err(errno::EBADF))?;
        let last = match self.files.get_mut(&id) {
            Some(f) => {
                f.refs -= 1;
                f.refs == 0
            }
            None => false,
        };
        if last {
            self.release(id);
        }
        self.bump();
        Ok(())
    }

    /// The last descriptor of `id` closed (Linux: the final `fput`).
    fn release(&mut self, id: FileId) {
        // epoll forgets the description only now (`eventpoll_release`).
        for file in self.files.values_mut() {
            if let Kind::Epoll(ep) = &mut file.kind {
                let keys: Vec<_> = ep
                    .items
                    .range((id, i32::MIN)..=(id, i32::MAX))
                    .map(|(k, _)| *k)
                    .collect();
                for k in keys {
                    ep.items.remove(&k);
                    ep.ready.retain(|r| *r != k);
                }
            }
        }
        let kind = match self.files.get(&id).map(|f| &f.kind) {
            Some(Kind::Socket(_)) => 0,
            Some(Kind::Listener(_)) => 1,
            _ => 2,
        };
        match kind {
            0 => self.close_socket(id),
            1 => self.close_listener(id),
            _ => {
                self.files.remove(&id);
            }
        }
    }

    fn close_listener(&mut self, id: FileId) {
        let Some(File {
            kind: Kind::Listener(l),
            ..
        }) = self.files.remove(&id)
        else {
            return;
        };
        match &l.local {
            Endpoint::Tcp(addr) => {
                self.tcp.remove(addr);
            }
            Endpoint::Unix(Some(path)) => {
                if let Some(entry) = self.paths.get_mut(path) {
                    if entry.listener == Some(id) {
                        entry.listener = None;
                    }
                }
            }
            Endpoint::Unix(None) => {}
        }
        // Connections never accepted are reset; SYNs still waiting are refused.
        for s in l.ready {
            let client = self.sock(s).and_then(|sock| sock.peer);
            if let Some(c) = client {
                self.reset(c);
            }
            self.files.remove(&s);
        }
        for c in l.syns {
            if let Some(sock) = self.sock_mut(c) {
                sock.listener = None;
            }
            self.refuse(c);
        }
    }

    fn close_socket(&mut self, id: FileId) {
        let (unread, linger_zero, conn, family, listener) = match self.sock(id) {
            Some(s) => (
                !s.rcv.is_empty(),
                s.linger_zero,
                s.conn,
                s.family,
                s.listener,
            ),
            None => return,
        };
        if let Some(l) = listener {
            // A client whose SYN still waits in a backlog gives up.
            if let Some(Kind::Listener(l)) = self.files.get_mut(&l).map(|f| &mut f.kind) {
                l.syns.retain(|&c| c != id);
            }
        }
        if conn == Conn::Established && family == Family::Unix {
            return self.close_unix(id, unread);
        }
        if conn == Conn::Established && (linger_zero || unread) {
            // `SO_LINGER` 0, or unread data (`tcp_close`): RST instead of FIN.
            let peer = self.sock(id).and_then(|s| s.peer);
            if let Some(p) = peer {
                self.reset(p);
            }
            self.files.remove(&id);
            return;
        }
        if conn == Conn::Established {
            if let Some(s) = self.sock_mut(id) {
                s.orphan = true;
                s.rd_shut = true;
            }
            self.shut_write(id);
            self.maybe_reap(id);
        } else {
            self.files.remove(&id);
        }
    }

    /// `unix_release_sock`: the peer is shut down both ways at once (`EPOLLHUP`, `EPIPE` on
    /// writes); what we sent is already in its queue (a Unix stream socket has no send queue of
    /// its own), and unread input gives it `ECONNRESET`. There is no orphan and no RST.
    fn close_unix(&mut self, id: FileId, unread: bool) {
        let Some(File {
            kind: Kind::Socket(me),
            ..
        }) = self.files.remove(&id)
        else {
            return;
        };
        let Some(p) = me.peer else { return };
        let Some(peer) = self.sock_mut(p) else { return };
        peer.rcv.extend(me.snd);
        peer.rd_shut = true;
        peer.fin_received = true;
        peer.wr_shut = true;
        peer.peer = None;
        peer.snd.clear();
        if unread {
            peer.error = Some(errno::ECONNRESET);
        }
        self.wake(p, 0);
    }

    /// Drops an orphan once it has nothing left to send.
    fn maybe_reap(&mut self, id: FileId) {
        let reap = self
            .sock(id)
            .is_some_and(|s| s.orphan && s.snd.is_empty() && !s.fin_pending);
        if reap {
            let peer = self.sock(id).and_then(|s| s.peer);
            if let Some(p) = peer {
                // Later data from the peer would find no socket: it gets an RST when it
                // writes (see `write`), which `peer: None` plus `fin_received` models.
                if let Some(ps) = self.sock_mut(p) {
                    ps.peer = None;
                }
            }
            self.files.remove(&id);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Wake-ups (the `ep_poll_callback` side of epoll)
    // -----------------------------------------------------------------------------------------

    fn mask_of(&self, id: FileId) -> u32 {
        match self.files.get(&id).map(|f| &f.kind) {
            Some(Kind::Socket(s)) => s.mask(),
            Some(Kind::Listener(l)) => {
                if l.ready.is_empty() {
                    0
                } else {
                    IN
                }
            }
            Some(Kind::EventFd(count)) => {
                let mut m = 0;
                if *count > 0 {
                    m |= IN;
                }
                if *count < u64::MAX - 1 {
                    m |= OUT;
                }
                m
            }
            Some(Kind::Epoll(ep)) => {
                if ep.ready.is_empty() {
                    0
                } else {
                    IN
                }
            }
            Some(Kind::Spare) | None => 0,
        }
    }

    /// A wake-up on `id`'s wait queue with poll key `key` (0: a state change, wakes every
    /// waiter). In `linux` mode it queues every epoll item whose events match, whether or not
    /// the file was already ready; in `minimal` mode wake-ups are ignored and edges come from
    /// [`State::settle`] instead.
    fn wake(&mut self, id: FileId, key: u32) {
        self.bump();
        if self.cfg.mode != Mode::Linux {
            return;
        }
        self.queue_items(id, key);
    }

    fn queue_items(&mut self, id: FileId, key: u32) {
        for file in self.files.values_mut() {
            if let Kind::Epoll(ep) = &mut file.kind {
                let Epoll { items, ready } = ep;
                for (k, item) in items.range_mut((id, i32::MIN)..=(id, i32::MAX)) {
                    if (key == 0 || key & item.events != 0) && !item.queued {
                        item.queued = true;
                        ready.push_back(*k);
                    }
                }
            }
        }
    }

    /// `minimal` mode: records the flags of `id` that fell in the middle of a call (a read
    /// that empties the receive buffer before the peer's queued bytes refill it), so that the
    /// refill counts as the rising edge it is.
    fn note_fall(&mut self, id: FileId) {
        if self.cfg.mode == Mode::Linux {
            return;
        }
        let mask = self.mask_of(id);
        if let Some(file) = self.files.get_mut(&id) {
            file.last_mask &= mask;
        }
    }

    /// `minimal` mode: after every call, an edge for each flag that rose since the last call.
    pub(super) fn settle(&mut self) {
        if self.cfg.mode == Mode::Linux {
            return;
        }
        let ids: Vec<FileId> = self.files.keys().copied().collect();
        for id in ids {
            let mask = self.mask_of(id);
            let Some(file) = self.files.get_mut(&id) else {
                continue;
            };
            let rising = mask & !file.last_mask;
            file.last_mask = mask;
            if rising != 0 {
                self.queue_items(id, rising);
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // epoll
    // -----------------------------------------------------------------------------------------

    pub(super) fn epoll_create(&mut self) -> io::Result<i32> {
        self.check_fd()?;
        let id = self.new_file(Kind::Epoll(Epoll::default()));
        self.install(id)
    }

    fn epoll_mut(&mut self, id: FileId) -> io::Result<&mut Epoll> {
        match self.files.get_mut(&id).map(|f| &mut f.kind) {
            Some(Kind::Epoll(ep)) => Ok(ep),
            _ => Err(os_err(errno::EINVAL)),
        }
    }

    /// `EPOLL_CTL_ADD` (`add`) or `EPOLL_CTL_MOD`.
    pub(super) fn epoll_ctl(
        &mut self,
        epfd: i32,
        fd: i32,
        token: u64,
        interest: Interest,
        add: bool,
    ) -> io::Result<()> {
        let ep_id = self.file_of(epfd)?;
        let target = self.file_of(fd)?;
        if ep_id == target {
            return Err(os_err(errno::EINVAL));
        }
        if matches!(self.files.get(&target).map(|f| &f.kind), Some(Kind::Spare)) {
            // A regular file does not support epoll.
            return Err(os_err(errno::EPERM));
        }
        let mut events = ERR | HUP | RDHUP;
        if interest.readable {
            events |= IN;
        }
        if interest.writable {
            events |= OUT;
        }
        let mask = self.mask_of(target);
        let ep = self.epoll_mut(ep_id)?;
        let key = (target, fd);
        if add {
            if ep.items.contains_key(&key) {
                return Err(os_err(errno::EEXIST));
            }
            ep.items.insert(
                key,
                Item {
                    token,
                    events,
                    exclusive: interest.exclusive,
                    queued: false,
                },
            );
        } else {
            let item = ep
                .items
                .get_mut(&key)
                .ok_or_else(|| os_err(errno::ENOENT))?;
            if interest.exclusive || item.exclusive {
                return Err(os_err(errno::EINVAL));
            }
            item.token = token;
            item.events = events;
        }
        // ADD and MOD poll the file and queue readiness that already exists.
        let report = self.cfg.mode == Mode::Linux || self.cfg.minimal_ctl_reports_ready;
        let ep = self.epoll_mut(ep_id)?;
        if let Some(item) = ep.items.get_mut(&key) {
            if report && mask & item.events != 0 && !item.queued {
                item.queued = true;
                ep.ready.push_back(key);
            }
        }
        self.bump();
        Ok(())
    }

    pub(super) fn epoll_delete(&mut self, epfd: i32, fd: i32) -> io::Result<()> {
        let ep_id = self.file_of(epfd)?;
        let target = self.file_of(fd)?;
        let ep = self.epoll_mut(ep_id)?;
        let key = (target, fd);
        ep.items.remove(&key).ok_or_else(|| os_err(errno::ENOENT))?;
        ep.ready.retain(|k| *k != key);
        Ok(())
    }

    /// Collects up to `capacity` events (`ep_send_events`): each queued item is polled now,
    /// reported if its mask meets its events, and (edge-triggered) not queued again.
    pub(super) fn collect(&mut self, epfd: i32, capacity: usize) -> io::Result<Vec<Event>> {
        let ep_id = self.file_of(epfd)?;
        self.epoll_mut(ep_id)?;
        let mut out = Vec::new();
        let mut again = Vec::new();
        let mut deferred = Vec::new();
        let minimal = self.cfg.mode == Mode::Minimal;
        let level = self.cfg.mode == Mode::KnownBadLevel;
        loop {
            if out.len() >= capacity {
                break;
            }
            let key = match self.epoll_mut(ep_id)?.ready.pop_front() {
                Some(k) => k,
                None => break,
            };
            let mask = self.mask_of(key.0);
            if minimal && self.rng.chance(self.cfg.defer_ppm) {
                deferred.push(key);
                continue;
            }
            let ep = self.epoll_mut(ep_id)?;
            let Some(item) = ep.items.get_mut(&key) else {
                continue;
            };
            item.queued = false;
            let flags = mask & item.events;
            if flags != 0 {
                out.push(event(item.token, flags));
                if level {
                    // KNOWN-BAD: level-triggered, the item goes back on the list.
                    again.push(key);
                }
            }
        }
        if minimal && self.cfg.spurious_ppm > 0 {
            // A spurious event: a registered item reported with its requested flags although
            // nothing changed (a read or write may then find `EAGAIN`).
            let ep = self.epoll_mut(ep_id)?;
            let keys: Vec<_> = ep.items.keys().copied().collect();
            if !keys.is_empty() && out.len() < capacity && self.rng.chance(self.cfg.spurious_ppm) {
                let pick = (self.rng.next_u64() % keys.len() as u64) as usize;
                let ep = self.epoll_mut(ep_id)?;
                if let Some(item) = ep.items.get(&keys[pick]) {
                    out.push(event(item.token, item.events & (IN | OUT)));
                }
            }
        }
        if out.is_empty() {
            // Deferral never hides the only events there are: report the first deferred item
            // that polls ready now.
            while !deferred.is_empty() {
                let key = deferred.remove(0);
                let mask = self.mask_of(key.0);
                let ep = self.epoll_mut(ep_id)?;
                if let Some(item) = ep.items.get_mut(&key) {
                    item.queued = false;
                    let flags = mask & item.events;
                    if flags != 0 {
                        out.push(event(item.token, flags));
                        break;
                    }
                }
            }
        }
        let ep = self.epoll_mut(ep_id)?;
        for key in deferred.into_iter().rev() {
            ep.ready.push_front(key);
        }
        for key in again {
            if let Some(item) = ep.items.get_mut(&key) {
                item.queued = true;
                ep.ready.push_back(key);
            }
        }
        Ok(out)
    }

    /// Whether a wait on `epfd` would return an event now: a queued item that polls ready (a
    /// queued item whose readiness went away, say by a read, reports nothing).
    pub(super) fn has_ready(&self, epfd: i32) -> bool {
        let Ok(id) = self.file_of(epfd) else {
            return true;
        };
        match self.files.get(&id).map(|f| &f.kind) {
            Some(Kind::Epoll(ep)) => ep.ready.iter().any(|key| {
                ep.items
                    .get(key)
                    .is_some_and(|item| self.mask_of(key.0) & item.events != 0)
            }),
            _ => true,
        }
    }

    // -----------------------------------------------------------------------------------------
    // eventfd
    // -----------------------------------------------------------------------------------------

    pub(super) fn eventfd(&mut self) -> io::Result<i32> {
        self.check_fd()?;
        let id = self.new_file(Kind::EventFd(0));
        self.install(id)
    }

    fn counter(&mut self, fd: i32) -> io::Result<(FileId, &mut u64)> {
        let id = self.file_of(fd)?;
        match self.files.get_mut(&id).map(|f| &mut f.kind) {
            Some(Kind::EventFd(c)) => Ok((id, c)),
            _ => Err(os_err(errno::EINVAL)),
        }
    }

    pub(super) fn eventfd_write(&mut self, fd: i32, value: u64) -> io::Result<()> {
        if value == u64::MAX {
            return Err(os_err(errno::EINVAL));
        }
        let (id, count) = self.counter(fd)?;
        if value > u64::MAX - 1 - *count {
            return Err(os_err(errno::EAGAIN));
        }
        *count += value;
        // `eventfd_write` wakes its waiters on every write, even with a counter already set.
        self.wake(id, IN);
        Ok(())
    }

    pub(super) fn eventfd_read(&mut self, fd: i32) -> io::Result<u64> {
        let (id, count) = self.counter(fd)?;
        if *count == 0 {
            return Err(os_err(errno::EAGAIN));
        }
        let value = std::mem::take(count);
        self.wake(id, OUT);
        Ok(value)
    }

    // -----------------------------------------------------------------------------------------
    // Listening, accepting, connecting
    // -----------------------------------------------------------------------------------------

    pub(super) fn listen(&mut self, at: &Endpoint, backlog: u32) -> io::Result<(i32, Endpoint)> {
        self.check_fd()?;
        let backlog = (backlog.max(1) as usize).min(self.cfg.somaxconn);
        let (family, local) = match at {
            Endpoint::Tcp(addr) => {
                let mut addr = *addr;
                if addr.port() == 0 {
                    loop {
                        let port = self.next_port;
                        self.next_port = self.next_port.checked_add(1).unwrap_or(40000);
                        let candidate = SocketAddr::new(addr.ip(), port);
                        if !self.tcp.contains_key(&candidate) {
                            addr = candidate;
                            break;
                        }
                    }
                } else if self.tcp.contains_key(&addr) {
                    return Err(os_err(errno::EADDRINUSE));
                }
                (Family::Tcp, Endpoint::Tcp(addr))
            }
            Endpoint::Unix(Some(path)) => {
                if self.paths.contains_key(path) {
                    return Err(os_err(errno::EADDRINUSE));
                }
                (Family::Unix, Endpoint::Unix(Some(path.clone())))
            }
            Endpoint::Unix(None) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "cannot listen on an unnamed unix socket",
                ))
            }
        };
        let id = self.new_file(Kind::Listener(Listener {
            family,
            local: local.clone(),
            backlog,
            ready: VecDeque::new(),
            syns: VecDeque::new(),
        }));
        match &local {
            Endpoint::Tcp(addr) => {
                self.tcp.insert(*addr, id);
            }
            Endpoint::Unix(Some(path)) => {
                let inode = self.next_inode;
                self.next_inode += 1;
                self.paths.insert(
                    path.clone(),
                    PathEntry {
                        inode,
                        listener: Some(id),
                    },
                );
            }
            Endpoint::Unix(None) => {}
        }
        let fd = self.install(id)?;
        Ok((fd, local))
    }

    fn find_tcp_listener(&self, addr: &SocketAddr) -> Option<FileId> {
        if let Some(&id) = self.tcp.get(addr) {
            return Some(id);
        }
        let any: IpAddr = match addr {
            SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
        };
        self.tcp.get(&SocketAddr::new(any, addr.port())).copied()
    }

    /// Returns the new client's fd and whether the connect is still in progress.
    pub(super) fn connect(&mut self, target: &Endpoint, eintr: bool) -> io::Result<(i32, bool)> {
        self.check_fd()?;
        match target {
            Endpoint::Tcp(addr) => {
                let port = self.next_ephemeral;
                self.next_ephemeral = self.next_ephemeral.checked_add(1).unwrap_or(50000);
                let ip = if addr.ip().is_unspecified() {
                    IpAddr::from(Ipv4Addr::LOCALHOST)
                } else {
                    addr.ip()
                };
                let local = Endpoint::Tcp(SocketAddr::new(ip, port));
                let sock = Socket::new(Family::Tcp, local, target.clone(), &self.cfg);
                let client = self.new_file(Kind::Socket(sock));
                let fd = self.install(client)?;
                if self.unreachable.contains(addr) {
                    // The SYN goes nowhere: the connect never completes.
                    return Ok((fd, true));
                }
                match self.find_tcp_listener(addr) {
                    None => self.refuse(client),
                    Some(l) => self.syn(l, client),
                }
                // A non-blocking TCP connect always reports `EINPROGRESS` (on loopback the
                // handshake is usually over by then).
                Ok((fd, true))
            }
            Endpoint::Unix(Some(path)) => {
                let Some(entry) = self.paths.get(path) else {
                    return Err(os_err(errno::ENOENT));
                };
                let Some(l) = entry.listener else {
                    return Err(os_err(errno::ECONNREFUSED));
                };
                let full = match self.files.get(&l).map(|f| &f.kind) {
                    Some(Kind::Listener(listener)) => listener.full(),
                    _ => true,
                };
                if full {
                    // `unix_stream_connect`, non-blocking, backlog full.
                    return Err(os_err(errno::EAGAIN));
                }
                let sock = Socket::new(
                    Family::Unix,
                    Endpoint::Unix(None),
                    target.clone(),
                    &self.cfg,
                );
                let client = self.new_file(Kind::Socket(sock));
                let fd = self.install(client)?;
                self.syn(l, client);
                Ok((fd, eintr))
            }
            Endpoint::Unix(None) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot connect to an unnamed unix socket",
            )),
        }
    }

    /// A SYN reaches listener `l`: established at once if the accept queue has room, else it
    /// waits (Linux drops it and the client retransmits; here it is admitted as soon as an
    /// `accept` makes room).
    fn syn(&mut self, l: FileId, client: FileId) {
        let full = match self.files.get(&l).map(|f| &f.kind) {
            Some(Kind::Listener(listener)) => listener.full(),
            _ => return self.refuse(client),
        };
        if let Some(c) = self.sock_mut(client) {
            c.listener = Some(l);
        }
        if full {
            if let Some(Kind::Listener(listener)) = self.files.get_mut(&l).map(|f| &mut f.kind) {
                listener.syns.push_back(client);
            }
            return;
        }
        self.establish(l, client);
    }

    fn establish(&mut self, l: FileId, client: FileId) {
        let Some(c) = self.sock(client) else {
            return;
        };
        let (family, client_local) = (c.family, c.local.clone());
        let Some(Kind::Listener(listener)) = self.files.get(&l).map(|f| &f.kind) else {
            return;
        };
        let server_local = listener.local.clone();
        let mut server = Socket::new(family, server_local, client_local, &self.cfg);
        server.conn = Conn::Established;
        server.peer = Some(client);
        server.listener = Some(l);
        let s = self.new_file(Kind::Socket(server));
        if let Some(c) = self.sock_mut(client) {
            c.conn = Conn::Established;
            c.peer = Some(s);
            c.listener = None;
        }
        if let Some(Kind::Listener(listener)) = self.files.get_mut(&l).map(|f| &mut f.kind) {
            listener.ready.push_back(s);
        }
        // The client's connect completed (`EPOLLOUT`), the listener has a connection.
        self.wake(client, 0);
        self.wake(l, IN);
    }

    /// The connect of `client` is refused (RST in `SYN_SENT`).
    fn refuse(&mut self, client: FileId) {
        if let Some(c) = self.sock_mut(client) {
            c.listener = None;
            c.conn = Conn::Closed;
            c.error = Some(errno::ECONNREFUSED);
            c.rd_shut = true;
            c.wr_shut = true;
        }
        self.wake(client, 0);
    }

    pub(super) fn accept(&mut self, fd: i32) -> io::Result<(i32, Endpoint)> {
        let l = self.file_of(fd)?;
        if !matches!(self.files.get(&l).map(|f| &f.kind), Some(Kind::Listener(_))) {
            return Err(os_err(errno::EINVAL));
        }
        // The descriptor is allocated before the queue is looked at: `EMFILE` even with an
        // empty backlog.
        self.check_fd()?;
        let Some(Kind::Listener(listener)) = self.files.get_mut(&l).map(|f| &mut f.kind) else {
            return Err(os_err(errno::EINVAL));
        };
        let Some(s) = listener.ready.pop_front() else {
            return Err(os_err(errno::EAGAIN));
        };
        let waiting = if listener.full() {
            None
        } else {
            listener.syns.pop_front()
        };
        if let Some(sock) = self.sock_mut(s) {
            sock.listener = None;
        }
        let peer = self
            .sock(s)
            .map(|x| x.remote.clone())
            .unwrap_or(Endpoint::Unix(None));
        let fd = self.install(s)?;
        if let Some(client) = waiting {
            self.note_fall(l);
            self.establish(l, client);
        }
        Ok((fd, peer))
    }

    // -----------------------------------------------------------------------------------------
    // Data
    // -----------------------------------------------------------------------------------------

    /// Moves bytes from `from`'s send buffer into its peer's receive buffer, delivers a FIN
    /// queued behind them, and raises the edges that go with it.
    fn pump(&mut self, from: FileId) {
        let Some(peer) = self.sock(from).and_then(|s| s.peer) else {
            return;
        };
        let room = match self.sock(peer) {
            Some(p) if p.conn == Conn::Established => p.rcv_cap.saturating_sub(p.rcv.len()),
            _ => return,
        };
        let moved: Vec<u8> = {
            let Some(s) = self.sock_mut(from) else { return };
            let n = room.min(s.snd.len());
            s.snd.drain(..n).collect()
        };
        let fin = self
            .sock(from)
            .is_some_and(|s| s.fin_pending && s.snd.is_empty());
        let mut was_empty = false;
        if let Some(p) = self.sock_mut(peer) {
            was_empty = p.rcv.is_empty();
            p.rcv.extend(moved.iter().copied());
            if fin {
                p.rd_shut = true;
                p.fin_received = true;
            }
        }
        if !moved.is_empty() && (self.cfg.mode != Mode::KnownBadNoRearm || was_empty) {
            // `sk_data_ready` on every arrival.
            self.wake(peer, IN);
        }
        if fin {
            if let Some(s) = self.sock_mut(from) {
                s.fin_pending = false;
            }
            // `tcp_fin`: `sk_state_change`.
            self.wake(peer, 0);
        }
        if !moved.is_empty() {
            // Room came back: `EPOLLOUT` if a write had found the buffer full.
            let wake = self.sock_mut(from).is_some_and(|s| {
                let wake = s.nospace && s.writeable();
                if wake {
                    s.nospace = false;
                }
                wake
            });
            if wake {
                self.wake(from, OUT);
            }
        }
        self.maybe_reap(from);
    }

    pub(super) fn read(
        &mut self,
        fd: i32,
        buf: &mut [u8],
        cap: Option<usize>,
    ) -> io::Result<usize> {
        let id = self.sock_of(fd)?;
        let Some(s) = self.sock_mut(id) else {
            return Err(os_err(errno::EBADF));
        };
        if buf.is_empty() {
            return Ok(0);
        }
        if !s.rcv.is_empty() {
            let n = buf.len().min(s.rcv.len()).min(cap.unwrap_or(usize::MAX));
            for (dst, src) in buf.iter_mut().zip(s.rcv.drain(..n)) {
                *dst = src;
            }
            let peer = s.peer;
            // The window opened: the peer's queued bytes follow.
            if let Some(p) = peer {
                self.note_fall(id);
                self.pump(p);
            }
            return Ok(n);
        }
        if let Some(e) = s.error.take() {
            return Err(os_err(e));
        }
        if s.rd_shut || s.conn == Conn::Closed {
            return Ok(0);
        }
        if s.conn == Conn::Connecting {
            return Err(os_err(errno::EAGAIN));
        }
        Err(os_err(errno::EAGAIN))
    }

    /// At least as much as one write on `fd` can take now (the room in its send buffer, and
    /// in its peer's receive buffer when nothing is queued ahead); `usize::MAX` when unknown.
    pub(super) fn write_limit(&self, fd: i32) -> usize {
        let Some(s) = self.sock_of(fd).ok().and_then(|id| self.sock(id)) else {
            return usize::MAX;
        };
        let peer = match s.peer.and_then(|p| self.sock(p)) {
            Some(p) if s.snd.is_empty() => p.rcv_cap.saturating_sub(p.rcv.len()),
            _ => 0,
        };
        s.snd_cap
            .max(1)
            .saturating_sub(s.snd.len())
            .saturating_add(peer)
    }

    pub(super) fn write(&mut self, fd: i32, bytes: &[u8], cap: Option<usize>) -> io::Result<usize> {
        let id = self.sock_of(fd)?;
        let Some(s) = self.sock_mut(id) else {
            return Err(os_err(errno::EBADF));
        };
        if let Some(e) = s.error.take() {
            return Err(os_err(e));
        }
        if s.wr_shut || s.conn == Conn::Closed {
            return Err(os_err(errno::EPIPE));
        }
        if s.conn == Conn::Connecting {
            return Err(os_err(errno::EAGAIN));
        }
        if bytes.is_empty() {
            return Ok(0);
        }
        let Some(peer) = s.peer else {
            // The peer closed and its socket is gone: the bytes go out and an RST comes back.
            let n = bytes.len().min(s.snd_cap.max(1));
            self.reset(id);
            return Ok(n);
        };
        let snd_cap = s.snd_cap;
        let peer_room = match self.sock(peer) {
            Some(p) if p.orphan => {
                // Data for a socket whose descriptors are all closed: Linux answers with an
                // RST.
                let n = bytes.len().min(snd_cap.max(1));
                self.reset(id);
                if self.sock(peer).is_some_and(|p| p.orphan) {
                    // The orphan is done for.
                    if let Some(p) = self.sock_mut(peer) {
                        p.snd.clear();
                        p.fin_pending = false;
                    }
                    self.files.remove(&peer);
                }
                return Ok(n);
            }
            Some(p) => p.rcv_cap.saturating_sub(p.rcv.len()),
            None => 0,
        };
        let Some(s) = self.sock_mut(id) else {
            return Err(os_err(errno::EBADF));
        };
        let room =
            s.snd_cap.saturating_sub(s.snd.len()) + if s.snd.is_empty() { peer_room } else { 0 };
        let n = bytes.len().min(room).min(cap.unwrap_or(usize::MAX));
        if n == 0 {
            s.nospace = true;
            return Err(os_err(errno::EAGAIN));
        }
        if n < bytes.len() && room <= n {
            // A short write found the buffer full.
            s.nospace = true;
        }
        s.snd.extend(bytes[..n].iter().copied());
        self.pump(id);
        Ok(n)
    }

    /// An RST reaches `id`.
    fn reset(&mut self, id: FileId) {
        let Some(s) = self.sock_mut(id) else { return };
        if s.conn != Conn::Established {
            return;
        }
        // `tcp_reset`: `EPIPE` in `CLOSE_WAIT` (FIN already received), else `ECONNRESET`.
        s.error = Some(if s.fin_received {
            errno::EPIPE
        } else {
            errno::ECONNRESET
        });
        s.conn = Conn::Closed;
        s.rd_shut = true;
        s.wr_shut = true;
        s.fin_pending = false;
        s.snd.clear();
        s.nospace = false;
        let peer = s.peer.take();
        if let Some(p) = peer {
            if let Some(ps) = self.sock_mut(p) {
                if ps.peer == Some(id) {
                    ps.peer = None;
                }
            }
        }
        // `sk_error_report` and `sk_state_change`.
        self.wake(id, 0);
    }

    fn shut_write(&mut self, id: FileId) {
        let Some(s) = self.sock_mut(id) else { return };
        if s.wr_shut {
            return;
        }
        s.wr_shut = true;
        s.fin_pending = true;
        self.pump(id);
        // A peer that is gone cannot receive the FIN; nothing waits.
        if self.sock(id).is_some_and(|s| s.peer.is_none()) {
            if let Some(s) = self.sock_mut(id) {
                s.fin_pending = false;
            }
        }
        // `inet_shutdown` calls `sk_state_change`.
        self.wake(id, 0);
    }

    pub(super) fn shutdown(&mut self, fd: i32, how: Shutdown) -> io::Result<()> {
        let id = self.sock_of(fd)?;
        let Some(s) = self.sock_mut(id) else {
            return Err(os_err(errno::EBADF));
        };
        if s.conn != Conn::Established {
            return Err(os_err(errno::ENOTCONN));
        }
        if matches!(how, Shutdown::Read | Shutdown::Both) {
            s.rd_shut = true;
        }
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            self.shut_write(id);
        } else {
            self.wake(id, 0);
        }
        Ok(())
    }

    pub(super) fn take_error(&mut self, fd: i32) -> io::Result<Option<i32>> {
        let id = self.file_of(fd)?;
        match self.files.get_mut(&id).map(|f| &mut f.kind) {
            Some(Kind::Socket(s)) => Ok(s.error.take()),
            Some(Kind::Listener(_)) => Ok(None),
            _ => Err(os_err(errno::ENOTSOCK)),
        }
    }

    /// `getpeername`: whether the socket is connected (`ENOTCONN` while connecting, and after a
    /// reset or refusal, as Linux answers).
    pub(super) fn is_connected(&self, fd: i32) -> io::Result<bool> {
        let id = self.file_of(fd)?;
        match self.files.get(&id).map(|f| &f.kind) {
            Some(Kind::Socket(s)) => Ok(s.conn == Conn::Established),
            Some(Kind::Listener(_)) => Ok(false),
            _ => Err(os_err(errno::ENOTSOCK)),
        }
    }

    pub(super) fn set_buffer(&mut self, fd: i32, bytes: usize, send: bool) -> io::Result<()> {
        let id = self.file_of(fd)?;
        let bytes = bytes.max(1);
        match self.files.get_mut(&id).map(|f| &mut f.kind) {
            Some(Kind::Socket(s)) => {
                if send {
                    s.snd_cap = bytes;
                } else {
                    s.rcv_cap = bytes;
                }
            }
            Some(Kind::Listener(_)) => {}
            _ => return Err(os_err(errno::ENOTSOCK)),
        }
        if !send {
            // A bigger window lets queued bytes in.
            if let Some(p) = self.sock(id).and_then(|s| s.peer) {
                self.pump(p);
            }
        }
        Ok(())
    }

    pub(super) fn set_nodelay(&mut self, fd: i32) -> io::Result<()> {
        let id = self.file_of(fd)?;
        match self.files.get(&id).map(|f| &f.kind) {
            Some(Kind::Socket(s)) if s.family == Family::Tcp => Ok(()),
            Some(Kind::Listener(l)) if l.family == Family::Tcp => Ok(()),
            Some(Kind::Socket(_) | Kind::Listener(_)) => Err(os_err(errno::EOPNOTSUPP)),
            _ => Err(os_err(errno::ENOTSOCK)),
        }
    }

    pub(super) fn set_linger_zero(&mut self, fd: i32) -> io::Result<()> {
        let id = self.file_of(fd)?;
        match self.files.get_mut(&id).map(|f| &mut f.kind) {
            Some(Kind::Socket(s)) => {
                s.linger_zero = true;
                Ok(())
            }
            Some(Kind::Listener(_)) => Ok(()),
            _ => Err(os_err(errno::ENOTSOCK)),
        }
    }

    pub(super) fn open_spare(&mut self) -> io::Result<i32> {
        self.check_fd()?;
        let id = self.new_file(Kind::Spare);
        self.install(id)
    }

    /// Bytes buffered by the socket behind `fd`: (receive, send).
    pub(super) fn buffered(&self, fd: i32) -> Option<(usize, usize)> {
        let id = self.fds.get(&fd)?;
        match self.files.get(id).map(|f| &f.kind) {
            Some(Kind::Socket(s)) => Some((s.rcv.len(), s.snd.len())),
            _ => None,
        }
    }

    /// Bytes buffered by every socket, orphans included.
    pub(super) fn buffered_total(&self) -> usize {
        self.files
            .values()
            .map(|f| match &f.kind {
                Kind::Socket(s) => s.rcv.len() + s.snd.len(),
                _ => 0,
            })
            .sum()
    }

    pub(super) fn advance(&mut self, by: Duration) {
        self.now = self.now.saturating_add(by);
        self.bump();
    }
}

pub(super) fn event(token: u64, flags: u32) -> Event {
    Event {
        token,
        readable: flags & IN != 0,
        writable: flags & OUT != 0,
        read_hup: flags & RDHUP != 0,
        hup: flags & HUP != 0,
        error: flags & ERR != 0,
        // The sim has no urgent data.
        priority: false,
    }
}
