//! Conformance: one set of scenario bodies, run over the real kernel ([`Linux`], on 127.0.0.1
//! and a temporary Unix path) and over [`refloop::sim::Kernel`] in `linux` mode, must give the
//! same observations: each call's result or errno, and the events each `epoll_wait` returns.
//!
//! A scenario is data (a name and a body); the kernel is a parameter, as in Shadow's
//! `src/test/epoll`. Bodies use only [`Os`] trait methods.
//! On the real kernel every wait that expects an event has a long timeout (it returns as soon
//! as the event is there), and every wait that expects none a short one; the simulated waits
//! take the same timeouts in virtual time, which costs nothing.
//!
//! The suite has teeth: deliberately wrong simulations (an arrival on a readable socket that
//! raises no edge; level-triggered readiness) and the `minimal` mode (which is not Linux, on
//! purpose) are each rejected by the same scenarios.

use std::collections::BTreeMap;
use std::io::{self, IoSlice};
use std::path::PathBuf;
use std::sync::OnceLock;

use refloop::os::{errno, Event, Interest, Linux, Os, Shutdown};
use refloop::sim::{Kernel, KernelConfig, Mode};
use refloop::Endpoint;

/// A wait that expects an event returns as soon as it comes; this only bounds a failure.
const EVENT_MS: i32 = 2000;
/// A wait that expects nothing.
const QUIET_MS: i32 = 20;

/// Where a kernel's scenarios connect.
struct Env {
    /// A TCP address to listen on (port 0).
    tcp: Endpoint,
    /// A TCP address nobody listens on.
    closed: Endpoint,
    /// A directory for Unix socket paths.
    dir: PathBuf,
}

/// The observations of one scenario run.
struct Rec<'a, O: Os> {
    os: &'a O,
    env: &'a Env,
    lines: Vec<String>,
}

fn errno_name(e: &io::Error) -> String {
    let code = e.raw_os_error();
    let known = [
        (errno::EAGAIN, "EAGAIN"),
        (errno::EPIPE, "EPIPE"),
        (errno::ECONNRESET, "ECONNRESET"),
        (errno::ECONNREFUSED, "ECONNREFUSED"),
        (errno::ENOENT, "ENOENT"),
        (errno::EEXIST, "EEXIST"),
        (errno::EINVAL, "EINVAL"),
        (errno::EBADF, "EBADF"),
        (errno::ENOTCONN, "ENOTCONN"),
        (errno::EPERM, "EPERM"),
    ];
    match known.iter().find(|(c, _)| Some(*c) == code) {
        Some((_, name)) => (*name).to_string(),
        None => format!("{e}"),
    }
}

fn flags(e: &Event) -> String {
    let mut out = Vec::new();
    for (on, name) in [
        (e.readable, "IN"),
        (e.writable, "OUT"),
        (e.read_hup, "RDHUP"),
        (e.hup, "HUP"),
        (e.error, "ERR"),
    ] {
        if on {
            out.push(name);
        }
    }
    out.join("|")
}

impl<O: Os> Rec<'_, O> {
    fn note(&mut self, line: impl Into<String>) {
        self.lines.push(line.into());
    }

    /// Records `what = result`.
    fn res<T>(&mut self, what: &str, r: &io::Result<T>, ok: impl FnOnce(&T) -> String) {
        let shown = match r {
            Ok(v) => ok(v),
            Err(e) => errno_name(e),
        };
        self.note(format!("{what} = {shown}"));
    }

    fn wait(&mut self, epoll: &O::Fd, timeout: i32) -> Vec<Event> {
        let mut events = self.os.events(16);
        let r = self.os.epoll_wait(epoll, &mut events, timeout);
        let mut list: Vec<Event> = (0..O::event_count(&events))
            .map(|i| O::event(&events, i))
            .collect();
        list.sort_by_key(|e| e.token);
        let shown: Vec<String> = list
            .iter()
            .map(|e| format!("{}:{}", e.token, flags(e)))
            .collect();
        match r {
            Ok(()) => self.note(format!("wait = [{}]", shown.join(", "))),
            Err(e) => self.note(format!("wait = {}", errno_name(&e))),
        }
        list
    }

    /// A wait that expects an event.
    fn event(&mut self, epoll: &O::Fd) -> Vec<Event> {
        self.wait(epoll, EVENT_MS)
    }

    /// A wait that expects none.
    fn quiet(&mut self, epoll: &O::Fd) {
        self.wait(epoll, QUIET_MS);
    }

    fn write(&mut self, what: &str, fd: &O::Fd, bytes: &[u8]) {
        let r = self.os.writev(fd, &[IoSlice::new(bytes)]);
        self.res(what, &r, |n| n.to_string());
    }

    fn read(&mut self, what: &str, fd: &O::Fd, len: usize) {
        let mut buf = vec![0u8; len];
        let r = self.os.read(fd, &mut buf);
        self.res(what, &r, |n| n.to_string());
    }

    fn take_error(&mut self, what: &str, fd: &O::Fd) {
        let r = self.os.take_error(fd);
        self.res(what, &r, |e| match e {
            Some(e) => errno_name(e),
            None => "none".into(),
        });
    }

    /// A listener on `env.tcp`, with its own epoll instance reporting it as token 900.
    fn listener(&mut self) -> io::Result<(O::Fd, Endpoint, O::Fd)> {
        let (l, addr) = self.os.listen(&self.env.tcp, 128)?;
        let ep = self.os.epoll_create()?;
        self.os.epoll_add(&ep, &l, 900, Interest::READABLE)?;
        Ok((l, addr, ep))
    }

    /// A connect to `addr` observed until it completes (token 800 on its own epoll).
    fn connect(&mut self, addr: &Endpoint) -> io::Result<O::Fd> {
        let (fd, in_progress) = self.os.connect(addr)?;
        self.note(format!("connect in progress = {in_progress}"));
        let ep = self.os.epoll_create()?;
        self.os.epoll_add(&ep, &fd, 800, Interest::BOTH)?;
        self.event(&ep);
        self.take_error("connect SO_ERROR", &fd);
        Ok(fd)
    }

    /// A connected pair: (client, accepted server side). The listener is returned too, so
    /// that it outlives the pair.
    fn pair(&mut self) -> io::Result<(O::Fd, O::Fd, O::Fd)> {
        let (l, addr, lep) = self.listener()?;
        let client = self.connect(&addr)?;
        self.event(&lep);
        let (server, _) = self.os.accept(&l)?;
        Ok((l, client, server))
    }
}

type Body<O> = fn(&mut Rec<'_, O>) -> io::Result<()>;

/// Every scenario, by name.
fn scenarios<O: Os>() -> Vec<(&'static str, Body<O>)> {
    vec![
        ("an_edge_per_arrival", an_edge_per_arrival::<O>),
        (
            "no_edge_after_a_partial_read",
            no_edge_after_a_partial_read::<O>,
        ),
        ("epollout_after_eagain", epollout_after_eagain::<O>),
        ("rdhup_together_with_data", rdhup_together_with_data::<O>),
        ("rst_gives_err_and_hup", rst_gives_err_and_hup::<O>),
        (
            "eventfd_write_read_and_overflow",
            eventfd_write_read_and_overflow::<O>,
        ),
        ("accept_until_eagain", accept_until_eagain::<O>),
        ("connect_completes", connect_completes::<O>),
        ("connect_refused", connect_refused::<O>),
        ("fd_reuse_after_close", fd_reuse_after_close::<O>),
        ("ctl_del_before_close", ctl_del_before_close::<O>),
        (
            "dup_after_close_without_del",
            dup_after_close_without_del::<O>,
        ),
        (
            "add_and_mod_report_existing_readiness",
            add_and_mod_report_existing_readiness::<O>,
        ),
        (
            "unix_stream_connect_data_and_fin",
            unix_stream_connect_data_and_fin::<O>,
        ),
        (
            "unix_write_after_the_peer_closed",
            unix_write_after_the_peer_closed::<O>,
        ),
        (
            "tcp_write_after_the_peer_closed",
            tcp_write_after_the_peer_closed::<O>,
        ),
    ]
}

fn an_edge_per_arrival<O: Os>(r: &mut Rec<'_, O>) -> io::Result<()> {
    let (_l, client, server) = r.pair()?;
    let ep = r.os.epoll_create()?;
    r.os.epoll_add(&ep, &server, 1, Interest::READABLE)?;
    r.quiet(&ep);
    r.write("client write a", &client, b"a");
    r.event(&ep);
    // The socket is still readable: Linux raises an edge for this arrival anyway.
    r.write("client write b", &client, b"b");
    r.event(&ep);
    r.read("server read", &server, 64);
    r.read("server read", &server, 64);
    r.quiet(&ep);
    Ok(())
}

fn no_edge_after_a_partial_read<O: Os>(r: &mut Rec<'_, O>) -> io::Result<()> {
    let (_l, client, server) = r.pair()?;
    let ep = r.os.epoll_create()?;
    r.os.epoll_add(&ep, &server, 1, Interest::READABLE)?;
    r.write("client write", &client, &[5; 100]);
    r.event(&ep);
    r.read("server read 10", &server, 10);
    r.quiet(&ep);
    r.read("server read rest", &server, 1000);
    r.read("server read", &server, 1000);
    r.quiet(&ep);
    Ok(())
}

fn epollout_after_eagain<O: Os>(r: &mut Rec<'_, O>) -> io::Result<()> {
    let (_l, client, server) = r.pair()?;
    r.os.set_send_buffer(&server, 4096)?;
    r.os.set_recv_buffer(&client, 4096)?;
    let ep = r.os.epoll_create()?;
    r.os.epoll_add(&ep, &server, 1, Interest::BOTH)?;
    r.event(&ep);
    // Room never ran out: no EPOLLOUT edge after the peer reads.
    r.write("server write small", &server, b"x");
    r.read("client read", &client, 64);
    r.quiet(&ep);
    // Fill until EAGAIN (how many bytes fit differs: Linux doubles SO_SNDBUF and counts skb
    // overhead), then nothing until the peer makes room.
    let chunk = vec![9u8; 64 * 1024];
    let mut total = 0usize;
    let end = loop {
        match r.os.writev(&server, &[IoSlice::new(&chunk)]) {
            Ok(n) => total += n,
            Err(e) => break e,
        }
    };
    r.note(format!(
        "filled: some bytes = {}, then {}",
        total > 0,
        errno_name(&end)
    ));
    r.quiet(&ep);
    // The client reads everything. On the real kernel the rest of the bytes follow the
    // window updates (and zero-window probes) at their own pace, so the client waits for them
    // through its own epoll instance; those waits are timing, not observations.
    let cep = r.os.epoll_create()?;
    r.os.epoll_add(&cep, &client, 5, Interest::READABLE)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut read = 0usize;
    let mut end = String::new();
    for _ in 0..1000 {
        match r.os.read(&client, &mut buf) {
            Ok(0) => end = "EOF".to_string(),
            Ok(n) => read += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if read >= total {
                    end = errno_name(&e);
                    break;
                }
                let mut events = r.os.events(4);
                r.os.epoll_wait(&cep, &mut events, EVENT_MS)?;
                continue;
            }
            Err(e) => end = errno_name(&e),
        }
        if !end.is_empty() {
            break;
        }
    }
    r.note(format!("client read all = {}, then {end}", read == total));
    r.event(&ep);
    r.quiet(&ep);
    Ok(())
}

fn rdhup_together_with_data<O: Os>(r: &mut Rec<'_, O>) -> io::Result<()> {
    let (_l, client, server) = r.pair()?;
    let ep = r.os.epoll_create()?;
    r.os.epoll_add(&ep, &server, 1, Interest::READABLE)?;
    r.write("client write", &client, b"bye");
    let s = r.os.shutdown(&client, Shutdown::Write);
    r.res("client shutdown(WR)", &s, |_| "0".into());
    r.event(&ep);
    r.read("server read", &server, 64);
    r.read("server read", &server, 64);
    r.quiet(&ep);
    r.write("server write after peer FIN", &server, b"ok");
    r.read("client read", &client, 64);
    Ok(())
}

fn rst_gives_err_and_hup<O: Os>(r: &mut Rec<'_, O>) -> io::Result<()> {
    let (_l, client, server) = r.pair()?;
    let ep = r.os.epoll_create()?;
    r.os.epoll_add(&ep, &server, 1, Interest::BOTH)?;
    r.event(&ep);
    r.os.set_linger_zero(&client)?;
    drop(client);
    r.event(&ep);
    r.take_error("server SO_ERROR", &server);
    r.take_error("server SO_ERROR again", &server);
    r.read("server read", &server, 64);
    r.write("server write", &server, b"x");
    r.quiet(&ep);
    Ok(())
}

fn eventfd_write_read_and_overflow<O: Os>(r: &mut Rec<'_, O>) -> io::Result<()> {
    let fd = r.os.eventfd()?;
    let ep = r.os.epoll_create()?;
    r.os.epoll_add(&ep, &fd, 7, Interest::READABLE)?;
    r.quiet(&ep);
    let v = r.os.eventfd_read(&fd);
    r.res("read empty", &v, u64::to_string);
    let w = r.os.eventfd_write(&fd, 1);
    r.res("write 1", &w, |_| "0".into());
    r.event(&ep);
    let w = r.os.eventfd_write(&fd, 2);
    r.res("write 2", &w, |_| "0".into());
    r.event(&ep);
    let v = r.os.eventfd_read(&fd);
    r.res("read", &v, u64::to_string);
    let v = r.os.eventfd_read(&fd);
    r.res("read again", &v, u64::to_string);
    let w = r.os.eventfd_write(&fd, u64::MAX - 1);
    r.res("write max", &w, |_| "0".into());
    r.event(&ep);
    let w = r.os.eventfd_write(&fd, 1);
    r.res("write past max", &w, |_| "0".into());
    r.quiet(&ep);
    let v = r.os.eventfd_read(&fd);
    r.res("read", &v, u64::to_string);
    Ok(())
}

fn accept_until_eagain<O: Os>(r: &mut Rec<'_, O>) -> io::Result<()> {
    let (l, addr, lep) = r.listener()?;
    r.quiet(&lep);
    let clients = [r.connect(&addr)?, r.connect(&addr)?, r.connect(&addr)?];
    // One edge for all three.
    r.event(&lep);
    let mut accepted = Vec::new();
    for _ in 0..4 {
        let a = r.os.accept(&l);
        r.res("accept", &a, |_| "fd".into());
        accepted.extend(a.ok());
    }
    r.quiet(&lep);
    drop(clients);
    Ok(())
}

fn connect_completes<O: Os>(r: &mut Rec<'_, O>) -> io::Result<()> {
    let (l, addr, _lep) = r.listener()?;
    let (fd, in_progress) = r.os.connect(&addr)?;
    r.note(format!("connect in progress = {in_progress}"));
    let ep = r.os.epoll_create()?;
    r.os.epoll_add(&ep, &fd, 3, Interest::BOTH)?;
    r.event(&ep);
    r.take_error("SO_ERROR", &fd);
    r.quiet(&ep);
    let (server, _) = r.os.accept(&l)?;
    // The peer speaks first: an edge on the connected socket.
    r.write("server greets", &server, b"hello");
    r.event(&ep);
    r.read("client read", &fd, 64);
    Ok(())
}

fn connect_refused<O: Os>(r: &mut Rec<'_, O>) -> io::Result<()> {
    let target = r.env.closed.clone();
    let c = r.os.connect(&target);
    r.res("connect", &c, |(_, p)| format!("in progress {p}"));
    let Ok((fd, _)) = c else { return Ok(()) };
    let ep = r.os.epoll_create()?;
    r.os.epoll_add(&ep, &fd, 4, Interest::BOTH)?;
    r.event(&ep);
    r.take_error("SO_ERROR", &fd);
    r.take_error("SO_ERROR again", &fd);
    r.write("write", &fd, b"x");
    Ok(())
}

fn fd_reuse_after_close<O: Os>(r: &mut Rec<'_, O>) -> io::Result<()> {
    let a = r.os.eventfd()?;
    let b = r.os.eventfd()?;
    let first = O::raw(&a);
    r.note(format!("b follows a = {}", O::raw(&b) == first + 1));
    drop(a);
    let c = r.os.eventfd()?;
    r.note(format!("c reuses a's number = {}", O::raw(&c) == first));
    let ep = r.os.epoll_create()?;
    r.note(format!(
        "epoll takes the next = {}",
        O::raw(&ep) == first + 2
    ));
    drop((b, c));
    Ok(())
}

fn ctl_del_before_close<O: Os>(r: &mut Rec<'_, O>) -> io::Result<()> {
    let (_l, client, server) = r.pair()?;
    let ep = r.os.epoll_create()?;
    let a = r.os.epoll_add(&ep, &server, 1, Interest::READABLE);
    r.res("add", &a, |_| "0".into());
    let a = r.os.epoll_add(&ep, &server, 1, Interest::READABLE);
    r.res("add again", &a, |_| "0".into());
    let d = r.os.epoll_delete(&ep, &server);
    r.res("del", &d, |_| "0".into());
    let d = r.os.epoll_delete(&ep, &server);
    r.res("del again", &d, |_| "0".into());
    let m = r.os.epoll_modify(&ep, &server, 1, Interest::BOTH);
    r.res("mod after del", &m, |_| "0".into());
    r.write("client write", &client, b"x");
    r.quiet(&ep);
    drop(server);
    r.quiet(&ep);
    Ok(())
}

fn dup_after_close_without_del<O: Os>(r: &mut Rec<'_, O>) -> io::Result<()> {
    let (_l, client, server) = r.pair()?;
    let ep = r.os.epoll_create()?;
    r.os.epoll_add(&ep, &server, 1, Interest::READABLE)?;
    let dup = r.os.dup(&server)?;
    drop(server);
    r.write("client write", &client, b"x");
    // The description is still open through the duplicate, so its registration still fires.
    r.event(&ep);
    let d = r.os.epoll_delete(&ep, &dup);
    r.res("del through the dup", &d, |_| "0".into());
    r.read("read through the dup", &dup, 64);
    r.write("client write", &client, b"y");
    r.event(&ep);
    r.read("read through the dup", &dup, 64);
    drop(dup);
    Ok(())
}

fn add_and_mod_report_existing_readiness<O: Os>(r: &mut Rec<'_, O>) -> io::Result<()> {
    let (_l, client, server) = r.pair()?;
    r.write("client write", &client, b"early");
    // Let the bytes arrive before the ADD (a real wait for them, through a probe epoll).
    let probe = r.os.epoll_create()?;
    r.os.epoll_add(&probe, &server, 2, Interest::READABLE)?;
    r.event(&probe);
    let ep = r.os.epoll_create()?;
    r.os.epoll_add(&ep, &server, 1, Interest::READABLE)?;
    r.event(&ep);
    r.quiet(&ep);
    let m = r.os.epoll_modify(&ep, &server, 1, Interest::BOTH);
    r.res("mod", &m, |_| "0".into());
    r.event(&ep);
    let x = r.os.epoll_modify(
        &ep,
        &server,
        1,
        Interest {
            exclusive: true,
            ..Interest::READABLE
        },
    );
    r.res("mod with EPOLLEXCLUSIVE", &x, |_| "0".into());
    Ok(())
}

fn unix_stream_connect_data_and_fin<O: Os>(r: &mut Rec<'_, O>) -> io::Result<()> {
    let path = r.env.dir.join("conformance.sock");
    let at = Endpoint::Unix(Some(path.clone()));
    let (l, _) = r.os.listen(&at, 16)?;
    let missing = Endpoint::Unix(Some(r.env.dir.join("missing.sock")));
    let m = r.os.connect(&missing);
    r.res("connect to a missing path", &m, |_| "fd".into());
    let (client, in_progress) = r.os.connect(&at)?;
    r.note(format!("connect in progress = {in_progress}"));
    let (server, _) = r.os.accept(&l)?;
    let ep = r.os.epoll_create()?;
    r.os.epoll_add(&ep, &server, 1, Interest::READABLE)?;
    r.quiet(&ep);
    r.write("client write", &client, b"abc");
    r.event(&ep);
    r.write("client write", &client, b"d");
    r.event(&ep);
    r.read("server read", &server, 64);
    let s = r.os.shutdown(&client, Shutdown::Write);
    r.res("client shutdown(WR)", &s, |_| "0".into());
    r.event(&ep);
    r.read("server read", &server, 64);
    r.write("server write after the FIN", &server, b"late");
    r.read("client read", &client, 64);
    let cep = r.os.epoll_create()?;
    r.os.epoll_add(&cep, &client, 2, Interest::BOTH)?;
    r.event(&cep);
    drop(server);
    r.event(&cep);
    r.read("client read after the close", &client, 64);
    r.write("client write after the close", &client, b"x");
    r.take_error("client SO_ERROR", &client);
    r.note(format!(
        "path exists = {}",
        r.os.path_identity(&path).is_some()
    ));
    drop(l);
    let refused = r.os.connect(&at);
    r.res("connect after the listener closed", &refused, |_| {
        "fd".into()
    });
    let rm = r.os.remove_path(&path);
    r.res("remove", &rm, |_| "0".into());
    r.note(format!(
        "path exists = {}",
        r.os.path_identity(&path).is_some()
    ));
    Ok(())
}

fn unix_write_after_the_peer_closed<O: Os>(r: &mut Rec<'_, O>) -> io::Result<()> {
    let path = r.env.dir.join("closed-peer.sock");
    let at = Endpoint::Unix(Some(path.clone()));
    let (l, _) = r.os.listen(&at, 16)?;
    let (client, _) = r.os.connect(&at)?;
    let (server, _) = r.os.accept(&l)?;
    let ep = r.os.epoll_create()?;
    r.os.epoll_add(&ep, &client, 1, Interest::BOTH)?;
    r.event(&ep);
    drop(server);
    r.event(&ep);
    r.write("client write", &client, b"x");
    r.write("client write again", &client, b"x");
    r.take_error("client SO_ERROR", &client);
    r.read("client read", &client, 64);
    drop(l);
    r.os.remove_path(&path)?;
    Ok(())
}

fn tcp_write_after_the_peer_closed<O: Os>(r: &mut Rec<'_, O>) -> io::Result<()> {
    let (_l, client, server) = r.pair()?;
    let ep = r.os.epoll_create()?;
    r.os.epoll_add(&ep, &client, 1, Interest::BOTH)?;
    r.event(&ep);
    drop(server);
    r.event(&ep);
    r.read("client read", &client, 64);
    // The write goes out; the closed socket answers with an RST.
    r.write("client write", &client, b"x");
    r.event(&ep);
    r.write("client write again", &client, b"x");
    r.take_error("client SO_ERROR", &client);
    Ok(())
}

type Results = BTreeMap<&'static str, Vec<String>>;

fn run_all<O: Os>(os: &O, env: &Env) -> Results {
    scenarios::<O>()
        .into_iter()
        .map(|(name, body)| {
            let mut rec = Rec {
                os,
                env,
                lines: Vec::new(),
            };
            if let Err(e) = body(&mut rec) {
                rec.note(format!("setup failed: {e}"));
            }
            (name, rec.lines)
        })
        .collect()
}

/// The real kernel's observations, computed once (only this test binary's scenarios open real
/// descriptors, all of them from inside this one call, so fd numbering is not raced).
fn linux() -> &'static Results {
    static LINUX: OnceLock<Results> = OnceLock::new();
    LINUX.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let closed = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            probe.local_addr().expect("bound")
        };
        let env = Env {
            tcp: Endpoint::Tcp("127.0.0.1:0".parse().expect("an address")),
            closed: Endpoint::Tcp(closed),
            dir: dir.path().to_path_buf(),
        };
        run_all(&Linux, &env)
    })
}

fn sim(mode: Mode) -> Results {
    let kernel = Kernel::new(KernelConfig {
        mode,
        ..KernelConfig::default()
    });
    let env = Env {
        tcp: Endpoint::Tcp("127.0.0.1:0".parse().expect("an address")),
        closed: Endpoint::Tcp("127.0.0.1:9".parse().expect("an address")),
        dir: PathBuf::from("/sim"),
    };
    run_all(&kernel, &env)
}

/// The scenarios whose observations differ, each with both sides.
fn differences(a: &Results, b: &Results) -> Vec<String> {
    a.iter()
        .filter(|(name, lines)| b.get(*name) != Some(lines))
        .map(|(name, lines)| {
            let other = b.get(name).cloned().unwrap_or_default();
            format!("{name}:\n  real kernel: {lines:#?}\n  sim:         {other:#?}",)
        })
        .collect()
}

fn differing(mode: Mode) -> Vec<&'static str> {
    let reference = linux();
    let got = sim(mode);
    reference
        .iter()
        .filter(|(name, lines)| got.get(*name) != Some(lines))
        .map(|(name, _)| *name)
        .collect()
}

#[test]
fn the_sim_in_linux_mode_matches_the_real_kernel_in_every_scenario() {
    let reference = linux();
    assert_eq!(reference.len(), scenarios::<Linux>().len());
    if std::env::var_os("REFLOOP_CONFORMANCE_DUMP").is_some() {
        // `REFLOOP_CONFORMANCE_DUMP=1 cargo test --test sim_conformance -- --nocapture`
        for (name, lines) in reference {
            println!("{name}:\n  {}", lines.join("\n  "));
        }
    }
    let diffs = differences(reference, &sim(Mode::Linux));
    assert!(
        diffs.is_empty(),
        "{} of {} scenarios differ:\n{}",
        diffs.len(),
        reference.len(),
        diffs.join("\n")
    );
}

#[test]
fn a_sim_that_raises_no_edge_for_an_arrival_on_a_readable_socket_is_rejected() {
    let differ = differing(Mode::KnownBadNoRearm);
    assert!(differ.contains(&"an_edge_per_arrival"), "{differ:?}");
}

#[test]
fn a_level_triggered_sim_is_rejected() {
    let differ = differing(Mode::KnownBadLevel);
    assert!(
        differ.contains(&"no_edge_after_a_partial_read"),
        "{differ:?}"
    );
}

#[test]
fn the_minimal_mode_is_told_apart_from_linux() {
    let differ = differing(Mode::Minimal);
    assert!(differ.contains(&"an_edge_per_arrival"), "{differ:?}");
}

#[test]
fn the_scenarios_are_deterministic_on_the_sim() {
    assert_eq!(sim(Mode::Linux), sim(Mode::Linux));
}
