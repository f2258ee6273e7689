//! Starting, observing and stopping the echo servers under test.
//!
//! Both servers take the same command line (`--addr 127.0.0.1:0 --framing length|lines`) and
//! print `listening on <addr>` as their first line of stdout, so the harness treats them alike.

use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::loadgen::Wire;
use crate::sys;

/// A running server process.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// The process whose CPU and memory are measured: the server itself, even under strace.
    pub pid: u32,
    /// The address it listens on.
    pub addr: SocketAddr,
    stderr_tail: Arc<Mutex<Vec<String>>>,
    drains: Vec<thread::JoinHandle<()>>,
}

/// How to start one server.
#[derive(Debug, Clone)]
pub struct ServerCmd {
    /// A short name for tables (`refloop`, `tokio`).
    pub name: &'static str,
    /// The server binary.
    pub program: PathBuf,
}

impl ServerCmd {
    /// Starts the server for `wire`, optionally under `strace -c -f -o <file>`.
    ///
    /// # Errors
    ///
    /// Fails when the process cannot be started or does not print its address.
    pub fn start(&self, wire: Wire, strace_out: Option<&Path>) -> io::Result<Server> {
        self.start_with(wire, strace_out, &[])
    }

    /// [`ServerCmd::start`] with `extra` arguments after the usual ones (for example
    /// `--loops 2`).
    ///
    /// # Errors
    ///
    /// As [`ServerCmd::start`].
    pub fn start_with(
        &self,
        wire: Wire,
        strace_out: Option<&Path>,
        extra: &[&str],
    ) -> io::Result<Server> {
        let mut args = vec!["--addr", "127.0.0.1:0", "--framing", wire.arg()];
        args.extend_from_slice(extra);
        let mut cmd = match strace_out {
            Some(out) => {
                let mut c = Command::new("strace");
                c.arg("-c")
                    .arg("-f")
                    .arg("-o")
                    .arg(out)
                    .arg(&self.program)
                    .args(&args);
                c
            }
            None => {
                let mut c = Command::new(&self.program);
                c.args(&args);
                c
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot start {}: {e}", self.program.display()),
            )
        })?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no stdout pipe"))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| io::Error::other("no stderr pipe"))?;
        let stderr_tail = Arc::new(Mutex::new(Vec::new()));
        let tail = Arc::clone(&stderr_tail);
        let err_drain = thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                if t.len() == 20 {
                    t.remove(0);
                }
                t.push(line);
            }
        });
        let mut reader = BufReader::new(stdout);
        let mut first = String::new();
        reader.read_line(&mut first)?;
        let out_drain = thread::spawn(move || {
            // Whatever else the server prints is read and dropped, so it can never block on
            // a full pipe.
            let mut sink = Vec::new();
            let _ = reader.read_to_end(&mut sink);
        });
        let mut server = Server {
            pid: child.id(),
            child,
            addr: "127.0.0.1:0".parse().expect("literal address"),
            stderr_tail,
            drains: vec![err_drain, out_drain],
        };
        let Some(addr) = first.trim().strip_prefix("listening on ") else {
            let tail = server.stop().unwrap_or_default();
            return Err(io::Error::other(format!(
                "{} printed {first:?} instead of `listening on <addr>`; stderr: {tail}",
                self.name
            )));
        };
        server.addr = addr.parse().map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad address {addr:?}: {e}"),
            )
        })?;
        if strace_out.is_some() {
            server.pid = traced_child(server.child.id())?;
        }
        Ok(server)
    }
}

/// The single child of the `strace` process `pid`.
fn traced_child(pid: u32) -> io::Result<u32> {
    let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))?;
    children
        .split_whitespace()
        .next()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::other("strace has no child process"))
}

impl Server {
    /// User plus system CPU seconds the server has used so far (all its threads).
    ///
    /// # Errors
    ///
    /// Fails when `/proc/<pid>/stat` cannot be read or parsed.
    pub fn cpu_seconds(&self) -> io::Result<f64> {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        parse_cpu_ticks(&stat)
            .map(|t| t as f64 / sys::clock_ticks_per_second() as f64)
            .ok_or_else(|| io::Error::other("cannot parse /proc/<pid>/stat"))
    }

    /// The server's resident set size in bytes.
    ///
    /// # Errors
    ///
    /// Fails when `/proc/<pid>/statm` cannot be read or parsed.
    pub fn rss_bytes(&self) -> io::Result<u64> {
        let statm = fs::read_to_string(format!("/proc/{}/statm", self.pid))?;
        let pages: u64 = statm
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| io::Error::other("cannot parse /proc/<pid>/statm"))?;
        Ok(pages * sys::page_size())
    }

    /// How many file descriptors the server holds open.
    ///
    /// # Errors
    ///
    /// Fails when `/proc/<pid>/fd` cannot be listed.
    pub fn open_fds(&self) -> io::Result<usize> {
        Ok(fs::read_dir(format!("/proc/{}/fd", self.pid))?.count())
    }

    /// Asks the server to exit with SIGTERM, waits (killing it after 10 s) and returns the
    /// last lines it wrote to stderr.
    ///
    /// # Errors
    ///
    /// Fails when the server did not exit on SIGTERM or exited unsuccessfully; the error names
    /// what happened and quotes its stderr.
    pub fn stop(mut self) -> io::Result<String> {
        // The server may already be gone; `wait` below reports how it ended either way.
        let _ = sys::send_signal(self.pid, sys::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut killed = false;
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline && !killed {
                // The pid is our own child (or strace's), still unreaped, so it cannot have
                // been reused.
                let _ = sys::send_signal(self.pid, sys::SIGKILL);
                let _ = self.child.kill();
                killed = true;
            }
            thread::sleep(Duration::from_millis(10));
        };
        for d in self.drains.drain(..) {
            // A drain thread only reads pipes; it cannot panic in a way that matters here.
            let _ = d.join();
        }
        let tail = self
            .stderr_tail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n");
        if killed {
            return Err(io::Error::other(format!(
                "server did not exit within 10 s of SIGTERM; stderr: {tail}"
            )));
        }
        if !status.success() {
            return Err(io::Error::other(format!(
                "server exited with {status}; stderr: {tail}"
            )));
        }
        Ok(tail)
    }
}

/// `utime + stime` in clock ticks from the text of `/proc/<pid>/stat`.
///
/// The command name (field 2) is in parentheses and may contain spaces, so fields are counted
/// from the last `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the `)`, field 3 (state) is index 0, so utime (field 14) is index 11.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Per-syscall call counts from an `strace -c` summary, plus the total.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyscallCounts {
    /// `(syscall, calls)`, most calls first.
    pub by_name: Vec<(String, u64)>,
    /// The `total` line's calls.
    pub total: u64,
}

/// Parses the table `strace -c` writes.
///
/// Rows look like `% time  seconds  usecs/call  calls  [errors]  syscall`; the errors column may
/// be empty, so the calls are the fourth field and the name is the last.
pub fn parse_strace_summary(text: &str) -> Option<SyscallCounts> {
    let mut counts = SyscallCounts::default();
    let mut saw_total = false;
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 5 || fields[0].parse::<f64>().is_err() {
            continue;
        }
        let Ok(calls) = fields[3].parse::<u64>() else {
            continue;
        };
        let name = fields[fields.len() - 1];
        if name == "total" {
            counts.total = calls;
            saw_total = true;
        } else {
            counts.by_name.push((name.to_string(), calls));
        }
    }
    counts.by_name.sort_by_key(|row| std::cmp::Reverse(row.1));
    saw_total.then_some(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_past_a_command_name_with_spaces_and_parens() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 1 0";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
    }

    #[test]
    fn truncated_stat_is_rejected_rather_than_misread() {
        assert_eq!(parse_cpu_ticks("1234 (x) S 1 2 3"), None);
    }

    #[test]
    fn strace_summary_totals_and_rows_are_parsed_with_or_without_errors_column() {
        let text = "\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 60.00    0.060000           3     20000           writev
 30.00    0.030000           1     25000      5000 read
 10.00    0.010000           1     10000           epoll_wait
------ ----------- ----------- --------- --------- ----------------
100.00    0.100000           1     55000      5000 total
";
        let c = parse_strace_summary(text).unwrap();
        assert_eq!(c.total, 55000);
        assert_eq!(
            c.by_name,
            vec![
                ("read".to_string(), 25000),
                ("writev".to_string(), 20000),
                ("epoll_wait".to_string(), 10000)
            ]
        );
    }

    #[test]
    fn strace_output_without_a_total_line_is_not_a_summary() {
        assert_eq!(parse_strace_summary("strace: exec failed\n"), None);
    }
}
