//! How a node with an empty data directory finds out whether it joins a running cluster or takes part in
//! bootstrapping a new one.

use std::time::{Duration, Instant};

use cluster_transport::Remote;
use playground_proto::{codec, MetaAnswer, Request};
use shardlog::{Store, StoreError};

/// How long a node with an empty data directory looks for a running cluster before it takes part in
/// bootstrapping a new one.
const CLUSTER_PROBE: Duration = Duration::from_secs(3);

/// Asks the seeds (other than `me`) whether a cluster already runs: if one does and does not count this
/// node among its members, the node records that it joins it rather than bootstrapping groups of its own
/// from the seed list (which would make a second cluster, e.g. when the seed list grew). Does nothing for
/// a store that holds anything; stops looking early once every seed has answered without a record.
pub async fn look_for_a_running_cluster(
    remote: &dyn Remote,
    store: &Store,
    me: &str,
    seeds: &[String],
) -> Result<(), StoreError> {
    let mut fresh = !store.knows_cluster()?;
    for group in 0..=store.shard_count() {
        fresh = fresh && !store.has_group_state(group)?;
    }
    if !fresh {
        return Ok(());
    }
    let seeds: Vec<&String> = seeds.iter().filter(|id| *id != me).collect();
    let deadline = Instant::now() + CLUSTER_PROBE;
    while Instant::now() < deadline {
        let mut answered = 0;
        for seed in &seeds {
            // A seed that answers at all counts as answered, whether or not it has a record.
            let asked = remote.call(seed, codec::encode_wire(&Request::Meta), Duration::from_millis(500)).await;
            let Ok(bytes) = asked else { continue };
            answered += 1;
            if let Ok(Ok(record)) = codec::decode_wire::<MetaAnswer>(b"meta", &bytes) {
                if record.members.iter().any(|m| m.id == me) {
                    // A seed the cluster was bootstrapped with, starting later than the others: it takes
                    // its place in the groups of the first placement.
                    return Ok(());
                }
                tracing::info!(version = record.version, "a cluster runs already: joining it");
                return store.set_knows_cluster().await;
            }
        }
        if answered == seeds.len() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
