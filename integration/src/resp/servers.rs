//! `kv` and `redis-server` as child processes on loopback.
//!
//! Both are started the same way for the differential and client tests: single process, no
//! persistence (`--save '' --appendonly no` for redis), a port on 127.0.0.1.
//! Readiness is a line on stdout (`listening on <addr>` from kv, `Ready to accept connections`
//! from redis), waited for with a bound; nothing sleeps.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::Duration;

/// How long a server may take to start or to stop.
pub const START_BOUND: Duration = Duration::from_secs(20);

/// The redis programs the kit drives.
pub const REDIS_PROGRAMS: &[&str] = &["redis-server", "redis-cli", "redis-benchmark"];

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Makes sure redis-server, redis-cli and redis-benchmark are installed: when one is missing
/// and we are root, runs `apt-get update && apt-get install -y redis-server redis-tools` (once
/// per process); otherwise panics with that command.
pub fn ensure_redis_tools() {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    let result = DONE.get_or_init(|| {
        if REDIS_PROGRAMS.iter().all(|p| on_path(p)) {
            return Ok(());
        }
        let root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        let install = "apt-get update && apt-get install -y redis-server redis-tools";
        if !root {
            return Err(format!("redis tools missing and not root: run `{install}`"));
        }
        let status = Command::new("sh")
            .args(["-c", install])
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("{install}: {e}"))?;
        if !status.success() || !REDIS_PROGRAMS.iter().all(|p| on_path(p)) {
            return Err(format!("`{install}` failed ({status})"));
        }
        Ok(())
    });
    if let Err(why) = result {
        panic!("{why}");
    }
}

/// `target/<profile>/examples/kv`, built with the profile of the running test binary when it
/// is not there yet.
pub fn kv_binary() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let exe = std::env::current_exe().expect("current exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>")
            .to_path_buf();
        let path = profile_dir.join("examples").join("kv");
        if !path.exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
            let mut build = Command::new(cargo);
            build.args(["build", "-p", "refloop", "--example", "kv"]);
            if profile_dir.file_name().and_then(|p| p.to_str()) == Some("release") {
                build.arg("--release");
            }
            let status = build.status().expect("run cargo build");
            assert!(status.success(), "building the kv example failed");
        }
        path
    })
    .clone()
}

/// A server process; killed on drop if it was not stopped.
#[derive(Debug)]
pub struct Server {
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// `kv` or `redis-server`.
    pub name: &'static str,
}

/// A free loopback port (bound, read and released; redis needs a number up front).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// Spawns `cmd`, reads stdout on a thread until `ready` finds a line, and keeps draining it.
fn spawn_until(
    mut cmd: Command,
    name: &'static str,
    ready: fn(&str) -> Option<String>,
) -> (Child, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(found) = ready(&line) {
                if let Some(tx) = tx.take() {
                    // The receiver may have given up already; the server is killed then.
                    let _ = tx.send(found);
                }
            }
        }
    });
    match rx.recv_timeout(START_BOUND) {
        Ok(found) => (child, found),
        Err(_) => {
            // Best effort: the process is being abandoned anyway.
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name} did not report ready within {START_BOUND:?}");
        }
    }
}

impl Server {
    /// The `kv` example on an ephemeral loopback port, with `extra` arguments.
    pub fn kv(extra: &[&str]) -> Server {
        let mut cmd = Command::new(kv_binary());
        cmd.args(["--addr", "127.0.0.1:0"]).args(extra);
        let (child, addr) = spawn_until(cmd, "kv", |line| {
            line.strip_prefix("listening on ").map(str::to_string)
        });
        Server {
            child: Some(child),
            addr: addr.trim().parse().expect("kv prints a socket address"),
            name: "kv",
        }
    }

    /// redis-server 7.0 on a free loopback port: no persistence, logging to stdout.
    pub fn redis(extra: &[&str]) -> Server {
        ensure_redis_tools();
        let port = free_port();
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--logfile",
            "",
        ])
        .args(extra);
        let (child, _) = spawn_until(cmd, "redis-server", |line| {
            line.contains("Ready to accept connections")
                .then(String::new)
        });
        Server {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            name: "redis-server",
        }
    }

    /// The process id (for `/proc/<pid>/status`).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends `SIGTERM` and waits (bounded) for the exit status.
    pub fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let status = child.wait();
            // The receiver only leaves after the bound; the process is gone by then.
            let _ = tx.send((status, child));
        });
        match rx.recv_timeout(START_BOUND) {
            Ok((status, _)) => status.expect("wait"),
            Err(_) => panic!(
                "{} did not exit within {START_BOUND:?} of SIGTERM",
                self.name
            ),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Best effort in a test that already failed or did not stop it.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
