//! A table rendered either aligned for a terminal or as Markdown: every report's tables.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

/// A table rendered either aligned for a terminal or as Markdown.
pub struct Table {
    headers: Vec<String>,
    /// Leading columns that hold names, left-aligned; the rest hold numbers, right-aligned.
    names: usize,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str], names: usize) -> Self {
        Self { headers: headers.iter().map(|h| (*h).to_owned()).collect(), names, rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn to_text(&self) -> String {
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|i| {
                let cells = std::iter::once(&self.headers).chain(&self.rows).filter_map(|r| r.get(i));
                cells.map(|c| c.chars().count()).max().unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for (n, row) in std::iter::once(&self.headers).chain(&self.rows).enumerate() {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (c, w))| if i < self.names { format!("{c:<w$}") } else { format!("{c:>w$}") })
                .collect();
            let _ = writeln!(out, "{}", cells.join("  ").trim_end());
            if n == 0 {
                let _ =
                    writeln!(out, "{}", "-".repeat(widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1)));
            }
        }
        out
    }

    pub fn to_markdown(&self) -> String {
        let mut out = format!("| {} |\n", self.headers.join(" | "));
        let _ = writeln!(out, "|{}", "---|".repeat(self.headers.len()));
        for row in &self.rows {
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        out
    }
}

/// Prints a report's `text` and writes `<stem>.json` and `<stem>.md` into `out`.
pub fn write_outputs(out: &Path, stem: &str, text: &str, json: Result<String>, markdown: &str) -> Result<()> {
    print!("{text}");
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let json_path = out.join(format!("{stem}.json"));
    std::fs::write(&json_path, json.context("serialise the report")? + "\n")
        .with_context(|| format!("write {}", json_path.display()))?;
    let md_path = out.join(format!("{stem}.md"));
    std::fs::write(&md_path, markdown).with_context(|| format!("write {}", md_path.display()))?;
    println!("\nwrote {} and {}", json_path.display(), md_path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_render_for_terminals_and_markdown() {
        let mut t = Table::new(&["mix", "ratio"], 1);
        t.row(vec!["get-order".into(), "0.50×".into()]);
        assert_eq!(t.to_markdown(), "| mix | ratio |\n|---|---|\n| get-order | 0.50× |\n");
        assert_eq!(t.to_text(), "mix        ratio\n----------------\nget-order  0.50×\n");
    }
}
