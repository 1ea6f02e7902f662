//! The metadata group on three raft nodes in one process: racing bootstraps write one record, every
//! node applies it, and a node's placement cache routes by it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use control_plane::record::{self, Bootstrapped};
use control_plane::{refresh, ControlHandle, LocalReplicas, PlacementCache};
use playground_proto::{placement, ClusterMeta, MemberRecord};
use shardlog::testsuite::{eventually, Cluster};
use shardlog::{RaftSettings, ShardLog, META_REPLICATION};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_group_elects_and_every_node_reads_the_one_record() {
    let shards = 4;
    let c = Cluster::start(3, shards, RaftSettings::DEFAULT_SNAPSHOT_LOGS).await;
    let group = shards;
    for i in 0..3 {
        assert_eq!(c.log(i).meta_group(), group);
        assert!(c.log(i).is_replica(group), "min(3, n) replicas: every node of three");
        assert_eq!(c.log(i).local_shards(), vec![0, 1, 2, 3], "the metadata group is no shard");
    }
    let leader = c.wait_leader(group, None).await;
    assert_eq!(Some(&c.names[leader]), placement(group, &c.names, META_REPLICATION).first());
    let members = c.names.iter().map(|n| MemberRecord { id: n.clone(), addr: format!("{n}:7100") }).collect();
    let initial = ClusterMeta::initial(shards, 3, members);

    // Every node bootstraps at once, as every node's keeper does, retrying until there is a record.
    let runs = (0..3).map(|i| {
        let (log, store, initial) = (c.log(i).clone(), c.store(i).clone(), initial.clone());
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(found) = record::read(&store).expect("read") {
                    return (false, found);
                }
                match record::bootstrap(log.as_ref(), &store, &initial).await {
                    Ok(Bootstrapped::Written(m)) => return (true, m),
                    Ok(Bootstrapped::Found(m)) => return (false, m),
                    Err(e) => assert!(Instant::now() < deadline, "node-{i}: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    });
    let mut written = 0;
    for run in futures::future::join_all(runs).await {
        let (wrote, record) = run.expect("join");
        written += usize::from(wrote);
        assert_eq!(record, initial);
    }
    assert_eq!(written, 1, "one bootstrap wrote the record");
    let leader = c.wait_leader(group, None).await;
    let again = record::bootstrap(c.log(leader).as_ref(), c.store(leader), &initial).await.expect("retry");
    assert_eq!(again, Bootstrapped::Found(initial.clone()), "a retry on the leader writes nothing");

    for i in 0..3 {
        let store = c.store(i).clone();
        let what = format!("node-{i} applied the record");
        eventually(Duration::from_secs(10), &what, || record::read(&store).ok().flatten().as_ref() == Some(&initial))
            .await;
        assert_eq!(store.applied_index(group).expect("index"), 1, "node-{i}: one metadata entry ever applied");
        for shard in 0..shards {
            assert_eq!(store.applied_index(shard).expect("index"), 0, "node-{i}: shard {shard} untouched");
        }
        // A node's cache takes its replica's copy, routes by its placement, and answers peers with it.
        let seeds = (0..shards).map(|s| placement(s, &c.names[..1], 1)).collect();
        let log: Arc<dyn ShardLog> = c.log(i).clone();
        let control = ControlHandle {
            me: c.names[i].clone(),
            cache: PlacementCache::new(shards, seeds),
            local: Some(LocalReplicas { store: store.clone(), log }),
            remote: None,
        };
        assert!(refresh(&control, None).await, "node-{i} knows the record");
        assert_eq!(control.cache.meta().as_deref(), Some(&initial));
        for shard in 0..shards {
            assert_eq!(control.cache.replicas(shard), initial.placement[shard as usize]);
            assert_eq!(control.cache.replicas(shard).len(), 3);
        }
        assert_eq!(record::answer(&control).expect("answer"), initial);
        let mut older = initial.clone();
        older.placement[0].reverse();
        assert!(!control.cache.offer(older), "a record no newer than the one held is ignored");
    }
    c.stop().await;
}
