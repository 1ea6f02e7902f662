//! The route table: every (method, path template) the gateway serves, and matching a request onto it.

use http::Method;

/// Every operation the gateway serves, as (METHOD, path template). The OpenAPI document lists exactly
/// these (a test checks both directions).
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/users"),
    ("GET", "/v1/users/{id}"),
    ("PATCH", "/v1/users/{id}"),
    ("DELETE", "/v1/users/{id}"),
    ("GET", "/v1/users/{id}/sessions"),
    ("GET", "/v1/users/{id}/orders"),
    ("POST", "/v1/sessions"),
    ("GET", "/v1/sessions/current"),
    ("DELETE", "/v1/sessions/current"),
    ("DELETE", "/v1/sessions/{session_id}"),
    ("POST", "/v1/orders"),
    ("GET", "/v1/orders/{id}"),
    ("POST", "/v1/orders/{id}/pay"),
    ("POST", "/v1/orders/{id}/ship"),
    ("POST", "/v1/orders/{id}/deliver"),
    ("POST", "/v1/orders/{id}/cancel"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/v1/cluster"),
    ("POST", "/v1/cluster/members/{id}/drain"),
];

/// Ids are at most 64 characters; a longer path segment can name nothing.
const MAX_ID_LEN: usize = 64;

/// A request matched to a route: its template (the `route` metrics label) and its path parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    pub method: &'static str,
    pub template: &'static str,
    pub param: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMatch {
    Found(Matched),
    /// The path exists, the method does not: the methods it takes, for `Allow`.
    WrongMethod(Vec<&'static str>),
    NotFound,
}

fn match_template(template: &str, path: &str) -> Option<Option<String>> {
    let mut param = None;
    let mut t = template.split('/');
    let mut p = path.split('/');
    loop {
        match (t.next(), p.next()) {
            (None, None) => return Some(param),
            (Some(ts), Some(ps)) if ts.starts_with('{') => {
                if ps.is_empty() || ps.len() > MAX_ID_LEN {
                    return None;
                }
                param = Some(ps.to_owned());
            }
            (Some(ts), Some(ps)) if ts == ps => {}
            _ => return None,
        }
    }
}

pub fn match_route(method: &Method, path: &str) -> RouteMatch {
    let mut allowed = vec![];
    // Literal segments win over parameters: `/v1/sessions/current` is not a session id.
    let mut best: Option<(bool, Matched)> = None;
    for (m, template) in ROUTES {
        let Some(param) = match_template(template, path) else { continue };
        if !allowed.contains(m) {
            allowed.push(*m);
        }
        if *m == method.as_str() {
            let literal = param.is_none();
            if best.as_ref().is_none_or(|(was_literal, _)| literal && !was_literal) {
                best = Some((literal, Matched { method: m, template, param }));
            }
        }
    }
    match best {
        Some((_, found)) => RouteMatch::Found(found),
        None if !allowed.is_empty() => RouteMatch::WrongMethod(allowed),
        None => RouteMatch::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(m: &str, path: &str) -> Matched {
        match match_route(&Method::from_bytes(m.as_bytes()).expect("method"), path) {
            RouteMatch::Found(f) => f,
            other => panic!("{m} {path}: {other:?}"),
        }
    }

    #[test]
    fn matches_templates_and_params() {
        assert_eq!(found("GET", "/v1/users/abc").template, "/v1/users/{id}");
        assert_eq!(found("GET", "/v1/users/abc").param.as_deref(), Some("abc"));
        assert_eq!(found("POST", "/v1/orders/o1/pay").template, "/v1/orders/{id}/pay");
        assert_eq!(found("DELETE", "/v1/sessions/current").template, "/v1/sessions/current");
        assert_eq!(found("DELETE", "/v1/sessions/s1").template, "/v1/sessions/{session_id}");
    }

    #[test]
    fn tells_wrong_method_from_unknown_path() {
        assert_eq!(match_route(&Method::PUT, "/v1/users/abc"), RouteMatch::WrongMethod(vec!["GET", "PATCH", "DELETE"]));
        assert_eq!(match_route(&Method::GET, "/v1/sessions/s1"), RouteMatch::WrongMethod(vec!["DELETE"]));
        assert_eq!(match_route(&Method::GET, "/v1/nope"), RouteMatch::NotFound);
        assert_eq!(match_route(&Method::GET, "/v1/users/"), RouteMatch::NotFound);
        assert_eq!(match_route(&Method::GET, "/v1/users/a/b"), RouteMatch::NotFound);
        assert_eq!(match_route(&Method::GET, &format!("/v1/users/{}", "x".repeat(65))), RouteMatch::NotFound);
    }
}
