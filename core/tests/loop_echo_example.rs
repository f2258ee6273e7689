//! Black-box tests of `examples/echo.rs`, driven by a client we did not write against the loop:
//! a Python 3 script using only the standard library's `socket` module.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

/// The echo example binary next to this test binary (`cargo test` builds examples), built on
/// demand when only this test target was built.
fn echo_binary() -> PathBuf {
    example_binary("echo")
}

fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let path = profile_dir.join("examples").join(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let profile = profile_dir
            .file_name()
            .and_then(|p| p.to_str())
            .unwrap_or("debug");
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "refloop", "--example", name]);
        if profile == "release" {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "building the {name} example failed");
    }
    path
}

struct Echo {
    child: Child,
    addr: String,
    _stdout: BufReader<ChildStdout>,
}

fn start_echo(framing: &str, max_frame: Option<usize>) -> Echo {
    start_echo_with(framing, max_frame, &[])
}

fn start_echo_with(framing: &str, max_frame: Option<usize>, extra: &[&str]) -> Echo {
    let mut args = vec!["--addr", "127.0.0.1:0", "--framing", framing];
    let max = max_frame.map(|m| m.to_string());
    if let Some(max) = &max {
        args.extend(["--max-frame", max.as_str()]);
    }
    args.extend(extra);
    start_example("echo", &args)
}

/// Starts example `name` with `args` and reads its `listening on <addr>` line.
fn start_example(name: &str, args: &[&str]) -> Echo {
    let mut cmd = Command::new(example_binary(name));
    cmd.args(args);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn echo");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("read first line");
    let addr = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first line must be `listening on <addr>`, got {first:?}"))
        .trim()
        .to_string();
    Echo {
        child,
        addr,
        _stdout: stdout,
    }
}

impl Echo {
    /// Sends `signal` (by name) and returns the exit status, within a bound.
    fn stop_with(mut self, signal: &str) -> (Option<i32>, String) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let pid = self.child.id().to_string();
        let mut stderr_pipe = self.child.stderr.take().expect("piped stderr");
        let mut child = self.child;
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            // Ignored: the receiver is gone only if the test already failed.
            let _ = tx.send(child.wait().expect("wait for echo"));
        });
        let status = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(status) => status,
            Err(_) => {
                // Ignored: the process may have exited just now.
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
                waiter.join().expect("waiter thread");
                panic!("echo did not exit within 10 s of SIG{signal}");
            }
        };
        waiter.join().expect("waiter thread");
        let mut stderr = String::new();
        stderr_pipe.read_to_string(&mut stderr).unwrap();
        (status.code(), stderr)
    }
}

/// Runs a Python 3 client script with the server address as its argument; returns its stdout.
fn python(script: &str, addr: &str) -> String {
    let out = Command::new("python3")
        .args(["-c", script, addr])
        .output()
        .expect("python3 is needed for the black-box tests");
    assert!(
        out.status.success(),
        "python client failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const LENGTH_CLIENT: &str = r#"
import socket, struct, sys
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)), timeout=10)
payloads = [b"", b"x", b"hello", bytes(range(256)) * 40, b"y" * 65536]
payloads += [("msg %d" % i).encode() for i in range(500)]
wire = b"".join(struct.pack(">I", len(p)) + p for p in payloads)
# Send in awkward pieces: one byte, then odd-sized chunks.
s.sendall(wire[:1])
i = 1
while i < len(wire):
    s.sendall(wire[i:i + 777])
    i += 777
s.shutdown(socket.SHUT_WR)
got = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    got += chunk
assert got == wire, "echo differs: %d bytes vs %d" % (len(got), len(wire))
print("ok", len(payloads))
"#;

const LINES_CLIENT: &str = r#"
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
clients = [socket.create_connection((host, int(port)), timeout=10) for _ in range(8)]
for n, s in enumerate(clients):
    s.sendall("".join("client %d line %d\n" % (n, i) for i in range(200)).encode())
    s.sendall(b"crlf line\r\n")
for n, s in enumerate(clients):
    f = s.makefile("rb")
    for i in range(200):
        line = f.readline()
        assert line == ("client %d line %d\n" % (n, i)).encode(), line
    assert f.readline() == b"crlf line\n"
    s.close()
print("ok", len(clients))
"#;

const TOO_LONG_CLIENT: &str = r#"
import socket, struct, sys
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)), timeout=10)
s.sendall(struct.pack(">I", 4) + b"fine")
assert s.recv(8) == struct.pack(">I", 4) + b"fine"
# Declare a frame over --max-frame: the server closes this connection.
s.sendall(struct.pack(">I", 1 << 20))
rest = b""
try:
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        rest += chunk
except ConnectionResetError:
    pass
assert rest == b"", rest
print("closed")
"#;

#[test]
fn echo_example_echoes_length_prefixed_frames_and_exits_cleanly_on_sigterm() {
    let echo = start_echo("length", None);
    assert!(
        echo.addr.starts_with("127.0.0.1:") && !echo.addr.ends_with(":0"),
        "{}",
        echo.addr
    );
    assert_eq!(python(LENGTH_CLIENT, &echo.addr).trim(), "ok 505");
    let (code, stderr) = echo.stop_with("TERM");
    assert_eq!(code, Some(0), "exit status after SIGTERM; stderr: {stderr}");
}

#[test]
fn echo_example_echoes_lines_from_many_clients_and_exits_cleanly_on_sigint() {
    let echo = start_echo("lines", None);
    assert_eq!(python(LINES_CLIENT, &echo.addr).trim(), "ok 8");
    let (code, stderr) = echo.stop_with("INT");
    assert_eq!(code, Some(0), "exit status after SIGINT; stderr: {stderr}");
}

#[test]
fn echo_example_with_two_loops_echoes_from_many_clients_and_exits_cleanly_on_sigterm() {
    for sharing in ["reuseport", "exclusive"] {
        let echo = start_echo_with("lines", None, &["--loops", "2", "--sharing", sharing]);
        assert_eq!(python(LINES_CLIENT, &echo.addr).trim(), "ok 8", "{sharing}");
        let (code, stderr) = echo.stop_with("TERM");
        assert_eq!(
            code,
            Some(0),
            "{sharing}: exit status after SIGTERM; stderr: {stderr}"
        );
    }
}

const CHAT_CLIENTS: &str = r#"
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
clients = [socket.create_connection((host, int(port)), timeout=10) for _ in range(8)]
readers = [c.makefile("rb") for c in clients]
# Each client joins and waits for its own join line: then it is registered on its loop.
for i, (c, f) in enumerate(zip(clients, readers)):
    c.sendall(b"join %d\n" % i)
    while not f.readline().endswith(b": join %d\n" % i):
        pass
clients[0].sendall(b"hello everyone\n")
for f in readers:
    while not f.readline().endswith(b": hello everyone\n"):
        pass
print("ok", len(clients))
"#;

#[test]
fn chat_example_delivers_every_line_to_every_client_on_every_loop() {
    let chat = start_example("chat", &["--addr", "127.0.0.1:0", "--loops", "2"]);
    assert_eq!(python(CHAT_CLIENTS, &chat.addr).trim(), "ok 8");
    let (code, stderr) = chat.stop_with("TERM");
    assert_eq!(code, Some(0), "exit status after SIGTERM; stderr: {stderr}");
}

#[test]
fn echo_example_closes_a_connection_whose_frame_exceeds_max_frame() {
    let echo = start_echo("length", Some(1024));
    assert_eq!(python(TOO_LONG_CLIENT, &echo.addr).trim(), "closed");
    let (code, stderr) = echo.stop_with("TERM");
    assert_eq!(code, Some(0));
    assert!(
        stderr.contains("frame too long"),
        "the close is logged with its reason: {stderr}"
    );
}

#[test]
fn echo_example_rejects_an_unknown_framing_with_usage() {
    let out = Command::new(echo_binary())
        .args(["--addr", "127.0.0.1:0", "--framing", "xml"])
        .output()
        .expect("run echo");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: echo"));
}
