//! `cargo xtask bench --only resp`: the `kv` example against redis-server 7.0, each a single
//! process on loopback.
//!
//! 1. Memory under one 26-byte request declaring a 400 MB bulk (`ECHO` with `$400000000`):
//!    resident and virtual growth after the header, and after 1 MiB of the bulk.
//! 2. Memory with 50 clients pipelining `GET` of a 100-byte value without reading a reply;
//!    afterwards every client reads its replies, and the count must be complete.
//! 3. `redis-benchmark -P 16 -c 50 -n N -t <test>` for every default test, kv and redis
//!    interleaved test by test, and the ratio per test (goal: at least 1.0x).
//!
//! Synchronisation is by a barrier, never a sleep: after the big header, a `PING` on a second
//! connection is answered only once the event loop has handled the earlier readable socket.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::report::{ratio_cell, si, Table};
use crate::stats::{Goal, PairedRatio, Samples};

/// What the section needs from the command line.
#[derive(Debug, Clone)]
pub struct Options {
    /// Fewer requests and one run per test.
    pub quick: bool,
    /// Runs per throughput test.
    pub runs: usize,
    /// The `kv` example binary.
    pub kv: PathBuf,
}

/// The `-t` names of redis-benchmark's default tests, and how `-q` prints each.
pub const TESTS: &[(&str, &str)] = &[
    ("ping_inline", "PING_INLINE"),
    ("ping_mbulk", "PING_MBULK"),
    ("set", "SET"),
    ("get", "GET"),
    ("incr", "INCR"),
    ("lpush", "LPUSH"),
    ("rpush", "RPUSH"),
    ("lpop", "LPOP"),
    ("rpop", "RPOP"),
    ("sadd", "SADD"),
    ("hset", "HSET"),
    ("spop", "SPOP"),
    ("zadd", "ZADD"),
    ("zpopmin", "ZPOPMIN"),
    ("lrange_100", "LRANGE_100 (first 100 elements)"),
    ("lrange_300", "LRANGE_300 (first 300 elements)"),
    ("lrange_500", "LRANGE_500 (first 500 elements)"),
    ("lrange_600", "LRANGE_600 (first 600 elements)"),
    ("mset", "MSET (10 keys)"),
];

const BOUND: Duration = Duration::from_secs(30);

/// A server process.
struct Proc {
    child: Child,
    addr: SocketAddr,
}

impl Proc {
    fn kv(binary: &Path) -> Result<Proc, String> {
        let mut child = Command::new(binary)
            .args(["--addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", binary.display()))?;
        let line = first_line_matching(&mut child, |l| {
            l.strip_prefix("listening on ").map(str::to_string)
        })?;
        let addr = line
            .trim()
            .parse()
            .map_err(|e| format!("kv printed {line:?}: {e}"))?;
        Ok(Proc { child, addr })
    }

    fn redis() -> Result<Proc, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--logfile",
                "",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn redis-server: {e}"))?;
        first_line_matching(&mut child, |l| {
            l.contains("Ready to accept connections").then(String::new)
        })?;
        Ok(Proc {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        })
    }

    /// Bytes the server has read so far (`rchar` in `/proc/<pid>/io`, which counts socket
    /// reads too).
    fn bytes_read(&self) -> Result<u64, String> {
        let io = fs::read_to_string(format!("/proc/{}/io", self.child.id()))
            .map_err(|e| format!("read /proc io: {e}"))?;
        io.lines()
            .find_map(|l| l.strip_prefix("rchar:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| "no rchar in /proc/<pid>/io".to_string())
    }

    /// Barrier rounds until the server reads (almost) nothing more between two rounds, three
    /// rounds in a row: it has consumed all its input, or stopped reading (its high
    /// watermark). Each round is one trip through its event loop, so a server that reads a
    /// 16 KiB piece per client per trip (redis) gets every trip it needs. No sleeping: the
    /// rounds are `PING`s.
    fn settle(&self) -> Result<usize, String> {
        let mut last = self.bytes_read()?;
        let mut quiet = 0;
        for round in 1..=100_000 {
            barrier(self.addr)?;
            let now = self.bytes_read()?;
            // A round reads its own PING and a little bookkeeping; input is more than 4 KiB.
            quiet = if now - last < 4096 { quiet + 1 } else { 0 };
            last = now;
            if quiet == 3 {
                return Ok(round);
            }
        }
        Err("the server kept reading for 100000 rounds".to_string())
    }

    /// `VmRSS`, `VmSize` and `VmHWM` from `/proc/<pid>/status`, in bytes.
    fn memory(&self) -> Result<(u64, u64, u64), String> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .map_err(|e| format!("read /proc status: {e}"))?;
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .map_or(0, |kb| kb * 1024)
        };
        Ok((field("VmRSS:"), field("VmSize:"), field("VmHWM:")))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Best effort: a benchmark server, no state to keep.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the child's stdout on a thread until `ready` matches a line (bounded), then keeps
/// draining it so the child never blocks on a full pipe.
fn first_line_matching(
    child: &mut Child,
    ready: fn(&str) -> Option<String>,
) -> Result<String, String> {
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(found) = ready(&line) {
                if let Some(tx) = tx.take() {
                    // The receiver may have given up already.
                    let _ = tx.send(found);
                }
            }
        }
    });
    rx.recv_timeout(BOUND)
        .map_err(|_| "the server did not report ready".to_string())
}

fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let conn = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    conn.set_read_timeout(Some(BOUND))
        .map_err(|e| e.to_string())?;
    conn.set_write_timeout(Some(BOUND))
        .map_err(|e| e.to_string())?;
    conn.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(conn)
}

/// Sends `request` and reads exactly `reply_len` bytes back.
fn round_trip(conn: &mut TcpStream, request: &[u8], reply_len: usize) -> Result<Vec<u8>, String> {
    conn.write_all(request).map_err(|e| format!("write: {e}"))?;
    let mut reply = vec![0u8; reply_len];
    conn.read_exact(&mut reply)
        .map_err(|e| format!("read: {e}"))?;
    Ok(reply)
}

/// The barrier: a `PING` on its own connection, answered after every earlier readable socket
/// was served.
fn barrier(addr: SocketAddr) -> Result<(), String> {
    let mut conn = connect(addr)?;
    let pong = round_trip(&mut conn, b"PING\r\n", 7)?;
    if pong != b"+PONG\r\n" {
        return Err(format!("PING answered {pong:?}"));
    }
    Ok(())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn signed_mib(after: u64, before: u64) -> String {
    let d = after as f64 - before as f64;
    format!("{:+.1} MiB", d / (1024.0 * 1024.0))
}

/// Measurement 1 for one server.
fn declared_bulk(proc: &Proc) -> Result<Vec<String>, String> {
    let (rss0, vsz0, _) = proc.memory()?;
    let mut conn = connect(proc.addr)?;
    let header = b"*2\r\n$4\r\nECHO\r\n$400000000\r\n";
    debug_assert_eq!(header.len(), 26);
    conn.write_all(header).map_err(|e| e.to_string())?;
    barrier(proc.addr)?;
    let (rss1, vsz1, _) = proc.memory()?;
    let chunk = vec![b'x'; 1 << 20];
    conn.write_all(&chunk).map_err(|e| e.to_string())?;
    barrier(proc.addr)?;
    let (rss2, vsz2, _) = proc.memory()?;
    Ok(vec![
        mib(rss0),
        signed_mib(rss1, rss0),
        signed_mib(vsz1, vsz0),
        signed_mib(rss2, rss0),
        signed_mib(vsz2, vsz0),
    ])
}

/// Measurement 2 for one server: `clients` connections each pipeline up to `quota` bytes of
/// `GET v` without reading, until the quota or a write blocked for a second.
fn non_reading_clients(proc: &Proc, clients: usize, quota: usize) -> Result<Vec<String>, String> {
    const VALUE_LEN: usize = 100;
    let mut setup = connect(proc.addr)?;
    let mut set = b"*3\r\n$3\r\nSET\r\n$1\r\nv\r\n$100\r\n".to_vec();
    set.extend(std::iter::repeat_n(b'v', VALUE_LEN));
    set.extend_from_slice(b"\r\n");
    round_trip(&mut setup, &set, 5)?;
    let (rss0, _, _) = proc.memory()?;
    let request = b"GET v\r\n";
    let reply_len = format!("${VALUE_LEN}\r\n").len() + VALUE_LEN + 2;
    let mut conns = Vec::new();
    for _ in 0..clients {
        let conn = connect(proc.addr)?;
        conn.set_write_timeout(Some(Duration::from_secs(1)))
            .map_err(|e| e.to_string())?;
        conns.push(conn);
    }
    let batch: Vec<u8> = request.repeat(4096);
    let writers: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let batch = batch.clone();
            std::thread::spawn(move || {
                let mut sent = 0usize;
                while sent < quota {
                    let at = sent % batch.len();
                    match conn.write(&batch[at..]) {
                        Ok(0) => break,
                        Ok(n) => sent += n,
                        // The server stopped reading: its high watermark, or a full buffer.
                        Err(_) => break,
                    }
                }
                (conn, sent)
            })
        })
        .collect();
    let mut results = Vec::new();
    for writer in writers {
        results.push(writer.join().map_err(|_| "a writer panicked")?);
    }
    let rounds = proc.settle()?;
    let (rss1, _, hwm1) = proc.memory()?;
    let requests: usize = results.iter().map(|(_, sent)| sent / request.len()).sum();
    // Now every client reads: all of its complete requests must be answered.
    let mut delivered = 0usize;
    for (mut conn, sent) in results {
        let expected = sent / request.len();
        conn.set_read_timeout(Some(BOUND))
            .map_err(|e| e.to_string())?;
        let mut left = expected * reply_len;
        let mut buf = vec![0u8; 64 * 1024];
        while left > 0 {
            let n = conn
                .read(&mut buf[..left.min(64 * 1024)])
                .map_err(|e| format!("reading replies: {e}"))?;
            if n == 0 {
                return Err("a server closed a pipelining client".to_string());
            }
            left -= n;
        }
        delivered += expected;
    }
    if delivered != requests {
        return Err(format!("{delivered} of {requests} replies delivered"));
    }
    Ok(vec![
        si(requests as f64),
        mib(rss0),
        mib(rss1),
        mib(hwm1),
        format!("{delivered} of {requests}"),
        rounds.to_string(),
    ])
}

/// One `redis-benchmark -q -P 16 -c 50` run of `test`; its requests per second.
fn benchmark(addr: SocketAddr, test: &str, shown: &str, requests: u64) -> Result<f64, String> {
    let out = Command::new("redis-benchmark")
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args([
            "-P",
            "16",
            "-c",
            "50",
            "-n",
            &requests.to_string(),
            "-t",
            test,
            "-q",
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run redis-benchmark: {e}"))?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    if text.contains("Error from server") || !out.status.success() {
        return Err(format!("redis-benchmark -t {test}: {text}"));
    }
    text.split(['\r', '\n'])
        .filter_map(|l| l.trim().strip_prefix(&format!("{shown}: ")))
        .find_map(|rest| {
            let (number, tail) = rest.split_once(' ')?;
            tail.starts_with("requests per second")
                .then(|| number.parse().ok())
                .flatten()
        })
        .ok_or_else(|| format!("no result for {shown} in: {text}"))
}

/// Installs the redis packages when missing and we are root.
fn ensure_redis() -> Result<(), String> {
    let on_path = |p: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {p}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if ["redis-server", "redis-benchmark"]
        .iter()
        .all(|p| on_path(p))
    {
        return Ok(());
    }
    let status = Command::new("sh")
        .args([
            "-c",
            "apt-get update && apt-get install -y redis-server redis-tools",
        ])
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("apt-get: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(
            "redis-server is missing and `apt-get install -y redis-server redis-tools` failed"
                .into(),
        )
    }
}

/// Runs the three measurements and returns the section's Markdown.
///
/// # Errors
///
/// A server that does not start, a check that fails (a lost reply, a benchmark error).
pub fn section(opts: &Options) -> Result<String, String> {
    ensure_redis()?;
    let version = Command::new("redis-server")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let mut s = String::new();
    let _ = writeln!(s, "Peer: {version}, started with `--save '' --appendonly no`; kv is `examples/kv` (release), default `Config`.");
    let _ = writeln!(s);

    let _ = writeln!(s, "**One 26-byte request declaring a 400 MB bulk** (`*2 $4 ECHO $400000000`), then 1 MiB of the bulk:");
    let _ = writeln!(s);
    let mut t = Table::new(&[
        "server",
        "RSS before",
        "RSS after the header",
        "virtual after the header",
        "RSS after 1 MiB",
        "virtual after 1 MiB",
    ]);
    for (name, proc) in [
        ("kv", Proc::kv(&opts.kv)?),
        ("redis-server", Proc::redis()?),
    ] {
        let mut row = vec![name.to_string()];
        row.extend(declared_bulk(&proc)?);
        t.row(row);
    }
    s.push_str(&t.to_markdown());
    let _ = writeln!(s);

    // 1 MiB of `GET v` asks for about 16 MB of replies per client, well past what the kernel's
    // socket buffers absorb, so a server that keeps reading has to hold the rest itself.
    let (clients, quota) = (50, 1024 * 1024);
    let _ = writeln!(s, "**{clients} clients pipelining `GET` of a 100-byte value without reading** (up to {} of requests each, until a write blocks for 1 s), RSS once every writer stopped and the server read nothing more for three barrier rounds; then every client reads its replies:", mib(quota as u64));
    let _ = writeln!(s);
    let mut t = Table::new(&[
        "server",
        "requests sent",
        "RSS before",
        "RSS with 50 non-readers",
        "peak RSS",
        "replies delivered afterwards",
        "barrier rounds until reads stopped",
    ]);
    for (name, proc) in [
        ("kv", Proc::kv(&opts.kv)?),
        ("redis-server", Proc::redis()?),
    ] {
        let mut row = vec![name.to_string()];
        row.extend(non_reading_clients(&proc, clients, quota)?);
        t.row(row);
    }
    s.push_str(&t.to_markdown());
    let _ = writeln!(s);

    let requests: u64 = if opts.quick { 100_000 } else { 1_000_000 };
    let _ = writeln!(s, "**Throughput**: `redis-benchmark -P 16 -c 50 -n {requests} -t <test> -q`, {} run(s) per test and server, kv and redis-server interleaved test by test (one process each for the whole table); goal kv/redis >= 1.0x:", opts.runs);
    let _ = writeln!(s);
    let kv = Proc::kv(&opts.kv)?;
    let redis = Proc::redis()?;
    let goal = Goal::AtLeast(1.0);
    let mut t = Table::new(&["test", "kv req/s", "redis req/s", "kv / redis", "goal"]);
    for (test, shown) in TESTS {
        let (mut ours, mut theirs) = (Samples::new(), Samples::new());
        for run in 0..opts.runs {
            // Alternate who goes first, so drift in the machine's load hits both.
            let order = if run % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for is_kv in order {
                let addr = if is_kv { kv.addr } else { redis.addr };
                let rps = benchmark(addr, test, shown, requests)?;
                if is_kv {
                    ours.push(rps);
                } else {
                    theirs.push(rps);
                }
            }
        }
        let ratio = PairedRatio::of(&ours, &theirs);
        t.row(vec![
            (*test).to_string(),
            crate::report::median_cell(&ours, si),
            crate::report::median_cell(&theirs, si),
            ratio_cell(&ratio.pairs),
            goal.judge(&ratio).label().to_string(),
        ]);
        println!("resp: {test} done");
    }
    s.push_str(&t.to_markdown());
    let _ = writeln!(s);
    let _ = writeln!(s, "Reproduce: `cargo xtask bench --only resp` (add `--quick` for -n 100000 and one run per test).");
    Ok(s)
}
