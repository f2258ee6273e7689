//! Markdown tables, number formatting, and the generated sections of `BENCHMARKS.md`.
//!
//! `BENCHMARKS.md` mixes generated tables with hand-written analysis.
//! Each generated part sits between `<!-- generated:NAME -->` and `<!-- end generated:NAME -->`
//! and is replaced on every run; everything outside the markers is kept as written, so a run
//! with `--only queue` refreshes the queue tables and leaves the rest alone.

use crate::stats::Samples;

/// A Markdown table.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Self {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are left empty and extra cells are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    /// The table as GitHub Markdown, columns padded so it also reads well in a terminal.
    pub fn to_markdown(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
                .collect();
            format!("| {} |\n", padded.join(" | "))
        };
        let mut out = line(&self.headers);
        let dashes: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        out.push_str(&format!("|-{}-|\n", dashes.join("-|-")));
        for r in &self.rows {
            out.push_str(&line(r));
        }
        out
    }
}

/// A rate with an SI prefix, such as `12.3 M`.
pub fn si(x: f64) -> String {
    let (v, p) = if x >= 1e9 {
        (x / 1e9, "G")
    } else if x >= 1e6 {
        (x / 1e6, "M")
    } else if x >= 1e3 {
        (x / 1e3, "k")
    } else {
        (x, "")
    };
    if v >= 100.0 {
        format!("{v:.0} {p}")
    } else if v >= 10.0 {
        format!("{v:.1} {p}")
    } else {
        format!("{v:.2} {p}")
    }
    .trim_end()
    .to_string()
}

/// A median with its spread, such as `12.3 M ±4%`, and a `NOISY` mark when the spread is bad.
pub fn median_cell(s: &Samples, fmt: impl Fn(f64) -> String) -> String {
    let Some(m) = s.median() else {
        return "n/a".to_string();
    };
    let spread = match s.spread() {
        Some(sp) => format!(" ±{:.0}%", sp * 50.0),
        None => String::new(),
    };
    let noisy = if s.is_noisy() { " NOISY" } else { "" };
    format!("{}{spread}{noisy}", fmt(m))
}

/// A ratio with its range over the run pairs, such as `1.31x (1.20-1.40)`.
pub fn ratio_cell(pairs: &Samples) -> String {
    match (pairs.median(), pairs.min(), pairs.max()) {
        (Some(m), Some(lo), Some(hi)) if pairs.len() > 1 => format!("{m:.2}x ({lo:.2}-{hi:.2})"),
        (Some(m), _, _) => format!("{m:.2}x"),
        _ => "n/a".to_string(),
    }
}

fn begin(name: &str) -> String {
    format!("<!-- generated:{name} -->")
}

fn end(name: &str) -> String {
    format!("<!-- end generated:{name} -->")
}

/// The markers and body of a generated section.
pub fn section(name: &str, body: &str) -> String {
    format!("{}\n{}\n{}", begin(name), body.trim_end(), end(name))
}

/// Replaces the generated section `name` in `doc` with `body`, or appends it when `doc` has no
/// such section; text outside the markers is untouched.
pub fn replace_section(doc: &str, name: &str, body: &str) -> String {
    let (b, e) = (begin(name), end(name));
    if let Some(start) = doc.find(&b) {
        if let Some(stop) = doc[start..].find(&e) {
            let stop = start + stop + e.len();
            return format!("{}{}{}", &doc[..start], section(name, body), &doc[stop..]);
        }
    }
    let mut out = doc.trim_end().to_string();
    out.push_str("\n\n");
    out.push_str(&section(name, body));
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacing_a_section_keeps_hand_written_text_around_it() {
        let doc = "# Title\nintro\n<!-- generated:queue -->\nold\n<!-- end generated:queue -->\nanalysis\n";
        let out = replace_section(doc, "queue", "new table");
        assert_eq!(
            out,
            "# Title\nintro\n<!-- generated:queue -->\nnew table\n<!-- end generated:queue -->\nanalysis\n"
        );
    }

    #[test]
    fn a_missing_section_is_appended_and_others_are_untouched() {
        let doc = "# T\n<!-- generated:a -->\nA\n<!-- end generated:a -->\n";
        let out = replace_section(doc, "b", "B");
        assert!(out.contains("<!-- generated:a -->\nA\n<!-- end generated:a -->"));
        assert!(out.ends_with("<!-- generated:b -->\nB\n<!-- end generated:b -->\n"));
        assert_eq!(
            replace_section(&out, "b", "B"),
            out,
            "replacing is idempotent"
        );
    }

    #[test]
    fn noisy_medians_are_marked_in_the_cell() {
        let mut quiet = Samples::new();
        let mut noisy = Samples::new();
        for v in [100.0, 101.0, 99.0] {
            quiet.push(v);
        }
        for v in [100.0, 50.0, 99.0] {
            noisy.push(v);
        }
        assert!(!median_cell(&quiet, si).contains("NOISY"));
        assert!(median_cell(&noisy, si).contains("NOISY"));
    }

    #[test]
    fn si_prefixes_scale_and_round() {
        assert_eq!(si(12_345_678.0), "12.3 M");
        assert_eq!(si(999.0), "999");
        assert_eq!(si(2_500.0), "2.50 k");
    }

    #[test]
    fn table_rows_are_padded_to_the_header_width() {
        let mut t = Table::new(&["a", "bb"]);
        t.row(vec!["xyz".into()]);
        assert_eq!(
            t.to_markdown(),
            "| a   | bb |\n|-----|----|\n| xyz |    |\n"
        );
    }
}
