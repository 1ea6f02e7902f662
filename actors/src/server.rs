//! Answers other processes: the one [`CallHandler`] of a node's transport endpoint, which decodes each
//! request and hands it to the handler of its family: data (shard calls and status, here), management
//! (the metadata record and the placement driver, `control_plane`) and raft (`shardlog::RaftLog`).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cluster_transport::CallHandler;
use control_plane::{client, record, Driver};
use futures::future::BoxFuture;
use playground_proto::{
    codec, ApiError, CallMeta, NotLeader, ReplicaAnswer, Request, SessionCheck, ShardAnswer, ShardError, ShardId,
};
use shardlog::RaftLog;

use crate::ops::{dispatch, CallVisitor, LocalOp};
use crate::router::{Attempt, Router, Spec};

/// The longest a shard call from a peer may run here, whatever its caller says: a lost caller cannot pin
/// work for longer.
const MAX_CALL: Duration = Duration::from_secs(30);

/// What serves the requests once the node is up.
pub struct Served {
    pub router: Arc<Router>,
    pub raft: Arc<RaftLog>,
    pub driver: Arc<Driver>,
}

/// The endpoint's handler. Peers may call before the node is up: until [`Server::ready`] every request is
/// answered "not here", which callers route around (and raft treats as an unreachable peer).
#[derive(Default)]
pub struct Server {
    served: OnceLock<Arc<Served>>,
}

impl Server {
    /// Starts serving with `served`; a second call changes nothing.
    pub fn ready(&self, served: Served) {
        let _ = self.served.set(Arc::new(served));
    }
}

impl CallHandler for Server {
    fn handle(&self, payload: Vec<u8>) -> BoxFuture<'static, Vec<u8>> {
        match self.served.get() {
            Some(served) => answer(served.clone(), payload),
            None => Box::pin(async {
                codec::encode_wire::<ShardAnswer<()>>(&Err(NotLeader { shard: 0, leader: None }.into()))
            }),
        }
    }
}

/// Runs a shard call that arrived over the wire, typed once decoded.
struct Serve {
    router: Arc<Router>,
    shard: ShardId,
    session: Option<SessionCheck>,
    meta: CallMeta,
}

impl CallVisitor for Serve {
    type Output = BoxFuture<'static, Vec<u8>>;

    fn visit<O: LocalOp>(self, key: String, op: O) -> Self::Output {
        Box::pin(async move {
            let Serve { router, shard, session, meta } = self;
            let timeout = Duration::from_millis(u64::from(meta.timeout_ms)).min(MAX_CALL);
            let spec = Spec { shard, session: session.as_ref(), fault: meta.fault };
            let answer: ShardAnswer<O::Answer> = match router.execute_local(spec, key, op, timeout).await {
                Attempt::Done(answer) => answer.map_err(ShardError::Api),
                // On the wire, "try elsewhere" is NotLeader: the caller routes on it.
                Attempt::Elsewhere { leader, .. } => Err(NotLeader { shard, leader }.into()),
            };
            codec::encode_wire(&answer)
        })
    }
}

fn answer(served: Arc<Served>, payload: Vec<u8>) -> BoxFuture<'static, Vec<u8>> {
    let request = match codec::decode_wire::<Request>(b"request", &payload) {
        Ok(request) => request,
        Err(e) => {
            tracing::warn!(error = %e, "unreadable request from a peer");
            let refused: ShardAnswer<()> = Err(ApiError::BadRequest(format!("unreadable request: {e}")).into());
            return Box::pin(async move { codec::encode_wire(&refused) });
        }
    };
    let control = served.router.control().clone();
    match request {
        Request::Shard { shard, call, meta } if shard < control.shard_count() => {
            dispatch(call, Serve { router: served.router.clone(), shard, session: None, meta })
        }
        Request::Signed { shard, session, call, meta } if shard < control.shard_count() => {
            dispatch(call, Serve { router: served.router.clone(), shard, session: Some(session), meta })
        }
        Request::Shard { shard, .. } | Request::Signed { shard, .. } => Box::pin(async move {
            let refused: ShardAnswer<()> = Err(ApiError::BadRequest(format!("shard {shard} does not exist")).into());
            codec::encode_wire(&refused)
        }),
        Request::Status => Box::pin(async move { codec::encode_wire(&client::local_status(&control)) }),
        Request::Meta => Box::pin(async move { codec::encode_wire(&record::answer(&control)) }),
        Request::Raft(bytes) => served.raft.handle_rpc(bytes),
        Request::Replicas(op) => Box::pin(async move {
            let answer: ReplicaAnswer = served.driver.handle(op).await;
            codec::encode_wire(&answer)
        }),
    }
}
