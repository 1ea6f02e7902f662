//! Checkers over a history and the state read back after healing. Each returns a [`Check`] that names
//! every violation it found.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::history::Event;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// The liveness bound (I7).
pub const LIVENESS_MS: u64 = 10_000;

pub(crate) fn check(name: &str, violations: Vec<String>, ok_detail: String) -> Check {
    let passed = violations.is_empty();
    let detail = if passed {
        ok_detail
    } else {
        let shown: Vec<&str> = violations.iter().take(10).map(String::as_str).collect();
        format!("{} violation(s): {}", violations.len(), shown.join("; "))
    };
    Check { name: name.to_owned(), passed, detail }
}

/// Every order read back, by id.
fn by_id(orders: &BTreeMap<String, Vec<Value>>) -> HashMap<String, &Value> {
    orders.values().flatten().filter_map(|o| Some((o["id"].as_str()?.to_owned(), o))).collect()
}

fn statuses(order: &Value) -> Vec<String> {
    order["history"]
        .as_array()
        .map(|h| h.iter().filter_map(|s| s["status"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// I1: every acknowledged create is read back, and every acknowledged transition is in its order's history.
pub fn lost_writes(events: &[Event], orders: &BTreeMap<String, Vec<Value>>) -> Check {
    let found = by_id(orders);
    let mut violations = vec![];
    let mut acked = 0;
    for e in events.iter().filter(|e| e.kind == "ok") {
        let id = e.value["id"].as_str().unwrap_or_default();
        match e.f.as_str() {
            "create_order" => {
                acked += 1;
                if !found.contains_key(id) {
                    violations.push(format!("order {id} (key {}) acknowledged at {} ms is gone", e.key, e.at));
                }
            }
            "pay" | "cancel" => {
                acked += 1;
                let status = e.value["status"].as_str().unwrap_or_default();
                match found.get(id) {
                    Some(o) if statuses(o).iter().any(|s| s == status) => {}
                    _ => violations.push(format!("{} of {id} acknowledged at {} ms is lost", e.f, e.at)),
                }
            }
            _ => {}
        }
    }
    check("lost_writes", violations, format!("{acked} acknowledged writes all read back"))
}

/// I5: at most one order per idempotency key (each order's sku is its key).
pub fn duplicates(orders: &BTreeMap<String, Vec<Value>>) -> Check {
    let mut violations = vec![];
    let mut keys = 0;
    for (user, list) in orders {
        let mut per_key: BTreeMap<&str, usize> = BTreeMap::new();
        for o in list {
            *per_key.entry(o["items"][0]["sku"].as_str().unwrap_or_default()).or_default() += 1;
        }
        keys += per_key.len();
        for (key, n) in per_key.into_iter().filter(|(_, n)| *n > 1) {
            violations.push(format!("user {user} has {n} orders for key {key}"));
        }
    }
    check("duplicates", violations, format!("{keys} keys, one order each"))
}

fn legal(from: &str, to: &str) -> bool {
    matches!(
        (from, to),
        ("pending", "paid")
            | ("pending", "cancelled")
            | ("paid", "shipped")
            | ("paid", "cancelled")
            | ("shipped", "delivered")
    )
}

/// I4: every order's history starts pending and moves only along legal transitions.
pub fn transitions(orders: &BTreeMap<String, Vec<Value>>) -> Check {
    let mut violations = vec![];
    let mut n = 0;
    for o in orders.values().flatten() {
        n += 1;
        let s = statuses(o);
        let id = o["id"].as_str().unwrap_or_default();
        if s.first().map(String::as_str) != Some("pending") {
            violations.push(format!("order {id} does not start pending: {s:?}"));
        } else if s.windows(2).any(|w| !legal(&w[0], &w[1])) {
            violations.push(format!("order {id} moved illegally: {s:?}"));
        } else if o["status"].as_str() != s.last().map(String::as_str) {
            violations.push(format!("order {id} status {} is not the end of its history {s:?}", o["status"]));
        }
    }
    check("transitions", violations, format!("{n} orders, every history legal"))
}

/// I3: at most one registration acknowledged per email.
pub fn email_uniqueness(events: &[Event]) -> Check {
    let mut per_email: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for e in events.iter().filter(|e| e.f == "register") {
        let entry = per_email.entry(e.key.as_str()).or_default();
        match e.kind.as_str() {
            "ok" => entry.0 += 1,
            "invoke" => entry.1 += 1,
            _ => {}
        }
    }
    let violations = per_email
        .iter()
        .filter(|(_, (ok, _))| *ok > 1)
        .map(|(email, (ok, tries))| format!("{email}: {ok} of {tries} registrations acknowledged"))
        .collect();
    let decided = per_email.values().filter(|(ok, _)| *ok == 1).count();
    check(
        "email_uniqueness",
        violations,
        format!("{} emails, {decided} with exactly one acknowledged registration, none with more", per_email.len()),
    )
}

/// I6: once a logout is acknowledged, its token is refused: a request with it invoked after the
/// acknowledgement must not succeed. The workload's `logout` events and `use_after_logout` events share
/// their key (one per session).
pub fn revocation(events: &[Event]) -> Check {
    let acked: BTreeMap<&str, u64> =
        events.iter().filter(|e| e.is("ok", "logout")).map(|e| (e.key.as_str(), e.at)).collect();
    let mut uses = 0;
    let violations = events
        .iter()
        .filter(|e| e.f == "use_after_logout" && e.kind != "invoke")
        .filter_map(|e| {
            let at = *acked.get(e.key.as_str())?;
            (e.intended >= at).then_some(e)
        })
        .inspect(|_| uses += 1)
        .filter(|e| e.kind == "ok")
        .map(|e| format!("session {} logged out at {} ms was accepted at {} ms", e.key, acked[e.key.as_str()], e.at))
        .collect();
    check(
        "revocation",
        violations,
        format!("{} acknowledged logouts, {uses} later uses of their tokens, all refused", acked.len()),
    )
}

/// I7: after the last heal (`since`, ms), some request succeeds within the liveness bound. Returns the check
/// and the recovery time.
pub fn liveness(events: &[Event], since: u64) -> (Check, Option<u64>) {
    let recovery = events.iter().filter(|e| e.kind == "ok" && e.at >= since).map(|e| e.at - since).min();
    let violations = match recovery {
        Some(ms) if ms <= LIVENESS_MS => vec![],
        Some(ms) => vec![format!("first success {ms} ms after the last heal")],
        None => vec!["no request succeeded after the last heal".to_owned()],
    };
    let detail = format!("first success {} ms after the last heal (at {since} ms)", recovery.unwrap_or_default());
    (check("liveness", violations, detail), recovery)
}

/// The resident-memory bound of a node under overload, in KiB.
pub const RSS_BOUND_KIB: u64 = 512 * 1024;

/// Overload: the cluster sheds (some 503 or 429 was seen), fails no other way than 503/504, and each node's
/// resident memory stayed under [`RSS_BOUND_KIB`]. `rss` is the largest sample of each node (index, KiB) and
/// `samples` how many were taken.
pub fn shedding(events: &[Event], rss: &[(usize, u64)], samples: usize) -> Check {
    let status = |e: &Event| e.value["status"].as_u64();
    let shed = events.iter().filter(|e| e.kind != "invoke" && matches!(status(e), Some(503 | 429))).count();
    let mut violations = vec![];
    if shed == 0 {
        violations.push("no request was shed (no 503 or 429)".to_owned());
    }
    for e in events.iter().filter(|e| e.kind != "invoke") {
        if let Some(s @ 500..=599) = status(e) {
            if s != 503 && s != 504 {
                violations.push(format!("{} answered {s} at {} ms", e.f, e.at));
            }
        }
    }
    if samples == 0 {
        violations.push("no memory sample was taken".to_owned());
    }
    for (node, kib) in rss.iter().filter(|(_, kib)| *kib >= RSS_BOUND_KIB) {
        violations.push(format!("node-{} reached {} MiB resident", node + 1, kib / 1024));
    }
    let peak: Vec<String> = rss.iter().map(|(n, kib)| format!("node-{} {} MiB", n + 1, kib / 1024)).collect();
    let detail = format!(
        "{shed} requests shed, no other 5xx than 503/504, peak resident memory over {samples} samples: {}",
        peak.join(", ")
    );
    check("shedding", violations, detail)
}

/// `VmRSS` of a `/proc/<pid>/status` text, in KiB.
pub fn vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ev(kind: &str, f: &str, key: &str, value: Value, at: u64) -> Event {
        Event { process: 0, kind: kind.into(), f: f.into(), key: key.into(), value, intended: at, at }
    }

    fn order(id: &str, sku: &str, history: &[&str]) -> Value {
        let h: Vec<Value> = history.iter().map(|s| json!({"status": s})).collect();
        json!({"id": id, "items": [{"sku": sku}], "status": history.last(), "history": h})
    }

    #[test]
    fn a_lost_acknowledged_write_fails_the_check() {
        let events = vec![
            ev("invoke", "create_order", "k1", json!({}), 1),
            ev("ok", "create_order", "k1", json!({"id": "o1", "user": "u"}), 2),
            ev("invoke", "create_order", "k2", json!({}), 3),
            ev("ok", "create_order", "k2", json!({"id": "o2", "user": "u"}), 4),
            ev("ok", "pay", "o1", json!({"id": "o1", "status": "paid"}), 5),
        ];
        let all = BTreeMap::from([(
            "u".to_owned(),
            vec![order("o1", "k1", &["pending", "paid"]), order("o2", "k2", &["pending"])],
        )]);
        assert!(lost_writes(&events, &all).passed);
        let lost = BTreeMap::from([("u".to_owned(), vec![order("o1", "k1", &["pending", "paid"])])]);
        let c = lost_writes(&events, &lost);
        assert!(!c.passed && c.detail.contains("o2"), "{c:?}");
        let unpaid =
            BTreeMap::from([("u".to_owned(), vec![order("o1", "k1", &["pending"]), order("o2", "k2", &["pending"])])]);
        assert!(!lost_writes(&events, &unpaid).passed, "a lost acknowledged pay is caught");
        // An unknown outcome that did not happen is no violation.
        let info =
            vec![ev("invoke", "create_order", "k3", json!({}), 1), ev("info", "create_order", "k3", json!({}), 2)];
        assert!(lost_writes(&info, &all).passed);
    }

    #[test]
    fn the_other_checkers_can_fail() {
        let dup =
            BTreeMap::from([("u".to_owned(), vec![order("o1", "k1", &["pending"]), order("o2", "k1", &["pending"])])]);
        assert!(!duplicates(&dup).passed);
        let bad = BTreeMap::from([("u".to_owned(), vec![order("o1", "k1", &["pending", "shipped"])])]);
        assert!(!transitions(&bad).passed);
        assert!(
            transitions(&BTreeMap::from([(
                "u".to_owned(),
                vec![order("o1", "k1", &["pending", "paid", "cancelled"])]
            )]))
            .passed
        );
        let twice = vec![ev("ok", "register", "a@x", json!({}), 1), ev("ok", "register", "a@x", json!({}), 2)];
        assert!(!email_uniqueness(&twice).passed);
        assert!(email_uniqueness(&twice[..1]).passed);
        let logout = ev("ok", "logout", "s1", json!({}), 10);
        let refused = ev("fail", "use_after_logout", "s1", json!({}), 12);
        let accepted = Event { intended: 11, ..ev("ok", "use_after_logout", "s1", json!({}), 12) };
        assert!(revocation(&[logout.clone(), refused]).passed);
        assert!(!revocation(&[logout.clone(), accepted]).passed);
        let before = Event { intended: 5, ..ev("ok", "use_after_logout", "s1", json!({}), 12) };
        assert!(revocation(&[logout, before]).passed, "a use invoked before the acknowledgement may succeed");
        assert!(!liveness(&[ev("ok", "read", "o", json!({}), 20_000)], 5_000).0.passed);
        assert!(liveness(&[ev("ok", "read", "o", json!({}), 6_000)], 5_000).0.passed);
    }

    #[test]
    fn shedding_needs_a_refusal_no_other_5xx_and_bounded_memory() {
        let shed = ev("fail", "read", "o", json!({"status": 503}), 1);
        let limited = ev("fail", "read", "o", json!({"status": 429}), 1);
        let timeout = ev("info", "read", "o", json!({"status": 504}), 2);
        let broken = ev("info", "read", "o", json!({"status": 500}), 3);
        let rss = [(0, 100 * 1024), (1, 90 * 1024)];
        assert!(shedding(&[shed.clone(), timeout.clone()], &rss, 5).passed);
        assert!(shedding(&[limited], &rss, 5).passed);
        assert!(!shedding(&[timeout], &rss, 5).passed, "nothing shed");
        assert!(!shedding(&[shed.clone(), broken], &rss, 5).passed, "a 500");
        assert!(!shedding(std::slice::from_ref(&shed), &[(0, RSS_BOUND_KIB)], 5).passed, "too much memory");
        assert!(!shedding(&[shed], &rss, 0).passed, "no samples");
        assert_eq!(vm_rss_kib("Name:\tplayground\nVmRSS:\t   41236 kB\nVmData: 1 kB\n"), Some(41_236));
        assert_eq!(vm_rss_kib("Name: x\n"), None);
    }
}
