//! An HTTP client for the API, with the few conveniences the tests repeat: JSON bodies, bearer tokens,
//! extra headers, and responses read whole.

use std::time::Duration;

use anyhow::{Context, Result};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::Value;

#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
}

impl Response {
    /// The body as JSON (`Value::Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The problem `code` of an error response.
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_owned()
    }

    /// A string field of the JSON body.
    pub fn field(&self, name: &str) -> String {
        self.json()[name].as_str().unwrap_or_default().to_owned()
    }
}

async fn read(req: reqwest::RequestBuilder, method: &Method, path: &str) -> Result<Response> {
    let resp = req.send().await.with_context(|| format!("{method} {path}"))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await?;
    Ok(Response { status, headers, text })
}

impl Api {
    pub fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build()
            .expect("a client with no TLS and default settings builds");
        Api { base: base.trim_end_matches('/').to_owned(), http }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request with everything a test may set.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Response> {
        let mut req = self.http.request(method.clone(), format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        read(req, &method, path).await
    }

    /// A request with a raw body and content type, for the malformed-input tests.
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<Response> {
        let mut req = self.http.request(method.clone(), format!("{}{path}", self.base)).body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        read(req, &method, path).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Result<Response> {
        self.send(Method::GET, path, token, None, &[]).await
    }

    /// Waits until `/readyz` answers 200. A process listens (and `/healthz` answers) before its shards
    /// have leaders and it knows the cluster's record; until then `/readyz` is 503, as a probe expects.
    pub async fn wait_ready(&self, deadline: Duration) -> Result<()> {
        crate::eventually(deadline, &format!("{} is ready", self.base), || async {
            (self.get("/readyz", None).await.ok()?.status == 200).then_some(())
        })
        .await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Result<Response> {
        self.send(Method::POST, path, token, Some(body), &[]).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Result<Response> {
        self.send(Method::DELETE, path, token, None, &[]).await
    }

    /// Registers a user; returns its id.
    pub async fn register(&self, email: &str, password: &str) -> Result<String> {
        let r = self
            .post("/v1/users", None, &serde_json::json!({"email": email, "name": "Test User", "password": password}))
            .await?;
        anyhow::ensure!(r.status == 201, "register {email}: {} {}", r.status, r.text);
        Ok(r.field("id"))
    }

    /// Logs in; returns the token.
    pub async fn login(&self, email: &str, password: &str) -> Result<String> {
        let r = self.post("/v1/sessions", None, &serde_json::json!({"email": email, "password": password})).await?;
        anyhow::ensure!(r.status == 201, "login {email}: {} {}", r.status, r.text);
        Ok(r.field("token"))
    }

    /// Registers and logs in; returns (user id, token).
    pub async fn signup(&self, email: &str) -> Result<(String, String)> {
        let id = self.register(email, "correct horse battery").await?;
        let token = self.login(email, "correct horse battery").await?;
        Ok((id, token))
    }

    /// Creates an order of one item; returns the response.
    pub async fn create_order(&self, token: &str, sku: &str, idempotency_key: Option<&str>) -> Result<Response> {
        let body = serde_json::json!({"items": [{"sku": sku, "quantity": 2, "unit_price_cents": 150}]});
        let headers: Vec<(&str, &str)> = idempotency_key.map(|k| ("idempotency-key", k)).into_iter().collect();
        self.send(Method::POST, "/v1/orders", Some(token), Some(&body), &headers).await
    }

    /// The value of one sample of `/metrics` (summed over every label set matching `selector`).
    pub async fn metric(&self, name: &str, selector: &str) -> Result<f64> {
        let text = self.get("/metrics", None).await?.text;
        Ok(text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']) && l.contains(selector))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }
}
