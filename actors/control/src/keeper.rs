//! The keeper: a task on every node and gateway that keeps the [`PlacementCache`](crate::PlacementCache)
//! in step with the cluster's record, makes every member a transport peer, and on a node bootstraps the
//! first record when the node leads the metadata group.

use std::sync::Arc;
use std::time::Duration;

use cluster_transport::PeerState;
use playground_proto::ClusterMeta;
use tokio::task::JoinHandle;

use crate::client;
use crate::handle::ControlHandle;
use crate::record::{bootstrap, read};

/// How often the keeper looks again once a record is known: often enough that gateways and nodes learn a
/// new member or a moved replica within about a second (routing follows leader hints in between).
const REFRESH: Duration = Duration::from_secs(1);
/// How often it looks while no record is known yet (bootstrap under way).
const REFRESH_UNKNOWN: Duration = Duration::from_millis(250);
/// Bound on one `Request::Meta` round trip.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// One round of looking for the record: the local replica's copy (a node), bootstrapping it when this
/// node leads the metadata group and `initial` is given, else a node's answer. Offers what it finds to
/// the placement cache, which keeps the newest; returns whether a record is known afterwards.
pub async fn refresh(control: &ControlHandle, initial: Option<&ClusterMeta>) -> bool {
    if let Some(local) = &control.local {
        match read(&local.store) {
            Ok(Some(m)) => {
                control.cache.offer(m);
                return true;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cluster metadata unreadable"),
        }
        let group = local.store.meta_group();
        if let Some(initial) = initial.filter(|_| local.log.leadership(group).is_leader) {
            match bootstrap(local.log.as_ref(), &local.store, initial).await {
                Ok(done) => {
                    control.cache.offer(done.record().clone());
                    return true;
                }
                Err(e) => tracing::debug!(error = %e, "cluster metadata bootstrap to be retried"),
            }
        }
    }
    ask(control).await;
    control.cache.meta().is_some()
}

/// Asks the nodes for their record, the metadata group's leader first when this node knows it, until one
/// answers.
async fn ask(control: &ControlHandle) {
    let Some(remote) = &control.remote else { return };
    let mut candidates: Vec<String> = vec![];
    if let Some(local) = &control.local {
        candidates.extend(local.log.leadership(local.store.meta_group()).leader.filter(|l| *l != control.me));
    }
    if let Some(meta) = control.cache.meta() {
        candidates.extend(meta.members.iter().map(|m| m.id.clone()));
    }
    let mut peers: Vec<_> = remote.peers().into_iter().filter(|p| p.state != PeerState::Down).map(|p| p.id).collect();
    peers.sort();
    candidates.extend(peers);
    let mut asked: Vec<String> = vec![];
    for node in candidates {
        if node == control.me || asked.contains(&node) {
            continue;
        }
        asked.push(node.clone());
        if let Ok(meta) = client::meta(remote.as_ref(), &node, ASK_TIMEOUT).await {
            control.cache.offer(meta);
            return;
        }
    }
}

/// Keeps the cached record fresh until aborted: every `REFRESH` once known (every
/// `REFRESH_UNKNOWN` before), and soon after a call ran out of replicas to try (the placement it
/// routed by may be out of date). Every member of the record becomes a transport peer, and a node
/// remembers durably that it has known a record.
pub fn spawn_keeper(control: Arc<ControlHandle>, initial: Option<ClusterMeta>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut remembered = false;
        loop {
            let known = refresh(&control, initial.as_ref()).await;
            if let Some(record) = control.cache.meta() {
                // Members that joined after this process started: keep sessions to them too.
                if let Some(remote) = &control.remote {
                    for m in record.members.iter().filter(|m| m.id != control.me) {
                        remote.add_peer(&m.id, &m.addr);
                    }
                }
                if let (Some(local), false) = (&control.local, remembered) {
                    // From now on this node's groups change only by membership changes (`RaftLog::start`).
                    remembered = local.store.set_knows_cluster().await.is_ok();
                }
            }
            let wait = if known { REFRESH } else { REFRESH_UNKNOWN };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = control.cache.stale() => {
                    // A storm of NotLeader answers notifies many times; look at most this often.
                    tokio::time::sleep(REFRESH_UNKNOWN).await;
                }
            }
        }
    })
}
