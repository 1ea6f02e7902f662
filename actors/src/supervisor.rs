//! A node's actor system: the shard supervisor and its shards, over one store.
//!
//! ```text
//! ShardSupervisor            restarts a failed shard and republishes its ref
//! └── Shard × shard_count    routes to, activates, passivates and restarts entities
//!     └── EntityActor<User | Order | Email> × live entities
//! ```

use std::sync::{Arc, RwLock};
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::entity::EntityCtx;
use crate::metrics;
use crate::shard::{Shard, ShardArgs, ShardMsg};
use playground_proto::ShardId;

/// The current actor of every shard. Written only by the supervisor, read by every call.
#[derive(Default)]
pub struct ShardTable {
    refs: RwLock<Vec<Option<ActorRef<ShardMsg>>>>,
}

impl ShardTable {
    pub fn get(&self, shard: ShardId) -> Option<ActorRef<ShardMsg>> {
        self.refs.read().ok()?.get(shard as usize).cloned().flatten()
    }

    fn set(&self, shard: ShardId, actor: Option<ActorRef<ShardMsg>>) {
        if let Ok(mut refs) = self.refs.write() {
            if refs.len() <= shard as usize {
                refs.resize(shard as usize + 1, None);
            }
            refs[shard as usize] = actor;
        }
    }

    /// Shards whose actor is running.
    pub fn running(&self) -> usize {
        self.refs.read().map(|r| r.iter().flatten().count()).unwrap_or(0)
    }
}

pub struct ShardSupervisor;

/// The supervisor takes no messages: it only reacts to its shards' supervision events. A named type
/// rather than `()` because ractor's `cluster` feature needs a `Message` impl on every message type.
pub enum ShardSupervisorMsg {}

impl ractor::Message for ShardSupervisorMsg {}

pub struct ShardSupervisorArgs {
    pub ctxs: Vec<Arc<EntityCtx>>,
    pub idle_timeout: Duration,
    pub max_entities_per_shard: usize,
    pub table: Arc<ShardTable>,
}

pub struct ShardSupervisorState {
    args: ShardSupervisorArgs,
    ids: Vec<Option<ActorId>>,
}

impl ShardSupervisor {
    async fn start_shard(
        myself: &ActorRef<ShardSupervisorMsg>,
        st: &mut ShardSupervisorState,
        shard: ShardId,
    ) -> Result<(), ActorProcessingErr> {
        let args = ShardArgs {
            ctx: st.args.ctxs[shard as usize].clone(),
            idle_timeout: st.args.idle_timeout,
            max_entities: st.args.max_entities_per_shard,
        };
        let (actor, _) = Shard::spawn_linked(None, Shard, args, myself.get_cell()).await?;
        st.ids[shard as usize] = Some(actor.get_id());
        st.args.table.set(shard, Some(actor));
        Ok(())
    }
}

impl Actor for ShardSupervisor {
    type Msg = ShardSupervisorMsg;
    type State = ShardSupervisorState;
    type Arguments = ShardSupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ShardSupervisorMsg>,
        args: ShardSupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let n = args.ctxs.len();
        let mut st = ShardSupervisorState { args, ids: vec![None; n] };
        for shard in 0..n as ShardId {
            Self::start_shard(&myself, &mut st, shard).await?;
        }
        Ok(st)
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<ShardSupervisorMsg>,
        evt: SupervisionEvent,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (id, reason) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell.get_id(), err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (cell.get_id(), reason.unwrap_or_default()),
            _ => return Ok(()),
        };
        let Some(shard) = st.ids.iter().position(|s| *s == Some(id)) else { return Ok(()) };
        metrics::RESTARTS.with_label_values(&["shard"]).inc();
        tracing::error!(shard, reason = %reason, "shard actor stopped; restarting it");
        st.args.table.set(shard as ShardId, None);
        // A shard that cannot start again takes its supervisor down, and with it the node: better than
        // a node that is up but silently missing a shard.
        Self::start_shard(&myself, st, shard as ShardId).await
    }
}
