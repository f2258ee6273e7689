//! `cargo xtask mutants [--deep] [--base REV] [--file PATH]... [--list]`: mutation testing of
//! `core/src` with cargo-mutants.
//!
//! cargo-mutants changes one thing at a time in the code (a `<` into `<=`, a function body into
//! `Default::default()`), rebuilds, and runs the tests: a mutant the tests still pass on is a
//! survivor, a behaviour nothing checks. Each survivor is either killed by a new test that
//! asserts the property it broke, or explained in `mutants/survivors.toml` (an equivalent
//! mutant, or a gap the kit accepts, with why). This command fails on any other survivor.
//!
//! Files are split into groups, each tested by the stages that check it (see [`GROUPS`]).
//! The default profile mutates only the files under `core/src` that differ from main
//! (`origin/main`, else `main`, else nothing), so a CI run on main costs nothing; `--deep`
//! mutates every group; `--file` picks files by hand.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// One group of files and the tests that check them.
#[derive(Debug)]
pub struct Group {
    pub name: &'static str,
    /// Path prefixes (relative to the repository root) of the files in the group.
    pub prefixes: &'static [&'static str],
    /// Packages whose tests run for every mutant (cargo-mutants `--test-package`).
    pub packages: &'static [&'static str],
    /// Test targets passed to `cargo test` after `--`.
    pub tests: &'static [&'static str],
    /// Why these tests: what is run and what is left out.
    pub why: &'static str,
    /// Seconds one mutant's tests may take before it counts as a timeout.
    pub timeout: u32,
}

const FRAMING_TESTS: &[&str] = &[
    "--lib",
    "--test",
    "framing_oracle",
    "--test",
    "framing_known_bad",
    "--test",
    "framing_linear",
    "--test",
    "framing_proptest",
    "--test",
    "framing_differential",
    "--test",
    "framing_regressions",
    "--test",
    "framing_custom",
    "--test",
    "tokio_codec_oracle",
    "--test",
    "framing_contract_defaults",
    "--test",
    "framing_tokio_defaults",
    "--test",
    "framing_oracle_reports",
];

/// Every group, in the order they run. A file belongs to the first group with a matching prefix.
pub const GROUPS: &[Group] = &[
    Group {
        name: "framing",
        prefixes: &["core/src/framing/"],
        packages: &["refloop", "refloop-integration"],
        tests: FRAMING_TESTS,
        why: "unit tests, the core framing tests and the integration framing proptests \
              (PROPTEST_CASES=64), differential and fuzz-input replays; not the loop tests, \
              which exercise framing only through sockets",
        timeout: 120,
    },
    Group {
        name: "check-framing",
        prefixes: &["core/src/check/framing/"],
        packages: &["refloop", "refloop-integration"],
        tests: FRAMING_TESTS,
        why: "the oracle is checked by the same tests as the framings (its teeth tests run it \
              on the known-bad framings and codecs)",
        timeout: 120,
    },
    Group {
        name: "queue",
        prefixes: &[
            "core/src/queue.rs",
            "core/src/sync.rs",
            "core/src/check/queue.rs",
        ],
        packages: &["refloop"],
        tests: &["--lib", "--test", "queue_api", "--test", "queue_stress"],
        why: "unit tests, the queue API tests and the plain-thread stress tests (debug build, so \
              sync injects spurious CAS failures); not the loom models, which take about a \
              minute to build and run per mutant under --cfg loom",
        timeout: 240,
    },
    Group {
        name: "loop",
        prefixes: &["core/src/reactor/", "core/src/sys/", "core/src/lib.rs"],
        packages: &["refloop"],
        tests: &["--lib", "--test", "loop_*", "--test", "sim_*"],
        why: "unit tests, every loop test over real sockets and the simulated-kernel tests; not \
              the integration schedules, which take minutes per run",
        timeout: 300,
    },
];

/// Files cargo-mutants never mutates here (also excluded in `.cargo/mutants.toml`).
fn excluded(path: &str) -> bool {
    path.contains("/known_bad")
}

/// The group a file belongs to.
pub fn group_of(path: &str) -> Option<&'static Group> {
    GROUPS
        .iter()
        .find(|g| g.prefixes.iter().any(|p| path.starts_with(p)))
}

/// What to mutate: each group with its files (in `--deep`, its prefixes).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Selection {
    pub files: BTreeMap<&'static str, Vec<String>>,
}

impl Selection {
    /// Every group, whole.
    pub fn deep() -> Selection {
        let mut files = BTreeMap::new();
        for g in GROUPS {
            let globs = g
                .prefixes
                .iter()
                .map(|p| {
                    if p.ends_with('/') {
                        format!("{p}**")
                    } else {
                        p.to_string()
                    }
                })
                .collect();
            files.insert(g.name, globs);
        }
        Selection { files }
    }

    /// The given files, grouped; files outside the groups (or excluded) are dropped.
    pub fn of_files<'a>(paths: impl IntoIterator<Item = &'a str>) -> Selection {
        let mut files: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
        for path in paths {
            if !path.ends_with(".rs") || excluded(path) {
                continue;
            }
            if let Some(g) = group_of(path) {
                let list = files.entry(g.name).or_default();
                if !list.iter().any(|p| p == path) {
                    list.push(path.to_string());
                }
            }
        }
        Selection { files }
    }
}

/// The revision the default profile compares with: `origin/main`, else `main`.
fn default_base(root: &Path) -> Option<String> {
    ["origin/main", "main"].into_iter().find_map(|rev| {
        let ok = Command::new("git")
            .args(["rev-parse", "--verify", "--quiet", rev])
            .current_dir(root)
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then(|| rev.to_string())
    })
}

/// Files that differ from `base`: committed since the merge base, changed in the work tree, or
/// untracked.
fn changed_files(root: &Path, base: &str) -> Result<Vec<String>, String> {
    let git = |args: &[&str]| -> Result<String, String> {
        let out = Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .map_err(|e| format!("cannot run git: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "git {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let range = format!("{base}...HEAD");
    let mut files = Vec::new();
    for text in [
        git(&["diff", "--name-only", &range])?,
        git(&["diff", "--name-only", "HEAD"])?,
        git(&["ls-files", "--others", "--exclude-standard"])?,
    ] {
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if root.join(line).exists() && !files.iter().any(|f| f == line) {
                files.push(line.to_string());
            }
        }
    }
    Ok(files)
}

/// A mutant's name without its line and column, so a survivor stays matched when code above it
/// moves: `core/src/a.rs:12:5: replace f -> bool with true` gives
/// `core/src/a.rs: replace f -> bool with true`.
pub fn mutant_key(line: &str) -> String {
    let line = line.trim();
    let Some((path, rest)) = line.split_once(".rs:") else {
        return line.to_string();
    };
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit() || c == ':');
    format!("{path}.rs: {}", rest.trim_start())
}

/// One entry of `mutants/survivors.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Survivor {
    /// The mutant, as [`mutant_key`] names it.
    pub mutant: String,
    /// `equivalent` (no behaviour changes) or `gap` (a behaviour the kit accepts not checking).
    pub kind: String,
    pub reason: String,
}

/// Parses `mutants/survivors.toml`: `[[survivor]]` tables with `mutant`, `kind` and `reason`
/// strings (a small subset of TOML, since the xtask has no dependencies).
pub fn parse_survivors(text: &str) -> Result<Vec<Survivor>, String> {
    let mut out: Vec<Survivor> = Vec::new();
    let mut current: Option<(usize, BTreeMap<String, String>)> = None;
    let mut finish = |entry: Option<(usize, BTreeMap<String, String>)>| -> Result<(), String> {
        let Some((line, mut fields)) = entry else {
            return Ok(());
        };
        let mut take = |key: &str| {
            fields
                .remove(key)
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| format!("survivors.toml:{line}: the entry has no `{key}`"))
        };
        let survivor = Survivor {
            mutant: mutant_key(&take("mutant")?),
            kind: take("kind")?,
            reason: take("reason")?,
        };
        if survivor.kind != "equivalent" && survivor.kind != "gap" {
            return Err(format!(
                "survivors.toml:{line}: kind must be `equivalent` or `gap`, not `{}`",
                survivor.kind
            ));
        }
        out.push(survivor);
        Ok(())
    };
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line == "[[survivor]]" {
            finish(current.take())?;
            current = Some((n + 1, BTreeMap::new()));
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("survivors.toml:{}: expected `key = \"value\"`", n + 1))?;
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .ok_or_else(|| format!("survivors.toml:{}: the value must be a \"string\"", n + 1))?
            .replace("\\\"", "\"")
            .replace("\\\\", "\\");
        let Some((_, fields)) = current.as_mut() else {
            return Err(format!(
                "survivors.toml:{}: `{}` outside a [[survivor]] table",
                n + 1,
                key.trim()
            ));
        };
        fields.insert(key.trim().to_string(), value);
    }
    finish(current.take())?;
    Ok(out)
}

/// What cargo-mutants reported for one group.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Results {
    pub caught: usize,
    pub timeout: usize,
    pub unviable: usize,
    /// Mutant keys the tests did not catch.
    pub missed: Vec<String>,
}

impl Results {
    /// Reads `<dir>/mutants.out/{caught,missed,timeout,unviable}.txt`.
    pub fn read(dir: &Path) -> Results {
        let lines = |name: &str| -> Vec<String> {
            std::fs::read_to_string(dir.join("mutants.out").join(name))
                .unwrap_or_default()
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(mutant_key)
                .collect()
        };
        Results {
            caught: lines("caught.txt").len(),
            timeout: lines("timeout.txt").len(),
            unviable: lines("unviable.txt").len(),
            missed: lines("missed.txt"),
        }
    }

    /// Viable mutants the tests caught (a timeout counts: the tests did not pass).
    pub fn score(&self) -> Option<f64> {
        let viable = self.caught + self.timeout + self.missed.len();
        (viable > 0).then(|| 100.0 * (self.caught + self.timeout) as f64 / viable as f64)
    }
}

/// The survivors of `results` that `known` does not explain.
pub fn unexplained<'a>(results: &'a Results, known: &[Survivor]) -> Vec<&'a str> {
    results
        .missed
        .iter()
        .filter(|m| !known.iter().any(|s| &s.mutant == *m))
        .map(String::as_str)
        .collect()
}

/// The goal for the share of viable mutants caught.
pub const GOAL_PERCENT: f64 = 90.0;

/// The table: per group, and in total.
pub fn table(rows: &[(&str, usize, &Results)], known: &[Survivor]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<14} {:>5} {:>7} {:>7} {:>9} {:>8} {:>9} {:>8}",
        "group", "files", "caught", "missed", "explained", "timeout", "unviable", "score"
    );
    let mut total = Results::default();
    let mut files = 0;
    let score = |r: &Results| r.score().map_or("-".to_string(), |s| format!("{s:.1}%"));
    for (name, n, r) in rows {
        let explained = r.missed.len() - unexplained(r, known).len();
        let _ = writeln!(
            out,
            "{:<14} {:>5} {:>7} {:>7} {:>9} {:>8} {:>9} {:>8}",
            name,
            n,
            r.caught,
            r.missed.len(),
            explained,
            r.timeout,
            r.unviable,
            score(r)
        );
        files += n;
        total.caught += r.caught;
        total.timeout += r.timeout;
        total.unviable += r.unviable;
        total.missed.extend(r.missed.iter().cloned());
    }
    let explained = total.missed.len() - unexplained(&total, known).len();
    let _ = writeln!(
        out,
        "{:<14} {:>5} {:>7} {:>7} {:>9} {:>8} {:>9} {:>8}",
        "total",
        files,
        total.caught,
        total.missed.len(),
        explained,
        total.timeout,
        total.unviable,
        score(&total)
    );
    if let Some(s) = total.score() {
        let verdict = if s >= GOAL_PERCENT { "met" } else { "NOT met" };
        let _ = writeln!(
            out,
            "goal: at least {GOAL_PERCENT:.0}% of viable mutants caught: {verdict}"
        );
    }
    out
}

/// The cargo-mutants command for one group.
fn command(root: &Path, group: &Group, files: &[String], out_dir: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root);
    if rustup_has("stable") {
        cmd.arg("+stable");
    }
    cmd.args(["mutants", "--package", "refloop", "--features"])
        .arg("refloop/tokio-codec");
    for package in group.packages {
        cmd.arg("--test-package").arg(package);
    }
    // cargo-mutants 27 runs its baseline with `--package` of the mutated files only, which
    // rejects the integration crate's test targets; the test and integration stages prove the
    // unmutated tree green, so the baseline is skipped and the timeout is explicit.
    cmd.args(["--baseline", "skip", "--timeout"])
        .arg(group.timeout.to_string())
        .args(["--jobs", "1", "--no-shuffle", "--output"])
        .arg(out_dir);
    for f in files {
        cmd.arg("--file").arg(f);
    }
    cmd.arg("--").args(group.tests);
    if std::env::var_os("PROPTEST_CASES").is_none() {
        cmd.env("PROPTEST_CASES", "64");
    }
    cmd
}

fn rustup_has(toolchain: &str) -> bool {
    Command::new("rustup")
        .args(["run", toolchain, "cargo", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn display(cmd: &Command) -> String {
    let mut s = String::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            let _ = write!(s, "{}={} ", k.to_string_lossy(), v.to_string_lossy());
        }
    }
    s.push_str(&cmd.get_program().to_string_lossy());
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.contains('*') || a.contains(' ') {
            let _ = write!(s, " '{a}'");
        } else {
            let _ = write!(s, " {a}");
        }
    }
    s
}

fn ensure_cargo_mutants(root: &Path) -> Result<(), String> {
    let installed = Command::new("cargo")
        .args(["mutants", "--version"])
        .current_dir(root)
        .output()
        .is_ok_and(|o| o.status.success());
    if installed {
        return Ok(());
    }
    println!("--> cargo install cargo-mutants --locked (not installed)");
    let ok = Command::new("cargo")
        .args(["install", "cargo-mutants", "--locked"])
        .current_dir(root)
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(())
    } else {
        Err("cannot install cargo-mutants".to_string())
    }
}

/// `cargo xtask mutants ARGS`.
pub fn run(root: PathBuf, args: &[String]) -> Result<ExitCode, String> {
    let mut deep = false;
    let mut list = false;
    let mut base = None;
    let mut files = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--deep" => deep = true,
            "--list" => list = true,
            "--base" => base = Some(it.next().ok_or("--base needs a revision")?.clone()),
            "--file" => files.push(it.next().ok_or("--file needs a path")?.clone()),
            other => return Err(format!("unknown mutants flag `{other}`")),
        }
    }
    let selection = if deep {
        println!("== cargo xtask mutants (deep: every group) ==");
        Selection::deep()
    } else if !files.is_empty() {
        println!("== cargo xtask mutants (the given files) ==");
        Selection::of_files(files.iter().map(String::as_str))
    } else {
        match base.or_else(|| default_base(&root)) {
            Some(base) => {
                let changed = changed_files(&root, &base)?;
                println!(
                    "== cargo xtask mutants (files under core/src that differ from {base}) =="
                );
                Selection::of_files(changed.iter().map(String::as_str))
            }
            None => {
                println!("== cargo xtask mutants: no main branch to compare with ==");
                Selection::default()
            }
        }
    };
    let survivors_path = root.join("mutants/survivors.toml");
    let known = match std::fs::read_to_string(&survivors_path) {
        Ok(text) => parse_survivors(&text)?,
        Err(_) => Vec::new(),
    };
    if selection.files.is_empty() {
        println!("no file under core/src to mutate: 0 mutants run");
        return Ok(ExitCode::SUCCESS);
    }
    let out_root = root.join("target/mutants");
    let mut plan = Vec::new();
    for g in GROUPS {
        if let Some(files) = selection.files.get(g.name) {
            let cmd = command(&root, g, files, &out_root.join(g.name));
            println!("--> [{}] {} file(s); tests: {}", g.name, files.len(), g.why);
            println!("    {}", display(&cmd));
            plan.push((g, files.len(), cmd));
        }
    }
    if list {
        return Ok(ExitCode::SUCCESS);
    }
    ensure_cargo_mutants(&root)?;
    let mut results = Vec::new();
    for (g, n, mut cmd) in plan {
        let out_dir = out_root.join(g.name);
        std::fs::create_dir_all(&out_dir)
            .map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
        let status = cmd
            .status()
            .map_err(|e| format!("cannot run cargo mutants: {e}"))?;
        // cargo-mutants exits 0 (all caught), 2 (some missed) or 3 (some timed out); anything
        // else means it could not test the mutants (a failing baseline, a usage error).
        match status.code() {
            Some(0 | 2 | 3) => {}
            _ => {
                return Err(format!(
                    "cargo mutants for group `{}` failed ({status}): see {}",
                    g.name,
                    out_root
                        .join(g.name)
                        .join("mutants.out/debug.log")
                        .display()
                ))
            }
        }
        results.push((g.name, n, Results::read(&out_root.join(g.name))));
    }
    let rows: Vec<(&str, usize, &Results)> = results.iter().map(|(g, n, r)| (*g, *n, r)).collect();
    println!("\n{}", table(&rows, &known));
    let mut bad = Vec::new();
    for (_, _, r) in &results {
        bad.extend(unexplained(r, &known));
    }
    if bad.is_empty() {
        println!("mutants: every survivor is explained in mutants/survivors.toml");
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "mutants: {} survivor(s) not explained in mutants/survivors.toml; kill each with a \
             test that asserts the property it breaks, or explain it there:",
            bad.len()
        );
        for m in bad {
            println!("    {m}");
        }
        Ok(ExitCode::FAILURE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutant_keys_drop_line_and_column() {
        assert_eq!(
            mutant_key("core/src/framing/lines.rs:131:12: replace < with <= in Lines::decode"),
            "core/src/framing/lines.rs: replace < with <= in Lines::decode"
        );
        assert_eq!(
            mutant_key("core/src/a.rs: replace f with ()"),
            "core/src/a.rs: replace f with ()"
        );
    }

    #[test]
    fn files_are_grouped_by_the_tests_that_check_them_and_known_bad_files_are_left_out() {
        let s = Selection::of_files([
            "core/src/framing/lines.rs",
            "core/src/check/framing/mod.rs",
            "core/src/check/framing/known_bad.rs",
            "core/src/sync.rs",
            "core/src/reactor/mod.rs",
            "xtask/src/main.rs",
            "core/Cargo.toml",
        ]);
        let groups: Vec<(&str, Vec<&str>)> = s
            .files
            .iter()
            .map(|(g, f)| (*g, f.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(
            groups,
            vec![
                ("check-framing", vec!["core/src/check/framing/mod.rs"]),
                ("framing", vec!["core/src/framing/lines.rs"]),
                ("loop", vec!["core/src/reactor/mod.rs"]),
                ("queue", vec!["core/src/sync.rs"]),
            ]
        );
        assert!(Selection::of_files(["README.md"]).files.is_empty());
    }

    #[test]
    fn deep_selects_every_group_of_core_src() {
        let deep = Selection::deep();
        assert_eq!(deep.files.len(), GROUPS.len());
        assert_eq!(
            deep.files["loop"],
            ["core/src/reactor/**", "core/src/sys/**", "core/src/lib.rs"]
        );
        for dir in ["queue.rs", "framing/", "reactor/", "sys/", "sync.rs"] {
            assert!(
                GROUPS
                    .iter()
                    .any(|g| g.prefixes.iter().any(|p| p.ends_with(dir))),
                "{dir} is in no group"
            );
        }
    }

    #[test]
    fn survivors_parse_and_an_entry_without_a_reason_or_with_an_unknown_kind_is_refused() {
        let text = "# why\n[[survivor]]\nmutant = \"core/src/a.rs:3:4: replace f with ()\"\n\
                    kind = \"equivalent\"\nreason = \"f only logs \\\"x\\\"\"\n";
        assert_eq!(
            parse_survivors(text).unwrap(),
            vec![Survivor {
                mutant: "core/src/a.rs: replace f with ()".into(),
                kind: "equivalent".into(),
                reason: "f only logs \"x\"".into(),
            }]
        );
        let no_reason = "[[survivor]]\nmutant = \"m\"\nkind = \"gap\"\n";
        assert!(parse_survivors(no_reason)
            .unwrap_err()
            .contains("no `reason`"));
        let bad_kind = "[[survivor]]\nmutant = \"m\"\nkind = \"fine\"\nreason = \"r\"\n";
        assert!(parse_survivors(bad_kind)
            .unwrap_err()
            .contains("kind must be"));
    }

    #[test]
    fn the_checked_in_survivors_list_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mutants/survivors.toml");
        let text = std::fs::read_to_string(path).unwrap();
        for s in parse_survivors(&text).unwrap() {
            assert!(group_of(&s.mutant).is_some(), "{} is in no group", s.mutant);
        }
    }

    #[test]
    fn only_survivors_missing_from_the_list_are_unexplained() {
        let results = Results {
            caught: 8,
            timeout: 1,
            unviable: 3,
            missed: vec!["core/src/a.rs: one".into(), "core/src/a.rs: two".into()],
        };
        let known = vec![Survivor {
            mutant: "core/src/a.rs: one".into(),
            kind: "gap".into(),
            reason: "r".into(),
        }];
        assert_eq!(unexplained(&results, &known), ["core/src/a.rs: two"]);
        let score = results.score().unwrap();
        assert!((score - 81.818).abs() < 0.01, "{score}");
        let t = table(&[("framing", 2, &results)], &known);
        assert!(
            t.contains(
                "framing            2       8       2         1        1         3    81.8%"
            ),
            "{t}"
        );
        assert!(t.contains("NOT met"), "{t}");
    }

    #[test]
    fn results_are_read_from_cargo_mutants_output_files() {
        let dir = std::env::temp_dir().join(format!("xtask-mutants-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("mutants.out")).unwrap();
        std::fs::write(
            dir.join("mutants.out/caught.txt"),
            "a.rs:1:1: x\na.rs:2:1: y\n",
        )
        .unwrap();
        std::fs::write(dir.join("mutants.out/missed.txt"), "core/src/b.rs:9:2: z\n").unwrap();
        let r = Results::read(&dir);
        assert_eq!((r.caught, r.timeout, r.unviable), (2, 0, 0));
        assert_eq!(r.missed, ["core/src/b.rs: z"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
