//! Helpers the simulations and the benchmarks share, so that each exists once: the product binary they
//! run, free ports, the commit a report was made from, durations as milliseconds, and the order
//! statistics of the reports.

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

/// The `playground` binary a lab binary runs: `given` (its `--binary` flag), else the `playground` next
/// to the running executable, where a build puts both.
pub fn product_binary(given: Option<PathBuf>) -> Result<PathBuf> {
    let binary = match given {
        Some(path) => path,
        None => std::env::current_exe().context("the path of this binary")?.with_file_name("playground"),
    };
    anyhow::ensure!(
        binary.is_file(),
        "no playground binary at {} (build it with `cargo build -p nodes`, or give --binary PATH)",
        binary.display()
    );
    Ok(binary)
}

/// A free loopback port for a member's cluster listener, below Linux's ephemeral range (32768 and up): a
/// port handed out by `bind(0)` and released could be taken by any outgoing connection before the member
/// binds it, and many connections are opening while clusters start in parallel tests.
pub fn free_port() -> Result<u16> {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    for _ in 0..200 {
        let port = rng.gen_range(20_000..32_000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The commit of the working directory (`git rev-parse HEAD`), so that a report says what it measured;
/// `None` outside a repository or without git.
pub fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git").args(["rev-parse", "HEAD"]).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}

/// `d` in milliseconds, fractions kept: the unit of every reported time.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The nearest-rank `q`-quantile of `sorted` (ascending): the smallest value with at least `q` of the
/// values at or below it, always one of the values; `None` when there are none.
pub fn nearest_rank<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    Some(sorted[i])
}

/// The middle of sorted `values`, or the mean of the two middle ones.
pub fn median(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// The lower of the two middle values (the middle one of an odd count), for values that cannot be
/// averaged; `values` need not be sorted.
pub fn lower_median<T: Copy + PartialOrd>(mut values: Vec<T>) -> Option<T> {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    values.get(values.len().saturating_sub(1) / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_ranks_are_values_of_the_set() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(
            (nearest_rank(&v, 0.50), nearest_rank(&v, 0.99), nearest_rank(&v, 1.0)),
            (Some(50), Some(99), Some(100))
        );
        assert_eq!(nearest_rank(&v, 0.0), Some(1));
        assert_eq!(nearest_rank::<u64>(&[], 0.5), None);
    }

    #[test]
    fn medians_average_or_pick_the_lower_middle() {
        assert_eq!(median(&[1.0, 2.0, 4.0]), Some(2.0));
        assert_eq!(median(&[1.0, 2.0, 4.0, 10.0]), Some(3.0));
        assert_eq!(median(&[]), None);
        assert_eq!(lower_median(vec![3, 1, 2]), Some(2));
        assert_eq!(lower_median(vec![4, 1, 3, 2]), Some(2));
        assert_eq!(lower_median::<u64>(vec![]), None);
    }

    #[test]
    fn millis_keep_fractions() {
        assert_eq!(millis(Duration::from_micros(1500)), 1.5);
    }
}
