//! `cargo xtask bench [--quick] [--only queue|framing|echo|multi|kit|resp] [...]`: runs refloop and its
//! peers side by side, alternating, prints the tables and writes `BENCHMARKS.md`.
//!
//! Run `bench --help` for the options.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use refloop_bench::framing_bench::{DecodeImpl, Kind, Stream};
use refloop_bench::kit;
use refloop_bench::loadgen::{self, LoadConfig, Wire};
use refloop_bench::queue_bench::{Pattern, QueueImpl, SPIN_BEFORE_YIELD};
use refloop_bench::report::{median_cell, ratio_cell, replace_section, si, Table};
use refloop_bench::server::{parse_strace_summary, ServerCmd};
use refloop_bench::stats::{Goal, PairedRatio, Samples};
use refloop_bench::sys;

const HELP: &str = "\
bench: refloop side by side with the peers users would pick instead

USAGE: cargo xtask bench [--quick] [OPTIONS]
       (= cargo +stable run --release -p refloop-bench --bin bench -- [OPTIONS])

OPTIONS:
  --quick              a ~2 minute sanity run: fewer runs, shorter windows, small kit budgets
  --only LIST          run only these sections (comma-separated): queue, framing, echo, multi,
                       kit, resp (the kv example against redis-server; installs redis if
                       missing)
  --runs N             runs per measurement (default: queue and framing 5 quick, 15 full;
                       echo 3 quick, 5 full)
  --no-write           print the tables but leave BENCHMARKS.md alone
  --out PATH           write the report here instead of BENCHMARKS.md
  --echo-framing F     the framing of the echo section: length (default) or lines
  --refloop-echo PATH  drive this server binary as `refloop` instead of building the
                       `echo` example (for example a build with a change under test)
  --profile CASE       run one case once, for `valgrind --tool=callgrind`; CASE is one of
                         queue:refloop|crossbeam|std:spin|eventfd|blocking:PRODUCERS[:PER_PRODUCER]
                         framing:refloop|tokio:length|lines:PAYLOAD:CHUNK[:BYTES]
                         load:ADDR:CONNS[:SECONDS[:THREADS]]  (drives a server you started yourself,
                           for example under callgrind, with `--framing length`)
  -h, --help           this text

ENVIRONMENT:
  LOOM_MAX_PREEMPTIONS  loom bound for the kit section (default: 3; --quick uses 2)
  REFLOOP_FUZZ_SECONDS  seconds per fuzz target for the kit section (default: 30; --quick 5)
";

#[derive(Debug, Clone)]
struct Opts {
    quick: bool,
    only: Vec<String>,
    runs: Option<usize>,
    write: bool,
    out: Option<PathBuf>,
    profile: Option<String>,
    refloop_echo: Option<PathBuf>,
    echo_wire: Wire,
}

fn parse_opts() -> Result<Opts, String> {
    let mut o = Opts {
        quick: false,
        only: Vec::new(),
        runs: None,
        write: true,
        out: None,
        profile: None,
        refloop_echo: None,
        echo_wire: Wire::Length,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--quick" => o.quick = true,
            "--only" => {
                for s in value("--only")?.split(',') {
                    if !["queue", "framing", "echo", "multi", "kit", "resp"].contains(&s) {
                        return Err(format!(
                            "unknown section {s:?}, expected queue, framing, echo, multi, kit or resp"
                        ));
                    }
                    o.only.push(s.to_string());
                }
            }
            "--runs" => {
                let n: usize = value("--runs")?
                    .parse()
                    .map_err(|e| format!("bad --runs: {e}"))?;
                if n == 0 {
                    return Err("--runs must be at least 1".into());
                }
                o.runs = Some(n);
            }
            "--no-write" => o.write = false,
            "--out" => o.out = Some(PathBuf::from(value("--out")?)),
            "--profile" => o.profile = Some(value("--profile")?),
            "--echo-framing" => {
                o.echo_wire = match value("--echo-framing")?.as_str() {
                    "length" => Wire::Length,
                    "lines" => Wire::Lines,
                    other => {
                        return Err(format!(
                            "unknown framing {other:?}, expected length or lines"
                        ))
                    }
                }
            }
            // `cargo xtask bench -- ARGS` may pass the separator through.
            "--" => {}
            "--refloop-echo" => o.refloop_echo = Some(PathBuf::from(value("--refloop-echo")?)),
            "-h" | "--help" => {
                print!("{HELP}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    Ok(o)
}

impl Opts {
    fn wants(&self, section: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == section)
    }

    fn echo_runs(&self) -> usize {
        self.runs.unwrap_or(if self.quick { 3 } else { 5 })
    }

    fn runs(&self) -> usize {
        self.runs.unwrap_or(if self.quick { 5 } else { 15 })
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ has a parent")
        .to_path_buf()
}

/// A section of the report: its generated Markdown.
struct Section {
    name: &'static str,
    body: String,
}

fn emit(sections: &mut Vec<Section>, name: &'static str, body: String) {
    println!("\n{body}");
    sections.push(Section { name, body });
}

fn main() -> ExitCode {
    let opts = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(case) = &opts.profile {
        return match profile(case) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench: {e}");
                ExitCode::from(2)
            }
        };
    }
    let started = Instant::now();
    let load_before = loadavg();
    let started_at = command_line("date", &["-u", "+%Y-%m-%d %H:%M"]);
    let mut sections = Vec::new();
    if opts.wants("queue") {
        emit(&mut sections, "queue", queue_section(&opts));
    }
    if opts.wants("framing") {
        emit(&mut sections, "framing", framing_section(&opts));
    }
    if opts.wants("echo") {
        emit(&mut sections, "echo", echo_section(&opts));
    }
    if opts.wants("multi") {
        emit(&mut sections, "multi", multi_section(&opts));
    }
    if opts.wants("kit") {
        emit(&mut sections, "kit", kit_section(&opts));
    }
    if opts.wants("resp") {
        emit(&mut sections, "resp", resp_section(&opts));
    }
    let conditions = conditions(&opts, &started_at, &load_before, started.elapsed());
    println!("\n{conditions}");
    sections.insert(
        0,
        Section {
            name: "conditions",
            body: conditions,
        },
    );
    if opts.write {
        let path = opts
            .out
            .clone()
            .unwrap_or_else(|| root().join("BENCHMARKS.md"));
        if let Err(e) = write_report(&path, &sections) {
            eprintln!("bench: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("\nwrote {}", path.display());
    }
    ExitCode::SUCCESS
}

fn write_report(path: &Path, sections: &[Section]) -> io::Result<()> {
    let mut doc = match fs::read_to_string(path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => TEMPLATE.to_string(),
        Err(e) => return Err(e),
    };
    for s in sections {
        doc = replace_section(&doc, s.name, &s.body);
    }
    fs::write(path, doc)
}

const TEMPLATE: &str = "\
# Benchmarks

refloop measured side by side with the peers a user would pick instead, in one run on one machine.
The tables below are generated by `cargo xtask bench`; the text around them is written by hand.

<!-- generated:conditions -->
<!-- end generated:conditions -->

## Send queue
<!-- generated:queue -->
<!-- end generated:queue -->

## Framing decode
<!-- generated:framing -->
<!-- end generated:framing -->

## Echo loop
<!-- generated:echo -->
<!-- end generated:echo -->

## One loop per core
<!-- generated:multi -->
<!-- end generated:multi -->

## Kit costs
<!-- generated:kit -->
<!-- end generated:kit -->

## RESP: kv against redis-server
<!-- generated:resp -->
<!-- end generated:resp -->
";

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn command_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn conditions(opts: &Opts, started_at: &str, load_before: &str, took: Duration) -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mut s = String::new();
    let _ = writeln!(s, "Conditions of the last run:");
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "- Started at {} (UTC), mode `{}`{}, {} runs per queue and framing measurement, {} per echo measurement, took {:.0} s.",
        started_at,
        if opts.quick { "--quick" } else { "full" },
        if opts.only.is_empty() {
            String::new()
        } else {
            format!(" `--only {}`", opts.only.join(","))
        },
        opts.runs(),
        opts.echo_runs(),
        took.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "- Code: commit `{}`. Machine: {cores} CPUs ({cpu}), Linux {}; {}.",
        command_line(
            "git",
            &[
                "-C",
                &root().to_string_lossy(),
                "describe",
                "--always",
                "--dirty",
                "--exclude",
                "*"
            ]
        ),
        command_line("uname", &["-r"]),
        command_line("rustc", &["+stable", "--version"])
    );
    let _ = writeln!(
        s,
        "- Load average (1, 5, 15 min) before: {load_before}; after: {}.",
        loadavg()
    );
    let _ = writeln!(s, "  A load average above the CPU count means other work shared the CPUs, and the absolute figures are low; the paired ratios are what to read.");
    let _ = writeln!(s, "- Every figure is the median of the runs, `±` is half the range over the median, and a set whose range exceeds 15% of its median is marked NOISY.");
    let _ = writeln!(s, "  Ratios are refloop / peer, computed per interleaved run pair; the range of the pair ratios is in parentheses.");
    let _ = writeln!(s);
    let _ = writeln!(s, "Reproduce: `cargo xtask bench` (full) or `cargo xtask bench --quick`; one section with `cargo xtask bench --only queue|framing|echo|multi|kit|resp`.");
    s
}

// ---------------------------------------------------------------------------------------------
// Send queue.

fn queue_section(opts: &Opts) -> String {
    let runs = opts.runs();
    let per = 1_000_000u64;
    let producer_counts = [1usize, 2, 4, 8];
    println!(
        "== send queue: {runs} runs x {{spin, eventfd, blocking}} x {{1,2,4,8}} producers x 1M messages, interleaved"
    );
    // results[pattern][p][impl] = (msgs/s samples, wakes per 1000 messages samples).
    let mut results: Vec<Vec<Vec<(Samples, Samples)>>> = Pattern::ALL
        .iter()
        .map(|pat| {
            vec![vec![(Samples::new(), Samples::new()); pat.impls().len()]; producer_counts.len()]
        })
        .collect();
    for r in 0..runs {
        for (ti, pattern) in Pattern::ALL.into_iter().enumerate() {
            let impls = pattern.impls();
            for (pi, &p) in producer_counts.iter().enumerate() {
                for k in 0..impls.len() {
                    // Rotate the order every run, so no implementation always runs first.
                    let ii = (k + r) % impls.len();
                    let stats = impls[ii].run(pattern, p, per);
                    let total = (per * p as u64) as f64;
                    let cell = &mut results[ti][pi][ii];
                    cell.0.push(total / stats.elapsed.as_secs_f64());
                    cell.1.push(stats.wakes as f64 * 1000.0 / total);
                }
            }
        }
        eprint!(".");
    }
    eprintln!();
    let goal = Goal::AtLeast(1.2);
    let mut t = Table::new(&[
        "consumer",
        "producers",
        "refloop msgs/s",
        "crossbeam msgs/s",
        "refloop/crossbeam",
        "goal >= 1.20x",
        "eventfd writes / 1000 msgs (refloop, crossbeam)",
        "std mpsc msgs/s",
        "refloop/std",
    ]);
    for (ti, pattern) in Pattern::ALL.into_iter().enumerate() {
        for (pi, &p) in producer_counts.iter().enumerate() {
            let rs = &results[ti][pi];
            let vs_cb = PairedRatio::of(&rs[0].0, &rs[1].0);
            let wakes = if pattern == Pattern::Eventfd {
                format!(
                    "{:.1}, {:.1}",
                    rs[0].1.median().unwrap_or(0.0),
                    rs[1].1.median().unwrap_or(0.0)
                )
            } else {
                String::new()
            };
            let (std_cell, vs_std_cell) = match rs.get(2) {
                Some(std) => (
                    median_cell(&std.0, si),
                    ratio_cell(&PairedRatio::of(&rs[0].0, &std.0).pairs),
                ),
                None => (String::new(), String::new()),
            };
            t.row(vec![
                pattern.name().to_string(),
                p.to_string(),
                median_cell(&rs[0].0, si),
                median_cell(&rs[1].0, si),
                ratio_cell(&vs_cb.pairs),
                goal.judge(&vs_cb).label().to_string(),
                wakes,
                std_cell,
                vs_std_cell,
            ]);
        }
    }
    let mut s = String::new();
    let _ = writeln!(s, "Each producer pushes 1,000,000 `u64` messages; one consumer checks every producer's order and count.");
    let _ = writeln!(s, "Consumers (`bench/src/queue_bench.rs`):");
    let _ = writeln!(s, "- `spin`: non-blocking batch drains in a spin loop, refloop `drain()` against crossbeam `try_iter()`, both yielding after {SPIN_BEFORE_YIELD} empty polls in a row.");
    let _ = writeln!(s, "- `eventfd`: the loop's pattern, blocked in `read(eventfd)`, then one drain of everything; refloop's producers write the eventfd on `Wake::Needed`, crossbeam's when they set a clear libuv-style pending flag (which the consumer clears before draining).");
    let _ = writeln!(s, "- `blocking`: refloop drains, yielding when empty; crossbeam and std call blocking `recv`.");
    let _ = writeln!(
        s,
        "{runs} interleaved runs; the order of the implementations rotates every run."
    );
    let _ = writeln!(s);
    s.push_str(&t.to_markdown());
    let _ = writeln!(s);
    let _ = writeln!(s, "Reproduce: `cargo xtask bench --only queue`.");
    let _ = writeln!(s, "Profile: `valgrind --tool=callgrind target/release/bench --profile queue:refloop:spin:1:1000000` (then `callgrind_annotate`).");
    s
}

// ---------------------------------------------------------------------------------------------
// Framing.

struct FramingCase {
    kind: Kind,
    payload: usize,
    chunk: usize,
    bytes: usize,
}

fn framing_section(opts: &Opts) -> String {
    let runs = opts.runs();
    let (big, small) = if opts.quick {
        (8 << 20, 512 << 10)
    } else {
        (32 << 20, 2 << 20)
    };
    let mut cases = Vec::new();
    for (kind, payload) in [
        (Kind::Length, 32),
        (Kind::Length, 4096),
        (Kind::Lines, 32),
        (Kind::Lines, 4096),
    ] {
        cases.push(FramingCase {
            kind,
            payload,
            chunk: 16 * 1024,
            bytes: big,
        });
        cases.push(FramingCase {
            kind,
            payload,
            chunk: 1,
            bytes: small,
        });
    }
    println!(
        "== framing decode: {runs} runs x {} cases, interleaved",
        cases.len()
    );
    let streams: Vec<Stream> = cases
        .iter()
        .map(|c| Stream::build(c.kind, c.payload, c.bytes))
        .collect();
    // times[case][0 refloop, 1 tokio, 2 memchr] in seconds.
    let mut times: Vec<[Samples; 3]> = (0..cases.len()).map(|_| Default::default()).collect();
    for r in 0..runs {
        for (ci, c) in cases.iter().enumerate() {
            let mut order = vec![DecodeImpl::Refloop, DecodeImpl::TokioUtil];
            if c.kind == Kind::Lines && c.chunk > 1 {
                order.push(DecodeImpl::Memchr);
            }
            let len = order.len();
            order.rotate_left(r % len);
            for d in order {
                let idx = match d {
                    DecodeImpl::Refloop => 0,
                    DecodeImpl::TokioUtil => 1,
                    DecodeImpl::Memchr => 2,
                };
                times[ci][idx].push(d.run(&streams[ci], c.chunk).as_secs_f64());
            }
        }
        eprint!(".");
    }
    eprintln!();
    let mut t = Table::new(&[
        "stream",
        "chunk",
        "refloop GB/s",
        "refloop msgs/s",
        "tokio-util GB/s",
        "tokio-util msgs/s",
        "refloop/tokio-util",
        "goal",
        "verdict",
    ]);
    let mut memchr_rows = Vec::new();
    for (ci, c) in cases.iter().enumerate() {
        let s = &streams[ci];
        let gbps = |ts: &Samples| rate(ts, s.bytes.len() as f64 / 1e9);
        let mps = |ts: &Samples| rate(ts, s.messages as f64);
        let (rg, tg) = (gbps(&times[ci][0]), gbps(&times[ci][1]));
        let ratio = PairedRatio::of(&rg, &tg);
        let goal = (c.payload <= 64).then_some(Goal::AtLeast(1.5));
        t.row(vec![
            s.label(),
            if c.chunk == 1 {
                "1 B".into()
            } else {
                format!("{} KiB", c.chunk / 1024)
            },
            median_cell(&rg, |x| format!("{x:.3}")),
            median_cell(&mps(&times[ci][0]), si),
            median_cell(&tg, |x| format!("{x:.3}")),
            median_cell(&mps(&times[ci][1]), si),
            ratio_cell(&ratio.pairs),
            goal.map(Goal::label).unwrap_or_default(),
            goal.map(|g| g.judge(&ratio).label().to_string())
                .unwrap_or_default(),
        ]);
        if !times[ci][2].is_empty() {
            let mg = gbps(&times[ci][2]);
            let vs = PairedRatio::of(&rg, &mg);
            let goal = (c.payload >= 4096).then_some(Goal::AtLeast(1.0 / 3.0));
            memchr_rows.push(vec![
                s.label(),
                median_cell(&rg, |x| format!("{x:.3}")),
                median_cell(&mg, |x| format!("{x:.3}")),
                ratio_cell(&vs.pairs),
                goal.map(Goal::label).unwrap_or_default(),
                goal.map(|g| g.judge(&vs).label().to_string())
                    .unwrap_or_default(),
            ]);
        }
    }
    let mut m = Table::new(&[
        "stream",
        "refloop Lines GB/s",
        "memchr scan GB/s",
        "refloop/memchr",
        "goal",
        "verdict",
    ]);
    for r in memchr_rows {
        m.row(r);
    }
    let mut s = String::new();
    let _ = writeln!(s, "The same bytes are decoded by refloop and tokio-util, fed in 16 KiB chunks ({} MiB stream) and in 1-byte chunks ({} KiB stream).", big >> 20, small >> 10);
    let _ = writeln!(s, "Payloads are 32 B (small) or 4 KiB; every run checks the message count and payload total. GB/s counts wire bytes.");
    let _ = writeln!(s, "{runs} interleaved runs.");
    let _ = writeln!(s);
    s.push_str(&t.to_markdown());
    let _ = writeln!(s);
    let _ = writeln!(s, "Lines against a raw `memchr` count of `\\n` over the same bytes (the physical limit of a line scanner), 16 KiB chunks:");
    let _ = writeln!(s);
    s.push_str(&m.to_markdown());
    let _ = writeln!(s);
    let _ = writeln!(s, "Reproduce: `cargo xtask bench --only framing`.");
    let _ = writeln!(s, "Profile: `valgrind --tool=callgrind target/release/bench --profile framing:refloop:lines:32:16384:4000000` (and `framing:tokio:...` for the peer).");
    s
}

/// Converts elapsed seconds into a rate of `amount` per second.
fn rate(times: &Samples, amount: f64) -> Samples {
    let mut out = Samples::new();
    for t in times.values() {
        out.push(amount / t);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// RESP: the kv example against redis-server.

fn resp_section(opts: &Opts) -> String {
    let built = build_example("kv").and_then(|kv| {
        refloop_bench::resp_bench::section(&refloop_bench::resp_bench::Options {
            quick: opts.quick,
            runs: opts.runs.unwrap_or(if opts.quick { 1 } else { 3 }),
            kv,
        })
    });
    built.unwrap_or_else(|e| format!("The RESP section failed: {e}\n"))
}

/// Builds `examples/<name>` in release mode into this binary's target dir; returns its path.
fn build_example(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let profile_dir = exe.parent().ok_or("executable has no directory")?;
    let target = profile_dir
        .parent()
        .ok_or("executable is not in a target dir")?;
    let out = Command::new("cargo")
        .args([
            "+stable",
            "build",
            "--release",
            "-p",
            "refloop",
            "--example",
            name,
        ])
        .arg("--target-dir")
        .arg(target)
        .current_dir(root())
        .env_remove("RUSTUP_TOOLCHAIN")
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building the {name} example failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(profile_dir.join("examples").join(name))
}

// ---------------------------------------------------------------------------------------------
// Echo loop.

struct Servers {
    refloop: ServerCmd,
    tokio: ServerCmd,
}

/// Builds both servers in release mode into the target dir this binary lives in.
fn build_servers(refloop_echo: Option<&Path>) -> Result<Servers, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let profile_dir = exe
        .parent()
        .ok_or("executable has no directory")?
        .to_path_buf();
    let target = profile_dir
        .parent()
        .ok_or("executable is not in a target dir")?
        .to_path_buf();
    let tokio_build: &[&str] = &[
        "build",
        "--release",
        "-p",
        "refloop-bench",
        "--bin",
        "tokio_echo",
    ];
    let refloop_build: &[&str] = &["build", "--release", "-p", "refloop", "--example", "echo"];
    let mut builds = vec![tokio_build];
    if refloop_echo.is_none() {
        builds.push(refloop_build);
    }
    for args in builds {
        let out = Command::new("cargo")
            .arg("+stable")
            .args(args)
            .arg("--target-dir")
            .arg(&target)
            .current_dir(root())
            .env_remove("RUSTUP_TOOLCHAIN")
            .output()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = err.lines().rev().take(12).collect();
            return Err(format!(
                "`cargo +stable {}` failed:\n{}",
                args.join(" "),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
    }
    Ok(Servers {
        refloop: ServerCmd {
            name: "refloop",
            program: refloop_echo
                .map_or_else(|| profile_dir.join("examples/echo"), Path::to_path_buf),
        },
        tokio: ServerCmd {
            name: "tokio",
            program: profile_dir.join("tokio_echo"),
        },
    })
}

#[derive(Default)]
struct EchoSamples {
    msgs_per_sec: Samples,
    p50_us: Samples,
    p99_us: Samples,
    cpu_per_mmsg: Samples,
    busy: Samples,
    client_busy: Samples,
}

impl EchoSamples {
    /// Adds one load run: its result, the server's CPU seconds and the load generator's.
    fn add(&mut self, lr: &loadgen::LoadResult, cpu: f64, client: f64) {
        self.msgs_per_sec.push(lr.msgs_per_sec());
        self.p50_us
            .push(lr.latency_ns.quantile(0.5).unwrap_or(0) as f64 / 1e3);
        self.p99_us
            .push(lr.latency_ns.quantile(0.99).unwrap_or(0) as f64 / 1e3);
        if lr.measured_msgs > 0 && cpu.is_finite() {
            self.cpu_per_mmsg.push(cpu / lr.measured_msgs as f64 * 1e6);
        }
        self.busy.push(cpu / lr.elapsed.as_secs_f64());
        if client.is_finite() {
            self.client_busy.push(client / lr.elapsed.as_secs_f64());
        }
    }
}

/// One load run against a freshly started server; returns the load result, the server's CPU
/// seconds and the load generator's own CPU seconds over the measured window.
fn echo_once(
    cmd: &ServerCmd,
    cfg: &LoadConfig,
    wire: Wire,
) -> Result<(loadgen::LoadResult, f64, f64), String> {
    echo_once_with(cmd, &[], cfg, wire)
}

/// [`echo_once`] with extra server arguments.
fn echo_once_with(
    cmd: &ServerCmd,
    extra: &[&str],
    cfg: &LoadConfig,
    wire: Wire,
) -> Result<(loadgen::LoadResult, f64, f64), String> {
    let server = cmd
        .start_with(wire, None, extra)
        .map_err(|e| format!("{}: {e}", cmd.name))?;
    let mut cfg = cfg.clone();
    cfg.addr = server.addr;
    let mut client_cpu = Vec::with_capacity(2);
    let result = loadgen::run(&cfg, || {
        client_cpu.push(own_cpu_seconds());
        server.cpu_seconds().unwrap_or(f64::NAN)
    });
    let stopped = server.stop();
    let result = result.map_err(|e| format!("{} under load: {e}", cmd.name))?;
    stopped.map_err(|e| format!("{} on shutdown: {e}", cmd.name))?;
    let cpu = result.window.1 - result.window.0;
    let client = match client_cpu[..] {
        [c0, c1] => c1 - c0,
        _ => f64::NAN,
    };
    Ok((result, cpu, client))
}

/// This process's user plus system CPU seconds (all threads), or NaN if unreadable.
fn own_cpu_seconds() -> f64 {
    fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| refloop_bench::server::parse_cpu_ticks(&s))
        .map_or(f64::NAN, |t| {
            t as f64 / sys::clock_ticks_per_second() as f64
        })
}

fn echo_section(opts: &Opts) -> String {
    let mut s = String::new();
    let servers = match build_servers(opts.refloop_echo.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(
                s,
                "Not measured: the servers could not be built.\n\n```\n{e}\n```"
            );
            return s;
        }
    };
    match sys::raise_nofile_limit() {
        Ok(n) => println!("RLIMIT_NOFILE raised to {n}"),
        Err(e) => println!("cannot raise RLIMIT_NOFILE: {e}"),
    }
    let runs = opts.echo_runs();
    let (warmup, measure) = if opts.quick {
        (Duration::from_millis(300), Duration::from_secs(1))
    } else {
        (Duration::from_secs(1), Duration::from_secs(3))
    };
    let wire = opts.echo_wire;
    let payload = 32;
    let depth = 16;
    let conn_counts = [1usize, 64, 1000];
    let base = LoadConfig {
        addr: "127.0.0.1:0".parse().expect("literal address"),
        wire,
        conns: 1,
        depth,
        payload,
        threads: 1,
        warmup,
        measure,
    };
    let t = Instant::now();
    println!("== echo: {runs} runs x {{1,64,1000}} connections x {{refloop,tokio}}, interleaved");
    let cmds = [&servers.refloop, &servers.tokio];
    let mut res: Vec<[EchoSamples; 2]> =
        (0..conn_counts.len()).map(|_| Default::default()).collect();
    let mut failures: Vec<String> = Vec::new();
    for r in 0..runs {
        for (ni, &n) in conn_counts.iter().enumerate() {
            let cfg = LoadConfig {
                conns: n,
                ..base.clone()
            };
            for k in 0..2 {
                let i = (k + r) % 2;
                match echo_once(cmds[i], &cfg, wire) {
                    Ok((lr, cpu, client)) => {
                        res[ni][i].add(&lr, cpu, client);
                    }
                    Err(e) => failures.push(format!("run {r}, {n} connections: {e}")),
                }
            }
        }
        eprint!(".");
    }
    eprintln!();
    eprintln!("  throughput runs took {:.1} s", t.elapsed().as_secs_f64());
    let tput_goal = Goal::AtLeast(1.3);
    let cpu_goal = Goal::AtMost(0.8);
    let mut t = Table::new(&[
        "conns",
        "server",
        "msgs/s",
        "p50 us",
        "p99 us",
        "CPU s / M msgs",
        "server CPU busy",
        "client CPU busy",
        "throughput ratio",
        "CPU/msg ratio",
    ]);
    let mut verdicts = Table::new(&[
        "conns",
        "throughput refloop/tokio",
        "goal >= 1.30x",
        "CPU per msg refloop/tokio",
        "goal <= 0.80x",
    ]);
    for (ni, &n) in conn_counts.iter().enumerate() {
        let [a, b] = &res[ni];
        let tput = PairedRatio::of(&a.msgs_per_sec, &b.msgs_per_sec);
        let cpu = PairedRatio::of(&a.cpu_per_mmsg, &b.cpu_per_mmsg);
        for (name, e) in [("refloop", a), ("tokio", b)] {
            t.row(vec![
                n.to_string(),
                name.to_string(),
                median_cell(&e.msgs_per_sec, si),
                median_cell(&e.p50_us, |x| format!("{x:.0}")),
                median_cell(&e.p99_us, |x| format!("{x:.0}")),
                median_cell(&e.cpu_per_mmsg, |x| format!("{x:.2}")),
                e.busy
                    .median()
                    .map(|b| format!("{:.0}%", b * 100.0))
                    .unwrap_or_else(|| "n/a".into()),
                e.client_busy
                    .median()
                    .map(|b| format!("{:.0}%", b * 100.0))
                    .unwrap_or_else(|| "n/a".into()),
                if name == "refloop" {
                    ratio_cell(&tput.pairs)
                } else {
                    String::new()
                },
                if name == "refloop" {
                    ratio_cell(&cpu.pairs)
                } else {
                    String::new()
                },
            ]);
        }
        verdicts.row(vec![
            n.to_string(),
            ratio_cell(&tput.pairs),
            tput_goal.judge(&tput).label().to_string(),
            ratio_cell(&cpu.pairs),
            cpu_goal.judge(&cpu).label().to_string(),
        ]);
    }
    let _ = writeln!(s, "Both servers speak `--framing {}` and are driven by the same load generator (`bench/src/loadgen.rs`, one client thread, level-triggered epoll).", wire.arg());
    let _ = writeln!(s, "Each connection pipelines {depth} messages of {payload} B payload and sends a new one per echo; every echo's sequence number is checked.");
    let _ = writeln!(s, "{runs} interleaved runs of {:.1} s warm-up + {:.1} s measured; each run starts a fresh server.", warmup.as_secs_f64(), measure.as_secs_f64());
    let _ = writeln!(s, "Latency is from the client's write to its read of the echo. CPU is the server's utime+stime from `/proc/<pid>/stat` over the measured window; \"server CPU busy\" is that CPU over the window's wall time and \"client CPU busy\" the same for the load generator's process: a server near 100% is the bottleneck; when both are well below 100%, other work on the machine took the CPUs.");
    let _ = writeln!(s);
    s.push_str(&t.to_markdown());
    let _ = writeln!(s);
    s.push_str(&verdicts.to_markdown());
    if !failures.is_empty() {
        let _ = writeln!(s, "\nFailed runs (not counted):\n");
        for f in &failures {
            let _ = writeln!(s, "- {}", f.replace('\n', " "));
        }
    }
    let _ = writeln!(s);
    let t = Instant::now();
    s.push_str(&syscall_table(&servers, &base, &conn_counts, opts.quick));
    eprintln!("  syscall counts took {:.1} s", t.elapsed().as_secs_f64());
    let _ = writeln!(s);
    let t = Instant::now();
    s.push_str(&idle_memory(&servers, if opts.quick { 1 } else { 3 }, wire));
    eprintln!("  idle memory took {:.1} s", t.elapsed().as_secs_f64());
    let _ = writeln!(s);
    let _ = writeln!(s, "Reproduce: `cargo xtask bench --only echo`.");
    s
}

/// Echo at 1000 connections on two cores: refloop with one loop and with two
/// (`echo --loops 2`, `SO_REUSEPORT`), against tokio's multi-thread runtime with two workers
/// (`tokio_echo --workers 2`), interleaved, with the same load generator.
fn multi_section(opts: &Opts) -> String {
    let mut s = String::new();
    let servers = match build_servers(opts.refloop_echo.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(
                s,
                "Not measured: the servers could not be built.\n\n```\n{e}\n```"
            );
            return s;
        }
    };
    if let Err(e) = sys::raise_nofile_limit() {
        println!("cannot raise RLIMIT_NOFILE: {e}");
    }
    let runs = opts.echo_runs();
    let (warmup, measure) = if opts.quick {
        (Duration::from_millis(300), Duration::from_secs(1))
    } else {
        (Duration::from_secs(1), Duration::from_secs(3))
    };
    let wire = opts.echo_wire;
    let cfg = LoadConfig {
        addr: "127.0.0.1:0".parse().expect("literal address"),
        wire,
        conns: 1000,
        depth: 16,
        payload: 32,
        threads: 1,
        warmup,
        measure,
    };
    let cases: [(&str, &ServerCmd, &[&str]); 3] = [
        ("refloop, 1 loop", &servers.refloop, &[]),
        ("refloop, 2 loops", &servers.refloop, &["--loops", "2"]),
        ("tokio, 2 workers", &servers.tokio, &["--workers", "2"]),
    ];
    println!("== multi: {runs} runs x {{refloop 1 loop, refloop 2 loops, tokio 2 workers}} at 1000 connections, interleaved");
    let mut res: Vec<EchoSamples> = (0..cases.len()).map(|_| Default::default()).collect();
    let mut failures = Vec::new();
    for r in 0..runs {
        for k in 0..cases.len() {
            let i = (k + r) % cases.len();
            let (name, cmd, extra) = cases[i];
            match echo_once_with(cmd, extra, &cfg, wire) {
                Ok((lr, cpu, client)) => {
                    res[i].add(&lr, cpu, client);
                }
                Err(e) => failures.push(format!("run {r}, {name}: {e}")),
            }
        }
        eprint!(".");
    }
    eprintln!();
    let mut t = Table::new(&[
        "server",
        "msgs/s",
        "p50 us",
        "p99 us",
        "CPU s / M msgs",
        "server CPU busy",
        "client CPU busy",
    ]);
    for ((name, _, _), e) in cases.iter().zip(&res) {
        t.row(vec![
            name.to_string(),
            median_cell(&e.msgs_per_sec, si),
            median_cell(&e.p50_us, |x| format!("{x:.0}")),
            median_cell(&e.p99_us, |x| format!("{x:.0}")),
            median_cell(&e.cpu_per_mmsg, |x| format!("{x:.2}")),
            e.busy
                .median()
                .map(|b| format!("{:.0}%", b * 100.0))
                .unwrap_or_else(|| "n/a".into()),
            e.client_busy
                .median()
                .map(|b| format!("{:.0}%", b * 100.0))
                .unwrap_or_else(|| "n/a".into()),
        ]);
    }
    let vs_tokio = PairedRatio::of(&res[1].msgs_per_sec, &res[2].msgs_per_sec);
    let scaling = PairedRatio::of(&res[1].msgs_per_sec, &res[0].msgs_per_sec);
    let goal = Goal::AtLeast(1.3);
    let mut verdicts = Table::new(&["comparison", "throughput ratio", "goal"]);
    verdicts.row(vec![
        "refloop 2 loops / tokio 2 workers".into(),
        ratio_cell(&vs_tokio.pairs),
        format!(">= 1.30x: {}", goal.judge(&vs_tokio).label()),
    ]);
    verdicts.row(vec![
        "refloop 2 loops / refloop 1 loop (scaling)".into(),
        ratio_cell(&scaling.pairs),
        "reported".into(),
    ]);
    let _ = writeln!(s, "Echo at 1000 connections, each pipelining 16 messages of 32 B (`--framing {}`), driven by the same load generator as the echo section (one client thread).", wire.arg());
    let _ = writeln!(s, "The load generator shares this 2-core machine with the server: with two server threads busy, all three compete for two CPUs, so the scaling from one loop to two is bounded by the client as much as by the server.");
    let _ = writeln!(s, "{runs} interleaved runs of {:.1} s warm-up + {:.1} s measured; each run starts a fresh server.", warmup.as_secs_f64(), measure.as_secs_f64());
    let _ = writeln!(s);
    s.push_str(&t.to_markdown());
    let _ = writeln!(s);
    s.push_str(&verdicts.to_markdown());
    if !failures.is_empty() {
        let _ = writeln!(s, "\nFailed runs (not counted):\n");
        for f in &failures {
            let _ = writeln!(s, "- {}", f.replace('\n', " "));
        }
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "Reproduce: `cargo xtask bench --only multi`.");
    s
}

fn syscall_table(
    servers: &Servers,
    base: &LoadConfig,
    conn_counts: &[usize],
    quick: bool,
) -> String {
    let mut s = String::new();
    if Command::new("strace").arg("-V").output().is_err() {
        let _ = writeln!(
            s,
            "Syscalls per message: not measured, `strace` is not installed (`apt-get install -y strace`)."
        );
        return s;
    }
    let dir = std::env::temp_dir().join(format!("refloop-bench-strace-{}", std::process::id()));
    if let Err(e) = fs::create_dir_all(&dir) {
        let _ = writeln!(
            s,
            "Syscalls per message: not measured, cannot create {}: {e}",
            dir.display()
        );
        return s;
    }
    // Quick runs count syscalls at 64 connections only; strace slows connection set-up a lot.
    let counts: Vec<usize> = if quick {
        vec![64]
    } else {
        conn_counts.to_vec()
    };
    let (short, long) = if quick {
        (Duration::from_millis(300), Duration::from_millis(1300))
    } else {
        (Duration::from_millis(500), Duration::from_millis(2500))
    };
    let mut t = Table::new(&[
        "conns",
        "server",
        "messages (long - short)",
        "syscalls/msg",
        "top syscalls per msg",
    ]);
    let mut ratios = Vec::new();
    for &n in &counts {
        let mut per_msg = [f64::NAN; 2];
        for (i, cmd) in [&servers.refloop, &servers.tokio].into_iter().enumerate() {
            let diff = strace_once(cmd, base, n, &dir, short).and_then(|(m0, c0)| {
                let (m1, c1) = strace_once(cmd, base, n, &dir, long)?;
                if m1 <= m0 {
                    return Err(format!(
                        "the long run echoed {m1} messages, the short one {m0}"
                    ));
                }
                Ok((m1 - m0, c0, c1))
            });
            match diff {
                Ok((msgs, c0, c1)) => {
                    let m = msgs as f64;
                    let total = (c1.total as f64 - c0.total as f64) / m;
                    per_msg[i] = total;
                    let top: Vec<String> = c1
                        .by_name
                        .iter()
                        .map(|(name, calls)| {
                            let before =
                                c0.by_name.iter().find(|r| &r.0 == name).map_or(0, |r| r.1);
                            (name, (*calls as f64 - before as f64) / m)
                        })
                        .filter(|(_, per)| *per >= 0.0005)
                        .take(5)
                        .map(|(name, per)| format!("{name} {per:.3}"))
                        .collect();
                    t.row(vec![
                        n.to_string(),
                        cmd.name.into(),
                        msgs.to_string(),
                        format!("{total:.3}"),
                        top.join(", "),
                    ]);
                }
                Err(e) => t.row(vec![
                    n.to_string(),
                    cmd.name.into(),
                    "failed".into(),
                    String::new(),
                    e.replace('\n', " "),
                ]),
            }
        }
        ratios.push(format!("{n} conns: {:.2}x", per_msg[0] / per_msg[1]));
    }
    // Removing the scratch directory is best effort; it only holds strace summaries.
    let _ = fs::remove_dir_all(&dir);
    let _ = writeln!(
        s,
        "Syscalls per echoed message in the steady state, counted by `strace -c -f` on the server (strace slows both servers, so these runs are not timed)."
    );
    let _ = writeln!(
        s,
        "Each cell runs the load twice under strace, for {:.1} s and for {:.1} s, and divides the difference in syscalls by the difference in messages, so start-up, accept and close costs cancel out.",
        short.as_secs_f64() + 0.1,
        long.as_secs_f64() + 0.1
    );
    let _ = writeln!(s);
    s.push_str(&t.to_markdown());
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "refloop/tokio syscalls per message: {}.",
        ratios.join(", ")
    );
    s
}

/// Runs `cmd` under strace with `n` connections for `measure`; returns (messages, counts).
fn strace_once(
    cmd: &ServerCmd,
    base: &LoadConfig,
    n: usize,
    dir: &Path,
    measure: Duration,
) -> Result<(u64, refloop_bench::server::SyscallCounts), String> {
    let out = dir.join(format!("{}-{n}-{}.txt", cmd.name, measure.as_millis()));
    let server = cmd
        .start(base.wire, Some(&out))
        .map_err(|e| e.to_string())?;
    let cfg = LoadConfig {
        addr: server.addr,
        conns: n,
        warmup: Duration::from_millis(100),
        measure,
        ..base.clone()
    };
    let result = loadgen::run(&cfg, || 0.0);
    let stopped = server.stop();
    let result = result.map_err(|e| e.to_string())?;
    stopped.map_err(|e| e.to_string())?;
    let text = fs::read_to_string(&out).map_err(|e| format!("cannot read strace output: {e}"))?;
    let counts = parse_strace_summary(&text)
        .ok_or_else(|| format!("no strace summary in {}", out.display()))?;
    Ok((result.total_msgs, counts))
}

fn idle_memory(servers: &Servers, runs: usize, wire: Wire) -> String {
    const IDLE: usize = 10_000;
    let mut s = String::new();
    let mut per_conn = [Samples::new(), Samples::new()];
    let mut errors = Vec::new();
    for r in 0..runs {
        for k in 0..2 {
            let i = (k + r) % 2;
            let cmd = [&servers.refloop, &servers.tokio][i];
            match idle_once(cmd, IDLE, wire) {
                Ok(bytes) => per_conn[i].push(bytes),
                Err(e) => errors.push(format!("{}: {e}", cmd.name)),
            }
        }
    }
    let ratio = PairedRatio::of(&per_conn[0], &per_conn[1]);
    let mut t = Table::new(&["server", "bytes per idle connection", "refloop/tokio"]);
    t.row(vec![
        "refloop".into(),
        median_cell(&per_conn[0], |x| format!("{x:.0}")),
        ratio_cell(&ratio.pairs),
    ]);
    t.row(vec![
        "tokio".into(),
        median_cell(&per_conn[1], |x| format!("{x:.0}")),
        String::new(),
    ]);
    let _ = writeln!(s, "Server memory per idle connection: RSS (`/proc/<pid>/statm`) with {IDLE} idle connections open, minus RSS with one connection that has echoed one message, divided by {IDLE}; {runs} run(s) per server.");
    let _ = writeln!(s, "The harness raises `RLIMIT_NOFILE` to its hard limit for itself and the servers, and waits until the server holds all {IDLE} sockets (`/proc/<pid>/fd`).");
    let _ = writeln!(s);
    s.push_str(&t.to_markdown());
    for e in errors {
        let _ = writeln!(s, "\n- failed: {}", e.replace('\n', " "));
    }
    s
}

fn idle_once(cmd: &ServerCmd, idle: usize, wire: Wire) -> Result<f64, String> {
    let server = cmd.start(wire, None).map_err(|e| e.to_string())?;
    let result = (|| -> Result<f64, String> {
        // One connection echoes one message, so lazily allocated per-process state exists
        // before the baseline is taken.
        let warm = loadgen::connect(server.addr).map_err(|e| e.to_string())?;
        echo_one(&warm, wire).map_err(|e| format!("warm-up echo failed: {e}"))?;
        let fds0 = server.open_fds().map_err(|e| e.to_string())?;
        let rss0 = settled_rss(&server)?;
        let mut conns = Vec::with_capacity(idle);
        let t0 = Instant::now();
        for _ in 0..idle {
            conns.push(loadgen::connect(server.addr).map_err(|e| format!("connect: {e}"))?);
            // Keep the accept backlog from overflowing: let the server catch up every 256.
            if conns.len() % 256 == 0 {
                wait_for_fds(&server, fds0 + conns.len() - 128)?;
            }
        }
        let t_conn = t0.elapsed();
        wait_for_fds(&server, fds0 + idle)?;
        let rss1 = settled_rss(&server)?;
        let t_rss = t0.elapsed();
        drop(conns);
        drop(warm);
        eprintln!(
            "    {}: connected in {:.1} s, settled at {:.1} s, closed at {:.1} s",
            cmd.name,
            t_conn.as_secs_f64(),
            t_rss.as_secs_f64(),
            t0.elapsed().as_secs_f64()
        );
        Ok((rss1 as f64 - rss0 as f64) / idle as f64)
    })();
    let t = Instant::now();
    let stopped = server.stop();
    eprintln!("    stopped in {:.1} s", t.elapsed().as_secs_f64());
    let bytes = result?;
    stopped.map_err(|e| e.to_string())?;
    Ok(bytes)
}

fn echo_one(stream: &std::net::TcpStream, wire: Wire) -> io::Result<()> {
    use std::io::{Read, Write};
    let mut msg = Vec::new();
    wire.encode(7, 32, &mut msg);
    let mut s = stream;
    s.write_all(&msg)?;
    let mut back = vec![0u8; msg.len()];
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.read_exact(&mut back)?;
    if back != msg {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "echo differs"));
    }
    Ok(())
}

/// Polls until the server holds at least `want` fds (it has accepted every connection).
fn wait_for_fds(server: &refloop_bench::server::Server, want: usize) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let have = server.open_fds().map_err(|e| e.to_string())?;
        if have >= want {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "server holds {have} fds after 60 s, expected {want}"
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// RSS once two readings 100 ms apart agree (the server has finished reacting).
fn settled_rss(server: &refloop_bench::server::Server) -> Result<u64, String> {
    let mut last = server.rss_bytes().map_err(|e| e.to_string())?;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        let now = server.rss_bytes().map_err(|e| e.to_string())?;
        if now == last {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

// ---------------------------------------------------------------------------------------------
// Kit costs.

fn kit_section(opts: &Opts) -> String {
    let mut s = String::new();
    let root = root();
    let bound = match std::env::var("LOOM_MAX_PREEMPTIONS") {
        Ok(b) => b,
        // Bound 1 is too small for some known-bad variants to be found; 2 still is quick.
        Err(_) if opts.quick => "2".to_string(),
        Err(_) => "3".to_string(),
    };
    println!("== kit: loom models at LOOM_MAX_PREEMPTIONS={bound}");
    match kit::run_loom(&root, &bound) {
        Ok((models, build)) => {
            let mut t = Table::new(&[
                "model test",
                "kind",
                "executions",
                "seconds",
                "executions/s",
                "result",
            ]);
            let (mut execs, mut secs) = (0u64, 0.0);
            for m in &models {
                let (kind, n) = match (m.executions, m.to_reject) {
                    (Some(e), None) => ("explores every interleaving", Some(e)),
                    (None, Some(r)) => ("known-bad: executions to reject", Some(r)),
                    (Some(e), Some(r)) => ("both", Some(e + r)),
                    (None, None) => ("no @@stat", None),
                };
                if let Some(e) = m.executions {
                    execs += e;
                    secs += m.seconds;
                }
                t.row(vec![
                    format!("`{}`", m.test),
                    kind.into(),
                    n.map(|e| e.to_string()).unwrap_or_default(),
                    format!("{:.2}", m.seconds),
                    n.map(|e| si(e as f64 / m.seconds)).unwrap_or_default(),
                    if m.passed {
                        "pass".into()
                    } else {
                        "FAIL".into()
                    },
                ]);
            }
            let total: f64 = models.iter().map(|m| m.seconds).sum();
            let _ = writeln!(s, "Loom models (`model/`), built with `RUSTFLAGS=\"--cfg loom\" cargo +stable test --release -p refloop-model --target-dir target/loom` ({:.0} s to build, incremental), each test run alone at `LOOM_MAX_PREEMPTIONS={bound}`.", build.as_secs_f64());
            let _ = writeln!(s);
            if models.is_empty() {
                let _ = writeln!(s, "No loom models yet.");
            } else {
                s.push_str(&t.to_markdown());
                if secs > 0.0 {
                    let _ = writeln!(
                        s,
                        "\nModels that explore every interleaving: {execs} executions in {secs:.1} s, {} executions/s; all {} tests: {total:.1} s.",
                        si(execs as f64 / secs),
                        models.len()
                    );
                }
            }
        }
        Err(e) => {
            let _ = writeln!(s, "Loom: not measured.\n\n```\n{e}\n```");
        }
    }
    let _ = writeln!(s);
    let seconds: u64 = std::env::var("REFLOOP_FUZZ_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if opts.quick { 5 } else { 30 });
    println!("== kit: fuzz targets, {seconds} s each");
    match kit::fuzz_targets(&root).and_then(|targets| kit::build_fuzz(&root).map(|b| (targets, b)))
    {
        Ok((targets, build)) => {
            let mut t = Table::new(&["fuzz target", "executions", "seconds", "executions/s"]);
            for target in &targets {
                let f = kit::run_fuzz(&root, target, seconds);
                match (f.done, f.error) {
                    (Some((runs, secs)), _) => t.row(vec![
                        format!("`{target}`"),
                        runs.to_string(),
                        format!("{secs:.0}"),
                        si(runs as f64 / secs.max(1.0)),
                    ]),
                    (None, e) => t.row(vec![
                        format!("`{target}`"),
                        "failed".into(),
                        String::new(),
                        e.unwrap_or_default().replace('\n', " "),
                    ]),
                }
            }
            let _ = writeln!(s, "Fuzz targets: `cargo fuzz run <target> <scratch corpus> fuzz/corpus/<target> -- -max_total_time={seconds}` from the repository root (build: {:.0} s, incremental); libFuzzer's `Done N runs in S second(s)`.", build.as_secs_f64());
            let _ = writeln!(s, "The scratch corpus directory comes first so new inputs never land in the checked-in corpus.");
            let _ = writeln!(s);
            s.push_str(&t.to_markdown());
        }
        Err(e) => {
            let _ = writeln!(s, "Fuzz: not measured.\n\n```\n{e}\n```");
        }
    }
    let _ = writeln!(s);
    let cases = if opts.quick { 24 } else { 128 };
    println!("== kit: sim schedule executor against the real one, {cases} schedules");
    match kit::run_sim_speed(&root, cases) {
        Ok((real, sim)) => {
            let mut t = Table::new(&["executor", "cases/s"]);
            t.row(vec![
                "real sockets (`schedule::exec`)".into(),
                format!("{real:.1}"),
            ]);
            t.row(vec![
                "simulated kernel (`sim_schedule::exec`)".into(),
                format!("{sim:.0}"),
            ]);
            let _ = writeln!(s, "Schedule executors on the same {cases} schedules (the real executor's strategy, `TestRunner::deterministic`), one after the other in `integration/tests/sim_speed.rs` (`REFLOOP_SIM_SPEED_CASES={cases}`): ratio {:.0}x (goal: at least 50x).", sim / real);
            let _ = writeln!(s);
            s.push_str(&t.to_markdown());
        }
        Err(e) => {
            let _ = writeln!(s, "Sim executor speed: not measured.\n\n```\n{e}\n```");
        }
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "Reproduce: `cargo xtask bench --only kit` (set `LOOM_MAX_PREEMPTIONS` and `REFLOOP_FUZZ_SECONDS` to change the budgets).");
    s
}

// ---------------------------------------------------------------------------------------------
// Single cases for profiling.

fn profile(case: &str) -> Result<(), String> {
    let parts: Vec<&str> = case.split(':').collect();
    let num = |i: usize, default: usize| -> Result<usize, String> {
        parts.get(i).map_or(Ok(default), |v| {
            v.parse().map_err(|e| format!("bad number {v:?}: {e}"))
        })
    };
    match parts.as_slice() {
        ["queue", imp, pattern, ..] => {
            let imp = match *imp {
                "refloop" => QueueImpl::Refloop,
                "crossbeam" => QueueImpl::Crossbeam,
                "std" => QueueImpl::StdMpsc,
                other => return Err(format!("unknown queue {other:?}")),
            };
            let pattern = Pattern::parse(pattern).ok_or_else(|| {
                format!("unknown consumer {pattern:?}, expected spin, eventfd or blocking")
            })?;
            if !pattern.impls().contains(&imp) {
                return Err(format!(
                    "{} does not run in the {} pattern",
                    imp.name(),
                    pattern.name()
                ));
            }
            let producers = num(3, 4)?;
            let per = num(4, 1_000_000)? as u64;
            let stats = imp.run(pattern, producers, per);
            let total = per * producers as u64;
            println!(
                "{} {} {producers} producers x {per}: {:?}, {} msgs/s, {} polls, {} batches, {} eventfd writes",
                imp.name(),
                pattern.name(),
                stats.elapsed,
                si(total as f64 / stats.elapsed.as_secs_f64()),
                stats.polls,
                stats.batches,
                stats.wakes
            );
            Ok(())
        }
        ["framing", imp, kind, ..] => {
            let imp = match *imp {
                "refloop" => DecodeImpl::Refloop,
                "tokio" => DecodeImpl::TokioUtil,
                "memchr" => DecodeImpl::Memchr,
                other => return Err(format!("unknown decoder {other:?}")),
            };
            let kind = match *kind {
                "length" => Kind::Length,
                "lines" => Kind::Lines,
                other => return Err(format!("unknown framing {other:?}")),
            };
            let stream = Stream::build(kind, num(3, 32)?, num(5, 16 << 20)?);
            let chunk = num(4, 16 * 1024)?.max(1);
            let d = imp.run(&stream, chunk);
            println!(
                "{} {}: {:?}, {:.3} GB/s",
                imp.name(),
                stream.label(),
                d,
                stream.bytes.len() as f64 / 1e9 / d.as_secs_f64()
            );
            Ok(())
        }
        ["load", ..] if parts.len() >= 4 => {
            // ADDR itself contains one `:` (host:port).
            let addr: std::net::SocketAddr = format!("{}:{}", parts[1], parts[2])
                .parse()
                .map_err(|e| format!("bad address: {e}"))?;
            let conns = num(3, 64)?;
            let seconds = num(4, 5)?;
            let threads = num(5, 1)?;
            let cfg = LoadConfig {
                addr,
                wire: Wire::Length,
                conns,
                depth: 16,
                payload: 32,
                threads,
                warmup: Duration::from_millis(200),
                measure: Duration::from_secs(seconds as u64),
            };
            let r = loadgen::run(&cfg, || 0.0).map_err(|e| format!("load failed: {e}"))?;
            println!(
                "{conns} connections: {} msgs/s, p50 {} us, p99 {} us, {} messages in total",
                si(r.msgs_per_sec()),
                r.latency_ns.quantile(0.5).unwrap_or(0) / 1000,
                r.latency_ns.quantile(0.99).unwrap_or(0) / 1000,
                r.total_msgs
            );
            Ok(())
        }
        _ => Err(format!("unknown profile case {case:?} (see --help)")),
    }
}
