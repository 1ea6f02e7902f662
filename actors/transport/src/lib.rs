//! The cluster transport: one authenticated ractor_cluster channel between this process and each of its
//! peers, carrying request/response calls between node endpoints, with a failure detector. The peers are
//! the seeds at start; [`Transport::add_peer`] and [`Transport::remove_peer`] change them at run time,
//! so that nodes can join and leave a running cluster.
//!
//! - `guard`: the cluster port's listener: a small frame limit until a connection has authenticated.
//! - `endpoint`: the node's one remotable actor (calls and pings) and its wire framing.
//! - `sessions`: the NodeServer's session events; reports a rejected cookie.
//! - `connector`: one dialer per peer, reconnecting with backoff and jitter.
//! - `detector`: heartbeats and the `Up` / `Suspect` / `Down` state of every peer.
//! - `metrics`: `playground_transport_*`.
//! - `remote`: [`Remote`], the transport as the layers above it use it (a seam a test can replace).
//!
//! Tasks and actors of one transport (pg and the actor registry are global to a process, so a process
//! runs one transport):
//!
//! ```text
//! guard task                    the cluster port: accepts, hands each connection to the NodeServer guarded
//! NodeServer (ractor_cluster)   one NodeSession per peer (a RemoteActor proxy per remote actor); its own
//!                               listener is bound to a loopback port nobody is told of
//! Endpoint                      nodes only; pg group `playground.endpoint.<id>`; a task per call
//! dialer task × peer            keeps a session to the peer; started and stopped with the peer
//! detector task                 pings every heartbeat, publishes peer states
//! ```

mod connector;
mod detector;
mod endpoint;
mod guard;
mod metrics;
mod remote;
mod sessions;

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cluster_config::SeedAddr;
use futures::future::BoxFuture;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{NodeServer, NodeServerMessage};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use self::detector::{endpoint_of, Peers};
use self::endpoint::{frame_request, unframe_reply, Endpoint, EndpointArgs, EndpointMsg, Status};
use self::guard::Guards;
use self::sessions::{Sessions, Subscriber};

pub use self::remote::{Peer, Remote, RemoteError, TransportRemote};

/// How long `stop` waits for each actor to end before leaving it behind.
const STOP_WAIT: Duration = Duration::from_secs(2);
/// How much longer than the caller's timeout ractor's reply bridge (and the remote handler) may run.
const REPLY_GRACE: Duration = Duration::from_millis(100);
const SUBSCRIPTION_ID: &str = "playground.transport";

/// What this process is in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Serves calls from peers through its endpoint, and calls them.
    Node,
    /// Calls nodes but serves no calls: it runs no endpoint.
    Gateway,
}

#[derive(Clone)]
pub struct TransportConfig {
    /// This process's id ("node-1", "gateway-1"); unique in the cluster.
    pub id: String,
    pub role: Role,
    /// The NodeServer's address. Port 0 picks a free port: read it back with [`Transport::local_addr`].
    pub listen: SocketAddr,
    /// The nodes to stay connected to; an entry with our own id is skipped.
    pub seeds: Vec<cluster_config::Seed>,
    pub cookie: String,
    pub heartbeat_interval: Duration,
    pub failure_timeout: Duration,
}

// By hand, so that the cookie never reaches a log line.
impl std::fmt::Debug for TransportConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportConfig")
            .field("id", &self.id)
            .field("role", &self.role)
            .field("listen", &self.listen)
            .field("seeds", &self.seeds)
            .field("cookie", &"<redacted>")
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("failure_timeout", &self.failure_timeout)
            .finish()
    }
}

/// The failure detector's opinion of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// It answered within the last heartbeat interval.
    Up,
    /// An interval passed without an answer.
    Suspect,
    /// No session, or `failure_timeout` without an answer.
    Down,
}

impl PeerState {
    /// How the cluster view names it.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerState::Up => "up",
            PeerState::Suspect => "suspect",
            PeerState::Down => "down",
        }
    }
}

#[derive(Debug, Clone)]
pub struct PeerStatus {
    pub id: String,
    /// Its address as configured or added: an IP address or a host name and a port.
    pub addr: SeedAddr,
    pub state: PeerState,
    /// Time since its last answer, `None` if it never answered.
    pub since_heard: Option<Duration>,
}

/// Answers calls from peers; the payload format is the caller's business (bincode of the upper layers).
pub trait CallHandler: Send + Sync + 'static {
    fn handle(&self, payload: Vec<u8>) -> BoxFuture<'static, Vec<u8>>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("no session to peer {peer}")]
    NotConnected { peer: String },
    #[error("call to peer {peer} timed out; its outcome is unknown")]
    Timeout { peer: String },
    #[error("peer {peer} is down: its session is open but it stopped answering")]
    PeerDown { peer: String },
    #[error("the session to peer {peer} closed during the call; its outcome is unknown")]
    Lost { peer: String },
    #[error("peer {peer} is at its limit of calls in flight")]
    Overloaded { peer: String },
    #[error("peer {peer} failed the call: {reason}")]
    Remote { peer: String, reason: String },
    #[error("the transport is stopped")]
    Stopped,
    #[error("cannot start the transport: {0}")]
    Start(String),
}

/// A running transport; see the module docs. Call [`Transport::stop`] to end it.
pub struct Transport {
    id: String,
    local_addr: SocketAddr,
    server: ActorRef<NodeServerMessage>,
    endpoint: Option<ActorRef<EndpointMsg>>,
    peers: Arc<Peers>,
    sessions: Arc<Sessions>,
    shutdown: watch::Sender<bool>,
    /// Where dialers of added peers run: `add_peer` may be called from a thread outside the runtime.
    runtime: Handle,
    tasks: Mutex<Tasks>,
}

/// The transport's tasks. One lock serializes `add_peer`, `remove_peer` and `stop`, and keeps the
/// dialers in step with the detector's list.
#[derive(Default)]
struct Tasks {
    /// One per peer.
    dialers: HashMap<String, Dialing>,
    /// The detector, and the dialers of removed peers until they end, so that `stop` waits for them.
    others: Vec<JoinHandle<()>>,
}

struct Dialing {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Starts a dialer that keeps a session to `peer` until its `stop` is set or dropped.
fn spawn_dialer(
    runtime: &Handle,
    peer: String,
    addr: SeedAddr,
    server: &ActorRef<NodeServerMessage>,
    sessions: &Arc<Sessions>,
) -> Dialing {
    let (stop, shutdown) = watch::channel(false);
    let dialer = connector::Dialer { peer, addr, server: server.clone(), sessions: sessions.clone(), shutdown };
    Dialing { stop, task: runtime.spawn(dialer.run()) }
}

impl Transport {
    /// Starts the NodeServer on `config.listen`, the endpoint (nodes only; `handler` answers calls,
    /// `None` refuses them), a dialer per seed and the failure detector.
    pub async fn start(
        config: TransportConfig,
        handler: Option<Arc<dyn CallHandler>>,
    ) -> Result<Arc<Transport>, TransportError> {
        if config.id.is_empty() || config.cookie.is_empty() {
            return Err(TransportError::Start("the node id and the cookie must not be empty".into()));
        }
        if config.heartbeat_interval.is_zero() {
            return Err(TransportError::Start("the heartbeat interval must not be zero".into()));
        }
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| TransportError::Start(format!("cluster listener on {}: {e}", config.listen)))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| TransportError::Start(format!("cluster listener on {}: {e}", config.listen)))?;
        let mut seen = HashSet::new();
        let seeds: Vec<(String, SeedAddr)> = config
            .seeds
            .iter()
            .filter(|s| s.id != config.id && seen.insert(s.id.clone()))
            .map(|s| (s.id.clone(), s.addr.clone()))
            .collect();
        let ids: Vec<String> = seeds.iter().map(|(id, _)| id.clone()).collect();
        metrics::init(&ids);

        // The host part of the node name is the id too: names and connection strings must differ between
        // nodes (ractor_cluster drops a session whose peer looks like itself), and every node may listen
        // on the same 0.0.0.0:port. Isolated: we choose our peers, no transitive connections. Peers reach
        // the NodeServer through the guard (`guard`); its own listener takes any free loopback port,
        // which no peer is told of.
        let server = NodeServer::new(
            0,
            config.cookie.clone(),
            config.id.clone(),
            config.id.clone(),
            None,
            Some(NodeConnectionMode::Isolated),
        )
        .with_listen_addr(Ipv4Addr::LOCALHOST.into());
        let guards = Arc::new(Guards::default());
        let (server, _) = Actor::spawn(None, server, ())
            .await
            .map_err(|e| TransportError::Start(format!("cluster listener on {local_addr}: {e}")))?;
        let sessions = Sessions::new(ids.iter().cloned().collect());
        if let Err(e) = server.cast(NodeServerMessage::SubscribeToEvents {
            id: SUBSCRIPTION_ID.into(),
            subscription: Box::new(Subscriber(sessions.clone(), guards.clone())),
        }) {
            server.stop(None);
            return Err(TransportError::Start(format!("cluster node server: {e}")));
        }

        let endpoint = match config.role {
            Role::Node => {
                let args = EndpointArgs { group: endpoint::group_of(&config.id), handler };
                match Actor::spawn(None, Endpoint, args).await {
                    Ok((endpoint, _)) => Some(endpoint),
                    Err(e) => {
                        server.stop(None);
                        return Err(TransportError::Start(format!("endpoint: {e}")));
                    }
                }
            }
            Role::Gateway => None,
        };

        let peers = Arc::new(Peers::new(seeds.clone(), config.heartbeat_interval, config.failure_timeout));
        let (shutdown, _) = watch::channel(false);
        let runtime = Handle::current();
        let mut tasks = Tasks::default();
        for (peer, addr) in seeds {
            let dialing = spawn_dialer(&runtime, peer.clone(), addr, &server, &sessions);
            tasks.dialers.insert(peer, dialing);
        }
        tasks.others.push(runtime.spawn(detector::run(peers.clone(), sessions.clone(), shutdown.subscribe())));
        tasks.others.push(runtime.spawn(guard::accept(listener, server.clone(), guards, shutdown.subscribe())));
        info!(id = %config.id, role = ?config.role, addr = %local_addr, peers = ?ids, "cluster transport started");
        Ok(Arc::new(Transport {
            id: config.id,
            local_addr,
            server,
            endpoint,
            peers,
            sessions,
            shutdown,
            runtime,
            tasks: Mutex::new(tasks),
        }))
    }

    fn tasks(&self) -> MutexGuard<'_, Tasks> {
        // A panic while holding this lock leaves plain data behind, still consistent enough to use.
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tracks peer `id` at `addr` from now on, like a seed: a dialer keeps a session to it and the failure
    /// detector watches it (`Down` until it answers). False, and nothing changes, if `id` is empty, this
    /// process's, already a peer, or the transport is stopped.
    pub fn add_peer(&self, id: &str, addr: SeedAddr) -> bool {
        if id.is_empty() || id == self.id {
            return false;
        }
        let mut tasks = self.tasks();
        // Read under the lock `stop` takes after setting the flag: no dialer can start behind its back.
        if *self.shutdown.borrow() {
            return false;
        }
        // Known to the sessions first, so that the dialer's session is not taken for a stranger's.
        self.sessions.know(id);
        if !self.peers.add(id.to_owned(), addr.clone()) {
            return false;
        }
        metrics::init(&[id.to_owned()]);
        let dialing = spawn_dialer(&self.runtime, id.to_owned(), addr.clone(), &self.server, &self.sessions);
        tasks.dialers.insert(id.to_owned(), dialing);
        info!(peer = %id, addr = %addr, "cluster peer added");
        true
    }

    /// Stops tracking peer `id`, a seed or an added one: its dialer stops, the failure detector drops it
    /// (published on [`Transport::watch`]) and its sessions close. Calls to it then fail like calls to
    /// any other node: `NotConnected`, unless it dials this process again. False if it was not a peer.
    pub fn remove_peer(&self, id: &str) -> bool {
        let mut tasks = self.tasks();
        if !self.peers.remove(id) {
            return false;
        }
        if let Some(dialing) = tasks.dialers.remove(id) {
            dialing.stop.send_replace(true);
            tasks.others.retain(|t| !t.is_finished());
            tasks.others.push(dialing.task);
        }
        // After the dialer's stop: a dial it still completes is closed when it authenticates.
        self.sessions.forget(id);
        metrics::forget(id);
        info!(peer = %id, "cluster peer removed");
        true
    }

    /// The NodeServer's address, with the port it really listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// One request/response to peer `node`, bounded by `timeout`: a peer that never answers (SIGSTOP)
    /// costs `timeout`, and once the detector holds it down, nothing.
    pub async fn call(&self, node: &str, payload: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, TransportError> {
        if *self.shutdown.borrow() {
            return Err(TransportError::Stopped);
        }
        let peer = || node.to_owned();
        if self.peers.is_silent(node) {
            return Err(TransportError::PeerDown { peer: peer() });
        }
        let Some(endpoint) = endpoint_of(node) else {
            return Err(TransportError::NotConnected { peer: peer() });
        };
        let started = Instant::now();
        let framed = frame_request(payload);
        // The outer timeout decides. ractor's own, a little later, bounds the reply bridge its derive
        // spawns; that bridge drops the port when its timeout fires, which would otherwise race ours and
        // turn a timeout into a `SenderError` (read here as a lost session).
        let answer = tokio::time::timeout(
            timeout,
            endpoint.call(|tx| EndpointMsg::Call(framed, tx), Some(timeout + REPLY_GRACE)),
        )
        .await;
        let label = if self.peers.get(node).is_some() { node } else { "other" };
        metrics::CALL_SECONDS.with_label_values(&[label]).observe(started.elapsed().as_secs_f64());
        let reply = match answer {
            Ok(Ok(CallResult::Success(reply))) => reply,
            Ok(Ok(CallResult::Timeout)) | Err(_) => return Err(TransportError::Timeout { peer: peer() }),
            Ok(Ok(CallResult::SenderError)) => return Err(TransportError::Lost { peer: peer() }),
            Ok(Err(_)) => return Err(TransportError::NotConnected { peer: peer() }),
        };
        // Any answer shows the peer alive, whatever the handler made of the call.
        self.peers.heard(node);
        match unframe_reply(reply) {
            Some((Status::Ok, answer)) => Ok(answer),
            Some((Status::Overloaded, _)) => Err(TransportError::Overloaded { peer: peer() }),
            Some((Status::HandlerFailed, _)) => {
                Err(TransportError::Remote { peer: peer(), reason: "the handler panicked or ran out of time".into() })
            }
            Some((Status::UnsupportedVersion, _)) => {
                Err(TransportError::Remote { peer: peer(), reason: "it does not speak this wire version".into() })
            }
            Some((Status::NoHandler, _)) => {
                Err(TransportError::Remote { peer: peer(), reason: "it serves no calls".into() })
            }
            None => Err(TransportError::Remote { peer: peer(), reason: "its reply is unreadable".into() }),
        }
    }

    /// Every peer (the seeds except this process, and those added since), with its failure-detector state.
    pub fn peers(&self) -> Vec<PeerStatus> {
        self.peers.snapshot()
    }

    /// The failure-detector state of peer `node`; `None` if it is not a peer.
    pub fn state_of(&self, node: &str) -> Option<PeerState> {
        self.peers.get(node).map(|p| p.state())
    }

    /// The peers' states, published on every change of state.
    pub fn watch(&self) -> watch::Receiver<Vec<PeerStatus>> {
        self.peers.watch()
    }

    /// Stops dialing and detecting, closes every session and the listener. Calls fail with `Stopped`.
    pub async fn stop(&self) {
        if self.shutdown.send_replace(true) {
            return;
        }
        let tasks: Vec<JoinHandle<()>> = {
            let mut tasks = self.tasks();
            let mut all = std::mem::take(&mut tasks.others);
            for (_, dialing) in tasks.dialers.drain() {
                dialing.stop.send_replace(true);
                all.push(dialing.task);
            }
            all
        };
        for task in tasks {
            if tokio::time::timeout(STOP_WAIT, task).await.is_err() {
                warn!(id = %self.id, "a transport task did not stop in time");
            }
        }
        if let Some(endpoint) = &self.endpoint {
            let _ = endpoint.stop_and_wait(Some("transport stopping".into()), Some(STOP_WAIT)).await;
        }
        self.sessions.close_all();
        let _ = self.server.stop_and_wait(Some("transport stopping".into()), Some(STOP_WAIT)).await;
        self.peers.all_down();
        info!(id = %self.id, "cluster transport stopped");
    }
}

impl Drop for Transport {
    // Without `stop`, the actors would outlive the handle; this ends them without waiting.
    fn drop(&mut self) {
        if !self.shutdown.send_replace(true) {
            if let Some(endpoint) = &self.endpoint {
                endpoint.stop(None);
            }
            self.server.stop(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_peer() {
        let e = TransportError::Timeout { peer: "node-3".into() };
        assert!(e.to_string().contains("node-3"));
        assert!(TransportError::NotConnected { peer: "node-2".into() }.to_string().contains("node-2"));
    }
}
