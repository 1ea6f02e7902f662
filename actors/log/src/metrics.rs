//! Prometheus metrics of the store's group commit (`playground_storage_*`), registered in the
//! process-wide default registry; the raft groups' are in `raft::metrics`.

use std::sync::LazyLock;

use prometheus::{register, Histogram, HistogramOpts, IntCounterVec, Opts};

fn registered<C: prometheus::core::Collector + Clone + 'static>(c: C) -> C {
    // Registration fails only for a duplicate name, which these statics rule out.
    register(Box::new(c.clone())).expect("metric names are unique");
    c
}

pub static COMMIT_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    registered(
        Histogram::with_opts(
            HistogramOpts::new(
                "playground_storage_commit_duration_seconds",
                "Time to apply one group commit and make it durable (flush plus fdatasync).",
            )
            .buckets(vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]),
        )
        .expect("valid metric"),
    )
});

pub static WRITE_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    registered(
        Histogram::with_opts(
            HistogramOpts::new(
                "playground_storage_write_duration_seconds",
                "Time from submitting one log entry to it being durable, queueing included.",
            )
            .buckets(vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]),
        )
        .expect("valid metric"),
    )
});

pub static BATCH_ENTRIES: LazyLock<Histogram> = LazyLock::new(|| {
    registered(
        Histogram::with_opts(
            HistogramOpts::new("playground_storage_batch_entries", "Log entries made durable by one group commit.")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0]),
        )
        .expect("valid metric"),
    )
});

pub static COMMITS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(
        IntCounterVec::new(
            Opts::new("playground_storage_commits_total", "Group commits, by outcome (ok or error)."),
            &["outcome"],
        )
        .expect("valid metric"),
    )
});

/// Touches every metric so that each appears in `/metrics` from the start, at zero.
pub fn init() {
    COMMITS.with_label_values(&["ok"]);
    COMMITS.with_label_values(&["error"]);
    LazyLock::force(&COMMIT_SECONDS);
    LazyLock::force(&WRITE_SECONDS);
    LazyLock::force(&BATCH_ENTRIES);
}
