//! Real clients we did not write, against the `kv` example: `redis-benchmark` runs every
//! default test, and a scripted `redis-cli` session prints the same as against redis-server.
//!
//! Both tools come from Debian's `redis-tools`; `ensure_redis_tools` installs them when they
//! are missing and the test runs as root. Every wait is bounded.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use refloop_integration::resp::servers::{ensure_redis_tools, Server};

/// The tests `redis-benchmark` 7.0 runs when no `-t` is given, as `-q` names them.
const DEFAULT_TESTS: &[&str] = &[
    "PING_INLINE",
    "PING_MBULK",
    "SET",
    "GET",
    "INCR",
    "LPUSH",
    "RPUSH",
    "LPOP",
    "RPOP",
    "SADD",
    "HSET",
    "SPOP",
    "ZADD",
    "ZPOPMIN",
    "LPUSH (needed to benchmark LRANGE)",
    "LRANGE_100 (first 100 elements)",
    "LRANGE_300 (first 300 elements)",
    "LRANGE_500 (first 500 elements)",
    "LRANGE_600 (first 600 elements)",
    "MSET (10 keys)",
];

/// Runs `program args` with `stdin`, returning its stdout, or an error after `bound`.
fn run_bounded(
    program: &str,
    args: &[String],
    stdin: &[u8],
    bound: Duration,
) -> Result<String, String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {program}: {e}"))?;
    let mut input = child.stdin.take().expect("piped stdin");
    input
        .write_all(stdin)
        .map_err(|e| format!("write {program}'s stdin: {e}"))?;
    drop(input);
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = String::new();
        let mut err = String::new();
        // Read errors leave the text short, which the checks then report.
        let _ = child.stdout.take().map(|mut s| s.read_to_string(&mut out));
        let _ = child.stderr.take().map(|mut s| s.read_to_string(&mut err));
        let status = child.wait();
        // The receiver may have given up after the bound.
        let _ = tx.send((status, out, err));
    });
    match rx.recv_timeout(bound) {
        Ok((Ok(status), out, err)) if status.success() => Ok(out + &err),
        Ok((status, out, err)) => Err(format!("{program} failed ({status:?}): {out}{err}")),
        Err(_) => {
            // Best effort: the run already failed.
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            Err(format!("{program} did not finish within {bound:?}"))
        }
    }
}

/// Runs `redis-benchmark -q` against `addr`; returns each test's requests per second, or why
/// the run does not count: an error from the server, a config it could not fetch, a missing
/// test.
fn benchmark(
    addr: SocketAddr,
    requests: u32,
    tests: &[&str],
) -> Result<Vec<(String, f64)>, String> {
    let mut args = vec![
        "-h".to_string(),
        addr.ip().to_string(),
        "-p".to_string(),
        addr.port().to_string(),
        "-q".to_string(),
        "-n".to_string(),
        requests.to_string(),
    ];
    let names: Vec<String> = tests.iter().map(|t| t.to_lowercase()).collect();
    if !tests.is_empty() {
        args.push("-t".to_string());
        args.push(names.join(","));
    }
    let out = run_bounded("redis-benchmark", &args, b"", Duration::from_secs(300))?;
    for bad in [
        "Error from server",
        "Could not fetch server CONFIG",
        "Error:",
    ] {
        if out.contains(bad) {
            return Err(format!("redis-benchmark reported `{bad}`:\n{out}"));
        }
    }
    // `-q` rewrites a progress line with `\r` and ends each test with its summary line.
    let mut results = Vec::new();
    for line in out.split(['\r', '\n']) {
        let line = line.trim();
        if let Some((name, rest)) = line.split_once(": ") {
            if let Some(rps) = rest.strip_suffix_once_rps() {
                results.push((name.to_string(), rps));
            }
        }
    }
    Ok(results)
}

trait RpsSuffix {
    fn strip_suffix_once_rps(&self) -> Option<f64>;
}

impl RpsSuffix for str {
    /// `12345.67 requests per second, p50=0.1 msec` gives `12345.67`.
    fn strip_suffix_once_rps(&self) -> Option<f64> {
        let (number, rest) = self.split_once(' ')?;
        rest.starts_with("requests per second")
            .then(|| number.parse().ok())
            .flatten()
    }
}

#[test]
fn redis_benchmark_runs_every_default_test_against_kv_without_an_error() {
    ensure_redis_tools();
    let kv = Server::kv(&[]);
    let results = benchmark(kv.addr, 20_000, &[]).unwrap_or_else(|e| panic!("{e}"));
    let seen: BTreeSet<&str> = results.iter().map(|(n, _)| n.as_str()).collect();
    for test in DEFAULT_TESTS {
        assert!(seen.contains(test), "no result for {test}: {results:?}");
    }
    for (name, rps) in &results {
        assert!(*rps > 0.0, "{name}: {rps}");
        println!("@@stat redis-benchmark-rps {name:?} {rps}");
    }
    assert!(kv.stop().success(), "kv must exit 0 on SIGTERM");
}

#[test]
fn the_benchmark_check_rejects_a_kv_that_refuses_the_benchmark_s_bulks() {
    ensure_redis_tools();
    // Known-bad: a kv whose bulk limit (8 bytes) is under the benchmark's keys and config names.
    let kv = Server::kv(&["--max-bulk", "8"]);
    let result = benchmark(kv.addr, 2000, &["set", "get"]);
    let why = result.expect_err("the check accepted a server that answers with errors");
    assert!(
        why.contains("Error from server") || why.contains("Could not fetch server CONFIG"),
        "{why}"
    );
}

/// A redis-cli session: strings, counters, lists, sets, hashes, sorted sets, expiry, select,
/// config, and the errors (wrong type, unknown command, arity, not an integer).
const SCRIPT: &str = r#"PING
SET greeting "hello world"
GET greeting
GET missing
INCR counter
INCRBY counter 41
DECR counter
DECRBY counter 2
APPEND greeting "!"
STRLEN greeting
MSET a 1 b 2
MGET a b nosuch
LPUSH list x y z
RPUSH list w
LRANGE list 0 -1
LPOP list
RPOP list 2
SADD set m
SADD set m
SPOP set
HSET hash f v g w
ZADD zs 1.5 one 2 two 0.1 tenth
ZPOPMIN zs 2
GET list
SET k v EX 100
TTL k
PTTL greeting
SET k2 v2 NX
SET k2 v3 XX GET
DEL a b nosuch
EXISTS greeting list
DBSIZE
SELECT 3
DBSIZE
SELECT 0
CONFIG GET save
CONFIG GET appendonly
nosuchcommand arg1 "arg two"
SET onlykey
INCR greeting
ECHO "tab\there"
FLUSHALL
DBSIZE
"#;

fn cli_session(addr: SocketAddr) -> String {
    let args = [
        "-h".to_string(),
        addr.ip().to_string(),
        "-p".to_string(),
        addr.port().to_string(),
    ];
    run_bounded(
        "redis-cli",
        &args,
        SCRIPT.as_bytes(),
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_scripted_redis_cli_session_prints_the_same_against_kv_and_redis() {
    ensure_redis_tools();
    let kv = Server::kv(&[]);
    let redis = Server::redis(&[]);
    let ours = cli_session(kv.addr);
    let theirs = cli_session(redis.addr);
    assert_eq!(ours, theirs);
    // The session reached the end: FLUSHALL's OK, then DBSIZE's 0.
    assert!(ours.ends_with("OK\n0\n"), "{ours}");
    assert!(ours.contains("WRONGTYPE") && ours.contains("unknown command"));
}

#[test]
fn the_session_comparison_rejects_a_kv_with_a_different_bulk_limit() {
    ensure_redis_tools();
    let kv = Server::kv(&["--max-bulk", "8"]);
    let redis = Server::redis(&[]);
    assert_ne!(cli_session(kv.addr), cli_session(redis.addr));
}
