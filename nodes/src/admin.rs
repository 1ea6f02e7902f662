//! `playground admin`: operations on a running cluster through any gateway's (or node's) HTTP API, with
//! the admin token.
//!
//! - `drain NODE`: `POST /v1/cluster/members/NODE/drain`. The node takes no new replicas, hands its
//!   replicas and leaderships to the other members, and leaves the members once it holds nothing.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

#[derive(Args, Debug, Clone)]
pub struct AdminArgs {
    #[command(subcommand)]
    pub command: AdminCommand,
    /// Base URL of a gateway or node.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080", global = true)]
    pub url: String,
    /// The admin token (security.admin_token) [env: PLAYGROUND_ADMIN_TOKEN]; `playground up` keeps it in
    /// DATA_DIR/admin.token.
    #[arg(long, value_name = "TOKEN", env = "PLAYGROUND_ADMIN_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
}

#[derive(Subcommand, Debug, Clone)]
pub enum AdminCommand {
    /// Retire a node: move its shard replicas and leaderships to the other members, then drop it from
    /// the members. Returns once the drain has started; watch GET /v1/cluster for its end.
    Drain {
        /// The node's id (e.g. node-4).
        #[arg(value_name = "NODE")]
        node: String,
    },
}

pub fn run(args: AdminArgs) -> Result<()> {
    let token = args
        .token
        .clone()
        .filter(|t| !t.trim().is_empty())
        .context("--token: the admin token is needed (or PLAYGROUND_ADMIN_TOKEN)")?;
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("start the async runtime")?.block_on(
        async {
            match &args.command {
                AdminCommand::Drain { node } => drain(&args.url, token.trim(), node).await,
            }
        },
    )
}

async fn drain(base: &str, token: &str, node: &str) -> Result<()> {
    let url = format!("{}/v1/cluster/members/{node}/drain", base.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .context("build the HTTP client")?;
    let response = client.post(&url).bearer_auth(token).send().await.with_context(|| format!("POST {url}"))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if status.as_u16() != 202 {
        let detail = body["detail"].as_str().unwrap_or("no detail");
        bail!("drain {node}: {status} {}: {detail}", body["code"].as_str().unwrap_or("error"));
    }
    println!("{node} is draining: its replicas and leaderships move to the other members");
    Ok(())
}
