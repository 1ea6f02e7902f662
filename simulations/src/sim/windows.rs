//! Per-fault figures of a run: availability and latency of ok operations before, during and after each
//! fault, and how long the cluster took to recover once it ended.

use serde::{Deserialize, Serialize};

use super::history::Event;
use super::schedule::FaultEvent;
use super::{percentiles, Percentiles};

/// Width of a throughput bucket, in ms.
pub const BUCKET_MS: u64 = 500;
/// Throughput counts as recovered at this share of its level before the fault.
pub const RECOVERED_SHARE: f64 = 0.9;

/// Operations sent within one window (by intended send time).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Window {
    /// Start and end, in ms since the start of the run (end excluded).
    pub from: u64,
    pub to: u64,
    pub ok: u64,
    pub fail: u64,
    pub info: u64,
    /// Share of `ok` among `ok + fail + info`; `None` without any completed operation.
    pub availability: Option<f64>,
    /// Latency of the ok operations.
    pub latency: Percentiles,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FaultWindows {
    /// The action that started the fault (e.g. `Kill9`), and its node (0-based).
    pub fault: String,
    pub node: Option<usize>,
    /// When it started and ended, in ms since the start of the run.
    pub start: u64,
    pub end: u64,
    pub before: Window,
    pub during: Window,
    pub after: Window,
    /// From the end of the fault to the first ok operation completed; `None`: not within the run.
    pub first_ok_ms: Option<u64>,
    /// From the end of the fault to the start of the first 500 ms bucket whose ok operations reach 90 %
    /// of the mean per bucket before the fault; `None`: not within the run.
    pub throughput_ms: Option<u64>,
}

fn window(events: &[Event], from: u64, to: u64) -> Window {
    let mut w = Window { from, to, ok: 0, fail: 0, info: 0, availability: None, latency: percentiles(vec![]) };
    let mut ms = vec![];
    for e in events.iter().filter(|e| e.kind != "invoke" && e.intended >= from && e.intended < to) {
        match e.kind.as_str() {
            "ok" => {
                w.ok += 1;
                ms.push(e.at.saturating_sub(e.intended));
            }
            "fail" => w.fail += 1,
            _ => w.info += 1,
        }
    }
    let total = w.ok + w.fail + w.info;
    w.availability = (total > 0).then(|| w.ok as f64 / total as f64);
    w.latency = percentiles(ms);
    w
}

/// Ok operations completed within `[from, to)`.
fn oks(events: &[Event], from: u64, to: u64) -> u64 {
    events.iter().filter(|e| e.kind == "ok" && e.at >= from && e.at < to).count() as u64
}

/// The faults of a timeline as `(action, node, start, end)`: each fault runs from an action that does not
/// heal to the next one that does; an action that heals without an open fault (a reset) is a fault of no
/// length; one never healed runs to `run_end`.
pub fn faults(timeline: &[FaultEvent], run_end: u64) -> Vec<(String, Option<usize>, u64, u64)> {
    let mut out = vec![];
    let mut open: Option<&FaultEvent> = None;
    for f in timeline {
        let Some(at) = f.applied_at else { continue };
        if !f.action.heals() {
            if open.is_none() {
                open = Some(f);
            }
            continue;
        }
        let (action, node, start) = match open.take() {
            Some(o) => (o.action, o.node, o.applied_at.unwrap_or(at)),
            None => (f.action, f.node, at),
        };
        out.push((format!("{action:?}"), node, start, at));
    }
    if let Some(o) = open {
        let start = o.applied_at.unwrap_or_default();
        out.push((format!("{:?}", o.action), o.node, start, run_end.max(start)));
    }
    out
}

/// The windows of every fault: `before` runs from the end of the previous fault (or the workload's start)
/// to its start, `after` from its end to the start of the next one (or `run_end`).
pub fn per_fault(events: &[Event], timeline: &[FaultEvent], run_start: u64, run_end: u64) -> Vec<FaultWindows> {
    let list = faults(timeline, run_end);
    let mut out = vec![];
    for (i, (fault, node, start, end)) in list.iter().enumerate() {
        let (start, end) = (*start, *end);
        let before_from = if i == 0 { run_start } else { list[i - 1].3.min(start) };
        let after_to = list.get(i + 1).map(|n| n.2.max(end)).unwrap_or(run_end.max(end));
        let first_ok_ms = events.iter().filter(|e| e.kind == "ok" && e.at >= end).map(|e| e.at - end).min();
        // The level before: mean ok operations per whole bucket before the fault.
        let buckets = start.saturating_sub(before_from) / BUCKET_MS;
        let level =
            if buckets == 0 { 0.0 } else { oks(events, start - buckets * BUCKET_MS, start) as f64 / buckets as f64 };
        let mut throughput_ms = None;
        let mut b = end;
        while b + BUCKET_MS <= run_end.max(end) {
            if oks(events, b, b + BUCKET_MS) as f64 >= RECOVERED_SHARE * level {
                throughput_ms = Some(b - end);
                break;
            }
            b += BUCKET_MS;
        }
        out.push(FaultWindows {
            fault: fault.clone(),
            node: *node,
            start,
            end,
            before: window(events, before_from, start),
            during: window(events, start, end),
            after: window(events, end, after_to),
            first_ok_ms,
            throughput_ms,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::super::schedule::Action;
    use super::*;

    fn done(kind: &str, intended: u64, at: u64) -> Event {
        Event { process: 0, kind: kind.into(), f: "read".into(), key: "k".into(), value: Value::Null, intended, at }
    }

    fn applied(at: u64, action: Action) -> FaultEvent {
        FaultEvent { at, action, node: Some(1), applied_at: Some(at) }
    }

    #[test]
    fn windows_and_recovery_of_a_synthetic_history() {
        let mut events = vec![];
        // Before (0..2000): 4 ok per 500 ms bucket, 10 ms each.
        for t in (0..2_000).step_by(125) {
            events.push(done("ok", t, t + 10));
        }
        // During (2000..3000): 2 fail, 2 info, 1 slow ok.
        events.extend([done("fail", 2_100, 2_110), done("fail", 2_200, 2_210), done("info", 2_300, 7_300)]);
        events.extend([done("info", 2_400, 7_400), done("ok", 2_500, 3_200)]);
        // After (3000..5000): nothing until 3700, then 1 ok per bucket at 3700..4000, full rate from 4000.
        events.push(done("invoke", 3_600, 3_600));
        events.push(done("ok", 3_600, 3_700));
        for t in (4_000..5_000).step_by(125) {
            events.push(done("ok", t, t + 20));
        }
        let timeline = vec![applied(2_000, Action::Kill9), applied(3_000, Action::Restart)];
        let w = per_fault(&events, &timeline, 0, 5_000);
        assert_eq!(w.len(), 1);
        let w = &w[0];
        assert_eq!((w.fault.as_str(), w.node, w.start, w.end), ("Kill9", Some(1), 2_000, 3_000));
        assert_eq!((w.before.ok, w.before.availability, w.before.latency.p99_ms), (16, Some(1.0), 10));
        assert_eq!((w.during.ok, w.during.fail, w.during.info), (1, 2, 2));
        assert_eq!(w.during.availability, Some(0.2));
        assert_eq!(w.during.latency.p50_ms, 700);
        assert_eq!((w.after.ok, w.after.availability, w.after.latency.p99_ms), (9, Some(1.0), 100));
        // The slow ok of the fault completed at 3200: first ok 200 ms after the end.
        assert_eq!(w.first_ok_ms, Some(200));
        // The level was 4 per bucket; 3.6 is first reached by the bucket at 4000.
        assert_eq!(w.throughput_ms, Some(1_000));
    }

    #[test]
    fn recovery_not_within_the_run_and_faults_of_no_length() {
        // Oks stop at 905: the first fault's recovery is not within the run.
        let events: Vec<Event> = (0..1_000).step_by(100).map(|t| done("ok", t, t + 5)).collect();
        let timeline =
            vec![applied(1_000, Action::Freeze), applied(1_500, Action::Thaw), applied(1_800, Action::Reset)];
        let w = per_fault(&events, &timeline, 0, 3_000);
        assert_eq!(w.len(), 2);
        assert_eq!((w[0].before.from, w[0].after.to), (0, 1_800));
        assert_eq!((w[0].first_ok_ms, w[0].throughput_ms), (None, None));
        assert_eq!(w[0].during.availability, None);
        assert_eq!((w[1].fault.as_str(), w[1].start, w[1].end, w[1].before.from), ("Reset", 1_800, 1_800, 1_500));
        assert_eq!(per_fault(&[], &[applied(100, Action::Kill9)], 0, 1_000)[0].end, 1_000, "never healed");
        assert_eq!(per_fault(&[], &[applied(100, Action::Kill9)], 0, 1_000)[0].first_ok_ms, None);
    }
}
