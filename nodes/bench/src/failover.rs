//! `playground bench failover`: how long the shards of a 3-node cluster stay unwritable when the node
//! leading the most of them is killed with SIGKILL.
//!
//! Per kill: the cluster is whole (every member up, every shard led, one write accepted by every shard);
//! the busiest leader's process is killed; from that instant one writer per shard creates orders through
//! the gateway until its shard accepts one; the kill's figure is when the last shard did. The launcher
//! restarts the killed node by itself, and the next kill waits for it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use futures::{StreamExt, TryStreamExt};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use simulations::common::millis;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::cluster::{fetch_view, ClusterProcess, NODES};
use super::report::{ms, Failover, KillRow, Report};
use super::table::Table;
use super::workload::{self, SignedIn};

/// A write that takes longer is abandoned and sent again, so that one request stuck on the dead leader
/// does not hide its shard's recovery for long.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a failed write before the next, so a shard without a leader is not asked in a hot loop.
const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// Views, sign-ups and readiness checks: slower calls, not part of the figure.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the killed node gets to be restarted by the launcher and rejoin; the launcher's backoff
/// alone may reach 30 s when the same node dies again soon after a start.
const REJOIN_LIMIT: Duration = Duration::from_secs(120);
/// How long a kill waits for a view in which every shard is led, after the rejoin.
const WHOLE_LIMIT: Duration = Duration::from_secs(30);
/// Sign-ups hash passwords with argon2id: more at once only queues on two cores.
const SIGNUP_CONCURRENCY: usize = 4;
/// Sign-ups give up when this many users per shard still leave a shard without one.
const MAX_USERS_PER_SHARD: usize = 16;

/// Flags of `playground bench failover`.
#[derive(Args, Clone, Debug)]
pub struct FailoverArgs {
    /// Kills to measure, one after the other.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub kills: u64,
    /// Shards of the started cluster.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub shards: u32,
    /// Seconds a kill gets for every shard to accept a write again; a kill that needs longer is a failure.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub deadline: u64,
    /// Folder that receives bench.json and bench.md.
    #[arg(long, value_name = "DIR", default_value = "./bench-results/failover")]
    pub out: PathBuf,
    /// Argon2id memory in KiB for the cluster this command starts [default: the product's default].
    #[arg(long, value_name = "KIB")]
    pub argon2_memory_kib: Option<u32>,
}

pub fn run(args: FailoverArgs, binary: &Path) -> Result<()> {
    let cluster = ClusterProcess::start(binary, args.argon2_memory_kib, Some(args.shards))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bench-client")
        .build()
        .context("start the client runtime")?;
    let measured = runtime.block_on(measure(&args, &cluster));
    drop(runtime);
    if measured.is_err() {
        eprintln!("bench: failover: the cluster's log ends:\n{}", cluster.log_tail());
    }
    drop(cluster);
    let failover = measured?;
    let (failures, kills, aborted) = (failover.failures, failover.kills.len(), failover.aborted.clone());
    super::write_report(&Report::for_failover(args.argon2_memory_kib, failover), &args.out)?;
    if let Some(reason) = aborted {
        bail!("failover: stopped after {kills} of {} kills: {reason}", args.kills);
    }
    if failures > 0 {
        bail!("failover: {failures} of {kills} kills left a shard unwritable for more than {} s", args.deadline);
    }
    Ok(())
}

async fn measure(args: &FailoverArgs, cluster: &ClusterProcess) -> Result<Failover> {
    let base = cluster.url();
    let shards = usize::try_from(args.shards).context("--shards")?;
    let writer = reqwest::Client::builder()
        .pool_max_idle_per_host(shards)
        .timeout(WRITE_TIMEOUT)
        .tcp_nodelay(true)
        .build()
        .context("build the HTTP client")?;
    let admin = reqwest::Client::builder().timeout(ADMIN_TIMEOUT).build().context("build the HTTP client")?;
    super::targets::wait_ready(&admin, base).await?;
    let view = fetch_view(&admin, base, cluster.admin_token()).await?;
    if view.shard_count != args.shards {
        bail!("the cluster runs {} shards, not the {} asked for", view.shard_count, args.shards);
    }
    let users = Arc::new(sign_up_per_shard(&admin, base, args.shards).await?);
    let registered = users.iter().map(Vec::len).sum();
    let deadline = Duration::from_secs(args.deadline);
    let tag = format!("fo{:08x}", rand::random::<u32>());

    let total = usize::try_from(args.kills).context("--kills")?;
    let mut kills = Vec::new();
    let mut aborted = None;
    for n in 1..=total {
        match one_kill(n, cluster, &writer, &admin, &users, &format!("{tag}k{n}"), deadline).await {
            Ok((row, back)) => {
                eprintln!(
                    "bench: failover: kill {n} of {}: {}",
                    args.kills,
                    row.recovered_ms.map_or("not recovered".to_owned(), |ms| format!("{ms:.0} ms"))
                );
                kills.push(row);
                // The last kill's node is not waited for: nothing is measured after it.
                if n < total {
                    if let Err(e) = back.wait(cluster, &admin).await {
                        aborted = Some(format!("{e:#}"));
                        break;
                    }
                }
            }
            Err(e) => {
                aborted = Some(format!("kill {n}: {e:#}"));
                break;
            }
        }
    }
    let mut failover = Failover::new(NODES, args.shards, registered, args.deadline, kills);
    failover.aborted = aborted;
    Ok(failover)
}

/// Registers users until every shard holds at least one, by the shard of the user's id.
async fn sign_up_per_shard(client: &reqwest::Client, base: &str, shards: u32) -> Result<Vec<Vec<SignedIn>>> {
    let per_round = shards as usize;
    let mut by_shard: Vec<Vec<SignedIn>> = vec![Vec::new(); per_round];
    let mut registered = 0;
    while let Some(missing) = uncovered(&by_shard) {
        if registered >= MAX_USERS_PER_SHARD * per_round {
            bail!("after {registered} users, {missing} shards still hold none");
        }
        eprintln!("bench: failover: registering {per_round} users ({missing} of {shards} shards hold none yet)…");
        let round: Vec<SignedIn> = futures::stream::iter(registered..registered + per_round)
            .map(|i| workload::sign_up_fresh(client, base, "failover", i))
            .buffer_unordered(SIGNUP_CONCURRENCY)
            .try_collect()
            .await
            .context("register the failover users")?;
        registered += per_round;
        for user in round {
            by_shard[playground_proto::shard_of(&user.id, shards) as usize].push(user);
        }
    }
    Ok(by_shard)
}

/// How many shards hold no user, when any does not.
fn uncovered(by_shard: &[Vec<SignedIn>]) -> Option<usize> {
    let missing = by_shard.iter().filter(|users| users.is_empty()).count();
    (missing > 0 || by_shard.is_empty()).then_some(missing)
}

/// What to wait for after a kill before the next: the killed node started again, ready, and the cluster
/// whole.
struct Rejoin {
    victim: String,
    generation: u64,
}

impl Rejoin {
    async fn wait(&self, cluster: &ClusterProcess, client: &reqwest::Client) -> Result<()> {
        let limit = Instant::now() + REJOIN_LIMIT;
        let mut state;
        loop {
            state = match cluster.listening(&self.victim).filter(|l| l.generation > self.generation) {
                None => format!("{} has not been started again", self.victim),
                Some(l) => match client.get(format!("{}/readyz", l.url)).send().await {
                    Ok(r) if r.status().is_success() => {
                        match fetch_view(client, cluster.url(), cluster.admin_token()).await {
                            Ok(view) if view.is_whole(NODES) => return Ok(()),
                            Ok(view) => view.summary(),
                            Err(e) => format!("{e:#}"),
                        }
                    }
                    Ok(r) => format!("{} answers /readyz with {}", self.victim, r.status().as_u16()),
                    Err(e) => format!("{}: {e}", self.victim),
                },
            };
            if Instant::now() >= limit {
                bail!(
                    "the cluster was not whole again within {REJOIN_LIMIT:?} after {} was killed: {state}",
                    self.victim
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Waits until the view is whole: every member up and every shard led. Leaderships the placement driver
/// hands back to a restarted node leave a shard without a leader for a moment, even after the view was
/// whole once.
async fn wait_whole(cluster: &ClusterProcess, client: &reqwest::Client) -> Result<()> {
    let limit = Instant::now() + WHOLE_LIMIT;
    loop {
        let view = fetch_view(client, cluster.url(), cluster.admin_token()).await?;
        if view.is_whole(NODES) {
            return Ok(());
        }
        if Instant::now() >= limit {
            bail!("the cluster is not whole before the kill, after {WHOLE_LIMIT:?}: {}", view.summary());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Measures kill `n`; an error means the kill could not be made at all.
async fn one_kill(
    n: usize,
    cluster: &ClusterProcess,
    writer: &reqwest::Client,
    admin: &reqwest::Client,
    users: &Arc<Vec<Vec<SignedIn>>>,
    tag: &str,
    deadline: Duration,
) -> Result<(KillRow, Rejoin)> {
    let base = cluster.url();
    wait_whole(cluster, admin).await?;
    let start = Instant::now();
    let healthy = write_every_shard(writer, base, users, &format!("{tag}h"), start, start + deadline).await;
    if let Some(shard) = healthy.first_unwritten() {
        bail!("shard {shard} did not accept a write before the kill, with every member up");
    }
    let view = fetch_view(admin, base, cluster.admin_token()).await?;
    let (victim, led) = view.busiest_leader().context("no shard has a leader to kill")?;
    let pids = cluster.node_processes();
    let pid = *pids.get(&victim).with_context(|| format!("no process of {victim} among {pids:?}"))?;
    let generation = cluster.listening(&victim).map_or(0, |l| l.generation);
    eprintln!("bench: failover: kill {n}: SIGKILL to {victim} (pid {pid}), which leads {led} shards");
    kill(Pid::from_raw(pid), Signal::SIGKILL).with_context(|| format!("kill {victim}"))?;
    let killed = Instant::now();
    let round = write_every_shard(writer, base, users, tag, killed, killed + deadline).await;
    let row = KillRow {
        kill: n,
        victim: victim.clone(),
        victim_led_shards: led,
        recovered_ms: round.all_written().map(millis),
        healthy_ms: healthy.all_written().map(millis),
        unrecovered_shards: round.unwritten(),
        failed_writes: round.failed,
    };
    Ok((row, Rejoin { victim, generation }))
}

/// When each shard first accepted a write, from a common start, and the failed attempts on the way.
#[derive(Debug, Default)]
struct Round {
    written: Vec<Option<Duration>>,
    failed: u64,
}

impl Round {
    /// When the last shard accepted its first write, if every shard did.
    fn all_written(&self) -> Option<Duration> {
        self.written.iter().copied().collect::<Option<Vec<_>>>()?.into_iter().max()
    }

    fn unwritten(&self) -> Vec<u32> {
        (0u32..).zip(&self.written).filter(|(_, w)| w.is_none()).map(|(shard, _)| shard).collect()
    }

    fn first_unwritten(&self) -> Option<u32> {
        self.unwritten().first().copied()
    }
}

/// One writer per shard, each creating orders for its shard's users in turn until one is accepted or
/// `deadline` passes.
async fn write_every_shard(
    client: &reqwest::Client,
    base: &str,
    users: &Arc<Vec<Vec<SignedIn>>>,
    tag: &str,
    start: Instant,
    deadline: Instant,
) -> Round {
    let mut writers = JoinSet::new();
    for shard in 0..users.len() {
        let (client, base, users, tag) = (client.clone(), base.to_owned(), Arc::clone(users), tag.to_owned());
        writers.spawn(async move {
            let mine = &users[shard];
            let mut failed = 0;
            for seq in 0usize.. {
                let Some(user) = mine.get(seq % mine.len().max(1)) else { break };
                let key = format!("{tag}s{shard}n{seq}");
                let attempt = workload::create_order(&client, &base, &user.token, Some(&key));
                match tokio::time::timeout_at(deadline, attempt).await {
                    Ok(Ok(_)) => return (shard, Some(start.elapsed()), failed),
                    Ok(Err(_)) => failed += 1,
                    Err(_) => break,
                }
                if tokio::time::timeout_at(deadline, tokio::time::sleep(RETRY_PAUSE)).await.is_err() {
                    break;
                }
            }
            (shard, None, failed)
        });
    }
    let mut round = Round { written: vec![None; users.len()], failed: 0 };
    while let Some(joined) = writers.join_next().await {
        if let Ok((shard, written, failed)) = joined {
            round.written[shard] = written;
            round.failed += failed;
        }
    }
    round
}

pub fn summary_table(f: &Failover) -> Table {
    let mut t = Table::new(&["nodes", "shards", "kills", "recovered", "median ms", "max ms", "deadline s"], 0);
    t.row(vec![
        f.nodes.to_string(),
        f.shards.to_string(),
        f.kills.len().to_string(),
        (f.kills.len() - f.failures).to_string(),
        ms(f.median_ms),
        ms(f.max_ms),
        f.deadline_s.to_string(),
    ]);
    t
}

pub fn kills_table(f: &Failover) -> Table {
    let headers = ["kill", "victim", "shards it led", "recovered ms", "healthy ms", "failed writes", "not recovered"];
    let mut t = Table::new(&headers, 2);
    for k in &f.kills {
        let unrecovered: Vec<String> = k.unrecovered_shards.iter().map(u32::to_string).collect();
        t.row(vec![
            k.kill.to_string(),
            k.victim.clone(),
            k.victim_led_shards.to_string(),
            k.recovered_ms.map_or("failed".to_owned(), |v| format!("{v:.0}")),
            k.healthy_ms.map_or("-".to_owned(), |v| format!("{v:.0}")),
            k.failed_writes.to_string(),
            if unrecovered.is_empty() { "-".to_owned() } else { unrecovered.join(" ") },
        ]);
    }
    t
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<FailoverArgs, clap::Error> {
        crate::parse_flags("failover", args)
    }

    #[test]
    fn flags_default_and_are_bounded() {
        let a = parse(&[]).unwrap();
        assert_eq!((a.kills, a.shards, a.deadline), (10, 64, 30));
        assert_eq!(a.out, PathBuf::from("./bench-results/failover"));
        let a = parse(&["--kills", "5", "--shards", "16", "--deadline", "10", "--argon2-memory-kib", "1024"]).unwrap();
        assert_eq!((a.kills, a.shards, a.deadline, a.argon2_memory_kib), (5, 16, 10, Some(1024)));
        assert!(parse(&["--kills", "0"]).is_err());
        assert!(parse(&["--shards", "0"]).is_err());
        assert!(parse(&["--shards", "4097"]).is_err());
        assert!(parse(&["--deadline", "0"]).is_err());
    }

    #[test]
    fn a_round_is_over_when_its_last_shard_is_written() {
        let ms = Duration::from_millis;
        let round = Round { written: vec![Some(ms(30)), Some(ms(900)), Some(ms(12))], failed: 4 };
        assert_eq!(round.all_written(), Some(ms(900)));
        assert!(round.unwritten().is_empty());
        let stuck = Round { written: vec![Some(ms(30)), None, Some(ms(12)), None], failed: 9 };
        assert_eq!((stuck.all_written(), stuck.unwritten(), stuck.first_unwritten()), (None, vec![1, 3], Some(1)));
        assert_eq!(Round::default().all_written(), None);
        assert_eq!(millis(ms(1500)), 1500.0);
    }

    #[test]
    fn users_cover_every_shard_or_say_how_many_do_not() {
        let user = || SignedIn { id: "u".into(), token: "t".into() };
        assert_eq!(uncovered(&[vec![user()], vec![]]), Some(1));
        assert_eq!(uncovered(&[vec![user()], vec![user(), user()]]), None);
        assert_eq!(uncovered(&[]), Some(0));
    }
}
