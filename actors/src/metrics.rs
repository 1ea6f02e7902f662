//! Prometheus metrics of the actor layer (`playground_actor_*`), registered in the process-wide default
//! registry; storage, raft, transport and placement have their own, in their crates.

use std::sync::LazyLock;

use prometheus::{register, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts};

fn registered<C: prometheus::core::Collector + Clone + 'static>(c: C) -> C {
    // Registration fails only for a duplicate name, which these statics rule out.
    register(Box::new(c.clone())).expect("metric names are unique");
    c
}

pub static ACTIVATIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(
        IntCounterVec::new(
            Opts::new("playground_actor_activations_total", "Entity actors activated, by kind."),
            &["kind"],
        )
        .expect("valid metric"),
    )
});

pub static PASSIVATIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(
        IntCounterVec::new(
            Opts::new("playground_actor_passivations_total", "Entity actors passivated when idle, by kind."),
            &["kind"],
        )
        .expect("valid metric"),
    )
});

pub static RESTARTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(
        IntCounterVec::new(
            Opts::new(
                "playground_actor_restarts_total",
                "Actors restarted by their supervisor after a failure, by kind.",
            ),
            &["kind"],
        )
        .expect("valid metric"),
    )
});

pub static EVICTIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(
        IntCounterVec::new(
            Opts::new(
                "playground_actor_evictions_total",
                "Idle entity actors passivated because their shard reached limits.max_entities_per_shard, by kind.",
            ),
            &["kind"],
        )
        .expect("valid metric"),
    )
});

pub static ABSENT_ANSWERS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(
        IntCounterVec::new(
            Opts::new(
                "playground_actor_absent_answers_total",
                "Commands for an entity with nothing stored answered by its shard without activating an actor, by kind.",
            ),
            &["kind"],
        )
        .expect("valid metric"),
    )
});

pub static ACTIVE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    registered(
        IntGaugeVec::new(Opts::new("playground_actor_active", "Entity actors alive now, by kind."), &["kind"])
            .expect("valid metric"),
    )
});

pub static CALLS: LazyLock<HistogramVec> = LazyLock::new(|| {
    registered(
        HistogramVec::new(
            HistogramOpts::new(
                "playground_actor_call_duration_seconds",
                "Time of one call into a shard, by entity kind and outcome.",
            )
            .buckets(vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0]),
            &["kind", "outcome"],
        )
        .expect("valid metric"),
    )
});

/// Touches every metric so that each appears in `/metrics` from the start, at zero.
pub fn init() {
    for kind in ["user", "order", "email"] {
        ACTIVATIONS.with_label_values(&[kind]);
        PASSIVATIONS.with_label_values(&[kind]);
        RESTARTS.with_label_values(&[kind]);
        EVICTIONS.with_label_values(&[kind]);
        ABSENT_ANSWERS.with_label_values(&[kind]);
        ACTIVE.with_label_values(&[kind]);
    }
    RESTARTS.with_label_values(&["shard"]);
    LazyLock::force(&CALLS);
}
