//! The NodeServer's sessions as this process sees them, kept from its session events.
//!
//! ractor_cluster reports sessions opening, authenticating and closing, but has no notion of a rejected
//! cookie: `client_connect` returns `Ok` and the session just closes (seen with ractor_cluster 0.16.5). A session that closes
//! after the peer's name was exchanged but before it authenticated, while no other session to that peer
//! is up, is the signature of a cookie mismatch, so that is what gets reported.
//!
//! The set of known peers changes at run time. This process dials only known peers, so a session it
//! dialed that authenticates as an unknown one is the late end of a dial to a peer removed meanwhile,
//! and is closed; sessions the other side dialed are kept whoever it is.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use ractor::{ActorId, ActorRef};
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{NodeEventSubscription, NodeSessionMessage};
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::metrics;

/// Metric label for a peer that is not a known peer, so that names claimed by strangers cannot grow
/// the label set.
const OTHER_PEER: &str = "other";

/// The node id inside a ractor_cluster node name (`id@host`).
pub(crate) fn id_of_name(name: &str) -> &str {
    name.rsplit_once('@').map_or(name, |(id, _)| id)
}

struct Tracked {
    actor: ActorRef<NodeSessionMessage>,
    peer: Option<String>,
    addr: String,
    authenticated: bool,
    opened: Instant,
    /// Stopped by us for taking too long to authenticate: its close says nothing about the cookie.
    reaped: bool,
}

pub(crate) struct Sessions {
    table: Mutex<HashMap<ActorId, Tracked>>,
    /// Bumped on every change, so connectors and the detector wake without a queue.
    changed: watch::Sender<u64>,
    /// The peers' ids: the seeds and the peers added since.
    known: RwLock<HashSet<String>>,
    /// Per address dialed: how many sessions this process dialed there closed before they authenticated.
    dropped: Mutex<HashMap<String, u64>>,
}

impl Sessions {
    pub(crate) fn new(seeds: HashSet<String>) -> Arc<Self> {
        Arc::new(Self {
            table: Mutex::new(HashMap::new()),
            changed: watch::Sender::new(0),
            known: RwLock::new(seeds),
            dropped: Mutex::new(HashMap::new()),
        })
    }

    fn is_known(&self, peer: &str) -> bool {
        self.known.read().unwrap_or_else(|e| e.into_inner()).contains(peer)
    }

    /// Adds `peer` to the known peers.
    pub(crate) fn know(&self, peer: &str) {
        self.known.write().unwrap_or_else(|e| e.into_inner()).insert(peer.to_owned());
    }

    /// Drops `peer` from the known peers and closes its sessions, whichever side dialed them.
    pub(crate) fn forget(&self, peer: &str) {
        self.known.write().unwrap_or_else(|e| e.into_inner()).remove(peer);
        for t in self.table().values_mut().filter(|t| t.peer.as_deref() == Some(peer)) {
            t.reaped = true;
            info!(peer = %peer, addr = %t.addr, "closing the cluster session of a removed peer");
            t.actor.stop(Some("peer removed".into()));
        }
    }

    fn table(&self) -> MutexGuard<'_, HashMap<ActorId, Tracked>> {
        // A panic while holding this lock leaves plain data behind, still consistent enough to use.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Whether an authenticated session to `peer` is open.
    pub(crate) fn has_session(&self, peer: &str) -> bool {
        self.table().values().any(|t| t.authenticated && t.peer.as_deref() == Some(peer))
    }

    /// Stops every session that has not authenticated within `limit` of opening: a peer that accepted
    /// the TCP connection but never answers (SIGSTOP, a black hole) would otherwise pile one up per dial.
    pub(crate) fn reap_stale(&self, limit: Duration) {
        let mut table = self.table();
        for t in table.values_mut().filter(|t| !t.authenticated && !t.reaped && t.opened.elapsed() > limit) {
            t.reaped = true;
            info!(addr = %t.addr, peer = t.peer.as_deref().unwrap_or("?"), "cluster handshake timed out, closing it");
            t.actor.stop(Some("handshake_timeout".into()));
        }
    }

    /// Stops every session (at shutdown).
    pub(crate) fn close_all(&self) {
        for t in self.table().values_mut() {
            t.reaped = true;
            t.actor.stop(Some("transport stopping".into()));
        }
    }

    fn label<'a>(&self, peer: &'a str) -> &'a str {
        if self.is_known(peer) {
            peer
        } else {
            OTHER_PEER
        }
    }

    fn opened(&self, ses: NodeServerSessionInformation) {
        let peer = ses.peer_name.as_ref().map(|n| id_of_name(&n.name).to_owned());
        let tracked = Tracked {
            actor: ses.actor.clone(),
            peer,
            addr: ses.peer_addr,
            authenticated: false,
            opened: Instant::now(),
            reaped: false,
        };
        self.table().insert(ses.actor.get_id(), tracked);
        self.bump();
    }

    fn authenticated(&self, ses: NodeServerSessionInformation) {
        let peer = ses.peer_name.as_ref().map(|n| id_of_name(&n.name).to_owned());
        {
            let mut table = self.table();
            let t = table.entry(ses.actor.get_id()).or_insert_with(|| Tracked {
                actor: ses.actor.clone(),
                peer: None,
                addr: ses.peer_addr.clone(),
                authenticated: false,
                opened: Instant::now(),
                reaped: false,
            });
            t.authenticated = true;
            if peer.is_some() {
                t.peer = peer.clone();
            }
            if let Some(stranger) = t.peer.as_deref().filter(|p| !ses.is_server && !self.is_known(p)) {
                info!(peer = %stranger, addr = %t.addr, "closing a dialed cluster session: no longer a peer");
                t.reaped = true;
                t.actor.stop(Some("peer removed".into()));
            }
        }
        info!(peer = peer.as_deref().unwrap_or("?"), addr = %ses.peer_addr, inbound = ses.is_server, "cluster session authenticated");
        self.bump();
    }

    /// How many sessions this process dialed to `addr` closed before they authenticated: a dialer that
    /// sees the count grow knows its attempt failed.
    pub(crate) fn dropped_unauthenticated(&self, addr: &str) -> u64 {
        self.dropped.lock().unwrap_or_else(|e| e.into_inner()).get(addr).copied().unwrap_or(0)
    }

    fn disconnected(&self, ses: NodeServerSessionInformation) {
        let removed = self.table().remove(&ses.actor.get_id());
        if !ses.is_server && !removed.as_ref().is_some_and(|t| t.authenticated) {
            *self.dropped.lock().unwrap_or_else(|e| e.into_inner()).entry(ses.peer_addr.clone()).or_insert(0) += 1;
        }
        // The name may have reached the NodeServer after our `opened` event: take the latest.
        let peer = ses.peer_name.as_ref().map(|n| id_of_name(&n.name).to_owned());
        let peer = peer.or_else(|| removed.as_ref().and_then(|t| t.peer.clone()));
        let (authenticated, reaped) = removed.as_ref().map_or((false, false), |t| (t.authenticated, t.reaped));
        match peer {
            Some(peer) if !authenticated && !reaped && !self.has_session(&peer) => {
                error!(
                    peer = %peer,
                    addr = %ses.peer_addr,
                    "cluster cookie rejected: the session closed during authentication (cookies differ?)"
                );
                metrics::AUTH_FAILURES.with_label_values(&[self.label(&peer)]).inc();
            }
            Some(peer) if authenticated => {
                warn!(peer = %peer, addr = %ses.peer_addr, "cluster session closed");
            }
            _ => {}
        }
        self.bump();
    }
}

/// The NodeServer's event subscription; its callbacks are synchronous and must not block.
pub(crate) struct Subscriber(pub Arc<Sessions>, pub Arc<crate::guard::Guards>);

impl NodeEventSubscription for Subscriber {
    fn node_session_opened(&self, ses: NodeServerSessionInformation) {
        self.0.opened(ses);
    }

    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        self.0.disconnected(ses);
    }

    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        if ses.is_server {
            self.1.authenticated(&ses.peer_addr);
        }
        self.0.authenticated(ses);
    }

    fn node_session_ready(&self, _ses: NodeServerSessionInformation) {
        // The peer's pg groups (its endpoint) have arrived: the detector may ping at once.
        self.0.bump();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_come_from_node_names() {
        assert_eq!(id_of_name("node-1@node-1"), "node-1");
        assert_eq!(id_of_name("gateway-1@host"), "gateway-1");
        assert_eq!(id_of_name("plain"), "plain");
    }
}
