//! The heartbeat failure detector. ractor_cluster notices a closed socket within milliseconds but never
//! a frozen peer (SIGSTOP, a hung host: its kernel keeps the TCP session open), so every
//! `heartbeat_interval` each connected peer's endpoint is pinged, with the interval as the timeout.
//!
//! States: `Up` while answers come; `Suspect` once an interval passed without one; `Down` after
//! `failure_timeout` of silence, or at once when the peer has no session (the socket closed: nothing
//! can reach it until it reconnects). The first answer makes it `Up` again. Any answer counts, calls
//! included, so a busy peer is not suspected for a ping stuck behind its calls.
//!
//! The list of peers changes at run time (`Transport::add_peer`, `remove_peer`): each round works on a
//! copy of it, and a peer added later starts `Down` like a seed at start.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use ractor::rpc::CallResult;
use ractor::ActorRef;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tracing::warn;

use super::connector::HANDSHAKE_TIMEOUT;
use super::endpoint::{group_of, EndpointMsg};
use super::sessions::Sessions;
use super::{metrics, PeerState, PeerStatus};

/// The state a peer should be in now. `silence` is the time since its last answer on the current
/// session, `None` if it has not answered on it yet.
pub(crate) fn assess(
    current: PeerState,
    connected: bool,
    silence: Option<Duration>,
    heartbeat: Duration,
    failure_timeout: Duration,
) -> PeerState {
    let Some(silence) = silence.filter(|_| connected) else {
        return PeerState::Down;
    };
    if silence >= failure_timeout {
        PeerState::Down
    // One and a half intervals: a healthy peer's last answer is about one interval old when the next
    // tick looks (later if the tick itself is late on a busy core); one lost answer makes it two.
    } else if silence > heartbeat.mul_f64(1.5) {
        if current == PeerState::Down {
            PeerState::Down
        } else {
            PeerState::Suspect
        }
    } else {
        PeerState::Up
    }
}

/// The endpoint of `node`: a proxy of a peer's, or this node's own.
pub(crate) fn endpoint_of(node: &str) -> Option<ActorRef<EndpointMsg>> {
    ractor::pg::get_members(&group_of(node))
        .into_iter()
        .rfind(|c| c.get_status() == ractor::ActorStatus::Running)
        .map(ActorRef::from)
}

struct Health {
    state: PeerState,
    /// The last answer ever, for [`PeerStatus::since_heard`].
    last_heard: Option<Instant>,
    /// Whether `last_heard` belongs to the current session: silence is measured only within one.
    heard_on_session: bool,
    /// `Down` because a connected peer went silent, so calls to it fail at once.
    silent: bool,
}

pub(crate) struct Peer {
    pub id: String,
    pub addr: cluster_config::SeedAddr,
    health: Mutex<Health>,
    ping_in_flight: AtomicBool,
}

pub(crate) struct Peers {
    /// Locked only for plain reads and edits, never across an await: the detector and pings work on
    /// clones of the `Arc`s.
    list: RwLock<Vec<Arc<Peer>>>,
    heartbeat: Duration,
    failure_timeout: Duration,
    published: watch::Sender<Vec<PeerStatus>>,
    nonce: AtomicU64,
}

impl Peer {
    fn new(id: String, addr: cluster_config::SeedAddr) -> Self {
        Peer {
            id,
            addr,
            health: Mutex::new(Health {
                state: PeerState::Down,
                last_heard: None,
                heard_on_session: false,
                silent: false,
            }),
            ping_in_flight: AtomicBool::new(false),
        }
    }

    fn health(&self) -> MutexGuard<'_, Health> {
        // A panic while holding this lock leaves plain data behind, still consistent enough to use.
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn state(&self) -> PeerState {
        self.health().state
    }

    fn status(&self) -> PeerStatus {
        let h = self.health();
        PeerStatus {
            id: self.id.clone(),
            addr: self.addr.clone(),
            state: h.state,
            since_heard: h.last_heard.map(|t| t.elapsed()),
        }
    }
}

impl Peers {
    pub(crate) fn new(
        seeds: Vec<(String, cluster_config::SeedAddr)>,
        heartbeat: Duration,
        failure_timeout: Duration,
    ) -> Self {
        let list: Vec<Arc<Peer>> = seeds.into_iter().map(|(id, addr)| Arc::new(Peer::new(id, addr))).collect();
        let published = watch::Sender::new(statuses(&list));
        Self { list: RwLock::new(list), heartbeat, failure_timeout, published, nonce: AtomicU64::new(1) }
    }

    fn list(&self) -> RwLockReadGuard<'_, Vec<Arc<Peer>>> {
        // A panic while holding this lock leaves plain data behind, still consistent enough to use.
        self.list.read().unwrap_or_else(|e| e.into_inner())
    }

    fn list_mut(&self) -> RwLockWriteGuard<'_, Vec<Arc<Peer>>> {
        self.list.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The peers now; a copy, so that the caller holds no lock.
    pub(crate) fn peers(&self) -> Vec<Arc<Peer>> {
        self.list().clone()
    }

    pub(crate) fn get(&self, id: &str) -> Option<Arc<Peer>> {
        self.list().iter().find(|p| p.id == id).cloned()
    }

    /// Starts tracking `id`, `Down` until it answers; false if it is tracked already.
    pub(crate) fn add(&self, id: String, addr: cluster_config::SeedAddr) -> bool {
        let mut list = self.list_mut();
        if list.iter().any(|p| p.id == id) {
            return false;
        }
        list.push(Arc::new(Peer::new(id, addr)));
        self.published.send_replace(statuses(&list));
        true
    }

    /// Stops tracking `id`; false if it was not tracked. A ping already under way finds it gone.
    pub(crate) fn remove(&self, id: &str) -> bool {
        let mut list = self.list_mut();
        let Some(at) = list.iter().position(|p| p.id == id) else {
            return false;
        };
        list.remove(at);
        self.published.send_replace(statuses(&list));
        true
    }

    pub(crate) fn snapshot(&self) -> Vec<PeerStatus> {
        statuses(&self.list())
    }

    pub(crate) fn watch(&self) -> watch::Receiver<Vec<PeerStatus>> {
        self.published.subscribe()
    }

    /// Whether calls to `id` should fail at once: its session is up but it stopped answering.
    pub(crate) fn is_silent(&self, id: &str) -> bool {
        self.get(id).is_some_and(|p| p.health().silent)
    }

    /// Records an answer from `id`.
    pub(crate) fn heard(&self, id: &str) {
        if let Some(peer) = self.get(id) {
            {
                let mut h = peer.health();
                h.last_heard = Some(Instant::now());
                h.heard_on_session = true;
            }
            self.evaluate(&peer, true);
        }
    }

    /// Re-assesses `peer` and reports a change of state.
    fn evaluate(&self, peer: &Peer, connected: bool) {
        let (from, to) = {
            let mut h = peer.health();
            if !connected {
                h.heard_on_session = false;
            }
            let silence = h.last_heard.filter(|_| h.heard_on_session).map(|t| t.elapsed());
            let to = assess(h.state, connected, silence, self.heartbeat, self.failure_timeout);
            h.silent = to == PeerState::Down && connected && silence.is_some();
            let from = std::mem::replace(&mut h.state, to);
            (from, to)
        };
        if from != to {
            // Under the list's lock: a peer removed meanwhile must not come back in what is published,
            // nor bring back the metric series its removal dropped.
            let list = self.list();
            if !list.iter().any(|p| std::ptr::eq(Arc::as_ptr(p), peer)) {
                return;
            }
            warn!(peer = %peer.id, from = ?from, to = ?to, "peer state changed");
            metrics::PEER_UP.with_label_values(&[&peer.id]).set(i64::from(to == PeerState::Up));
            metrics::PEER_STATE_CHANGES.with_label_values(&[&peer.id]).inc();
            self.published.send_replace(statuses(&list));
        }
    }

    /// Marks every peer down (at shutdown).
    pub(crate) fn all_down(&self) {
        for peer in self.peers() {
            self.evaluate(&peer, false);
        }
    }
}

fn statuses(list: &[Arc<Peer>]) -> Vec<PeerStatus> {
    list.iter().map(|p| p.status()).collect()
}

/// Pings and assesses every peer each heartbeat, and at once on every session change, until shutdown.
pub(crate) async fn run(peers: Arc<Peers>, sessions: Arc<Sessions>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(peers.heartbeat);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut changes = sessions.subscribe();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = changes.changed() => if r.is_err() { return },
            _ = shutdown.wait_for(|s| *s) => return,
        }
        sessions.reap_stale(HANDSHAKE_TIMEOUT);
        for peer in peers.peers() {
            let endpoint = endpoint_of(&peer.id);
            peers.evaluate(&peer, endpoint.is_some());
            let Some(endpoint) = endpoint else { continue };
            // One probe per peer at a time: a frozen peer costs one pending ping, not one per tick.
            if peer.ping_in_flight.swap(true, Ordering::AcqRel) {
                continue;
            }
            let peers = peers.clone();
            let nonce = peers.nonce.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let answer = endpoint.call(|tx| EndpointMsg::Ping(nonce, tx), Some(peers.heartbeat)).await;
                if let Ok(CallResult::Success(n)) = answer {
                    if n == nonce {
                        peers.heard(&peer.id);
                    }
                }
                peer.ping_in_flight.store(false, Ordering::Release);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PeerState::{Down, Suspect, Up};

    const HB: Duration = Duration::from_millis(100);
    const FT: Duration = Duration::from_millis(1000);

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    #[test]
    fn an_answer_makes_a_peer_up() {
        assert_eq!(assess(Down, true, ms(0), HB, FT), Up);
        assert_eq!(assess(Suspect, true, ms(10), HB, FT), Up);
        assert_eq!(assess(Up, true, ms(100), HB, FT), Up);
    }

    #[test]
    fn one_missed_interval_makes_it_suspect() {
        assert_eq!(assess(Up, true, ms(151), HB, FT), Suspect);
        assert_eq!(assess(Suspect, true, ms(900), HB, FT), Suspect);
    }

    #[test]
    fn failure_timeout_of_silence_makes_it_down_and_only_an_answer_brings_it_back() {
        assert_eq!(assess(Suspect, true, ms(1000), HB, FT), Down);
        assert_eq!(assess(Up, true, ms(5000), HB, FT), Down);
        assert_eq!(assess(Down, true, ms(500), HB, FT), Down);
        assert_eq!(assess(Down, true, ms(1), HB, FT), Up);
    }

    #[test]
    fn no_session_or_no_answer_yet_is_down() {
        assert_eq!(assess(Up, false, ms(1), HB, FT), Down);
        assert_eq!(assess(Up, true, None, HB, FT), Down);
    }

    #[test]
    fn state_changes_are_published_and_silence_is_measured_per_session() {
        let peers = Peers::new(vec![("node-2".into(), "127.0.0.1:1".parse().expect("addr"))], HB, FT);
        let mut rx = peers.watch();
        assert_eq!(peers.snapshot()[0].state, Down);
        peers.heard("node-2");
        assert!(rx.has_changed().expect("sender alive"));
        assert_eq!(rx.borrow_and_update()[0].state, Up);
        // Session lost: down at once, and a new session starts with no answer on record.
        peers.evaluate(&peers.peers()[0], false);
        assert_eq!(rx.borrow_and_update()[0].state, Down);
        peers.evaluate(&peers.peers()[0], true);
        assert_eq!(peers.snapshot()[0].state, Down);
        assert!(!peers.is_silent("node-2"));
        assert!(peers.snapshot()[0].since_heard.is_some());
    }

    #[test]
    fn peers_added_and_removed_are_published_and_a_removed_one_stays_gone() {
        let peers = Peers::new(vec![("node-2".into(), "127.0.0.1:1".parse().expect("addr"))], HB, FT);
        let mut rx = peers.watch();
        assert!(peers.add("node-3".into(), "127.0.0.1:2".parse().expect("addr")));
        assert!(!peers.add("node-3".into(), "127.0.0.1:3".parse().expect("addr")), "added twice");
        let ids: Vec<String> = rx.borrow_and_update().iter().map(|p| p.id.clone()).collect();
        assert_eq!(ids, ["node-2", "node-3"]);
        assert_eq!(peers.get("node-3").map(|p| p.state()), Some(Down));

        let stale = peers.get("node-3").expect("node-3 is a peer");
        assert!(peers.remove("node-3"));
        assert!(!peers.remove("node-3"), "removed twice");
        assert_eq!(rx.borrow_and_update().len(), 1);
        // A ping answered after the removal changes nothing that is published.
        peers.heard("node-3");
        {
            let mut h = stale.health();
            h.last_heard = Some(Instant::now());
            h.heard_on_session = true;
        }
        peers.evaluate(&stale, true);
        assert!(!rx.has_changed().expect("sender alive"));
        assert!(peers.get("node-3").is_none());
        assert_eq!(peers.snapshot().len(), 1);
    }
}
