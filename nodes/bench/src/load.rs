//! The two load shapes. The closed loop (each worker waits for its answer before the next request) finds
//! the knee. The open loop issues request `i` at `t0 + i / rate` whatever the server does, and measures
//! latency from that intended time, so time a request spends waiting to be sent counts against the server
//! that made it wait.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::workload::Workload;

/// Highest latency the histogram resolves, in microseconds; longer ones are recorded as this.
const HIGHEST_US: u64 = 120_000_000;
/// After its schedule ends, an open-loop phase may keep issuing what the outstanding cap held back for
/// this long; what is still unsent then counts as errors (`not sent`), so a phase always ends.
const ISSUE_GRACE: Duration = Duration::from_secs(10);
/// Waiting for the last answers; longer than the request timeout, so each request ends on its own first.
const DRAIN_LIMIT: Duration = Duration::from_secs(15);

/// What one phase saw: latencies of the successes, and everything else counted.
#[derive(Clone, Debug)]
pub struct Tally {
    /// Latency of each successful operation, in microseconds.
    pub histogram: Histogram<u64>,
    pub ok: u64,
    /// Failed operations by what went wrong (`login: status 503`, `get-order: timeout`).
    pub errors: BTreeMap<String, u64>,
    /// Open-loop requests that found the outstanding cap full at their intended time; they were still
    /// sent later, and their latency counts from the intended time.
    pub dropped: u64,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            histogram: Histogram::new_with_bounds(1, HIGHEST_US, 3).expect("constant bounds are valid"),
            ok: 0,
            errors: BTreeMap::new(),
            dropped: 0,
        }
    }
}

impl Tally {
    pub fn record<E: std::fmt::Display>(&mut self, latency: Duration, result: Result<(), E>) {
        match result {
            Ok(()) => {
                self.ok += 1;
                self.histogram.saturating_record(micros(latency));
            }
            Err(e) => self.error(e.to_string(), 1),
        }
    }

    pub fn error(&mut self, kind: String, count: u64) {
        if count > 0 {
            *self.errors.entry(kind).or_default() += count;
        }
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    fn merge(&mut self, other: Tally) {
        self.histogram.add(&other.histogram).expect("every tally has the same bounds");
        self.ok += other.ok;
        self.dropped += other.dropped;
        for (kind, count) in other.errors {
            self.error(kind, count);
        }
    }
}

/// One measured phase.
#[derive(Clone, Debug)]
pub struct PhaseRun {
    pub tally: Tally,
    /// From the phase's start to its last answer, and at least the scheduled duration.
    pub elapsed: Duration,
    /// Operations per second the open loop offered; `None` for the closed loop.
    pub offered: Option<f64>,
}

impl PhaseRun {
    pub fn achieved_per_s(&self) -> f64 {
        per_second(self.tally.ok, self.elapsed)
    }
}

pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// How many operations an open-loop phase schedules: at least one, so every phase measures something.
pub fn scheduled_count(rate: f64, duration: Duration) -> u64 {
    // Rates are validated finite and positive, and durations bounded, so the product fits.
    (rate * duration.as_secs_f64()).round().max(1.0) as u64
}

/// When operation `i` is meant to go, from the phase's start.
pub fn intended_offset(i: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(i as f64 / rate)
}

/// `connections` workers, each sending its next operation as soon as the last one is answered.
pub async fn closed_loop(workload: &Arc<Workload>, connections: usize, duration: Duration) -> PhaseRun {
    let start = Instant::now();
    let end = start + duration;
    let mut workers = JoinSet::new();
    for worker in 0..connections {
        let workload = Arc::clone(workload);
        workers.spawn(async move {
            let mut tally = Tally::default();
            // Workers take interleaved sequence numbers, so they spread over the fixture pools.
            let mut seq = worker as u64;
            while Instant::now() < end {
                let sent = Instant::now();
                let result = workload.run_once(seq).await;
                tally.record(sent.elapsed(), result);
                seq += connections as u64;
            }
            tally
        });
    }
    let mut total = Tally::default();
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(tally) => total.merge(tally),
            Err(e) => total.error(format!("worker failed: {e}"), 1),
        }
    }
    PhaseRun { tally: total, elapsed: start.elapsed(), offered: None }
}

/// Issues `rate × duration` operations on a fixed schedule, each as its own task, holding at most
/// `max_outstanding` in flight.
pub async fn open_loop(workload: &Arc<Workload>, rate: f64, duration: Duration, max_outstanding: usize) -> PhaseRun {
    let count = scheduled_count(rate, duration);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let permits = Arc::new(Semaphore::new(max_outstanding));
    let start = Instant::now();
    let issue_deadline = start + duration + ISSUE_GRACE;
    let mut dropped = 0;
    let mut not_sent = 0;
    for i in 0..count {
        let intended = start + intended_offset(i, rate);
        if intended > Instant::now() {
            tokio::time::sleep_until(intended).await;
        }
        let permit = match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                dropped += 1;
                match tokio::time::timeout_at(issue_deadline, Arc::clone(&permits).acquire_owned()).await {
                    Ok(Ok(permit)) => permit,
                    _ => {
                        not_sent = count - i;
                        break;
                    }
                }
            }
        };
        let workload = Arc::clone(workload);
        let tally = Arc::clone(&tally);
        tokio::spawn(async move {
            let result = workload.run_once(i).await;
            let latency = intended.elapsed();
            tally.lock().unwrap_or_else(PoisonError::into_inner).record(latency, result);
            // Released only once recorded: holding every permit below then means every answer is in.
            drop(permit);
        });
    }
    let all = u32::try_from(max_outstanding).expect("--connections bounds the cap far below u32::MAX");
    let drained = tokio::time::timeout(DRAIN_LIMIT, permits.acquire_many(all)).await;
    // A phase offers its schedule over `duration`; finishing early only means the last answer was quick.
    let elapsed = start.elapsed().max(duration);
    let mut result = std::mem::take(&mut *tally.lock().unwrap_or_else(PoisonError::into_inner));
    if !matches!(drained, Ok(Ok(_))) {
        let unfinished = max_outstanding.saturating_sub(permits.available_permits()) as u64;
        result.error("unfinished at phase end".into(), unfinished);
    }
    result.dropped = dropped;
    result.error("not sent: outstanding cap full past the grace period".into(), not_sent);
    PhaseRun { tally: result, elapsed, offered: Some(rate) }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn schedule_spaces_requests_evenly_from_the_start() {
        assert_eq!(intended_offset(0, 100.0), Duration::ZERO);
        assert_eq!(intended_offset(1, 100.0), Duration::from_millis(10));
        assert_eq!(intended_offset(250, 100.0), Duration::from_millis(2500));
        assert_eq!(intended_offset(3, 0.5), Duration::from_secs(6));
    }

    #[test]
    fn schedule_fills_the_phase() {
        assert_eq!(scheduled_count(100.0, Duration::from_secs(5)), 500);
        assert_eq!(scheduled_count(2.5, Duration::from_secs(3)), 8);
        assert_eq!(scheduled_count(0.01, Duration::from_secs(1)), 1);
        // The last request is scheduled inside the phase, not at its end.
        let n = scheduled_count(100.0, Duration::from_secs(5));
        assert!(intended_offset(n - 1, 100.0) < Duration::from_secs(5));
    }

    #[test]
    fn tally_keeps_errors_out_of_the_latencies() {
        let mut t = Tally::default();
        for ms in 1..=100 {
            t.record::<String>(Duration::from_millis(ms), Ok(()));
        }
        t.record(Duration::from_secs(9), Err("get-order: status 503"));
        t.record(Duration::from_secs(9), Err("get-order: status 503"));
        t.error("not sent".into(), 0);
        assert_eq!(t.ok, 100);
        assert_eq!(t.error_count(), 2);
        assert_eq!(t.errors.len(), 1);
        assert_eq!(t.histogram.max(), t.histogram.highest_equivalent(100_000));
        let mut other = Tally::default();
        other.record::<String>(Duration::from_secs(1), Ok(()));
        other.dropped = 3;
        t.merge(other);
        assert_eq!((t.ok, t.dropped, t.histogram.len()), (101, 3, 101));
    }

    #[test]
    fn throughput_is_per_second_of_elapsed_time() {
        assert_eq!(per_second(500, Duration::from_secs(5)), 100.0);
        assert_eq!(per_second(5, Duration::ZERO), 0.0);
        assert_eq!(micros(Duration::ZERO), 1);
    }
}
