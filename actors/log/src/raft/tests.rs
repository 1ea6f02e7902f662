//! Shard groups on one node, and on three nodes in one process over an in-memory transport that can cut
//! a node off (openraft keeps no process-global state, so three `RaftLog`s on three stores are three
//! nodes).

use std::time::Instant;

use super::*;
use crate::testsuite::{entry, eventually, Cluster};

// ---------------------------------------------------------------------------------------------------
// One node.

async fn append_concurrently(log: &Arc<RaftLog>, n: u32, shards: u32) -> Vec<(ShardId, LogIndex)> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { (i % shards, log.append(i % shards, entry(format!("k/{i:04}"), i)).await) })
        })
        .collect();
    let mut out = vec![];
    for t in tasks {
        let (shard, index) = t.await.expect("join");
        out.push((shard, index.expect("append")));
    }
    out
}

fn last_raft_index(log: &RaftLog, shard: ShardId) -> u64 {
    log.group(shard).expect("replica").raft.metrics().borrow().last_log_index.unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proposer_packs_concurrent_appends_into_fewer_raft_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), 1).expect("open");
    let log = RaftLog::start(store.clone(), RaftSettings::single("test-node")).await.expect("start");
    assert!(log.all_have_leaders(), "a one-node group elects itself before start returns");
    let before = last_raft_index(&log, 0);
    let mut indices: Vec<LogIndex> = append_concurrently(&log, 200, 1).await.into_iter().map(|(_, i)| i).collect();
    indices.sort_unstable();
    assert_eq!(indices, (1..=200).collect::<Vec<_>>(), "every entry gets its own shard log index");
    let raft_entries = last_raft_index(&log, 0) - before;
    assert!(raft_entries < 200, "200 appends became {raft_entries} raft entries");
    assert_eq!(store.applied_index(0).expect("index"), 200);
    log.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_across_shards_all_succeed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), 8).expect("open");
    let log = RaftLog::start(store.clone(), RaftSettings::single("test-node")).await.expect("start");
    let appended = append_concurrently(&log, 200, 8).await;
    assert_eq!(appended.len(), 200);
    for shard in 0..8 {
        assert_eq!(store.scan_all::<u32>(shard, "k/").expect("scan").len(), 25, "shard {shard}");
        assert_eq!(store.applied_index(shard).expect("index"), 25);
        let status = log.group_status(shard).expect("replica");
        assert!(status.is_leader && status.leader.as_deref() == Some("test-node"), "{status:?}");
        assert_eq!(status.replicas, vec!["test-node".to_owned()]);
        assert!(status.last_applied > 0 && status.commit_index >= status.last_applied, "{status:?}");
    }
    log.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_are_synced_by_the_committer_before_they_are_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), 1).expect("open");
    let log = RaftLog::start(store.clone(), RaftSettings::single("test-node")).await.expect("start");
    let before = store.syncs();
    let index = log.append(0, entry("k/a".into(), 1)).await.expect("append");
    assert!(store.syncs() > before, "the raft append went through a group commit");
    assert_eq!(store.get::<u32>(0, "k/a").expect("get"), Some(1));
    assert_eq!(store.applied_index(0).expect("index"), index);
    log.ensure_linearizable(0).await.expect("a one-node leader confirms itself");
    log.shutdown().await;
    assert!(log.append(0, entry("k/b".into(), 2)).await.is_err(), "a stopped group acknowledges nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_survive_reopen_without_being_applied_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(dir.path(), 4).expect("open");
        let log = RaftLog::start(store.clone(), RaftSettings::single("test-node")).await.expect("start");
        append_concurrently(&log, 40, 4).await;
        log.shutdown().await;
    }
    let store = Store::open(dir.path(), 4).expect("reopen after shutdown");
    for shard in 0..4 {
        assert_eq!(store.scan_all::<u32>(shard, "k/").expect("scan").len(), 10);
        assert_eq!(store.applied_index(shard).expect("index"), 10);
    }
    let log = RaftLog::start(store.clone(), RaftSettings::single("test-node")).await.expect("restart");
    for shard in 0..4 {
        assert_eq!(store.applied_index(shard).expect("index"), 10, "a restart re-applies nothing");
    }
    assert_eq!(log.append(2, entry("k/late".into(), 7)).await.expect("append"), 11);
    assert_eq!(store.get::<u32>(2, "k/late").expect("get"), Some(7));
    log.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_restarts_from_its_snapshot_after_the_log_is_purged() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(dir.path(), 1).expect("open");
        let log = RaftLog::start(store.clone(), RaftSettings::single("test-node")).await.expect("start");
        append_concurrently(&log, 20, 1).await;
        let raft = &log.group(0).expect("replica").raft;
        let last = raft.metrics().borrow().last_applied.expect("applied");
        raft.trigger().snapshot().await.expect("trigger");
        raft.wait(Some(Duration::from_secs(10))).snapshot(last, "snapshot").await.expect("snapshot built");
        raft.trigger().purge_log(last.index).await.expect("purge");
        raft.wait(Some(Duration::from_secs(10))).purged(Some(last), "purged").await.expect("purged");
        log.shutdown().await;
    }
    let store = reopen(dir.path(), 1).await;
    let log = RaftLog::start(store.clone(), RaftSettings::single("test-node")).await.expect("restart");
    assert_eq!(store.applied_index(0).expect("index"), 20);
    assert_eq!(log.append(0, entry("k/after".into(), 1)).await.expect("append"), 21);
    log.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_replicates_only_its_shards_and_one_outside_the_seeds_none() {
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let members = vec!["a".to_owned(), "b".to_owned()];
    let outsider = RaftSettings::new("c", members.clone(), 1, Arc::new(NoTransport));
    let joiner = RaftLog::start(Store::open(elsewhere.path(), 8).expect("open"), outsider).await.expect("start");
    assert!(joiner.local_groups().is_empty(), "a node outside the seeds waits to be given replicas");
    joiner.shutdown().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), 8).expect("open");
    // With a factor of 1 over two members, node "a" holds the even shards alone (and elects itself).
    let log =
        RaftLog::start(store.clone(), RaftSettings::new("a", members, 1, Arc::new(NoTransport))).await.expect("start");
    assert_eq!(log.local_shards(), vec![0, 2, 4, 6]);
    assert!(!log.is_replica(1) && log.group_status(1).is_none() && log.leader_of(1).is_none());
    let err = log.append(1, entry("k".into(), 1)).await.expect_err("not a replica");
    assert!(matches!(err, StoreError::NotLeader { shard: 1, leader: None }), "{err:?}");
    eventually(Duration::from_secs(10), "leaders", || log.all_have_leaders()).await;
    assert_eq!(log.leader_of(2).as_deref(), Some("a"));
    log.shutdown().await;
}

/// Opens the store in `dir` again once the log that had it open is shut down: that log's aborted tasks
/// drop their handles of the store a moment later, and until the last one goes sled's directory lock is
/// held.
async fn reopen(dir: &std::path::Path, shards: u32) -> std::sync::Arc<Store> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match Store::open(dir, shards) {
            Ok(store) => return store,
            Err(e) if std::time::Instant::now() < deadline && e.to_string().contains("lock") => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("reopen: {e:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_another_node_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(dir.path(), 2).expect("open");
        let log = RaftLog::start(store, RaftSettings::single("a")).await.expect("start");
        log.shutdown().await;
    }
    let store = reopen(dir.path(), 2).await;
    let err = RaftLog::start(store, RaftSettings::single("b")).await.err().expect("refused");
    assert!(matches!(&err, RaftStartError::Config(m) if m.contains("another node")), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bytes_and_unknown_shards_get_error_replies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), 2).expect("open");
    let log = RaftLog::start(store.clone(), RaftSettings::single("n")).await.expect("start");
    let unknown = network::encode(&network::RaftRpc {
        shard: 99,
        rpc: network::Rpc::Vote(openraft::raft::VoteRequest { vote: openraft::Vote::new(9, 1), last_log_id: None }),
    });
    for payload in [vec![], vec![1, 2, 3], vec![0xff; 64], vec![1, 0xff, 0xff, 0xff, 0xff, 0xff], unknown] {
        let reply = log.handle_rpc(payload.clone()).await;
        let decoded = network::decode::<network::RaftReply>(&reply).expect("the reply is readable");
        assert!(matches!(decoded, network::RaftReply::Refused(_)), "{payload:?} → {decoded:?}");
    }
    // The groups are unharmed.
    log.append(0, entry("k".into(), 1)).await.expect("append");
    log.shutdown().await;
}

// ---------------------------------------------------------------------------------------------------
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_each_leader_reach_every_replica_and_followers_refuse() {
    let started = Instant::now();
    let c = Cluster::start(3, 4, RaftSettings::DEFAULT_SNAPSHOT_LOGS).await;
    for i in 0..3 {
        assert_eq!(c.log(i).local_shards(), vec![0, 1, 2, 3], "factor 3 on 3 nodes: every node, every shard");
        let log = c.log(i).clone();
        eventually(Duration::from_secs(10), "every group knows its leader", || log.all_have_leaders()).await;
    }
    let elected = started.elapsed();
    for shard in 0..4 {
        for i in 0..10 {
            c.append(shard, format!("k/{shard}/{i}"), i).await;
        }
    }
    for shard in 0..4 {
        c.wait_replicated(shard, &format!("k/{shard}/9"), 9, Duration::from_secs(10)).await;
        for i in 0..3 {
            assert_eq!(c.store(i).scan_all::<u32>(shard, "k/").expect("scan").len(), 10, "node-{i} shard {shard}");
        }
        let leader = c.wait_leader(shard, None).await;
        let leader_name = c.names[leader].clone();
        // The first replica initializes the group and so wins its first election: leaders spread as
        // placement spreads first replicas.
        assert_eq!(Some(&leader_name), placement(shard, &c.names, 3).first(), "shard {shard}");
        for follower in (0..3).filter(|&i| i != leader) {
            let log = c.log(follower);
            let what = format!("node-{follower} knows the leader of {shard}");
            eventually(Duration::from_secs(5), &what, || log.leader_of(shard) == Some(leader_name.clone())).await;
            let err = log.append(shard, entry("k/nope".into(), 0)).await.expect_err("a follower refuses");
            assert!(
                matches!(&err, StoreError::NotLeader { shard: s, leader: Some(l) } if *s == shard && *l == leader_name),
                "{err:?}"
            );
            assert!(matches!(log.ensure_linearizable(shard).await, Err(StoreError::NotLeader { .. })));
            let status = log.group_status(shard).expect("replica");
            assert!(!status.is_leader && status.leader.as_deref() == Some(leader_name.as_str()), "{status:?}");
        }
        let status = c.log(leader).group_status(shard).expect("replica");
        assert!(status.is_leader && status.term > 0, "{status:?}");
        assert_eq!(status.replicas.len(), 3);
        // Concurrent linearizable reads on the leader all pass, sharing rounds.
        let reads: Vec<_> = (0..64).map(|_| c.log(leader).ensure_linearizable(shard)).collect();
        for r in futures::future::join_all(reads).await {
            r.expect("the leader confirms its leadership");
        }
    }
    eprintln!("3 nodes × 4 shards: leaders after {elected:?}, all done after {:?}", started.elapsed());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_groups_go_quiet_wake_for_work_and_a_lost_quiet_leader_is_replaced() {
    let shards = 4;
    let c = Cluster::start(3, shards, RaftSettings::DEFAULT_SNAPSHOT_LOGS).await;
    for shard in 0..shards {
        c.append(shard, format!("k/{shard}"), 1).await;
    }
    let all_quiet = |c: &Cluster| (0..3).all(|i| c.log(i).local_groups().iter().all(|g| c.log(i).is_quiet(*g)));
    eventually(Duration::from_secs(15), "every replica quiet", || all_quiet(&c)).await;

    // Awake, each of the 5 groups (4 shards and the metadata group) sends its 2 followers 10 heartbeats
    // a second; quiet, one round every 2 s.
    let (before, window) = (c.messages_sent(), Duration::from_secs(3));
    tokio::time::sleep(window).await;
    let per_second = (c.messages_sent() - before) as f64 / window.as_secs_f64();
    assert!(per_second <= 20.0, "a quiet cluster sent {per_second} raft messages a second");

    // A quiet group takes a write at once and replicates it.
    c.append(0, "k/awake".into(), 2).await;
    c.wait_replicated(0, "k/awake", 2, Duration::from_secs(10)).await;
    let leader = c.log(c.wait_leader(0, None).await).clone();
    eventually(Duration::from_secs(1), "the group in use awake", || !leader.is_quiet(0)).await;

    // A quiet group whose leader is lost elects another: its followers' timers were off.
    let shard = 1;
    let old = c.wait_leader(shard, None).await;
    let quiet_followers = |c: &Cluster| (0..3).filter(|i| *i != old).all(|i| c.log(i).is_quiet(shard));
    eventually(Duration::from_secs(15), "shard 1 quiet", || quiet_followers(&c)).await;
    c.cut(old, true);
    let cut_at = Instant::now();
    let new = c.wait_leader(shard, Some(old)).await;
    eprintln!("a quiet group's leader replaced in {:?}", cut_at.elapsed());
    c.log(new).append(shard, entry("k/after".into(), 3)).await.expect("the new leader appends");
    c.cut(old, false);
    c.wait_replicated(shard, "k/after", 3, Duration::from_secs(10)).await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_leader_is_replaced_and_never_acknowledges() {
    let c = Cluster::start(3, 2, RaftSettings::DEFAULT_SNAPSHOT_LOGS).await;
    let shard = 0;
    c.append(shard, "k/before".into(), 1).await;
    let old = c.wait_leader(shard, None).await;
    let old_term = c.log(old).leadership(shard).term;
    c.cut(old, true);
    let cut_at = Instant::now();

    // The old leader may still believe it leads: whatever it is asked, it acknowledges nothing.
    let stranded = tokio::spawn(c.log(old).append(shard, entry("k/stranded".into(), 1)));
    let read = tokio::time::timeout(Duration::from_secs(5), c.log(old).ensure_linearizable(shard)).await;
    assert!(!matches!(read, Ok(Ok(()))), "a cut-off leader cannot confirm a read: {read:?}");

    let new = c.wait_leader(shard, Some(old)).await;
    let failover = cut_at.elapsed();
    let new_log = c.log(new).clone();
    eventually(Duration::from_secs(5), "the new leader's term", || new_log.leadership(shard).term > old_term).await;
    let index = new_log.append(shard, entry("k/after".into(), 2)).await.expect("the new leader appends");
    assert!(index >= 2);
    // Unanswered by any quorum for a while, the old leader refuses at once rather than queueing.
    let old_log = c.log(old).clone();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let attempt = tokio::time::timeout(Duration::from_millis(200), old_log.append(shard, entry("k/x".into(), 0)));
        match attempt.await {
            Ok(Err(StoreError::NotLeader { .. })) => break,
            Ok(other) => panic!("a cut-off node acknowledged or failed oddly: {other:?}"),
            Err(_) => assert!(Instant::now() < deadline, "the cut-off leader still queues appends"),
        }
    }

    c.cut(old, false);
    let healed_at = Instant::now();
    let new_name = c.names[new].clone();
    eventually(Duration::from_secs(10), "the old leader follows", || {
        let l = old_log.leadership(shard);
        !l.is_leader && l.leader.as_deref() == Some(new_name.as_str())
    })
    .await;
    c.wait_replicated(shard, "k/after", 2, Duration::from_secs(10)).await;
    let outcome = tokio::time::timeout(Duration::from_secs(10), stranded).await.expect("answered after healing");
    let outcome = outcome.expect("join");
    assert!(
        matches!(outcome, Err(StoreError::NotLeader { .. })),
        "the stranded append was never acknowledged: {outcome:?}"
    );
    assert_eq!(c.store(old).get::<u32>(shard, "k/stranded").expect("get"), None);
    eprintln!("failover in {failover:?}; old leader following {:?} after healing", healed_at.elapsed());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_catches_up_by_log_and_a_lagging_one_by_snapshot() {
    let snapshot_logs = 20;
    let mut c = Cluster::start(3, 2, snapshot_logs).await;
    let shard = 1;
    c.append(shard, "k/0".into(), 0).await;
    // Stop a follower, write a little, restart it: it catches up from the leader's log.
    let leader = c.wait_leader(shard, None).await;
    let lagging = (leader + 1) % 3;
    c.stop_node(lagging).await;
    for i in 1..5 {
        c.append(shard, format!("k/{i}"), i).await;
    }
    let started = Instant::now();
    c.start_node(lagging).await;
    c.wait_replicated(shard, "k/4", 4, Duration::from_secs(10)).await;
    let by_log = started.elapsed();
    let last_seen = c.log(lagging).group(shard).expect("replica").raft.metrics().borrow().last_log_index;

    // Stop it again and write past the snapshot threshold: the leader purges what it missed.
    c.stop_node(lagging).await;
    for i in 5..(5 + 3 * snapshot_logs as u32) {
        c.append(shard, format!("k/{i}"), i).await;
    }
    let last = 4 + 3 * snapshot_logs as u32;
    let leader = c.wait_leader(shard, None).await;
    let raft = c.log(leader).group(shard).expect("replica").raft.clone();
    eventually(Duration::from_secs(10), "the leader purges the log the lagging node missed", || {
        let purged = raft.metrics().borrow().purged.map(|p| p.index);
        purged > last_seen
    })
    .await;
    let started = Instant::now();
    c.start_node(lagging).await;
    c.wait_replicated(shard, &format!("k/{last}"), last, Duration::from_secs(15)).await;
    let by_snapshot = started.elapsed();
    let m = c.log(lagging).group(shard).expect("replica").raft.metrics().borrow().clone();
    assert!(m.snapshot.is_some_and(|s| Some(s.index) > last_seen), "installed a snapshot: {:?}", m.snapshot);
    assert_eq!(c.store(lagging).scan_all::<u32>(shard, "k/").expect("scan").len(), last as usize + 1);
    eprintln!("caught up by log in {by_log:?}, by snapshot in {by_snapshot:?}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_moves_to_a_joined_node_under_writes_and_leadership_follows() {
    let shard = 0;
    let mut c = Cluster::start(3, 2, 20).await;
    let newcomer = c.join().await;
    assert!(c.log(newcomer).local_groups().is_empty());
    let leader = c.wait_leader(shard, None).await;
    for k in 0..30 {
        c.append(shard, format!("k/{k:03}"), k).await;
    }
    // Replace one follower by the newcomer while writes go on.
    let gone = (0..3).find(|&i| i != leader).expect("a follower");
    let voters: Vec<String> =
        (0..3).filter(|&i| i != gone).map(|i| c.names[i].clone()).chain([c.names[newcomer].clone()]).collect();
    c.log(newcomer).open_replica(shard).await.expect("open");
    let writer = {
        let log = c.log(leader).clone();
        tokio::spawn(async move {
            let mut acked = vec![];
            for k in 30..90u32 {
                if log.append(shard, entry(format!("k/{k:03}"), k)).await.is_ok() {
                    acked.push(k);
                }
            }
            acked
        })
    };
    c.log(leader).change_replicas(shard, &voters, Duration::from_secs(20)).await.expect("move");
    let acked = writer.await.expect("join");
    assert!(!acked.is_empty(), "writes went on during the move");
    let joined = c.log(newcomer).clone();
    eventually(Duration::from_secs(10), "the newcomer votes", || joined.is_voter(shard)).await;
    let status = c.log(leader).group_status(shard).expect("status");
    let mut replicas = status.replicas.clone();
    replicas.sort();
    let mut want = voters.clone();
    want.sort();
    assert_eq!(replicas, want, "the group's members are the new set");
    let last = *acked.last().expect("acked");
    let store = c.store(newcomer).clone();
    eventually(Duration::from_secs(10), "the newcomer holds every acknowledged write", || {
        store.get::<u32>(shard, &format!("k/{last:03}")).ok().flatten() == Some(last)
    })
    .await;
    for k in (0..30).chain(acked.iter().copied()) {
        assert_eq!(store.get::<u32>(shard, &format!("k/{k:03}")).expect("get"), Some(k), "k/{k:03} on the newcomer");
    }
    // The removed replica closes and erases what it held.
    c.log(gone).close_replica(shard).await.expect("close");
    assert!(!c.log(gone).is_replica(shard));
    assert_eq!(c.store(gone).applied_index(shard).expect("index"), 0);
    assert!(!c.store(gone).has_group_state(shard).expect("state"));

    // Leadership moves to the newcomer: the leader hands over, the newcomer stands for election.
    let leader = c.wait_leader(shard, None).await;
    let term = c.log(leader).leadership(shard).term;
    c.log(leader).hand_over(shard, &c.names[newcomer]).await.expect("hand over");
    c.log(newcomer).campaign(shard).await.expect("campaign");
    eventually(Duration::from_secs(10), "the newcomer leads", || c.log(newcomer).leadership(shard).is_leader).await;
    assert_eq!(c.log(newcomer).leadership(shard).term, term + 1, "the old leader's vote elects it in one round");
    c.append(shard, "k/after".into(), 999).await;
    c.wait_replicated_on(&[leader, newcomer], shard, "k/after", 999).await;

    // A restart of every node keeps the new membership: the removed node opens nothing for the shard.
    drop((joined, store));
    for i in 0..c.nodes.len() {
        c.stop_node(i).await;
    }
    for i in 0..c.nodes.len() {
        c.start_node(i).await;
    }
    assert!(!c.log(gone).is_replica(shard), "a removed replica does not come back");
    assert!(c.log(newcomer).is_replica(shard), "the newcomer resumes its replica");
    c.append(shard, "k/restarted".into(), 1000).await;
    c.wait_replicated_on(&[newcomer], shard, "k/restarted", 1000).await;
    c.stop().await;
}
