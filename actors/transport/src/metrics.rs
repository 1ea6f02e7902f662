//! Prometheus metrics of the cluster transport, registered in the process-wide default registry like
//! `crate::metrics`. Every `peer` label is the id of a current peer, a seed or one added at run time (or
//! `other`), and a removed peer's series go with it, so label sets stay bounded as peers come and go.

use std::sync::LazyLock;

use prometheus::{register, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts};

fn registered<C: prometheus::core::Collector + Clone + 'static>(c: C) -> C {
    // Registration fails only for a duplicate name, which these statics rule out.
    register(Box::new(c.clone())).expect("metric names are unique");
    c
}

pub static PEER_UP: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    registered(
        IntGaugeVec::new(
            Opts::new("playground_transport_peer_up", "1 while the failure detector holds the peer up, else 0."),
            &["peer"],
        )
        .expect("valid metric"),
    )
});

pub static PEER_STATE_CHANGES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(
        IntCounterVec::new(
            Opts::new(
                "playground_transport_peer_state_changes_total",
                "Failure-detector state changes (up, suspect, down) of a peer.",
            ),
            &["peer"],
        )
        .expect("valid metric"),
    )
});

pub static AUTH_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(
        IntCounterVec::new(
            Opts::new(
                "playground_transport_auth_failures_total",
                "Cluster sessions closed during the cookie handshake, by peer (a cookie mismatch).",
            ),
            &["peer"],
        )
        .expect("valid metric"),
    )
});

pub static CALL_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    registered(
        HistogramVec::new(
            HistogramOpts::new(
                "playground_transport_call_duration_seconds",
                "Time of one call to a peer's endpoint, failures included, by peer.",
            )
            .buckets(vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0]),
            &["peer"],
        )
        .expect("valid metric"),
    )
});

pub static GUARD_REFUSED: LazyLock<IntCounter> = LazyLock::new(|| {
    registered(
        IntCounter::new(
            "playground_transport_guard_refused_total",
            "Cluster connections closed before authenticating: too many unauthenticated at once, or a frame \
             too large for an unauthenticated peer.",
        )
        .expect("valid metric"),
    )
});

/// Touches every peer's series so that each appears in `/metrics` from the start.
pub fn init(peers: &[String]) {
    LazyLock::force(&GUARD_REFUSED);
    for peer in peers {
        PEER_UP.with_label_values(&[peer]);
        PEER_STATE_CHANGES.with_label_values(&[peer]);
        AUTH_FAILURES.with_label_values(&[peer]);
        CALL_SECONDS.with_label_values(&[peer]);
    }
}

/// Drops a removed peer's series. A call to it that was under way may still record one last sample.
pub fn forget(peer: &str) {
    // An error only says the series did not exist.
    let _ = PEER_UP.remove_label_values(&[peer]);
    let _ = PEER_STATE_CHANGES.remove_label_values(&[peer]);
    let _ = AUTH_FAILURES.remove_label_values(&[peer]);
    let _ = CALL_SECONDS.remove_label_values(&[peer]);
}
