//! Starting a process's part of the cluster.
//!
//! - [`start_node`]: open the store, start the shards' logs, the shard supervisor and, with peers, the
//!   cluster transport, and hand back the [`Cluster`] handle. A one-node cluster (no seeds) runs its
//!   log as `cluster.log` says; a cluster with seeds always replicates with raft.
//! - [`start_gateway`]: the transport and a [`Cluster`] that routes every call to the nodes.
//!
//! Both run a metadata keeper (`crate::meta`): on a node it bootstraps the cluster's metadata record when
//! the node leads the metadata group, and keeps the router's placement in step with the record.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cluster_config::{Config, LogEngine};
use futures::future::BoxFuture;
use ractor::{Actor, ActorRef};

use crate::cluster::{self, Cluster, ClusterSettings, LocalShards, Peer, Remote, RemoteError, ReplicasHandler, Router};
use crate::codec;
use crate::entity::{EntityCtx, Settings};
use crate::meta::{self, ClusterMeta};
use crate::node::{ShardSupervisor, ShardSupervisorArgs, ShardSupervisorMsg, ShardTable};
use crate::placement_driver::{Driver, DriverSettings};
use crate::protocol::Request;
use crate::raft::{placement, RaftLog, RaftSettings, RaftStartError, RaftTransport};
use crate::security::{Passwords, Tokens};
use crate::store::{LocalLog, ShardLog, Store};
use crate::transport::{CallHandler, PeerState, Role, Transport, TransportConfig, TransportError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the store in {dir}: {reason}")]
    Store { dir: String, reason: String },
    #[error("security.argon2_*: {0}")]
    Argon2(String),
    #[error("cannot start the shard supervisor: {0}")]
    Actors(String),
    #[error("cannot start the shards' raft groups: {0}")]
    Raft(#[from] RaftStartError),
    #[error("cluster.listen: cannot start the cluster transport: {0}")]
    Transport(#[from] TransportError),
    #[error("cluster.seeds: {0}")]
    Membership(String),
}

/// A running node. Dropping it leaves the actors running; call [`NodeHandle::stop`] to end them.
pub struct NodeHandle {
    pub cluster: Arc<Cluster>,
    supervisor: ActorRef<ShardSupervisorMsg>,
    join: tokio::task::JoinHandle<()>,
    raft: Option<Arc<RaftLog>>,
    transport: Option<Arc<Transport>>,
    keeper: tokio::task::JoinHandle<()>,
    driver: Option<tokio::task::JoinHandle<()>>,
}

impl NodeHandle {
    /// Stops every actor and waits until they are gone, so that no write is in flight afterwards.
    pub async fn stop(self) {
        // First, so that no bootstrap or placement write is on its way into the metadata group either.
        self.keeper.abort();
        let _ = self.keeper.await;
        if let Some(driver) = self.driver {
            driver.abort();
            let _ = driver.await;
        }
        self.supervisor.stop(Some("node stopping".into()));
        let _ = self.join.await;
        // After the entities, so that no append is still on its way into a group.
        if let Some(raft) = self.raft {
            raft.shutdown().await;
        }
        if let Some(transport) = self.transport {
            transport.stop().await;
        }
    }
}

/// A running gateway: a [`Cluster`] with no shards of its own.
pub struct GatewayHandle {
    pub cluster: Arc<Cluster>,
    transport: Arc<Transport>,
    keeper: tokio::task::JoinHandle<()>,
}

impl GatewayHandle {
    pub async fn stop(self) {
        self.keeper.abort();
        let _ = self.keeper.await;
        self.transport.stop().await;
    }
}

/// The transport as routing sees it.
struct TransportRemote(Arc<Transport>);

impl Remote for TransportRemote {
    fn call(
        &self,
        node: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, RemoteError>> {
        let (transport, node) = (self.0.clone(), node.to_owned());
        Box::pin(async move {
            transport.call(&node, payload, timeout).await.map_err(|e| match e {
                // Never reached the peer: another replica may take the call.
                TransportError::NotConnected { .. }
                | TransportError::PeerDown { .. }
                | TransportError::Overloaded { .. }
                | TransportError::Stopped
                | TransportError::Start(_) => RemoteError::NotDelivered(node),
                TransportError::Timeout { .. } | TransportError::Lost { .. } | TransportError::Remote { .. } => {
                    RemoteError::NoAnswer(node)
                }
            })
        })
    }

    fn add_peer(&self, id: &str, addr: &str) {
        match cluster_config::parse_seed(&format!("{id}@{addr}")) {
            Ok(seed) => {
                if self.0.add_peer(&seed.id, seed.addr) {
                    tracing::info!(peer = id, addr, "new cluster member");
                }
            }
            Err(e) => tracing::warn!(peer = id, addr, error = %e, "a member's address is unusable"),
        }
    }

    fn peers(&self) -> Vec<Peer> {
        self.0
            .peers()
            .into_iter()
            .map(|p| Peer {
                id: p.id,
                addr: p.addr.to_string(),
                state: match p.state {
                    PeerState::Up => "up",
                    PeerState::Suspect => "suspect",
                    PeerState::Down => "down",
                },
            })
            .collect()
    }
}

/// Raft messages ride the cluster transport, wrapped as [`Request::Raft`].
struct TransportRaft(Arc<Transport>);

impl RaftTransport for TransportRaft {
    fn send(&self, to: &str, payload: Vec<u8>, timeout: Duration) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        let (transport, to) = (self.0.clone(), to.to_owned());
        Box::pin(async move {
            transport.call(&to, codec::encode(&Request::Raft(payload)), timeout).await.map_err(|e| e.to_string())
        })
    }
}

/// Answers peers once the node is up; until then every request is answered "not here", which callers
/// route around (and raft treats as an unreachable peer).
#[derive(Default)]
struct LateHandler {
    ready: OnceLock<(Arc<Router>, Arc<RaftLog>, Arc<Driver>)>,
}

impl CallHandler for LateHandler {
    fn handle(&self, payload: Vec<u8>) -> BoxFuture<'static, Vec<u8>> {
        match self.ready.get() {
            Some((router, raft, driver)) => {
                let (raft, driver) = (raft.clone(), driver.clone());
                let replicas: ReplicasHandler = Arc::new(move |op| {
                    let driver = driver.clone();
                    Box::pin(async move { driver.handle(op).await })
                });
                cluster::answer(
                    router.clone(),
                    Some(Arc::new(move |bytes| raft.handle_rpc(bytes))),
                    Some(replicas),
                    payload,
                )
            }
            None => Box::pin(async {
                codec::encode::<crate::protocol::ShardAnswer>(&Err(crate::error::ApiError::NotLeader {
                    shard: 0,
                    leader: None,
                }))
            }),
        }
    }
}

fn transport_config(config: &Config, role: Role) -> Result<TransportConfig, StartError> {
    let cookie = config
        .cluster
        .cookie
        .clone()
        .ok_or_else(|| StartError::Membership("a cluster with seeds needs cluster.cookie".into()))?;
    Ok(TransportConfig {
        id: config.node.id.clone(),
        role,
        listen: config.cluster.listen,
        seeds: config.cluster.seed_list(),
        cookie,
        heartbeat_interval: config.cluster.heartbeat_interval,
        failure_timeout: config.cluster.failure_timeout,
    })
}

fn members(config: &Config) -> Vec<String> {
    let seeds: Vec<String> = config.cluster.seed_list().into_iter().map(|s| s.id).collect();
    if seeds.is_empty() {
        vec![config.node.id.clone()]
    } else {
        seeds
    }
}

fn passwords(config: &Config) -> Result<Passwords, StartError> {
    let sec = &config.security;
    Passwords::new(sec.argon2_memory_kib, sec.argon2_iterations, sec.argon2_parallelism).map_err(StartError::Argon2)
}

fn cluster_settings(config: &Config) -> ClusterSettings {
    ClusterSettings {
        node_id: config.node.id.clone(),
        addr: if config.cluster.seeds.is_empty() {
            config.node.http.to_string()
        } else {
            config.cluster.listen.to_string()
        },
        call_timeout: config.limits.request_timeout,
        session_ttl: config.sessions.ttl,
    }
}

pub async fn start_node(config: &Config, token_key: Vec<u8>) -> Result<NodeHandle, StartError> {
    crate::metrics::init();
    crate::ids::set_clock_skew(config.faults.clock_skew_ms);
    let shards = config.cluster.shards;
    let me = config.node.id.clone();
    // Present from the start, at zero, so that dashboards find them on every node.
    crate::metrics::REPLICAS_PER_NODE.with_label_values(&[&me]);
    crate::metrics::LEADERS_PER_NODE.with_label_values(&[&me]);
    let members = members(config);
    let dir = config.node.data_dir.join("store");
    let store = Store::open(&dir, shards)
        .map_err(|e| StartError::Store { dir: dir.display().to_string(), reason: e.to_string() })?;
    // A node outside the seeds joins the cluster they form.
    let clustered = members.len() > 1 || !members.contains(&me);
    let handler = Arc::new(LateHandler::default());
    let transport = if clustered {
        Some(Transport::start(transport_config(config, Role::Node)?, Some(handler.clone())).await?)
    } else {
        None
    };
    if let Some(t) = &transport {
        look_for_a_running_cluster(t, &store, config).await?;
    }
    let (log, raft): (Arc<dyn ShardLog>, _) = match (&transport, config.cluster.log) {
        (None, LogEngine::Local) => (Arc::new(LocalLog::new(store.clone(), me.clone())), None),
        (None, LogEngine::Raft) => {
            let raft = RaftLog::start(store.clone(), RaftSettings::single(me.clone())).await?;
            (raft.clone(), Some(raft))
        }
        (Some(t), _) => {
            let settings = RaftSettings::from_config(config, Arc::new(TransportRaft(t.clone())));
            let raft = RaftLog::start(store.clone(), settings).await?;
            (raft.clone(), Some(raft))
        }
    };
    if config.faults.panic_injection || config.faults.break_idempotency || config.faults.clock_skew_ms != 0 {
        tracing::warn!(
            panic_injection = config.faults.panic_injection,
            break_idempotency = config.faults.break_idempotency,
            clock_skew_ms = config.faults.clock_skew_ms,
            "test-only fault switches are on: never run this configuration in production"
        );
    }
    let settings = Arc::new(Settings {
        panic_injection: config.faults.panic_injection,
        break_idempotency: config.faults.break_idempotency,
    });
    let ctxs = (0..shards)
        .map(|shard| Arc::new(EntityCtx { shard, store: store.clone(), log: log.clone(), settings: settings.clone() }))
        .collect();
    let table = Arc::new(ShardTable::default());
    let args = ShardSupervisorArgs { ctxs, idle_timeout: config.limits.entity_idle_timeout, table: table.clone() };
    let (supervisor, join) =
        ShardSupervisor::spawn(None, ShardSupervisor, args).await.map_err(|e| StartError::Actors(e.to_string()))?;
    let rf = config.cluster.replication_factor as usize;
    let replicas = (0..shards).map(|s| placement(s, &members, rf)).collect();
    let remote = transport.clone().map(|t| Arc::new(TransportRemote(t)) as Arc<dyn Remote>);
    let local = LocalShards { table, log, store: store.clone() };
    let router = Arc::new(Router::new(me, shards, Some(local), remote, replicas));
    let driver = match (&raft, &transport) {
        (Some(raft), Some(_)) => {
            let settings = DriverSettings {
                addr: config.cluster.advertise.clone().unwrap_or_else(|| config.cluster.listen.to_string()),
                replication_factor: rf,
                max_moves: config.cluster.max_concurrent_moves as usize,
                interval: DriverSettings::DEFAULT_INTERVAL,
                move_timeout: DriverSettings::DEFAULT_MOVE_TIMEOUT,
                dead_member_timeout: config.cluster.dead_member_timeout,
            };
            let driver = Driver::new(router.clone(), raft.clone(), store.clone(), settings);
            // Set once, here: a second set cannot happen.
            let _ = handler.ready.set((router.clone(), raft.clone(), driver.clone()));
            Some(driver.spawn())
        }
        _ => None,
    };
    // Computed alike on every node from the same seeds, so racing bootstraps would write the same record;
    // only the metadata group's leader writes it, and only once.
    let initial = ClusterMeta::initial(shards, rf, meta::seed_members(config));
    let keeper = meta::spawn_keeper(router.clone(), Some(initial));
    let cluster = Arc::new(Cluster::new(cluster_settings(config), router, passwords(config)?, Tokens::new(token_key)));
    Ok(NodeHandle { cluster, supervisor, join, raft, transport, keeper, driver })
}

/// How long a node with an empty data directory looks for a running cluster before it takes part in
/// bootstrapping a new one.
const CLUSTER_PROBE: Duration = Duration::from_secs(3);

/// A node with an empty data directory first asks the seeds whether a cluster already runs: if one does
/// and does not count this node among its members, the node joins it rather than bootstrapping groups
/// of its own from the seed list (which would make a second cluster, e.g. when the seed list grew).
/// Stops looking early once every seed has answered without a record.
async fn look_for_a_running_cluster(t: &Arc<Transport>, store: &Store, config: &Config) -> Result<(), StartError> {
    let store_err = |e: crate::error::StoreError| StartError::Store { dir: "store".into(), reason: e.to_string() };
    let shards = store.shard_count();
    let mut fresh = !store.knows_cluster().map_err(store_err)?;
    for group in 0..=shards {
        fresh = fresh && !store.has_group_state(group).map_err(store_err)?;
    }
    if !fresh {
        return Ok(());
    }
    let me = &config.node.id;
    let seeds: Vec<String> = config.cluster.seed_list().into_iter().map(|s| s.id).filter(|id| id != me).collect();
    let deadline = std::time::Instant::now() + CLUSTER_PROBE;
    while std::time::Instant::now() < deadline {
        let mut answered = 0;
        for seed in &seeds {
            let asked = t.call(seed, codec::encode(&Request::Meta), Duration::from_millis(500)).await;
            let Ok(bytes) = asked else { continue };
            answered += 1;
            if let Ok(Ok(record)) = codec::decode::<meta::MetaAnswer>(b"meta", &bytes) {
                if record.members.iter().any(|m| &m.id == me) {
                    // A seed the cluster was bootstrapped with, starting later than the others: it takes
                    // its place in the groups of the first placement.
                    return Ok(());
                }
                tracing::info!(version = record.version, "a cluster runs already: joining it");
                return store.set_knows_cluster().await.map_err(store_err);
            }
        }
        if answered == seeds.len() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Starts a gateway: it holds no shards and routes every call to the nodes of `cluster.seeds`.
pub async fn start_gateway(config: &Config, token_key: Vec<u8>) -> Result<GatewayHandle, StartError> {
    crate::metrics::init();
    crate::ids::set_clock_skew(config.faults.clock_skew_ms);
    if config.cluster.seeds.is_empty() {
        return Err(StartError::Membership("a gateway needs the nodes to route to in cluster.seeds".into()));
    }
    let transport = Transport::start(transport_config(config, Role::Gateway)?, None).await?;
    let members = members(config);
    let shards = config.cluster.shards;
    let rf = config.cluster.replication_factor as usize;
    let replicas = (0..shards).map(|s| placement(s, &members, rf)).collect();
    let remote: Arc<dyn Remote> = Arc::new(TransportRemote(transport.clone()));
    let router = Arc::new(Router::new(config.node.id.clone(), shards, None, Some(remote), replicas));
    let keeper = meta::spawn_keeper(router.clone(), None);
    let cluster = Arc::new(Cluster::new(cluster_settings(config), router, passwords(config)?, Tokens::new(token_key)));
    Ok(GatewayHandle { cluster, transport, keeper })
}
