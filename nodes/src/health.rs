//! `playground health`: one GET of a process's `/healthz` (or `/readyz`), exit status 0 when it answers
//! 2xx, 1 otherwise. Made for container health checks, where the image holds no curl or shell.
//!
//! Without `--url`, it asks this machine at the port of `PLAYGROUND_HTTP` (a wildcard address such as
//! `0.0.0.0` becomes loopback), else at the default `127.0.0.1:8080`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct HealthArgs {
    /// The URL to GET [default: /healthz at the address of PLAYGROUND_HTTP (0.0.0.0 read as
    /// 127.0.0.1), else http://127.0.0.1:8080/healthz].
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Ask /readyz (every shard has a leader) instead of /healthz (the process serves HTTP); ignored
    /// with --url.
    #[arg(long)]
    pub ready: bool,
    /// Give up after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 3)]
    pub timeout: u64,
}

pub fn run(args: HealthArgs) -> Result<()> {
    let url = match args.url {
        Some(url) => url,
        None => default_url(&|k| std::env::var(k).ok(), args.ready)?,
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?
        .block_on(check(&url, Duration::from_secs(args.timeout.max(1))))?;
    println!("healthy: {url}");
    Ok(())
}

/// The URL to ask when none is given: see the module docs.
pub fn default_url(env: &dyn Fn(&str) -> Option<String>, ready: bool) -> Result<String> {
    let path = if ready { "/readyz" } else { "/healthz" };
    let addr = match env("PLAYGROUND_HTTP").filter(|v| !v.trim().is_empty()) {
        Some(text) => text
            .trim()
            .parse::<SocketAddr>()
            .with_context(|| format!("PLAYGROUND_HTTP: {text:?} is not a socket address; pass --url"))?,
        None => cluster_config::DEFAULT_HTTP,
    };
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Ok(format!("http://{}{path}", SocketAddr::new(ip, addr.port())))
}

/// One GET: Ok on a 2xx answer within `timeout`.
pub async fn check(url: &str, timeout: Duration) -> Result<()> {
    // No proxy: a health check asks this machine, whatever HTTP_PROXY the container inherited.
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .context("build the HTTP client")?;
    let response = client.get(url).send().await.with_context(|| format!("GET {url}"))?;
    let status = response.status();
    if !status.is_success() {
        bail!("GET {url}: {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| pairs.iter().find(|(key, _)| *key == k).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn default_url_follows_playground_http() {
        assert_eq!(default_url(&env_of(&[]), false).expect("url"), "http://127.0.0.1:8080/healthz");
        assert_eq!(default_url(&env_of(&[]), true).expect("url"), "http://127.0.0.1:8080/readyz");
        let any = env_of(&[("PLAYGROUND_HTTP", "0.0.0.0:9101")]);
        assert_eq!(default_url(&any, false).expect("url"), "http://127.0.0.1:9101/healthz");
        let any6 = env_of(&[("PLAYGROUND_HTTP", "[::]:9102")]);
        assert_eq!(default_url(&any6, true).expect("url"), "http://[::1]:9102/readyz");
        let fixed = env_of(&[("PLAYGROUND_HTTP", "10.0.0.5:8081")]);
        assert_eq!(default_url(&fixed, false).expect("url"), "http://10.0.0.5:8081/healthz");
        assert!(default_url(&env_of(&[("PLAYGROUND_HTTP", "localhost")]), false).is_err());
    }

    /// A one-connection-at-a-time HTTP server answering every request with `status`.
    async fn serve(status: &'static str) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let reply = format!("HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
                let _ = socket.write_all(reply.as_bytes()).await;
                let _ = socket.shutdown().await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn passes_on_2xx_and_fails_otherwise() {
        let timeout = Duration::from_secs(2);
        let ok = serve("200 OK").await;
        check(&format!("http://{ok}/healthz"), timeout).await.expect("200 is healthy");
        let unavailable = serve("503 Service Unavailable").await;
        let e = check(&format!("http://{unavailable}/readyz"), timeout).await.expect_err("503 is not");
        assert!(e.to_string().contains("503"), "{e}");
        // Nothing listens on a port just released.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("addr");
        check(&format!("http://{closed}/healthz"), timeout).await.expect_err("nothing listens");
    }
}
