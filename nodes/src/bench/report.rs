//! Turns phase runs into rows, the ratios to the baseline, and the three outputs: a table on stdout,
//! `bench.json` for machines and `bench.md` for people.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::load::PhaseRun;
use super::BenchArgs;

pub const BASELINE: &str = "bare warp";
pub const PRODUCT: &str = "playground";

/// How the report explains its own method; kept beside the code that implements it.
const METHOD: &str = "\
- Saturation: a closed loop, `connections` workers each sending its next operation as soon as the last is answered; \
its throughput is the knee estimate. Latency there is from each operation's actual send.
- Open loop: operation *i* is due at t0 + i / rate, whatever the server does. Latency runs from that intended time to \
the end of the answer's body, so queueing in the client or the server counts (no coordinated omission).
- At most 4 × connections operations are outstanding. An operation that finds the cap full at its intended time is \
counted as *dropped*, yet is still sent as soon as a slot frees, and its latency still counts from its intended \
time. Dropped operations still unsent 10 s after the schedule ends count as errors.
- An operation succeeds only if every request in it gets its expected status (201 register, 201 login, 201 create \
order, 200 read order, 200 session check, 200 hello). Anything else, timeouts (10 s) and connection errors count as \
errors, never as successes, and stay out of the latency percentiles.
- Achieved throughput = successful operations / time from the phase's start to its last answer (for open-loop phases at least the scheduled duration).
- The baseline (`GET /hello` on bare warp, in the bench process) runs with the same client code: its saturation \
phase right before each mix's, its open-loop phases right after the mix's at the same operations per second. A register-login operation is two requests; the baseline's is one.";

/// One (target, mix, phase) line of the report. Latencies in milliseconds; `None` when nothing succeeded.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseRow {
    pub target: &'static str,
    pub mix: &'static str,
    /// `saturation` or `open`.
    pub phase: &'static str,
    /// Operations per second offered; `None` for the closed loop, which offers whatever it gets.
    pub offered_per_s: Option<f64>,
    pub achieved_per_s: f64,
    pub ok: u64,
    pub errors: u64,
    /// Open-loop operations that found the outstanding cap full and went late (see the method).
    pub dropped: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub elapsed_s: f64,
    pub error_kinds: BTreeMap<String, u64>,
}

impl PhaseRow {
    pub fn new(target: &'static str, mix: &'static str, run: &PhaseRun) -> Self {
        let h = &run.tally.histogram;
        let at = |q: f64| (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1000.0);
        Self {
            target,
            mix,
            phase: if run.offered.is_some() { "open" } else { "saturation" },
            offered_per_s: run.offered,
            achieved_per_s: run.achieved_per_s(),
            ok: run.tally.ok,
            errors: run.tally.error_count(),
            dropped: run.tally.dropped,
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            max_ms: (!h.is_empty()).then(|| h.max() as f64 / 1000.0),
            elapsed_s: run.elapsed.as_secs_f64(),
            error_kinds: run.tally.errors.clone(),
        }
    }
}

/// A mix against the baseline.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct MixRatio {
    pub mix: &'static str,
    pub saturation_per_s: f64,
    pub baseline_saturation_per_s: f64,
    /// Mix saturation throughput / baseline saturation throughput.
    pub throughput_ratio: Option<f64>,
    pub open: Vec<OpenRatio>,
}

/// A mix's p99 against the baseline's at the same offered rate.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct OpenRatio {
    pub offered_per_s: f64,
    pub p99_ms: Option<f64>,
    pub baseline_p99_ms: Option<f64>,
    /// Mix p99 / baseline p99.
    pub p99_ratio: Option<f64>,
}

/// `a / b`, when both are meaningful and `b` is not zero.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (a.is_finite() && b.is_finite() && b > 0.0).then(|| a / b)
}

/// Pairs every product saturation row with the baseline saturation row measured last before it, and
/// every open-loop row with the baseline's at the same rate.
pub fn ratios(rows: &[PhaseRow]) -> Vec<MixRatio> {
    let baseline_open = |rate: f64| rows.iter().find(|r| r.target == BASELINE && r.offered_per_s == Some(rate));
    let mut base_sat = 0.0;
    let mut out: Vec<MixRatio> = Vec::new();
    for row in rows {
        if row.target == BASELINE {
            if row.offered_per_s.is_none() {
                base_sat = row.achieved_per_s;
            }
            continue;
        }
        match row.offered_per_s {
            None => out.push(MixRatio {
                mix: row.mix,
                saturation_per_s: row.achieved_per_s,
                baseline_saturation_per_s: base_sat,
                throughput_ratio: ratio(row.achieved_per_s, base_sat),
                open: Vec::new(),
            }),
            Some(rate) => {
                let base_p99 = baseline_open(rate).and_then(|b| b.p99_ms);
                let open = OpenRatio {
                    offered_per_s: rate,
                    p99_ms: row.p99_ms,
                    baseline_p99_ms: base_p99,
                    p99_ratio: row.p99_ms.zip(base_p99).and_then(|(a, b)| ratio(a, b)),
                };
                if let Some(mix) = out.iter_mut().rev().find(|m| m.mix == row.mix) {
                    mix.open.push(open);
                }
            }
        }
    }
    out
}

/// Everything a run found, with what is needed to compare it with another run.
#[derive(Debug, Serialize)]
pub struct Report {
    pub version: &'static str,
    pub git_commit: Option<String>,
    pub timestamp: String,
    pub cores: usize,
    /// `started node` or the `--target` URL.
    pub target: String,
    pub argon2_memory_kib: Option<u32>,
    pub duration_s: u64,
    pub connections: u64,
    pub max_outstanding: usize,
    pub phases: Vec<PhaseRow>,
    pub ratios: Vec<MixRatio>,
}

impl Report {
    pub fn new(args: &BenchArgs, target_url: &str, max_outstanding: usize) -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION"),
            git_commit: git_commit(),
            timestamp: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            target: match &args.target {
                Some(_) => target_url.to_owned(),
                None => "started node".to_owned(),
            },
            argon2_memory_kib: args.argon2_memory_kib,
            duration_s: args.duration,
            connections: args.connections,
            max_outstanding,
            phases: Vec::new(),
            ratios: Vec::new(),
        }
    }

    pub fn compute_ratios(&mut self) {
        self.ratios = ratios(&self.phases);
    }

    fn heading(&self) -> String {
        format!(
            "playground {} (commit {}), {}, {} cores, target: {}, argon2 memory: {}, {} s per phase, {} connections",
            self.version,
            self.git_commit.as_deref().unwrap_or("unknown"),
            self.timestamp,
            self.cores,
            self.target,
            self.argon2_memory_kib.map_or("default".to_owned(), |k| format!("{k} KiB")),
            self.duration_s,
            self.connections,
        )
    }

    pub fn to_text(&self) -> String {
        format!(
            "\n{}\n\n{}\n{}\n{}",
            self.heading(),
            phase_table(&self.phases).to_text(),
            saturation_table(&self.ratios).to_text(),
            open_table(&self.ratios).to_text()
        )
    }

    pub fn to_markdown(&self) -> String {
        format!(
            "# playground bench\n\n{}\n\n## Phases\n\nLatencies in ms.\n\n{}\n## Throughput against bare warp\n\n{}\n\
             ## p99 against bare warp at the same offered rate\n\n{}\n## Method\n\n{METHOD}\n",
            self.heading(),
            phase_table(&self.phases).to_markdown(),
            saturation_table(&self.ratios).to_markdown(),
            open_table(&self.ratios).to_markdown()
        )
    }
}

fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git").args(["rev-parse", "HEAD"]).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".to_owned(), |v| format!("{v:.2}"))
}

fn times(v: Option<f64>) -> String {
    // Argon2-bound mixes sit far below the baseline; two decimals would show them as zero.
    v.map_or("-".to_owned(), |v| if v < 0.1 { format!("{v:.4}×") } else { format!("{v:.2}×") })
}

fn phase_table(rows: &[PhaseRow]) -> Table {
    let mut t = Table::new(
        &["target", "mix", "phase", "offered/s", "achieved/s", "p50", "p99", "p99.9", "max", "errors", "dropped"],
        3,
    );
    for r in rows {
        t.row(vec![
            r.target.to_owned(),
            r.mix.to_owned(),
            r.phase.to_owned(),
            r.offered_per_s.map_or("max".to_owned(), |v| format!("{v:.0}")),
            format!("{:.0}", r.achieved_per_s),
            ms(r.p50_ms),
            ms(r.p99_ms),
            ms(r.p999_ms),
            ms(r.max_ms),
            r.errors.to_string(),
            r.dropped.to_string(),
        ]);
    }
    t
}

fn saturation_table(ratios: &[MixRatio]) -> Table {
    let mut t = Table::new(&["mix", "saturation/s", "bare warp/s", "ratio"], 1);
    for m in ratios {
        t.row(vec![
            m.mix.to_owned(),
            format!("{:.0}", m.saturation_per_s),
            format!("{:.0}", m.baseline_saturation_per_s),
            times(m.throughput_ratio),
        ]);
    }
    t
}

fn open_table(ratios: &[MixRatio]) -> Table {
    let mut t = Table::new(&["mix", "offered/s", "p99 ms", "bare warp p99 ms", "ratio"], 1);
    for m in ratios {
        for o in &m.open {
            t.row(vec![
                m.mix.to_owned(),
                format!("{:.0}", o.offered_per_s),
                ms(o.p99_ms),
                ms(o.baseline_p99_ms),
                times(o.p99_ratio),
            ]);
        }
    }
    t
}

/// A table rendered either aligned for a terminal or as Markdown.
struct Table {
    headers: Vec<String>,
    /// Leading columns that hold names, left-aligned; the rest hold numbers, right-aligned.
    names: usize,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(headers: &[&str], names: usize) -> Self {
        Self { headers: headers.iter().map(|h| (*h).to_owned()).collect(), names, rows: Vec::new() }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn to_text(&self) -> String {
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

    fn to_markdown(&self) -> String {
        let mut out = format!("| {} |\n", self.headers.join(" | "));
        let _ = writeln!(out, "|{}", "---|".repeat(self.headers.len()));
        for row in &self.rows {
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::super::load::Tally;
    use super::*;

    fn run(latencies_ms: &[u64], offered: Option<f64>) -> PhaseRun {
        let mut tally = Tally::default();
        for &ms in latencies_ms {
            tally.record::<String>(Duration::from_millis(ms), Ok(()));
        }
        PhaseRun { tally, elapsed: Duration::from_secs(2), offered }
    }

    #[test]
    fn rows_summarise_percentiles_in_milliseconds() {
        let latencies: Vec<u64> = (1..=1000).collect();
        let row = PhaseRow::new(PRODUCT, "get-order", &run(&latencies, Some(500.0)));
        assert_eq!(row.phase, "open");
        assert_eq!(row.achieved_per_s, 500.0);
        // Three significant digits: within 0.1 % of the true value.
        let close = |v: Option<f64>, want: f64| (v.unwrap() - want).abs() <= want * 0.001;
        assert!(close(row.p50_ms, 500.0), "{:?}", row.p50_ms);
        assert!(close(row.p99_ms, 990.0), "{:?}", row.p99_ms);
        assert!(close(row.p999_ms, 999.0), "{:?}", row.p999_ms);
        assert!(close(row.max_ms, 1000.0), "{:?}", row.max_ms);
        let empty = PhaseRow::new(PRODUCT, "get-order", &run(&[], None));
        assert_eq!((empty.phase, empty.p99_ms, empty.max_ms), ("saturation", None, None));
    }

    #[test]
    fn ratios_pair_each_mix_with_the_baseline_at_the_same_rate() {
        let rows = vec![
            PhaseRow::new(BASELINE, "hello", &run(&[1; 2000], None)),
            PhaseRow::new(PRODUCT, "get-order", &run(&[2; 1000], None)),
            PhaseRow::new(PRODUCT, "get-order", &run(&[4; 10], Some(100.0))),
            PhaseRow::new(BASELINE, "hello", &run(&[1; 10], Some(100.0))),
            PhaseRow::new(PRODUCT, "get-order", &run(&[], Some(200.0))),
            PhaseRow::new(BASELINE, "hello", &run(&[1; 4000], None)),
            PhaseRow::new(PRODUCT, "create-order", &run(&[2; 1000], None)),
        ];
        let r = ratios(&rows);
        assert_eq!(r.len(), 2);
        // Each mix against the baseline knee measured just before it.
        assert_eq!(r[1].throughput_ratio, Some(0.25));
        assert_eq!((r[0].saturation_per_s, r[0].baseline_saturation_per_s), (500.0, 1000.0));
        assert_eq!(r[0].throughput_ratio, Some(0.5));
        assert_eq!(r[0].open.len(), 2);
        // Histogram buckets at three significant digits: equal to 0.1 %.
        assert!((r[0].open[0].p99_ratio.unwrap() - 4.0).abs() < 0.01, "{:?}", r[0].open[0]);
        // No successes, and no baseline at that rate: no ratio rather than a made-up one.
        assert_eq!((r[0].open[1].p99_ms, r[0].open[1].p99_ratio), (None, None));
    }

    #[test]
    fn ratio_refuses_meaningless_divisions() {
        assert_eq!(ratio(1.0, 4.0), Some(0.25));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(f64::NAN, 1.0), None);
        assert_eq!(
            (times(Some(0.43)), times(Some(0.00056)), times(None)),
            ("0.43×".into(), "0.0006×".into(), "-".into())
        );
    }

    #[test]
    fn tables_render_for_terminals_and_markdown() {
        let mut t = Table::new(&["mix", "ratio"], 1);
        t.row(vec!["get-order".into(), "0.50×".into()]);
        assert_eq!(t.to_markdown(), "| mix | ratio |\n|---|---|\n| get-order | 0.50× |\n");
        assert_eq!(t.to_text(), "mix        ratio\n----------------\nget-order  0.50×\n");
    }
}
