//! Login throttling: failed logins are counted per account (its normalized email) and per client
//! address, each against a budget (governor's GCRA): a burst, then one more failure per period. Once a
//! budget is spent, logins for that account or from that address get 429 `rate_limited` with
//! `Retry-After`, before any password is hashed, until the period gives one failure back: a refusal an
//! attacker causes always ends on its own. Only failures count, so a person who knows the password never
//! spends the budget by logging in.
//!
//! The counts are this process's own: with several gateways, an account can take a burst on each.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

/// Keys one budget tracks at most. Past it, keys whose budget is whole again are dropped (they are the
/// same as no entry); if every key is still spending, the budget starts over empty. Memory stays
/// bounded whatever the number of accounts or addresses tried (I8).
const MAX_KEYS: usize = 100_000;
/// Every this many failures, keys whose budget is whole again are dropped, so that the tables stay the
/// size of the recent failures rather than growing to the cap.
const SWEEP_EVERY: u64 = 1024;

/// The budgets, from `[security]`.
#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    pub account_burst: u32,
    pub account_period: Duration,
    pub client_burst: u32,
    pub client_period: Duration,
}

type Limiter<K, C> = RateLimiter<K, DefaultKeyedStateStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The failure budget of one kind of key.
struct Budget<K: Hash + Eq + Clone, C: Clock> {
    quota: Quota,
    clock: C,
    limiter: RwLock<Limiter<K, C>>,
    /// Keys whose budget is spent, and until when: governor tells only as a failure is taken that none
    /// was left, and a login must be refused before its password is hashed.
    refused: Mutex<HashMap<K, C::Instant>>,
}

impl<K: Hash + Eq + Clone, C: Clock + Clone> Budget<K, C> {
    fn new(burst: u32, period: Duration, clock: C) -> Self {
        let quota = Quota::with_period(period.max(Duration::from_millis(1)))
            .expect("a period of at least 1 ms")
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        let limiter = RwLock::new(RateLimiter::dashmap_with_clock(quota, clock.clone()));
        Budget { quota, clock, limiter, refused: Mutex::new(HashMap::new()) }
    }

    /// How long `key` is still refused, if it is.
    fn refused_for(&self, key: &K) -> Option<Duration> {
        let now = self.clock.now();
        let refused = self.refused.lock().ok()?;
        let until = *refused.get(key)?;
        (until > now).then(|| Duration::from(until.duration_since(now)))
    }

    /// Takes one failure from `key`'s budget; `Err(wait)` when none was left.
    fn fail(&self, key: &K, sweep: bool) -> Result<(), Duration> {
        let outcome = {
            let Ok(limiter) = self.limiter.read() else { return Ok(()) };
            if sweep || limiter.len() >= MAX_KEYS {
                limiter.retain_recent();
            }
            let full = limiter.len() >= MAX_KEYS;
            (!full).then(|| limiter.check_key(key).map_err(|not_until| not_until.wait_time_from(self.clock.now())))
        };
        let Some(outcome) = outcome else {
            if let Ok(mut limiter) = self.limiter.write() {
                *limiter = RateLimiter::dashmap_with_clock(self.quota, self.clock.clone());
            }
            return self.fail(key, false);
        };
        if let Err(wait) = outcome {
            let now = self.clock.now();
            if let Ok(mut refused) = self.refused.lock() {
                if refused.len() >= MAX_KEYS {
                    refused.retain(|_, until| *until > now);
                    if refused.len() >= MAX_KEYS {
                        refused.clear();
                    }
                }
                refused.insert(key.clone(), now + Nanos::from(wait));
            }
        }
        outcome
    }
}

pub struct LoginThrottle<C: Clock = DefaultClock> {
    accounts: Budget<u64, C>,
    clients: Budget<IpAddr, C>,
    /// Accounts are kept as a keyed hash of their email, a fixed size whatever the email's length.
    hasher: std::collections::hash_map::RandomState,
    failures: AtomicU64,
}

impl LoginThrottle {
    pub fn new(limits: LoginLimits) -> Self {
        Self::with_clock(limits, DefaultClock::default())
    }
}

impl<C: Clock + Clone> LoginThrottle<C> {
    pub fn with_clock(limits: LoginLimits, clock: C) -> Self {
        LoginThrottle {
            accounts: Budget::new(limits.account_burst, limits.account_period, clock.clone()),
            clients: Budget::new(limits.client_burst, limits.client_period, clock),
            hasher: std::collections::hash_map::RandomState::new(),
            failures: AtomicU64::new(0),
        }
    }

    fn account(&self, email_key: &str) -> u64 {
        self.hasher.hash_one(email_key)
    }

    /// Whether a login for `email_key` from `client` may be tried: `Err(seconds)` to wait while either
    /// budget is spent.
    pub fn admit(&self, email_key: &str, client: Option<IpAddr>) -> Result<(), u32> {
        let account = self.accounts.refused_for(&self.account(email_key));
        let client = client.and_then(|ip| self.clients.refused_for(&ip));
        match account.into_iter().chain(client).max() {
            Some(wait) => Err(seconds(wait)),
            None => Ok(()),
        }
    }

    /// Counts a failed login against both budgets: `Err(seconds)` when it was one more than a budget
    /// allows.
    pub fn failed(&self, email_key: &str, client: Option<IpAddr>) -> Result<(), u32> {
        let sweep = self.failures.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1;
        let account = self.accounts.fail(&self.account(email_key), sweep).err();
        let client = client.and_then(|ip| self.clients.fail(&ip, sweep).err());
        match account.into_iter().chain(client).max() {
            Some(wait) => Err(seconds(wait)),
            None => Ok(()),
        }
    }
}

/// `Retry-After` is whole seconds, at least 1, rounded up so that a client that waits it is let in.
fn seconds(wait: Duration) -> u32 {
    u32::try_from(wait.as_secs_f64().ceil() as u64).unwrap_or(u32::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    fn limits() -> LoginLimits {
        LoginLimits {
            account_burst: 3,
            account_period: Duration::from_secs(30),
            client_burst: 5,
            client_period: Duration::from_secs(1),
        }
    }

    #[test]
    fn an_account_takes_its_burst_then_waits_for_the_period() {
        let clock = FakeRelativeClock::default();
        let t = LoginThrottle::with_clock(limits(), clock.clone());
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let other: IpAddr = "10.0.0.2".parse().expect("ip");
        for _ in 0..3 {
            assert_eq!(t.admit("ada@example.com", Some(ip)), Ok(()));
            assert_eq!(t.failed("ada@example.com", Some(ip)), Ok(()));
        }
        assert_eq!(t.admit("ada@example.com", Some(ip)), Ok(()), "refused only once a failure finds none left");
        let wait = t.failed("ada@example.com", Some(ip)).expect_err("over the burst");
        assert!((1..=30).contains(&wait), "{wait}");
        assert!(t.admit("ada@example.com", Some(other)).is_err(), "the account is refused from any address");
        assert_eq!(t.admit("bob@example.com", Some(other)), Ok(()), "other accounts are not");
        clock.advance(Duration::from_secs(31));
        assert_eq!(t.admit("ada@example.com", Some(other)), Ok(()), "the period gives a failure back");
        assert_eq!(t.failed("ada@example.com", Some(other)), Ok(()));
        assert!(t.failed("ada@example.com", Some(other)).is_err(), "one per period past the burst");
    }

    #[test]
    fn a_client_is_refused_over_every_account_it_tries() {
        let clock = FakeRelativeClock::default();
        let t = LoginThrottle::with_clock(limits(), clock.clone());
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        for i in 0..5 {
            assert_eq!(t.failed(&format!("user{i}@example.com"), Some(ip)), Ok(()));
        }
        assert_eq!(t.failed("user5@example.com", Some(ip)), Err(1));
        assert_eq!(t.admit("anyone@example.com", Some(ip)), Err(1));
        assert_eq!(t.admit("anyone@example.com", Some("10.0.0.9".parse().expect("ip"))), Ok(()));
        clock.advance(Duration::from_secs(1));
        assert_eq!(t.admit("anyone@example.com", Some(ip)), Ok(()));
    }

    #[test]
    fn the_tables_stay_bounded() {
        let clock = FakeRelativeClock::default();
        let mut l = limits();
        l.client_burst = 10_000_000;
        let t = LoginThrottle::with_clock(l, clock.clone());
        for i in 0..(MAX_KEYS + 10) {
            let _ = t.failed(&format!("user{i}@example.com"), None);
        }
        let len = t.accounts.limiter.read().expect("lock").len();
        assert!(len <= MAX_KEYS, "{len}");
        clock.advance(Duration::from_secs(3 * 30));
        let _ = t.failed("last@example.com", None);
        for _ in 0..SWEEP_EVERY {
            let _ = t.failed("last@example.com", None);
        }
        let len = t.accounts.limiter.read().expect("lock").len();
        assert!(len < 10, "keys whose budget is whole again are dropped: {len}");
    }
}
