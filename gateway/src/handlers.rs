//! One handler per route: decode the request, call the cluster, shape the answer.

use actors::{CallOptions, Principal};
use http::header::AUTHORIZATION;
use http::StatusCode;
use playground_proto::{ApiError, ErrorCode, OrderAction};
use serde::de::DeserializeOwned;

use crate::api::{validate_idempotency_key, CreateOrderRequest, CreateUserRequest, LoginRequest, UpdateUserRequest};
use crate::problem::Problem;
use crate::views::{NewSessionView, OrderPage, OrderView, SessionView, UserView};
use crate::{Answer, Gateway, Request, OPENAPI_JSON};

fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Problem::bad_request("a JSON body is required"));
    }
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| Problem::bad_request(format!("malformed JSON body: {e}")))?;
    // serde would also read a struct from an array, by position; the API takes objects only.
    if !value.is_object() {
        return Err(Problem::bad_request("the JSON body must be an object"));
    }
    // No request field is nullable: `null` is a wrong type, not an absent field.
    if let Some(path) = first_null(&value, String::new()) {
        return Err(Problem::bad_request(format!("{path} is null; leave a field out instead")));
    }
    serde_json::from_value(value).map_err(|e| Problem::bad_request(format!("wrong JSON type: {e}")))
}

fn first_null(value: &serde_json::Value, path: String) -> Option<String> {
    use serde_json::Value;
    match value {
        Value::Null => Some(path),
        Value::Object(map) => {
            map.iter().find_map(|(k, v)| first_null(v, if path.is_empty() { k.clone() } else { format!("{path}.{k}") }))
        }
        Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| first_null(v, format!("{path}[{i}]"))),
        _ => None,
    }
}

fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// `If-Match`: `*`, or a list of `"<version>"`. `None` asks for no check; a value that names no
/// version (malformed) matches nothing, so the write is refused rather than applied blindly.
fn if_match(req: &Request) -> Option<Vec<u64>> {
    let value = req.headers.get(http::header::IF_MATCH)?;
    let Ok(text) = value.to_str() else { return Some(vec![]) };
    if text.trim() == "*" {
        return None;
    }
    Some(
        text.split(',')
            .map(str::trim)
            .filter_map(|tag| tag.strip_prefix('"')?.strip_suffix('"')?.parse::<u64>().ok())
            .collect(),
    )
}

/// Test-only (`X-Fault-Inject: panic`): the entity that handles the request panics, where the node
/// allows it. Only a failpoints build reads the header.
#[cfg(feature = "failpoints")]
fn options(req: &Request) -> CallOptions {
    let panic = req
        .headers
        .get("x-fault-inject")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("panic"));
    CallOptions { fault: panic.then_some(playground_proto::Fault::Panic) }
}

#[cfg(not(feature = "failpoints"))]
fn options(_req: &Request) -> CallOptions {
    CallOptions::default()
}

fn param(req: &Request) -> &str {
    req.param.as_deref().unwrap_or_default()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

struct Page {
    limit: u32,
    cursor: Option<String>,
}

fn page(query: &str) -> Result<Page, Problem> {
    let mut page = Page { limit: 20, cursor: None };
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "limit" => {
                page.limit = v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or_else(|| Problem::bad_request("limit must be an integer from 1 to 100"))?;
            }
            "cursor" => {
                if v.len() != 26 || !v.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return Err(Problem::bad_request("cursor is not a cursor this API returned"));
                }
                page.cursor = Some(v.into_owned());
            }
            _ => {}
        }
    }
    Ok(page)
}

/// A login, or a change that sends a current password, refused for the wrong passwords before it, with
/// the seconds until one more may be tried.
fn too_many_failures(wait: u32) -> Problem {
    crate::metrics::LOGINS_THROTTLED.inc();
    let mut p = Problem::new(ErrorCode::RateLimited, "too many wrong passwords for this account or from this address");
    p.retry_after = Some(wait);
    p
}

/// Lets the call through only with the admin token from configuration.
fn admin_only(gw: &Gateway, req: &Request) -> Result<(), Problem> {
    let admitted = match (&gw.config.admin_token, bearer(req)) {
        (Some(admin), Some(given)) => constant_time_eq(admin.as_bytes(), given.as_bytes()),
        _ => false,
    };
    if admitted {
        Ok(())
    } else {
        Err(Problem::new(ErrorCode::Unauthorized, "this call takes the admin token"))
    }
}

pub(crate) async fn dispatch(gw: &Gateway, req: &Request) -> Result<Answer, Problem> {
    let cluster = &gw.cluster;
    match (req.method, req.template) {
        ("GET", "/healthz") => return Ok(Answer::json(StatusCode::OK, &serde_json::json!({"status": "ok"}))),
        ("GET", "/readyz") => {
            if cluster.draining() {
                let detail = "draining: this node is handing its shards to the other members";
                return Err(Problem::new(ErrorCode::Unavailable, detail));
            }
            return if cluster.ready().await {
                Ok(Answer::json(StatusCode::OK, &serde_json::json!({"status": "ready"})))
            } else {
                Err(Problem::new(ErrorCode::Unavailable, "not every shard has a leader yet"))
            };
        }
        ("GET", "/metrics") => {
            let text = prometheus::TextEncoder::new()
                .encode_to_string(&prometheus::gather())
                .map_err(|e| Problem::new(ErrorCode::Unavailable, e.to_string()))?;
            return Ok(Answer {
                status: StatusCode::OK,
                body: text.into(),
                content_type: "text/plain; version=0.0.4",
                etag: None,
                location: None,
            });
        }
        ("GET", "/openapi.json") => {
            return Ok(Answer {
                status: StatusCode::OK,
                body: OPENAPI_JSON.into(),
                content_type: "application/json",
                etag: None,
                location: None,
            });
        }
        ("GET", "/v1/cluster") => {
            admin_only(gw, req)?;
            return Ok(Answer::json(StatusCode::OK, &cluster.view().await));
        }
        ("POST", "/v1/cluster/members/{id}/drain") => {
            admin_only(gw, req)?;
            let id = req.param.clone().unwrap_or_default();
            cluster.drain(&id).await?;
            return Ok(Answer::json(StatusCode::ACCEPTED, &serde_json::json!({"member": id, "state": "draining"})));
        }
        ("POST", "/v1/users") => {
            let new = parse_json::<CreateUserRequest>(&req.body)?.validate()?;
            let user = UserView::from(&cluster.register(new).await?);
            let location = format!("/v1/users/{}", user.id);
            return Ok(Answer::json(StatusCode::CREATED, &user).etag(user.version).location(location));
        }
        ("POST", "/v1/sessions") => {
            let (email, password) = parse_json::<LoginRequest>(&req.body)?.validate()?;
            let key = playground_proto::email_key(&email);
            gw.login_throttle.admit(&key, req.client).map_err(too_many_failures)?;
            let session = match cluster.login(&email, password).await {
                Ok(session) => NewSessionView::from(&session),
                Err(ApiError::InvalidCredentials) => {
                    gw.login_throttle.failed(&key, req.client).map_err(too_many_failures)?;
                    return Err(ApiError::InvalidCredentials.into());
                }
                Err(e) => return Err(e.into()),
            };
            return Ok(Answer::json(StatusCode::CREATED, &session).location("/v1/sessions/current".to_owned()));
        }
        _ => {}
    }
    // Every other route is for a signed-in user. The body is checked before the token costs a call.
    let opts = options(req);
    let token = bearer(req).ok_or_else(|| Problem::from(ApiError::Unauthorized))?;
    match (req.method, req.template) {
        ("PATCH", "/v1/users/{id}") => {
            let changes = parse_json::<UpdateUserRequest>(&req.body)?.validate()?;
            // The session is checked before a guess at the current password is counted against the account.
            let (who, _) = cluster.authenticate(token, CallOptions::default()).await?;
            // Guessing the current password with a stolen session is throttled like guessing it at login,
            // under a key of its own: the account's id.
            let proof = changes.current_password.is_some().then(|| format!("user/{}", who.user_id));
            if let Some(key) = &proof {
                gw.login_throttle.admit(key, req.client).map_err(too_many_failures)?;
            }
            let rules = crate::api::password_rules(&changes);
            let updated = match cluster.update_user(&who, param(req), changes.clone(), if_match(req), opts, rules).await
            {
                Ok(updated) => updated,
                Err(ApiError::CurrentPasswordRequired) => {
                    if let Some(key) = &proof {
                        gw.login_throttle.failed(key, req.client).map_err(too_many_failures)?;
                    }
                    return Err(ApiError::CurrentPasswordRequired.into());
                }
                Err(e) => return Err(e.into()),
            };
            let user = UserView::from(&updated);
            Ok(Answer::json(StatusCode::OK, &user).etag(user.version))
        }
        ("POST", "/v1/orders") => {
            let order_req = parse_json::<CreateOrderRequest>(&req.body)?;
            let key = match req.headers.get("idempotency-key") {
                Some(v) => Some(
                    v.to_str()
                        .map_err(|_| Problem::bad_request("Idempotency-Key must be 1 to 128 visible ASCII characters"))?
                        .to_owned(),
                ),
                None => None,
            };
            if let Some(k) = &key {
                validate_idempotency_key(k)?;
            }
            let order = order_req.validate()?;
            let who = cluster.principal(token)?;
            let out = cluster.create_order(&who, order, key, opts).await?;
            let order = OrderView::from(&out.order);
            let location = format!("/v1/orders/{}", order.id);
            Ok(Answer::json(StatusCode::CREATED, &order).etag(order.version).location(location))
        }
        _ => {
            let who = cluster.principal(token)?;
            signed_in(gw, req, &who, opts).await
        }
    }
}

async fn signed_in(gw: &Gateway, req: &Request, who: &Principal, opts: CallOptions) -> Result<Answer, Problem> {
    let cluster = &gw.cluster;
    let id = param(req);
    let action = |a| async move {
        let order = OrderView::from(&cluster.order_action(who, id, a, if_match(req), opts).await?);
        Ok::<_, Problem>(Answer::json(StatusCode::OK, &order).etag(order.version))
    };
    match (req.method, req.template) {
        ("GET", "/v1/users/{id}") => {
            let user = UserView::from(&cluster.get_user(who, id, opts).await?);
            Ok(Answer::json(StatusCode::OK, &user).etag(user.version))
        }
        ("DELETE", "/v1/users/{id}") => {
            cluster.delete_user(who, id, opts).await?;
            Ok(Answer::no_content())
        }
        ("GET", "/v1/users/{id}/sessions") => {
            let items: Vec<SessionView> = cluster.list_sessions(who, id).await?.iter().map(SessionView::from).collect();
            Ok(Answer::json(StatusCode::OK, &serde_json::json!({ "items": items })))
        }
        ("GET", "/v1/users/{id}/orders") => {
            let p = page(&req.query)?;
            let orders = OrderPage::from(&cluster.list_orders(who, id, p.limit, p.cursor).await?);
            Ok(Answer::json(StatusCode::OK, &orders))
        }
        ("GET", "/v1/sessions/current") => {
            let session = cluster.current_session(who, opts).await?;
            Ok(Answer::json(StatusCode::OK, &SessionView::from(&session)))
        }
        ("DELETE", "/v1/sessions/current") => {
            cluster.logout(who).await?;
            Ok(Answer::no_content())
        }
        ("DELETE", "/v1/sessions/{session_id}") => {
            cluster.delete_session(who, id).await?;
            Ok(Answer::no_content())
        }
        ("GET", "/v1/orders/{id}") => {
            let order = OrderView::from(&cluster.get_order(who, id, opts).await?);
            Ok(Answer::json(StatusCode::OK, &order).etag(order.version))
        }
        ("POST", "/v1/orders/{id}/pay") => action(OrderAction::Pay).await,
        ("POST", "/v1/orders/{id}/ship") => action(OrderAction::Ship).await,
        ("POST", "/v1/orders/{id}/deliver") => action(OrderAction::Deliver).await,
        ("POST", "/v1/orders/{id}/cancel") => action(OrderAction::Cancel).await,
        (method, template) => {
            Err(Problem::new(ErrorCode::MethodNotAllowed, format!("{method} {template} is not served")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req_with(header: (&'static str, &'static str)) -> Request {
        let mut headers = http::HeaderMap::new();
        headers.insert(header.0, http::HeaderValue::from_static(header.1));
        Request {
            method: "GET",
            template: "/",
            param: None,
            query: String::new(),
            headers,
            body: bytes::Bytes::new(),
            client: None,
        }
    }

    #[test]
    fn if_match_takes_star_lists_and_refuses_garbage() {
        assert_eq!(if_match(&req_with(("if-match", "*"))), None);
        assert_eq!(if_match(&req_with(("if-match", "\"3\""))), Some(vec![3]));
        assert_eq!(if_match(&req_with(("if-match", "\"3\", \"4\""))), Some(vec![3, 4]));
        assert_eq!(if_match(&req_with(("if-match", "3"))), Some(vec![]));
        assert_eq!(if_match(&req_with(("x-other", "1"))), None);
    }

    #[test]
    fn bearer_tokens_are_read_case_insensitively() {
        assert_eq!(bearer(&req_with(("authorization", "Bearer abc"))), Some("abc"));
        assert_eq!(bearer(&req_with(("authorization", "bearer abc"))), Some("abc"));
        assert_eq!(bearer(&req_with(("authorization", "Basic abc"))), None);
    }

    #[test]
    fn bodies_must_be_objects_without_nulls() {
        assert!(parse_json::<serde_json::Value>(b"[1]").is_err());
        assert!(parse_json::<serde_json::Value>(b"   ").is_err());
        let e = parse_json::<serde_json::Value>(br#"{"items":[{"sku":null}]}"#).expect_err("null");
        assert!(e.detail.contains("items[0].sku"), "{}", e.detail);
        assert!(parse_json::<serde_json::Value>(br#"{"a":1}"#).is_ok());
    }

    #[test]
    fn pages_are_bounded() {
        assert_eq!(page("").expect("default").limit, 20);
        assert_eq!(page("limit=100").expect("max").limit, 100);
        assert!(page("limit=0").is_err());
        assert!(page("limit=101").is_err());
        assert!(page("limit=abc").is_err());
        assert!(page("cursor=short").is_err());
        assert_eq!(
            page("cursor=01ARZ3NDEKTSV4RRFFQ69G5FAV").expect("cursor").cursor.as_deref(),
            Some("01ARZ3NDEKTSV4RRFFQ69G5FAV")
        );
    }
}
