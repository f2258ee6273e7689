//! Differential test: the same generated request streams go to the `kv` example and to
//! redis-server 7.0 on loopback; the replies must be equal byte for byte, and the connection
//! must be closed by both or left open by both.
//!
//! Both servers are started once per test (single process, redis with `--save ''
//! --appendonly no`); every case runs on new connections after a `FLUSHALL`, so each starts
//! from an empty keyspace in database 0. Cases: four per `PROPTEST_CASES`, 2048 when unset.

use std::net::SocketAddr;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use refloop_integration::resp::gen::{self, Options, Stream};
use refloop_integration::resp::servers::Server;
use refloop_integration::resp::wire::{command, exchange, exchange_until_close, Exchange};

/// Four cases per `PROPTEST_CASES` (a case costs about a millisecond), 2048 when unset.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .map_or(2048, |n| n.saturating_mul(4))
}

fn streams() -> impl Strategy<Value = Stream> {
    prop_oneof![
        gen::stream(Options {
            expiry: false,
            max_commands: 16
        }),
        gen::stream(Options {
            expiry: true,
            max_commands: 16
        }),
    ]
}

fn run_on(addr: SocketAddr, stream: &[u8]) -> Result<Exchange, String> {
    let flushed = command(addr, &[b"FLUSHALL"]).map_err(|e| format!("FLUSHALL: {e}"))?;
    if flushed != b"+OK\r\n" {
        return Err(format!("FLUSHALL answered {:?}", show(&flushed)));
    }
    exchange(addr, stream).map_err(|e| e.to_string())
}

fn show(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(600)];
    let more = if bytes.len() > shown.len() { " .." } else { "" };
    format!("{}{more}", String::from_utf8_lossy(shown).escape_debug())
}

/// The property: both servers answer `stream` identically.
fn same_answers(kv: SocketAddr, redis: SocketAddr, stream: &Stream) -> Result<(), String> {
    let bytes = stream.bytes();
    let ours = run_on(kv, &bytes)?;
    let theirs = run_on(redis, &bytes)?;
    if ours != theirs {
        // Point at the first differing byte, with the request stream for context.
        let at = ours
            .replies
            .iter()
            .zip(&theirs.replies)
            .position(|(a, b)| a != b)
            .unwrap_or(ours.replies.len().min(theirs.replies.len()));
        return Err(format!(
            "requests {:?}\nkv    (closed {}) from byte {at}: {:?}\nredis (closed {}) from byte {at}: {:?}",
            show(&bytes),
            ours.closed,
            show(&ours.replies[at.min(ours.replies.len())..]),
            theirs.closed,
            show(&theirs.replies[at.min(theirs.replies.len())..]),
        ));
    }
    Ok(())
}

#[test]
fn kv_answers_generated_streams_byte_for_byte_as_redis_does() {
    let kv = Server::kv(&[]);
    let redis = Server::redis(&[]);
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let closed = std::cell::Cell::new(0u32);
    let result = runner.run(&streams(), |stream| {
        closed.set(closed.get() + u32::from(stream.ends_in_error()));
        same_answers(kv.addr, redis.addr, &stream).map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    println!(
        "@@stat resp-differential-cases {} (closing {})",
        cases(),
        closed.get()
    );
    assert!(kv.stop().success(), "kv must exit 0 on SIGTERM");
}

#[test]
fn the_differential_rejects_a_kv_with_a_different_bulk_limit() {
    // A known-bad server: kv whose `--max-bulk` is 24 bytes, not 512 MiB (just enough for the
    // set-up commands and the sentinel).
    let kv = Server::kv(&["--max-bulk", "24"]);
    let redis = Server::redis(&[]);
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: 256,
            failure_persistence: None,
            ..Config::default()
        },
        proptest::test_runner::TestRng::deterministic_rng(
            proptest::test_runner::RngAlgorithm::ChaCha,
        ),
    );
    let result = runner.run(&streams(), |stream| {
        same_answers(kv.addr, redis.addr, &stream).map_err(TestCaseError::fail)
    });
    let Err(TestError::Fail(why, minimal)) = result else {
        panic!("the differential accepted a kv with a 24-byte bulk limit: {result:?}");
    };
    assert!(why.to_string().contains("invalid bulk length"), "{why}");
    println!(
        "@@stat shrunk-bytes kv_max_bulk_24 {}",
        minimal.bytes().len()
    );
}

/// Redis's cross-protocol guard: `POST` or `Host:` as the first command closes the connection
/// with no reply at all, on both servers.
#[test]
fn post_and_host_close_silently_on_both() {
    let kv = Server::kv(&[]);
    let redis = Server::redis(&[]);
    for stream in [
        &b"POST / HTTP/1.1\r\nHost: example\r\n\r\n"[..],
        b"Host: x\r\nPING\r\n",
        b"*1\r\n$4\r\npost\r\n",
    ] {
        let ours = exchange(kv.addr, stream).unwrap();
        let theirs = exchange(redis.addr, stream).unwrap();
        assert_eq!(ours, theirs, "{}", show(stream));
        assert!(ours.closed && ours.replies.is_empty());
    }
}

/// The 64 KiB limits on a line with no line end at all: redis errors once more than 64 KiB
/// are buffered without one, whatever its read sizes, and so does kv.
#[test]
fn over_long_lines_get_redis_s_too_big_errors_then_a_close() {
    let kv = Server::kv(&[]);
    let redis = Server::redis(&[]);
    let long = vec![b'a'; 70_000];
    for (prefix, error) in [
        (
            &b""[..],
            &b"-ERR Protocol error: too big inline request\r\n"[..],
        ),
        (b"*", b"-ERR Protocol error: too big mbulk count string\r\n"),
        (
            b"*1\r\n$",
            b"-ERR Protocol error: too big bulk count string\r\n",
        ),
    ] {
        let stream = [prefix, &long].concat();
        let ours = exchange_until_close(kv.addr, &stream).unwrap();
        let theirs = exchange_until_close(redis.addr, &stream).unwrap();
        assert_eq!(ours, theirs);
        assert_eq!(ours, error);
    }
}

/// Pipelined replies before a protocol error go out first, then the error, then the close.
#[test]
fn replies_before_a_protocol_error_are_delivered_then_the_connection_closes() {
    let kv = Server::kv(&[]);
    let redis = Server::redis(&[]);
    let stream = b"PING\r\nSET k v\r\nGET k\r\n*1\r\n$x\r\nPING\r\n";
    let ours = exchange(kv.addr, stream).unwrap();
    assert_eq!(ours, exchange(redis.addr, stream).unwrap());
    assert_eq!(
        ours.replies,
        b"+PONG\r\n+OK\r\n$1\r\nv\r\n-ERR Protocol error: invalid bulk length\r\n"
    );
    assert!(ours.closed);
}
