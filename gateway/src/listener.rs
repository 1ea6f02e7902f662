//! The HTTP listener: HTTP/1.1 and cleartext HTTP/2 on one port, with the deadlines and bounds that keep
//! slow or idle clients from holding a node's resources (I8). warp's own server sets none of them.
//!
//! - A request's head must arrive within `header_read_timeout`; on a kept-alive HTTP/1.1 connection the
//!   wait for the next request counts too, so idle connections are closed after it.
//! - Bodies are read under `body_read_timeout` by the handler ([`crate::read_body`]), before a slot of
//!   `max_in_flight` is taken: a slow body holds its connection, never a request slot.
//! - At most `max_connections` connections are open; one more is closed as soon as it is accepted.
//! - An HTTP/2 connection has at most `h2_max_streams` streams open, and is pinged when idle so that a
//!   vanished peer's connection does not stay.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tower_service::Service;

use crate::{metrics, Gateway};

/// The connection's peer, as the listener saw it: what the filter reads the client's address from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub SocketAddr);

/// How long requests in flight get to finish once the listener is told to stop.
const DRAIN_REQUESTS: Duration = Duration::from_secs(10);
/// How often an idle HTTP/2 connection is pinged, and how long the answer may take.
const H2_PING_INTERVAL: Duration = Duration::from_secs(20);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the API on `listener` until `shutdown` completes, then lets requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let http = gateway.config.http.clone();
    let service = warp::service(crate::filter(gateway));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(http.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(http.h2_max_streams)
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT);
    let builder = Arc::new(builder);
    let connections = Arc::new(tokio::sync::Semaphore::new(http.max_connections));
    let graceful = GracefulShutdown::new();
    let errors = Arc::new(QuietLog::new(Duration::from_secs(10)));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors, most likely: accepting again at once would spin.
                    errors.warn(|n| tracing::warn!(error = %e, suppressed = n, "cannot accept a connection"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            metrics::CONNECTIONS_REFUSED.inc();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let per_request = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(Peer(peer));
            service.clone().call(req)
        });
        let builder = Arc::clone(&builder);
        let watcher = graceful.watcher();
        let errors = Arc::clone(&errors);
        let header_read_timeout = http.header_read_timeout;
        tokio::spawn(async move {
            metrics::CONNECTIONS.inc();
            let _gauge = Decrement(&metrics::CONNECTIONS);
            let _permit = permit;
            // Telling HTTP/1.1 from HTTP/2 waits for the first bytes, with no deadline of its own: a
            // connection that sends nothing gets the head's.
            let mut first = [0u8; 1];
            if !matches!(tokio::time::timeout(header_read_timeout, stream.peek(&mut first)).await, Ok(Ok(1..))) {
                metrics::CONNECTION_ERRORS.inc();
                return;
            }
            let connection = builder.serve_connection(TokioIo::new(stream), per_request);
            if let Err(e) = watcher.watch(connection).await {
                // A client's broken or timed-out connection is its own business: counted, and logged
                // at most once in a while, so that a flood of them cannot fill the disk.
                metrics::CONNECTION_ERRORS.inc();
                tracing::debug!(error = %e, %peer, "connection ended with an error");
                errors.warn(|n| tracing::info!(error = %e, %peer, suppressed = n, "a client connection failed"));
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_REQUESTS, graceful.shutdown()).await.is_err() {
        tracing::warn!("requests still in flight after {DRAIN_REQUESTS:?}; closing their connections");
    }
}

/// Takes one off a gauge when dropped, however the task holding it ends.
struct Decrement(&'static prometheus::IntGauge);

impl Drop for Decrement {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Lets one line through per `every`, counting the ones it held back.
struct QuietLog {
    every: Duration,
    started: Instant,
    /// Milliseconds after `started` when the last line went out, plus one (0: none yet).
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl QuietLog {
    fn new(every: Duration) -> Self {
        QuietLog { every, started: Instant::now(), last: AtomicU64::new(0), suppressed: AtomicU64::new(0) }
    }

    fn warn(&self, log: impl FnOnce(u64)) {
        let now = self.started.elapsed().as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= self.every.as_millis() as u64;
        if due && self.last.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            log(self.suppressed.swap(0, Ordering::Relaxed));
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_and_a_count_of_the_rest() {
        let quiet = QuietLog::new(Duration::from_secs(3600));
        let mut lines = vec![];
        for _ in 0..100 {
            quiet.warn(|n| lines.push(n));
        }
        assert_eq!(lines, vec![0], "the first goes out, the rest are held back");
        assert_eq!(quiet.suppressed.load(Ordering::Relaxed), 99);
        let quiet = QuietLog::new(Duration::ZERO);
        let mut lines = vec![];
        for _ in 0..3 {
            quiet.warn(|n| lines.push(n));
        }
        assert_eq!(lines.len(), 3);
    }
}
