//! Starting a process's part of the cluster.
//!
//! - [`start_node`]: open the store, start the shards' logs, the shard supervisor and, with peers, the
//!   cluster transport, and hand back the [`Cluster`] handle. A one-node cluster (no seeds) runs its
//!   log as `cluster.log` says; a cluster with seeds always replicates with raft.
//! - [`start_gateway`]: the transport and a [`Cluster`] that routes every call to the nodes.
//!
//! Both run a metadata keeper (`control_plane::spawn_keeper`): on a node it bootstraps the cluster's
//! metadata record when the node leads the metadata group, and keeps the placement cache in step with it.
//! This module only composes: every part it starts lives in its own crate or module.

use std::sync::Arc;

use cluster_config::{Config, LogEngine};
use cluster_transport::{Remote, Role, Transport, TransportConfig, TransportError, TransportRemote};
use control_plane::{look_for_a_running_cluster, record, spawn_keeper, ControlHandle, Driver, DriverSettings};
use control_plane::{LocalReplicas, PlacementCache};
use playground_proto::{placement, ClusterMeta};
use ractor::{Actor, ActorRef};
use shardlog::{LocalLog, RaftLog, RaftSettings, RaftStartError, ShardLog, Store, StoreError};

use crate::adapters::TransportRaft;
use crate::cluster::{Cluster, ClusterSettings};
use crate::entity::{EntityCtx, Settings};
use crate::router::Router;
use crate::security::{Passwords, Tokens};
use crate::server::{Served, Server};
use crate::supervisor::{ShardSupervisor, ShardSupervisorArgs, ShardSupervisorMsg, ShardTable};

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
    store: Arc<Store>,
}

/// How long [`NodeHandle::stop`] waits for the last users of the store (entity actors finishing their
/// stop) to let it go.
const STORE_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl NodeHandle {
    /// Stops every actor and waits until they are gone, so that no write is in flight afterwards, and
    /// until the store is closed (its last sync made, its directory lock released), so that the data
    /// directory can be opened again at once.
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
        drop(self.cluster);
        // Entities end after their supervisor: the store goes with the last of them.
        let deadline = std::time::Instant::now() + STORE_RELEASE_WAIT;
        while Arc::strong_count(&self.store) > 1 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
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
    init_process(config);
    let shards = config.cluster.shards;
    let me = config.node.id.clone();
    control_plane::metrics::init_node(&me);
    let members = members(config);
    let dir = config.node.data_dir.join("store");
    let store = Store::open(&dir, shards)
        .map_err(|e| StartError::Store { dir: dir.display().to_string(), reason: e.to_string() })?;
    // A node outside the seeds joins the cluster they form.
    let clustered = members.len() > 1 || !members.contains(&me);
    let server = Arc::new(Server::default());
    let transport = if clustered {
        Some(Transport::start(transport_config(config, Role::Node)?, Some(server.clone())).await?)
    } else {
        None
    };
    let remote = transport.clone().map(|t| Arc::new(TransportRemote(t)) as Arc<dyn Remote>);
    if let Some(remote) = &remote {
        look_for_a_running_cluster(remote.as_ref(), &store, &me, &members).await.map_err(store_err)?;
    }
    let (log, raft): (Arc<dyn ShardLog>, _) = match (&transport, config.cluster.log) {
        (None, LogEngine::Local) => (Arc::new(LocalLog::new(store.clone(), me.clone())), None),
        (None, LogEngine::Raft) => {
            let raft = RaftLog::start(store.clone(), RaftSettings::single(me.clone())).await?;
            (raft.clone(), Some(raft))
        }
        (Some(t), _) => {
            let settings = RaftSettings::from_config(config, Arc::new(TransportRaft(t.clone(), me.clone())));
            let raft = RaftLog::start(store.clone(), settings).await?;
            (raft.clone(), Some(raft))
        }
    };
    let settings = Arc::new(entity_settings(config));
    let ctxs = (0..shards)
        .map(|shard| Arc::new(EntityCtx { shard, store: store.clone(), log: log.clone(), settings: settings.clone() }))
        .collect();
    let table = Arc::new(ShardTable::default());
    let args = ShardSupervisorArgs {
        ctxs,
        idle_timeout: config.limits.entity_idle_timeout,
        max_entities_per_shard: config.limits.max_entities_per_shard,
        table: table.clone(),
    };
    let (supervisor, join) =
        ShardSupervisor::spawn(None, ShardSupervisor, args).await.map_err(|e| StartError::Actors(e.to_string()))?;
    let rf = config.cluster.replication_factor as usize;
    let replicas = (0..shards).map(|s| placement(s, &members, rf)).collect();
    let control = Arc::new(ControlHandle {
        me,
        cache: PlacementCache::new(shards, replicas),
        local: Some(LocalReplicas { store: store.clone(), log }),
        remote,
    });
    let router = Arc::new(Router::new(control.clone(), Some(table)).skip_read_guard(settings.skips_read_guard()));
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
            let driver = Driver::new(control.clone(), raft.clone(), store.clone(), settings);
            server.ready(Served { router: router.clone(), raft: raft.clone(), driver: driver.clone() });
            Some(driver.spawn())
        }
        _ => None,
    };
    // Computed alike on every node from the same seeds, so racing bootstraps would write the same record;
    // only the metadata group's leader writes it, and only once.
    let initial = ClusterMeta::initial(shards, rf, record::seed_members(config));
    let keeper = spawn_keeper(control, Some(initial));
    let cluster = Arc::new(Cluster::new(cluster_settings(config), router, passwords(config)?, Tokens::new(token_key)));
    Ok(NodeHandle { cluster, supervisor, join, raft, transport, keeper, driver, store })
}

fn store_err(e: StoreError) -> StartError {
    StartError::Store { dir: "store".into(), reason: e.to_string() }
}

/// What every process does first: metrics at zero, and the test-only clock of a failpoints build.
fn init_process(config: &Config) {
    crate::metrics::init();
    shardlog::metrics::init();
    control_plane::metrics::init();
    #[cfg(feature = "failpoints")]
    {
        let faults = &config.faults;
        if faults.clock_skew_ms != 0 {
            playground_proto::install_clock(Box::new(playground_proto::SkewedClock(faults.clock_skew_ms)));
        }
        if faults.panic_injection || faults.break_idempotency || faults.stale_reads || faults.clock_skew_ms != 0 {
            tracing::warn!(
                panic_injection = faults.panic_injection,
                break_idempotency = faults.break_idempotency,
                stale_reads = faults.stale_reads,
                clock_skew_ms = faults.clock_skew_ms,
                "test-only fault switches are on: never run this configuration in production"
            );
        }
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = config;
}

fn entity_settings(config: &Config) -> Settings {
    #[cfg(feature = "failpoints")]
    return Settings {
        panic_injection: config.faults.panic_injection,
        break_idempotency: config.faults.break_idempotency,
        stale_reads: config.faults.stale_reads,
    };
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = config;
        Settings::default()
    }
}

/// Starts a gateway: it holds no shards and routes every call to the nodes of `cluster.seeds`.
pub async fn start_gateway(config: &Config, token_key: Vec<u8>) -> Result<GatewayHandle, StartError> {
    init_process(config);
    if config.cluster.seeds.is_empty() {
        return Err(StartError::Membership("a gateway needs the nodes to route to in cluster.seeds".into()));
    }
    let transport = Transport::start(transport_config(config, Role::Gateway)?, None).await?;
    let members = members(config);
    let shards = config.cluster.shards;
    let rf = config.cluster.replication_factor as usize;
    let replicas = (0..shards).map(|s| placement(s, &members, rf)).collect();
    let control = Arc::new(ControlHandle {
        me: config.node.id.clone(),
        cache: PlacementCache::new(shards, replicas),
        local: None,
        remote: Some(Arc::new(TransportRemote(transport.clone()))),
    });
    let router = Arc::new(Router::new(control.clone(), None));
    let keeper = spawn_keeper(control, None);
    let cluster = Arc::new(Cluster::new(cluster_settings(config), router, passwords(config)?, Tokens::new(token_key)));
    Ok(GatewayHandle { cluster, transport, keeper })
}
