//! The HTTP gateway of Microservices Playground: the contract of docs/api.md over warp.
//!
//! It holds no state of record: every call goes to [`actors::Cluster`]. Here live the things that are
//! HTTP's alone: routing (`routes`), request bodies and their rules (`api`), the JSON views (`views`),
//! problem+json errors (`problem`), request ids, the body limit and deadline, content types,
//! `ETag`/`If-Match`, the bound on requests in flight, who the client is (`client_addr`), the listener's
//! deadlines and bounds (`listener`), and the HTTP metrics (`metrics`). The handlers of each route are in
//! `handlers`.
//!
//! Architecture invariant: the gateway never imports ractor, ractor_cluster, openraft or sled; it sees
//! the cluster only through [`actors::Cluster`] and the types of `playground_proto`.

mod api;
mod client_addr;
mod handlers;
mod listener;
mod login_throttle;
mod metrics;
mod problem;
mod rate_limit;
mod routes;
mod views;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::Cluster;
use bytes::{Buf, Bytes};
use futures::{Stream, StreamExt};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use playground_proto::ErrorCode;
use warp::filters::path::FullPath;
use warp::Filter;

pub use client_addr::TrustedProxies;
pub use listener::serve;
pub use login_throttle::LoginLimits;
pub use problem::Problem;
pub use routes::{match_route, RouteMatch, ROUTES};
pub use views::rfc3339;

/// Bodies over 256 KiB are refused (413).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// The OpenAPI 3.1 document served at `/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Sent on every answer: no content of any kind may load, and no page may frame an answer.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; frame-ancestors 'none'";

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub admin_token: Option<String>,
    pub max_in_flight: usize,
    pub request_timeout: Duration,
    pub retry_after_secs: u32,
    /// Requests per second allowed to one client address; 0 turns the limit off.
    pub rate_limit_per_second: u32,
    pub rate_limit_burst: u32,
    /// Requests that hash a password handled or waiting at once.
    pub max_password_requests: usize,
    /// The listener's deadlines and bounds.
    pub http: cluster_config::HttpConfig,
    /// Whose `Forwarded` / `X-Forwarded-For` is believed.
    pub trusted_proxies: TrustedProxies,
    pub login_limits: LoginLimits,
}

pub struct Gateway {
    cluster: Arc<Cluster>,
    config: GatewayConfig,
    in_flight: tokio::sync::Semaphore,
    /// Taken by the requests that hash a password, on top of their in-flight slot.
    password_requests: tokio::sync::Semaphore,
    rate_limit: Option<rate_limit::RateLimiter>,
    login_throttle: login_throttle::LoginThrottle,
}

impl Gateway {
    pub fn new(cluster: Arc<Cluster>, config: GatewayConfig) -> Arc<Self> {
        metrics::init();
        let in_flight = tokio::sync::Semaphore::new(config.max_in_flight);
        let rate_limit = rate_limit::RateLimiter::new(config.rate_limit_per_second, config.rate_limit_burst);
        let password_requests = tokio::sync::Semaphore::new(config.max_password_requests);
        let login_throttle = login_throttle::LoginThrottle::new(config.login_limits);
        Arc::new(Self { cluster, config, in_flight, password_requests, rate_limit, login_throttle })
    }
}

/// The whole API as one warp filter: one catch-all route, so that routing, 404, 405 and every error
/// body are decided in one place rather than in warp's rejection handling.
pub fn filter(
    gateway: Arc<Gateway>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    warp::any()
        .map(move || gateway.clone())
        .and(warp::ext::optional::<listener::Peer>())
        .and(warp::method())
        .and(warp::path::full())
        .and(query)
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(
            |gw: Arc<Gateway>,
             peer: Option<listener::Peer>,
             method: Method,
             path: FullPath,
             query: String,
             headers: HeaderMap,
             body| async move {
                let client = peer.map(|listener::Peer(addr)| gw.config.trusted_proxies.client(addr, &headers));
                handle(&gw, client, method, path.as_str(), query, headers, body).await
            },
        )
}

/// What a handler answers on success.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
    pub content_type: &'static str,
    pub etag: Option<u64>,
    pub location: Option<String>,
}

impl Answer {
    pub fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Self {
        let body = serde_json::to_vec(value).expect("API views serialize to JSON");
        Answer { status, body: body.into(), content_type: "application/json", etag: None, location: None }
    }

    pub fn no_content() -> Self {
        Answer { status: StatusCode::NO_CONTENT, body: Bytes::new(), content_type: "", etag: None, location: None }
    }

    pub fn etag(mut self, version: u64) -> Self {
        self.etag = Some(version);
        self
    }

    pub fn location(mut self, location: String) -> Self {
        self.location = Some(location);
        self
    }
}

/// A request as the handlers see it.
pub(crate) struct Request {
    pub method: &'static str,
    pub template: &'static str,
    pub param: Option<String>,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The client's address, as the rate limit sees it.
    pub client: Option<IpAddr>,
}

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| (1..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(playground_proto::new_id)
}

fn takes_body(method: &str, template: &str) -> bool {
    matches!(
        (method, template),
        ("POST", "/v1/users") | ("PATCH", "/v1/users/{id}") | ("POST", "/v1/sessions") | ("POST", "/v1/orders")
    )
}

/// The routes that hash a password (or may: a change of the user checks the current one).
fn hashes_a_password(method: &str, template: &str) -> bool {
    matches!((method, template), ("POST", "/v1/users") | ("PATCH", "/v1/users/{id}") | ("POST", "/v1/sessions"))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

/// The body, whole, within `deadline` (a client that sends it slower gets 408 and its connection
/// closed).
async fn read_body<S, B>(headers: &HeaderMap, body: S, deadline: Duration) -> Result<Bytes, Problem>
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    match tokio::time::timeout(deadline, read_body_whole(headers, body)).await {
        Ok(read) => read,
        Err(_) => {
            metrics::BODY_TIMEOUTS.inc();
            Err(Problem::new(
                ErrorCode::RequestTimeout,
                format!("the request body did not arrive within {} ms", deadline.as_millis()),
            ))
        }
    }
}

async fn read_body_whole<S, B>(headers: &HeaderMap, body: S) -> Result<Bytes, Problem>
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let too_large =
        || Problem::new(ErrorCode::PayloadTooLarge, format!("request bodies are limited to {MAX_BODY_BYTES} bytes"));
    let declared =
        headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let mut out = Vec::with_capacity(declared.unwrap_or(0) as usize);
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| Problem::bad_request(format!("the request body could not be read: {e}")))?;
        if out.len() + chunk.remaining() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            out.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(out.into())
}

async fn handle<S, B>(
    gw: &Gateway,
    client: Option<IpAddr>,
    method: Method,
    path: &str,
    query: String,
    headers: HeaderMap,
    body: S,
) -> warp::reply::Response
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let started = Instant::now();
    let rid = request_id(&headers);
    let (route, outcome) = match routes::match_route(&method, path) {
        RouteMatch::NotFound => ("unmatched", Err(Problem::new(ErrorCode::NotFound, format!("no route for {path}")))),
        RouteMatch::WrongMethod(allow) => {
            let mut p = Problem::new(ErrorCode::MethodNotAllowed, format!("{path} takes {}", allow.join(", ")));
            p.allow = allow;
            ("unmatched", Err(p))
        }
        RouteMatch::Found(m) => (m.template, admit(gw, client, m, query, headers, body).await),
    };
    let response = respond(outcome, &rid, gw.config.retry_after_secs);
    let status = response.status().as_u16().to_string();
    let method_label = metrics::method_label(&method);
    metrics::REQUESTS.with_label_values(&[method_label, route, &status]).inc();
    metrics::DURATION.with_label_values(&[method_label, route]).observe(started.elapsed().as_secs_f64());
    response
}

/// Admission: the client's rate limit and the in-flight bound for API calls, the body rules, then the
/// handler under a deadline.
async fn admit<S, B>(
    gw: &Gateway,
    client: Option<IpAddr>,
    m: routes::Matched,
    query: String,
    headers: HeaderMap,
    body: S,
) -> Result<Answer, Problem>
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let api_call = m.template.starts_with("/v1/");
    if let (true, Some(limiter), Some(ip)) = (api_call, &gw.rate_limit, client) {
        if let Err(wait) = limiter.check(ip) {
            metrics::RATE_LIMITED.inc();
            let mut p = Problem::new(ErrorCode::RateLimited, "this client is over its request rate");
            p.retry_after = Some(wait);
            return Err(p);
        }
    }
    // The body is read before a slot is taken: a client that sends it slowly holds its own
    // connection only, never one of the slots every other request needs.
    let body = if takes_body(m.method, m.template) {
        if !is_json(&headers) {
            return Err(Problem::new(
                ErrorCode::UnsupportedMediaType,
                "send the body as Content-Type: application/json",
            ));
        }
        read_body(&headers, body, gw.config.http.body_read_timeout).await?
    } else {
        Bytes::new()
    };
    let _permit = if api_call {
        match gw.in_flight.try_acquire() {
            Ok(p) => Some(p),
            Err(_) => {
                metrics::SHED.inc();
                return Err(Problem::new(ErrorCode::Unavailable, "too many requests in flight; retry later"));
            }
        }
    } else {
        None
    };
    let _password_slot = if hashes_a_password(m.method, m.template) {
        match gw.password_requests.try_acquire() {
            Ok(p) => Some(p),
            Err(_) => {
                metrics::SHED.inc();
                return Err(Problem::new(
                    ErrorCode::Unavailable,
                    "too many registrations and logins at once; retry later",
                ));
            }
        }
    } else {
        None
    };
    metrics::IN_FLIGHT.inc();
    let _gauge = scopeguard(|| metrics::IN_FLIGHT.dec());
    let req = Request { method: m.method, template: m.template, param: m.param, query, headers, body, client };
    // Each cluster call has its own timeout; this bounds a request made of several calls.
    let deadline = gw.config.request_timeout * 3;
    match tokio::time::timeout(deadline, handlers::dispatch(gw, &req)).await {
        Ok(result) => result,
        Err(_) => Err(playground_proto::ApiError::Timeout.into()),
    }
}

struct Guard<F: FnMut()>(F);
impl<F: FnMut()> Drop for Guard<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}
fn scopeguard<F: FnMut()>(f: F) -> Guard<F> {
    Guard(f)
}

fn respond(outcome: Result<Answer, Problem>, rid: &str, retry_after: u32) -> warp::reply::Response {
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(rid) {
        headers.insert(X_REQUEST_ID, v);
    }
    headers.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The API answers JSON and text only: nothing it sends may be sniffed into markup, run as script,
    // or framed.
    headers.insert(http::header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(http::header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    let (status, body) = match outcome {
        Ok(a) => {
            if !a.content_type.is_empty() {
                headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(a.content_type));
            }
            if let Some(v) = a.etag.and_then(|v| HeaderValue::from_str(&format!("\"{v}\"")).ok()) {
                headers.insert(http::header::ETAG, v);
            }
            if let Some(v) = a.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
                headers.insert(http::header::LOCATION, v);
            }
            (a.status, a.body)
        }
        Err(p) => {
            headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
            if p.retryable() {
                headers.insert(http::header::RETRY_AFTER, HeaderValue::from(p.retry_after.unwrap_or(retry_after)));
            }
            if !p.allow.is_empty() {
                if let Ok(v) = HeaderValue::from_str(&p.allow.join(", ")) {
                    headers.insert(http::header::ALLOW, v);
                }
            }
            if p.status() == StatusCode::UNAUTHORIZED {
                headers.insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            let body = serde_json::to_vec(&p.body(rid)).expect("problems serialize to JSON");
            (p.status(), Bytes::from(body))
        }
    };
    let mut response = warp::reply::Response::new(body.into());
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}
