//! The summary of many runs (a sweep): every `report.json` under some folders, one Markdown table row
//! per scenario and one for all of them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::Report;
use crate::common::lower_median;

/// Every `report.json` under `dir`, at any depth, in path order.
pub fn find_reports(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = vec![];
    let mut pending = vec![dir.to_owned()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("read {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.file_name().is_some_and(|n| n == "report.json") {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

pub fn load(path: &Path) -> anyhow::Result<Report> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a simulation report", path.display()))
}

/// The acknowledged writes of a run: creates, pays and cancels answered 2xx.
fn acknowledged(r: &Report) -> u64 {
    ["create_order", "pay", "cancel"].iter().filter_map(|f| r.counts.get(*f)?.get("ok")).sum()
}

/// Actions that inject something: all but those that only end a fault (a reset is both).
fn faults_injected(r: &Report) -> usize {
    use super::schedule::Action;
    let ends = |a: &Action| {
        matches!(
            a,
            Action::Restart
                | Action::Thaw
                | Action::Heal
                | Action::PanicOff
                | Action::RestartReady
                | Action::RestartAll
        )
    };
    r.timeline.iter().filter(|f| !ends(&f.action)).count()
}

fn failed(r: &Report, check: &str) -> bool {
    r.checks.iter().any(|c| c.name == check && !c.passed)
}

#[derive(Default)]
struct Row {
    runs: usize,
    faults: usize,
    operations: u64,
    acknowledged: u64,
    lost: usize,
    duplicates: usize,
    not_linearizable: usize,
    failed_checks: usize,
    before: Vec<f64>,
    during: Vec<f64>,
    first_ok: Vec<u64>,
    throughput: Vec<u64>,
}

impl Row {
    fn add(&mut self, r: &Report) {
        self.runs += 1;
        self.faults += faults_injected(r);
        self.operations += r.counts.values().flat_map(|by| by.values()).sum::<u64>();
        self.acknowledged += acknowledged(r);
        self.lost += usize::from(failed(r, "lost_writes"));
        self.duplicates += usize::from(failed(r, "duplicates"));
        self.not_linearizable += usize::from(failed(r, "linearizability"));
        self.failed_checks += r.failed();
        for f in &r.faults {
            self.before.extend(f.before.availability);
            self.during.extend(f.during.availability);
            self.first_ok.extend(f.first_ok_ms);
            self.throughput.extend(f.throughput_ms);
        }
    }

    fn line(&self, name: &str) -> String {
        let pct = |v: &Vec<f64>| lower_median(v.clone()).map_or("–".into(), |a| format!("{:.1} %", a * 100.0));
        let ms = |v: &Vec<u64>| lower_median(v.clone()).map_or("–".into(), |m| format!("{m} ms"));
        format!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            self.runs,
            self.faults,
            self.operations,
            self.acknowledged,
            self.lost,
            self.duplicates,
            self.not_linearizable,
            self.failed_checks,
            pct(&self.before),
            pct(&self.during),
            ms(&self.first_ok),
            ms(&self.throughput),
        )
    }
}

/// A Markdown summary of `reports`: a headline and one row per scenario, then one for all.
pub fn markdown(reports: &[Report]) -> String {
    let mut by: BTreeMap<&str, Row> = BTreeMap::new();
    let mut all = Row::default();
    for r in reports {
        by.entry(r.scenario.as_str()).or_default().add(r);
        all.add(r);
    }
    let clean = |n: usize| if n == 0 { "0".to_owned() } else { format!("{n} (VIOLATION)") };
    let mut s = format!(
        "{} runs, {} faults injected, {} operations, {} acknowledged writes: runs with lost writes {}, with \
         duplicates {}, with a non-linearizable order {}; {} failed checks.\n\n",
        all.runs,
        all.faults,
        all.operations,
        all.acknowledged,
        clean(all.lost),
        clean(all.duplicates),
        clean(all.not_linearizable),
        clean(all.failed_checks),
    );
    s.push_str(
        "| scenario | runs | faults injected | operations | acknowledged writes | runs with lost writes | runs with \
         duplicates | runs not linearizable | failed checks | availability before faults (median) | availability \
         during faults (median) | first success after a fault (median) | back to 90 % throughput (median) |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (name, row) in &by {
        let _ = writeln!(s, "{}", row.line(name));
    }
    let _ = writeln!(s, "{}", all.line("**all**"));
    s
}
