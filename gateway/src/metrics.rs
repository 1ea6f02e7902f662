//! Prometheus metrics of the HTTP layer.

use std::sync::LazyLock;

use prometheus::{register, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts};

fn registered<C: prometheus::core::Collector + Clone + 'static>(c: C) -> C {
    register(Box::new(c.clone())).expect("metric names are unique");
    c
}

pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(
        IntCounterVec::new(
            Opts::new(
                "playground_http_requests_total",
                "HTTP requests answered, by method, route template and status.",
            ),
            &["method", "route", "status"],
        )
        .expect("valid metric"),
    )
});

pub static DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    registered(
        HistogramVec::new(
            HistogramOpts::new(
                "playground_http_request_duration_seconds",
                "Time from receiving a request to its answer, by method and route template.",
            )
            .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["method", "route"],
        )
        .expect("valid metric"),
    )
});

pub static IN_FLIGHT: LazyLock<IntGauge> = LazyLock::new(|| {
    registered(IntGauge::new("playground_http_in_flight", "API requests being handled now.").expect("valid metric"))
});

pub static SHED: LazyLock<IntCounter> = LazyLock::new(|| {
    registered(
        IntCounter::new("playground_http_shed_total", "API requests refused with 503 because too many were in flight.")
            .expect("valid metric"),
    )
});

pub static RATE_LIMITED: LazyLock<IntCounter> = LazyLock::new(|| {
    registered(
        IntCounter::new(
            "playground_http_rate_limited_total",
            "API requests refused with 429 because their client was over its rate.",
        )
        .expect("valid metric"),
    )
});

/// The `method` label of a request: one of the methods HTTP defines, or `other`. A client picks the method
/// it sends, so taking it as it came would let anyone add series to `/metrics` without bound.
pub fn method_label(method: &http::Method) -> &'static str {
    use http::Method;
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
        Method::TRACE,
        Method::CONNECT,
    ];
    KNOWN.iter().find(|m| *m == method).map_or("other", |m| m.as_str())
}

pub static CONNECTIONS: LazyLock<IntGauge> = LazyLock::new(|| {
    registered(IntGauge::new("playground_http_connections", "HTTP connections open now.").expect("valid metric"))
});

pub static CONNECTIONS_REFUSED: LazyLock<IntCounter> = LazyLock::new(|| {
    registered(
        IntCounter::new(
            "playground_http_connections_refused_total",
            "HTTP connections closed on accept because http.max_connections were open.",
        )
        .expect("valid metric"),
    )
});

pub static CONNECTION_ERRORS: LazyLock<IntCounter> = LazyLock::new(|| {
    registered(
        IntCounter::new(
            "playground_http_connection_errors_total",
            "HTTP connections that ended with an error: malformed, reset, or too slow to send a request head.",
        )
        .expect("valid metric"),
    )
});

pub static BODY_TIMEOUTS: LazyLock<IntCounter> = LazyLock::new(|| {
    registered(
        IntCounter::new(
            "playground_http_body_timeouts_total",
            "Requests answered 408 because their body did not arrive within http.body_read_timeout.",
        )
        .expect("valid metric"),
    )
});

pub static LOGINS_THROTTLED: LazyLock<IntCounter> = LazyLock::new(|| {
    registered(
        IntCounter::new(
            "playground_http_logins_throttled_total",
            "Logins refused with 429 because their account or client address had too many failed logins.",
        )
        .expect("valid metric"),
    )
});

pub fn init() {
    LazyLock::force(&CONNECTIONS);
    LazyLock::force(&CONNECTIONS_REFUSED);
    LazyLock::force(&CONNECTION_ERRORS);
    LazyLock::force(&BODY_TIMEOUTS);
    LazyLock::force(&RATE_LIMITED);
    LazyLock::force(&LOGINS_THROTTLED);
    LazyLock::force(&REQUESTS);
    LazyLock::force(&DURATION);
    LazyLock::force(&IN_FLIGHT);
    LazyLock::force(&SHED);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_come_from_a_closed_set() {
        assert_eq!(method_label(&http::Method::PATCH), "PATCH");
        let made_up = http::Method::from_bytes(b"FROBNICATE").expect("a valid token");
        assert_eq!(method_label(&made_up), "other");
    }
}
