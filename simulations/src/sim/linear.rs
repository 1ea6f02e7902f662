//! Per-key linearizability of each order's status (I2, I4), with a Wing–Gong search in Lowe's form
//! (memoised on the set of linearised operations and the model's state).
//!
//! Each order is a register whose value is its status, changed only by `pay` and `cancel` along the legal
//! transitions and observed by `read`. The history is linearizable when, for every order, some total order
//! of its operations respects real time (an operation that completed before another was invoked comes
//! first) and replays every observed outcome from `pending`:
//! - an acknowledged `pay` or `cancel` was legal from the status before it and left the status it answered;
//! - a `409 invalid_transition` was illegal from the status before it and changed nothing;
//! - an acknowledged `read` saw the status at its point;
//! - an unknown outcome (`info`) took effect at some point after its invocation, or never.
//!
//! Refusals that decide nothing about the status (401, 404, 412, shed load) are left out.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::check::{check, Check};
use super::history::Event;

/// The most states one order's search visits before it gives up on that order (reported, not a pass).
const BUDGET: usize = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Status {
    Pending,
    Paid,
    Shipped,
    Delivered,
    Cancelled,
}

impl Status {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Status::Pending,
            "paid" => Status::Paid,
            "shipped" => Status::Shipped,
            "delivered" => Status::Delivered,
            "cancelled" => Status::Cancelled,
            _ => return None,
        })
    }

    /// Where `action` takes an order in this status, if it is allowed (docs/api.md's transitions).
    fn after(self, action: Action) -> Option<Status> {
        match (self, action) {
            (Status::Pending, Action::Pay) => Some(Status::Paid),
            (Status::Pending | Status::Paid, Action::Cancel) => Some(Status::Cancelled),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Pay,
    Cancel,
}

/// What an operation observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The action was applied and answered this status.
    Applied(Action, Status),
    /// The action was refused as illegal from the status it found.
    Refused(Action),
    /// The action may or may not have been applied.
    Unknown(Action),
    /// A read saw this status.
    Read(Status),
}

impl Outcome {
    /// The status after this operation, linearised in `from`; `None` when it cannot be placed there.
    fn step(self, from: Status) -> Option<Status> {
        match self {
            Outcome::Applied(a, to) => (from.after(a) == Some(to)).then_some(to),
            Outcome::Refused(a) => from.after(a).is_none().then_some(from),
            Outcome::Unknown(a) => Some(from.after(a).unwrap_or(from)),
            Outcome::Read(s) => (s == from).then_some(from),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Op {
    invoked: u64,
    /// `None` for an unknown outcome: it may take effect any time after its invocation.
    completed: Option<u64>,
    outcome: Outcome,
}

/// The operations on each order, in invocation order.
fn per_order(events: &[Event]) -> BTreeMap<String, Vec<Op>> {
    let mut open: HashMap<u64, &Event> = HashMap::new();
    let mut ops: BTreeMap<String, Vec<Op>> = BTreeMap::new();
    for e in events {
        if !matches!(e.f.as_str(), "pay" | "cancel" | "read") {
            // Each process runs one operation at a time: a completion belongs to its latest invocation.
            open.remove(&e.process);
            continue;
        }
        if e.kind == "invoke" {
            open.insert(e.process, e);
            continue;
        }
        let Some(invoke) = open.remove(&e.process).filter(|i| i.f == e.f && i.key == e.key) else { continue };
        let action = match e.f.as_str() {
            "pay" => Some(Action::Pay),
            "cancel" => Some(Action::Cancel),
            _ => None,
        };
        let status = e.value["status"].as_str().and_then(Status::parse);
        let outcome = match (e.kind.as_str(), action) {
            ("ok", Some(a)) => status.map(|s| Outcome::Applied(a, s)),
            ("ok", None) => status.map(Outcome::Read),
            ("fail", Some(a)) if e.value["code"] == "invalid_transition" => Some(Outcome::Refused(a)),
            ("info", Some(a)) => Some(Outcome::Unknown(a)),
            _ => None,
        };
        let Some(outcome) = outcome else { continue };
        let completed = (e.kind != "info").then_some(e.at);
        ops.entry(e.key.clone()).or_default().push(Op { invoked: invoke.at, completed, outcome });
    }
    for list in ops.values_mut() {
        list.sort_by_key(|o| o.invoked);
    }
    ops
}

/// What the search found for one order.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Linearizable,
    /// No order fits; the longest prefix of completed operations that did.
    Not {
        placed: usize,
    },
    GaveUp,
}

/// Wing–Gong: depth-first over which pending operation takes effect next, memoised on (set placed, status).
fn search(ops: &[Op]) -> Verdict {
    let n = ops.len();
    let words = n.div_ceil(64);
    let must: usize = ops.iter().filter(|o| o.completed.is_some()).count();
    let mut seen: HashSet<(Vec<u64>, Status)> = HashSet::new();
    let mut best = 0;
    // The stack holds (placed set, status, completed operations placed).
    let mut stack = vec![(vec![0u64; words], Status::Pending, 0usize)];
    while let Some((placed, status, done)) = stack.pop() {
        if done == must {
            return Verdict::Linearizable;
        }
        best = best.max(done);
        if !seen.insert((placed.clone(), status)) {
            continue;
        }
        if seen.len() > BUDGET {
            return Verdict::GaveUp;
        }
        let is_placed = |i: usize| placed[i / 64] & (1 << (i % 64)) != 0;
        // An operation can go next only if no pending one completed before it was invoked.
        let horizon = (0..n).filter(|&i| !is_placed(i)).filter_map(|i| ops[i].completed).min().unwrap_or(u64::MAX);
        for (i, op) in ops.iter().enumerate().filter(|(i, o)| !is_placed(*i) && o.invoked <= horizon) {
            if let Some(next) = op.outcome.step(status) {
                let mut with = placed.clone();
                with[i / 64] |= 1 << (i % 64);
                stack.push((with, next, done + usize::from(op.completed.is_some())));
            }
        }
    }
    Verdict::Not { placed: best }
}

/// I2/I4 per order: every order's pays, cancels and reads have a linearization from `pending`.
pub fn orders(events: &[Event]) -> Check {
    let ops = per_order(events);
    let mut violations = vec![];
    let mut unknown = vec![];
    let total: usize = ops.values().map(Vec::len).sum();
    for (id, list) in &ops {
        match search(list) {
            Verdict::Linearizable => {}
            Verdict::GaveUp => unknown.push(id.clone()),
            Verdict::Not { placed } => {
                let shown: Vec<String> = list
                    .iter()
                    .map(|o| {
                        format!("{:?}@{}..{}", o.outcome, o.invoked, o.completed.map_or("?".into(), |c| c.to_string()))
                    })
                    .collect();
                violations.push(format!(
                    "order {id}: no linearization past {placed} of {} operations: {}",
                    list.len(),
                    shown.join(", ")
                ));
            }
        }
    }
    let mut detail = format!("{} orders, {total} pays, cancels and reads, each order linearizable", ops.len());
    if !unknown.is_empty() {
        detail.push_str(&format!("; search budget exceeded (undecided) for {}: {}", unknown.len(), unknown.join(", ")));
    }
    check("linearizability", violations, detail)
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    /// An operation of process `p` on order `o1`, invoked at `from` and completed at `to`.
    fn op(p: u64, f: &str, kind: &str, value: Value, from: u64, to: u64) -> [Event; 2] {
        let e = |kind: &str, value: Value, at: u64| Event {
            process: p,
            kind: kind.into(),
            f: f.into(),
            key: "o1".into(),
            value,
            intended: from,
            at,
        };
        [e("invoke", json!({}), from), e(kind, value, to)]
    }

    fn history(ops: &[[Event; 2]]) -> Vec<Event> {
        let mut events: Vec<Event> = ops.iter().flatten().cloned().collect();
        events.sort_by_key(|e| e.at);
        events
    }

    fn status(s: &str) -> Value {
        json!({"status": s})
    }

    fn refused() -> Value {
        json!({"status": 409, "code": "invalid_transition"})
    }

    #[test]
    fn sequential_histories_replay_or_fail() {
        let good = history(&[
            op(0, "read", "ok", status("pending"), 1, 2),
            op(0, "pay", "ok", status("paid"), 3, 4),
            op(0, "pay", "fail", refused(), 5, 6),
            op(0, "read", "ok", status("paid"), 7, 8),
            op(0, "cancel", "ok", status("cancelled"), 9, 10),
        ]);
        assert!(orders(&good).passed, "{:?}", orders(&good));
        let stale = history(&[op(0, "pay", "ok", status("paid"), 1, 2), op(0, "read", "ok", status("pending"), 3, 4)]);
        let c = orders(&stale);
        assert!(!c.passed && c.detail.contains("o1"), "a stale read after an acknowledged pay: {c:?}");
        let twice = history(&[op(0, "pay", "ok", status("paid"), 1, 2), op(1, "pay", "ok", status("paid"), 3, 4)]);
        assert!(!orders(&twice).passed, "two acknowledged pays of one order");
        let wrongly_refused = history(&[op(0, "cancel", "fail", refused(), 1, 2)]);
        assert!(!orders(&wrongly_refused).passed, "a pending order cannot refuse a cancel");
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        // The read overlaps the pay: it may see either status.
        for seen in ["pending", "paid"] {
            let h = history(&[op(0, "pay", "ok", status("paid"), 1, 10), op(1, "read", "ok", status(seen), 2, 5)]);
            assert!(orders(&h).passed, "{seen}");
        }
        // A pay and a cancel racing: the pay refused means the cancel went first.
        let h = history(&[op(0, "pay", "fail", refused(), 1, 10), op(1, "cancel", "ok", status("cancelled"), 2, 5)]);
        assert!(orders(&h).passed);
        // But not if the pay was refused before the cancel was even invoked.
        let h = history(&[op(0, "pay", "fail", refused(), 1, 2), op(1, "cancel", "ok", status("cancelled"), 3, 5)]);
        assert!(!orders(&h).passed);
    }

    #[test]
    fn an_unknown_outcome_may_apply_later_or_never() {
        let applied = history(&[
            op(0, "pay", "info", json!({"error": "timeout"}), 1, 2),
            op(1, "read", "ok", status("pending"), 3, 4),
            op(1, "read", "ok", status("paid"), 5, 6),
        ]);
        assert!(orders(&applied).passed, "the unknown pay took effect between the reads");
        let never = history(&[
            op(0, "pay", "info", json!({"status": 504}), 1, 2),
            op(1, "read", "ok", status("pending"), 3, 4),
        ]);
        assert!(orders(&never).passed, "the unknown pay never took effect");
        let flapping = history(&[
            op(0, "pay", "info", json!({"status": 504}), 1, 2),
            op(1, "read", "ok", status("paid"), 3, 4),
            op(1, "read", "ok", status("pending"), 5, 6),
        ]);
        assert!(!orders(&flapping).passed, "one pay cannot be seen and then unseen");
        let other = history(&[op(0, "pay", "fail", json!({"status": 404, "code": "not_found"}), 1, 2)]);
        assert!(orders(&other).passed, "a refusal that decides nothing is left out");
    }
}
