//! Per-client rate limits: a token bucket per client address. Over the limit a client gets 429
//! `rate_limited` with `Retry-After`; other clients are unaffected.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Buckets kept at most; past it, full (idle) buckets are dropped, since a full bucket is the same as
/// none. Bounds memory whatever the number of clients (I8).
const MAX_CLIENTS: usize = 65_536;

struct Bucket {
    tokens: f64,
    refreshed: Instant,
}

pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl RateLimiter {
    /// `per_second` of 0 turns the limit off.
    pub fn new(per_second: u32, burst: u32) -> Option<Self> {
        (per_second > 0).then(|| RateLimiter {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// Takes one token for `client`: `Ok`, or `Err(seconds)` until the next token.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), u32> {
        let Ok(mut buckets) = self.buckets.lock() else { return Ok(()) };
        if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(&client) {
            let (rate, burst) = (self.per_second, self.burst);
            buckets.retain(|_, b| b.tokens + now.duration_since(b.refreshed).as_secs_f64() * rate < burst);
        }
        let bucket = buckets.entry(client).or_insert(Bucket { tokens: self.burst, refreshed: now });
        let elapsed = now.saturating_duration_since(bucket.refreshed).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.refreshed = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - bucket.tokens) / self.per_second).ceil().max(1.0) as u32)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_client_gets_its_burst_then_its_rate() {
        let limiter = RateLimiter::new(10, 3).expect("on");
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().expect("ip"), "10.0.0.2".parse().expect("ip"));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check(a, t0).is_ok());
        }
        assert_eq!(limiter.check(a, t0), Err(1));
        assert!(limiter.check(b, t0).is_ok(), "other clients are unaffected");
        assert!(limiter.check(a, t0 + Duration::from_millis(100)).is_ok(), "one token per 100 ms");
        assert!(limiter.check(a, t0 + Duration::from_millis(100)).is_err());
    }

    #[test]
    fn zero_turns_it_off() {
        assert!(RateLimiter::new(0, 10).is_none());
    }
}
