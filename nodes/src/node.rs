//! `playground node` and `playground gateway`: one cluster process serving the HTTP API until SIGINT or
//! SIGTERM. A node holds shards; a gateway holds none and routes every call to the nodes.
//!
//! SIGTERM on a node of a cluster first drains it (its replicas and leaderships move to the other
//! members, and it leaves the members), when the others can hold every shard's replicas; it keeps serving
//! meanwhile, for at most [`DRAIN_DEADLINE`]. SIGINT, or a cluster too small to hand the shards to, stops
//! at once: the node stays a member and comes back with its data.

use std::sync::Arc;
use std::time::Duration;

use actors::Cluster;
use anyhow::{Context, Result};
use cluster_config::Config;
use gateway::{Gateway, GatewayConfig};
use tokio::signal::unix::{signal, SignalKind};

use crate::settings;
use crate::NodeArgs;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Node,
    Gateway,
}

pub fn run(args: NodeArgs, kind: Kind) -> Result<()> {
    let config = settings::resolve(&args.config)?;
    crate::logging::init(config.log.format);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(if kind == Kind::Node { "node" } else { "gateway" })
        .build()
        .context("start the async runtime")?
        .block_on(serve(config, kind))
}

fn token_key(config: &Config) -> Result<Vec<u8>> {
    let data_dir = &config.node.data_dir;
    std::fs::create_dir_all(data_dir).with_context(|| format!("create data dir {}", data_dir.display()))?;
    Ok(match config.token_key()? {
        Some(key) => key,
        // Every member of a cluster must share the key: only a one-node cluster may make its own.
        None if config.cluster.seeds.is_empty() => {
            settings::load_or_create_secret(&data_dir.join("token.key"), 32)?.into_bytes()
        }
        None => anyhow::bail!(
            "security.token_key: a cluster with seeds needs the key every member shares (token_key or token_key_file)"
        ),
    })
}

async fn serve(config: Config, kind: Kind) -> Result<()> {
    let key = token_key(&config)?;
    let (cluster, stop): (Arc<Cluster>, _) = match kind {
        Kind::Node => {
            let node = actors::start_node(&config, key).await?;
            (node.cluster.clone(), Stopper::Node(node))
        }
        Kind::Gateway => {
            let gw = actors::start_gateway(&config, key).await?;
            (gw.cluster.clone(), Stopper::Gateway(gw))
        }
    };
    let listener = tokio::net::TcpListener::bind(config.node.http)
        .await
        .with_context(|| format!("node.http: cannot listen on {}", config.node.http))?;
    let addr = listener.local_addr()?;
    let gateway = Gateway::new(
        Arc::clone(&cluster),
        GatewayConfig {
            admin_token: config.security.admin_token.clone(),
            max_in_flight: config.limits.max_in_flight,
            request_timeout: config.limits.request_timeout,
            retry_after_secs: config.limits.retry_after_secs,
            rate_limit_per_second: config.limits.rate_limit_per_second,
            rate_limit_burst: config.limits.rate_limit_burst,
            max_password_requests: config.limits.max_password_requests,
            http: config.http.clone(),
            trusted_proxies: gateway::TrustedProxies::parse(&config.http.trusted_proxies)
                .map_err(|e| anyhow::anyhow!("http.trusted_proxies: {e}"))?,
            login_limits: gateway::LoginLimits {
                account_burst: config.security.login_account_burst,
                account_period: config.security.login_account_period,
                client_burst: config.security.login_client_burst,
                client_period: config.security.login_client_period,
            },
        },
    );
    tracing::info!(id = %config.node.id, http = %addr, shards = config.cluster.shards, "ready");
    // Scripts and the launcher wait for this line; it is the one thing printed on stdout.
    println!("listening on http://{addr}");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(gateway::serve(listener, Arc::clone(&gateway), async {
        let _ = stop_rx.await;
    }));
    let signal = wait_for_signal().await?;
    if signal == Signal::Terminate && kind == Kind::Node && !config.cluster.seeds.is_empty() {
        drain_before_exit(&cluster, &config.node.id).await;
    }
    tracing::info!("stopping: finishing requests in flight");
    let _ = stop_tx.send(());
    let _ = server.await;
    // The store closes with its last user: the API's handles go first.
    drop((gateway, cluster));
    match stop {
        Stopper::Node(node) => node.stop().await,
        Stopper::Gateway(gw) => gw.stop().await,
    }
    tracing::info!("stopped");
    Ok(())
}

enum Stopper {
    Node(actors::NodeHandle),
    Gateway(actors::GatewayHandle),
}

/// How long a node stopped with SIGTERM waits for its drain to finish before it stops anyway.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Signal {
    Terminate,
    Interrupt,
}

async fn wait_for_signal() -> Result<Signal> {
    let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    Ok(tokio::select! {
        _ = term.recv() => Signal::Terminate,
        _ = int.recv() => Signal::Interrupt,
    })
}

/// Drains this node and waits until it has left the members (or [`DRAIN_DEADLINE`] passed, or a second
/// signal came): see the module docs.
async fn drain_before_exit(cluster: &Cluster, me: &str) {
    match cluster.drain(me).await {
        Ok(()) => tracing::info!("draining: handing this node's shards to the other members before stopping"),
        Err(e) => {
            tracing::warn!(reason = %e, "stopping without draining");
            return;
        }
    }
    let left = async {
        while cluster.is_member() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        _ = left => tracing::info!("drained: this node holds no shard any more"),
        _ = tokio::time::sleep(DRAIN_DEADLINE) => tracing::warn!("drain not finished in time; stopping anyway"),
        _ = wait_for_signal() => tracing::warn!("second signal: stopping before the drain finished"),
    }
}
