//! Identifiers, the key → shard hash, and wall-clock helpers.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Index of a shard, `0..shard_count`.
pub type ShardId = u32;

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

/// Milliseconds since the Unix epoch, the unit of every stored timestamp.
pub type Millis = i64;

/// Test-only: how far this process's wall clock is shifted, in ms (`faults.clock_skew_ms`), so that the
/// simulations can run a node whose clock is wrong. Set once at startup, before any timestamp is taken.
static CLOCK_SKEW_MS: AtomicI64 = AtomicI64::new(0);

/// Shifts every later [`now_millis`] by `ms` (`faults.clock_skew_ms`); 0 leaves the clock alone.
pub fn set_clock_skew(ms: Millis) {
    CLOCK_SKEW_MS.store(ms, Ordering::Relaxed);
}

/// The current wall-clock time in milliseconds (shifted by the test-only `faults.clock_skew_ms`, if set).
pub fn now_millis() -> Millis {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as Millis).unwrap_or(0);
    now.saturating_add(CLOCK_SKEW_MS.load(Ordering::Relaxed))
}

/// RFC 3339 in UTC with millisecond precision, as the API prints timestamps.
pub fn rfc3339(ms: Millis) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    at.format(&fmt).unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".to_owned())
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
            counts[shard_of(&new_id_like(i), 8) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (700..1300).contains(c)), "{counts:?}");
    }

    fn new_id_like(i: u32) -> String {
        format!("01J{i:023}")
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn ids_sort_by_creation_time() {
        let a = new_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_id();
        assert!(a < b);
        assert_eq!(a.len(), 26);
    }
}
