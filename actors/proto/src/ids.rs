//! Identifiers, the key → shard hash, and the clock every stored timestamp comes from.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Index of a shard, `0..shard_count`; the metadata group is `shard_count`.
pub type ShardId = u32;

/// A member of a raft group: [`crate::node_id_of`] its name. Node ids are per cluster, not per shard.
pub type NodeId = u64;

/// Milliseconds since the Unix epoch, the unit of every stored timestamp.
pub type Millis = i64;

/// Stable FNV-1a hash of a key onto a shard. Stable across processes, versions and platforms, which
/// `DefaultHasher` is not: a key must land on the same shard forever, since shards are the unit of
/// placement and their data lives on disk.
pub fn shard_of(key: &str, shard_count: u32) -> ShardId {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = key.as_bytes().iter().fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME));
    // FNV's high bits mix poorly for short keys; a splitmix64 finalizer spreads them.
    let mut z = hash;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    let hash = z ^ (z >> 31);
    // Multiply-shift maps the full 64-bit range evenly, unlike `%` on a small modulus.
    ((u128::from(hash) * u128::from(shard_count.max(1))) >> 64) as ShardId
}

/// A new identifier: a ULID, 26 characters, sortable by creation time.
pub fn new_id() -> String {
    ulid::Ulid::new().to_string()
}

/// The key an email is unique under: trimmed and lower-cased.
pub fn email_key(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Where the time comes from: a seam, so that a test or a simulation can run a process whose clock is
/// wrong without touching the code that reads it.
pub trait Clock: Send + Sync + 'static {
    fn now_millis(&self) -> Millis;
}

/// The machine's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> Millis {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as Millis).unwrap_or(0)
    }
}

/// The wall clock shifted by a fixed offset: a node whose clock is wrong (`faults.clock_skew_ms`).
#[cfg(feature = "failpoints")]
#[derive(Debug, Clone, Copy)]
pub struct SkewedClock(pub Millis);

#[cfg(feature = "failpoints")]
impl Clock for SkewedClock {
    fn now_millis(&self) -> Millis {
        SystemClock.now_millis().saturating_add(self.0)
    }
}

static CLOCK: OnceLock<Box<dyn Clock>> = OnceLock::new();

/// Makes `clock` the process's clock for every later [`now_millis`]. Installed once, at start-up, before
/// any timestamp is taken; a second call changes nothing and returns false.
pub fn install_clock(clock: Box<dyn Clock>) -> bool {
    CLOCK.set(clock).is_ok()
}

/// The current time in milliseconds, from the installed clock (the wall clock when none is).
pub fn now_millis() -> Millis {
    match CLOCK.get() {
        Some(clock) => clock.now_millis(),
        None => SystemClock.now_millis(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_hash_is_stable_and_in_range() {
        // Pinned values: changing the hash would move every stored key to another shard.
        assert_eq!(shard_of("alice@example.com", 64), shard_of("alice@example.com", 64));
        let pinned: Vec<u32> = ["a", "b", "user-1", "01HZX"].iter().map(|k| shard_of(k, 64)).collect();
        assert_eq!(pinned, vec![0, 15, 49, 33]);
        for i in 0..1000 {
            assert!(shard_of(&format!("key-{i}"), 7) < 7);
        }
    }

    #[test]
    fn shard_hash_spreads_keys() {
        let mut counts = [0u32; 8];
        for i in 0..8000 {
            counts[shard_of(&format!("01J{i:023}"), 8) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (700..1300).contains(c)), "{counts:?}");
    }

    #[test]
    fn ids_sort_by_creation_time() {
        let a = new_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_id();
        assert!(a < b);
        assert_eq!(a.len(), 26);
    }

    #[test]
    fn email_keys_ignore_case_and_outer_space() {
        assert_eq!(email_key(" Alice@Example.COM "), "alice@example.com");
    }
}
