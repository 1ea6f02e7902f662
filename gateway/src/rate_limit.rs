//! Per-client rate limits: a GCRA bucket (`governor`) per client address. Over the limit a client gets
//! 429 `rate_limited` with `Retry-After`; other clients are unaffected.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::Quota;

/// Past this many clients, the state of those whose bucket has filled up again (the same as having
/// none) is dropped: memory stays bounded whatever the number of addresses (I8).
const MAX_CLIENTS: usize = 65_536;
/// The sweep that drops them runs at most this often, so that a flood of new addresses does not make
/// every request walk the whole table.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

pub struct RateLimiter {
    limiter: governor::RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, DefaultClock>,
    clock: DefaultClock,
    started: Instant,
    /// Milliseconds after `started` of the last sweep.
    swept_at: AtomicU64,
}

impl RateLimiter {
    /// `per_second` of 0 turns the limit off.
    pub fn new(per_second: u32, burst: u32) -> Option<Self> {
        let rate = NonZeroU32::new(per_second)?;
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let clock = DefaultClock::default();
        let limiter =
            governor::RateLimiter::dashmap_with_clock(Quota::per_second(rate).allow_burst(burst), clock.clone());
        Some(RateLimiter { limiter, clock, started: Instant::now(), swept_at: AtomicU64::new(0) })
    }

    /// Takes one request's worth for `client`: `Ok`, or `Err(seconds)` to wait before the next.
    pub fn check(&self, client: IpAddr) -> Result<(), u32> {
        self.sweep();
        self.limiter.check_key(&client).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            wait.as_secs_f64().ceil().max(1.0) as u32
        })
    }

    /// How many clients have state.
    #[cfg(test)]
    fn clients(&self) -> usize {
        self.limiter.len()
    }

    fn sweep(&self) {
        if self.limiter.len() < MAX_CLIENTS {
            return;
        }
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.swept_at.load(Ordering::Relaxed);
        let due = now.saturating_sub(last) >= SWEEP_EVERY.as_millis() as u64;
        if due && self.swept_at.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_its_burst_then_its_rate() {
        let limiter = RateLimiter::new(10, 3).expect("on");
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().expect("ip"), "10.0.0.2".parse().expect("ip"));
        for _ in 0..3 {
            assert!(limiter.check(a).is_ok());
        }
        assert_eq!(limiter.check(a), Err(1), "one more within the same instant waits for the next slot");
        assert!(limiter.check(b).is_ok(), "other clients are unaffected");
        // The next slot comes 100 ms later: waited for, not slept through.
        let until = Instant::now() + Duration::from_secs(2);
        while limiter.check(a).is_err() {
            assert!(Instant::now() < until, "one request per 100 ms comes back");
            std::thread::yield_now();
        }
        assert_eq!(limiter.clients(), 2);
    }

    #[test]
    fn zero_turns_it_off() {
        assert!(RateLimiter::new(0, 10).is_none());
    }
}
