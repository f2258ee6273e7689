//! House rules, checked over the source tree (the `tidy` test rust-analyzer keeps).
//!
//! Each rule is a function over one file's text, tested first on a known-bad snippet so the
//! rule is shown to reject what it exists to reject, then run over the real tree.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if !name.starts_with("target") && !name.starts_with('.') {
                    stack.push(path);
                }
            } else if name.ends_with(".rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Code lines only: the text before any `//` comment (good enough for these rules, which look
/// for keywords that never appear inside string literals in this tree).
fn code(line: &str) -> &str {
    line.split("//").next().unwrap_or("")
}

/// Every `unsafe` block or impl is preceded by a `SAFETY:` comment within the five lines
/// above it (or on the same line).
fn unsafe_without_safety_comment(text: &str) -> Vec<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut bad = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let c = code(line);
        let is_block = c.contains("unsafe {") || c.trim_end().ends_with("unsafe");
        let is_impl = c.trim_start().starts_with("unsafe impl");
        if !(is_block || is_impl) {
            continue;
        }
        let from = i.saturating_sub(5);
        if !lines[from..=i].iter().any(|l| l.contains("SAFETY:")) {
            bad.push(i + 1);
        }
    }
    bad
}

/// No bare `SeqCst`: loom models it weakly, and every ordering must name what it pairs with.
fn seqcst_used(text: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| code(l).contains("SeqCst"))
        .map(|(i, _)| i + 1)
        .collect()
}

/// Every atomic `Ordering::X` argument has a comment on its line or within the six lines above
/// (a multi-line `compare_exchange` call puts its orderings a few lines below the comment).
fn ordering_without_comment(text: &str) -> Vec<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut bad = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let c = code(line);
        let uses = ["Acquire", "Release", "AcqRel", "Relaxed"].iter().any(|o| {
            c.contains(&format!("Ordering::{o}"))
                || c.contains(&format!("({o}"))
                || c.contains(&format!(" {o})"))
                || c.contains(&format!(", {o}"))
        });
        if !uses || c.trim_start().starts_with("use ") {
            continue;
        }
        let from = i.saturating_sub(6);
        if !lines[from..=i].iter().any(|l| l.contains("//")) {
            bad.push(i + 1);
        }
    }
    bad
}

/// `libc` is named only by `core/src/sys`.
fn names_libc(text: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| code(l).contains("libc::") || code(l).contains("use libc"))
        .map(|(i, _)| i + 1)
        .collect()
}

fn report(rule: &str, hits: Vec<(PathBuf, Vec<usize>)>) {
    let hits: Vec<String> = hits
        .into_iter()
        .filter(|(_, lines)| !lines.is_empty())
        .map(|(p, lines)| {
            format!(
                "{}: lines {lines:?}",
                p.strip_prefix(root()).unwrap_or(&p).display()
            )
        })
        .collect();
    assert!(
        hits.is_empty(),
        "tidy rule `{rule}` broken:\n{}",
        hits.join("\n")
    );
}

#[test]
fn tidy_rules_reject_known_bad_snippets() {
    assert_eq!(
        unsafe_without_safety_comment("fn f() {\n    unsafe { g() }\n}\n"),
        vec![2]
    );
    assert!(
        unsafe_without_safety_comment("// SAFETY: g has no preconditions.\nunsafe { g() }\n")
            .is_empty()
    );
    assert_eq!(
        unsafe_without_safety_comment("unsafe impl Send for X {}\n"),
        vec![1]
    );
    assert_eq!(
        seqcst_used("x.load(Ordering::SeqCst);\n// SeqCst is banned\n"),
        vec![1]
    );
    assert_eq!(
        ordering_without_comment("fn f() {\n\n\n\n    x.store(1, Release);\n}\n"),
        vec![5]
    );
    assert!(ordering_without_comment(
        "// Pairs with the Acquire in drain.\nx.store(1, Release);\n"
    )
    .is_empty());
    assert_eq!(
        names_libc("fn f() { unsafe { libc::close(3) }; }\n"),
        vec![1]
    );
}

#[test]
fn every_unsafe_block_in_the_tree_has_a_safety_comment() {
    let hits = rust_files(&root())
        .into_iter()
        .filter(|p| !p.starts_with(root().join("xtask")))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, unsafe_without_safety_comment(&text))
        })
        .collect();
    report("unsafe needs a SAFETY comment", hits);
}

#[test]
fn no_seqcst_and_every_ordering_is_commented_in_core() {
    let files = rust_files(&root().join("core/src"));
    let seqcst = files
        .iter()
        .map(|p| (p.clone(), seqcst_used(&std::fs::read_to_string(p).unwrap())))
        .collect();
    report("no bare SeqCst in core", seqcst);
    let uncommented = files
        .iter()
        .filter(|p| !p.ends_with("sync.rs"))
        .map(|p| {
            (
                p.clone(),
                ordering_without_comment(&std::fs::read_to_string(p).unwrap()),
            )
        })
        .collect();
    report("every Ordering names what it pairs with", uncommented);
}

#[test]
fn only_the_sys_module_names_libc_in_core() {
    let sys = root().join("core/src/sys");
    let hits = rust_files(&root().join("core/src"))
        .into_iter()
        .filter(|p| !p.starts_with(&sys))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, names_libc(&text))
        })
        .collect();
    report("only core/src/sys names libc", hits);
}

/// The non-optional `[dependencies]` of a manifest (not `[target.*]` or dev ones), and whether
/// its `default` feature list is empty.
fn required_dependencies(manifest: &str) -> (Vec<String>, bool) {
    let mut section = String::new();
    let mut required = Vec::new();
    let mut default_empty = true;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_string();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if section == "[dependencies]" && !value.contains("optional = true") {
            required.push(key.trim_end_matches(".workspace").to_string());
        }
        if section == "[features]" && key == "default" && value != "[]" {
            default_empty = false;
        }
    }
    (required, default_empty)
}

#[test]
fn refloop_depends_on_libc_and_memchr_alone_by_default() {
    // The rule rejects a required extra dependency and a default feature that pulls one in.
    let bad =
        "[features]\ndefault = [\"tokio-codec\"]\n[dependencies]\nlibc = \"0.2\"\nbytes = \"1\"\n";
    assert_eq!(
        required_dependencies(bad),
        (vec!["libc".to_string(), "bytes".to_string()], false)
    );
    let text = std::fs::read_to_string(root().join("core/Cargo.toml")).unwrap();
    let (mut required, default_empty) = required_dependencies(&text);
    required.sort();
    assert_eq!(
        required,
        ["libc", "memchr"],
        "refloop's required dependencies"
    );
    assert!(default_empty, "refloop's default features must stay empty");
}
