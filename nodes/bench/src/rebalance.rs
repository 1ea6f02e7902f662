//! `playground bench rebalance`: how long a 3-node cluster takes to spread its shards evenly again once a
//! fourth node joins, and what the join costs a steady load meanwhile.
//!
//! Per run, on a fresh cluster (`simulations::ProcessCluster`: 3 nodes, 1 gateway, 64 shards): users are
//! registered until every shard holds one; workers run a closed loop through the gateway, each creating an
//! order (with an idempotency key, sent again with the same key after a failure) and reading one it
//! created before; after a warm-up and a baseline window a fourth node is started; the cluster view is
//! polled until the placement is even; then the load stops and every acknowledged order is read back.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use futures::StreamExt;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use simulations::common::{git_commit, median, millis};
use simulations::{Api, ProcessCluster, ADMIN_TOKEN};
use tokio::time::Instant;

use super::report::{ratio, timestamp, Table};

/// Nodes before the join; one more joins.
const NODES: usize = 3;
const SHARDS: u32 = 64;
/// Replicas of every shard, the product's default replication factor.
const REPLICAS: usize = 3;
/// Closed-loop workers of the load.
const WORKERS: usize = 8;
/// Width of the buckets the load's requests are counted in.
const BUCKET: Duration = Duration::from_millis(250);
/// Load before the baseline window, so connection set-up and cold caches stay out of it.
const WARM_UP: Duration = Duration::from_secs(1);
/// The window whose throughput the rebalance is compared with.
const BASELINE: Duration = Duration::from_secs(5);
/// Pause between two reads of the cluster view while waiting for balance.
const POLL: Duration = Duration::from_millis(100);
/// How often the wait for balance says how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Registrations at once; argon2id is cheap in the test cluster's settings, but cores are few.
const SIGNUP_CONCURRENCY: usize = 4;
/// Sign-ups give up when this many users per shard still leave a shard without one.
const MAX_USERS_PER_SHARD: usize = 16;
/// Read-back requests at once, and attempts per order before it counts as unreadable.
const READ_BACK_CONCURRENCY: usize = 16;
const READ_BACK_ATTEMPTS: usize = 3;
/// Failed requests quoted per run, and how much of an answer's body each quote keeps.
const ERROR_SAMPLES: usize = 12;
const QUOTE_CHARS: usize = 160;

/// Flags of `playground bench rebalance`.
#[derive(Args, Clone, Debug)]
pub struct RebalanceArgs {
    /// Fresh clusters to measure, one after the other.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=20))]
    pub runs: u64,
    /// Shards the placement driver may move at once (`cluster.max_concurrent_moves`) [default: the
    /// product's default, 8].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub max_moves: Option<u32>,
    /// Seconds a run gets, from the join, for the placement to even out; a run that needs longer is a failure.
    #[arg(long, value_name = "SECS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub deadline: u64,
    /// Folder that receives bench-rebalance.json and bench-rebalance.md.
    #[arg(long, value_name = "DIR", default_value = "./bench-results")]
    pub out: PathBuf,
}

pub fn run(args: RebalanceArgs, binary: &Path) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bench-client")
        .build()
        .context("start the client runtime")?;
    let report = runtime.block_on(measure(&args, binary))?;
    drop(runtime);
    write_report(&report, &args.out)?;
    let s = &report.summary;
    if let Some(reason) = &report.aborted {
        bail!("rebalance: stopped after {} of {} runs: {reason}", report.runs.len(), args.runs);
    }
    if s.balanced < s.runs {
        let why: Vec<String> =
            report.runs.iter().filter_map(|r| Some(format!("run {}: {}", r.run, r.error.as_deref()?))).collect();
        bail!(
            "rebalance: {} of {} runs did not balance within {} s: {}",
            s.runs - s.balanced,
            s.runs,
            args.deadline,
            why.join("; ")
        );
    }
    if s.lost > 0 || s.unreadable > 0 {
        bail!("rebalance: {} acknowledged orders lost and {} unreadable after the rebalance", s.lost, s.unreadable);
    }
    Ok(())
}

async fn measure(args: &RebalanceArgs, binary: &Path) -> Result<Report> {
    let moves = args.max_moves.map(|n| n.to_string());
    let env: Vec<(&str, &str)> = moves.iter().map(|n| ("PLAYGROUND_MAX_CONCURRENT_MOVES", n.as_str())).collect();
    let total = usize::try_from(args.runs).context("--runs")?;
    let deadline = Duration::from_secs(args.deadline);
    let mut runs = Vec::new();
    let mut aborted = None;
    for n in 1..=total {
        match one_run(n, total, binary, &env, deadline).await {
            Ok(row) => runs.push(row),
            Err(e) => {
                aborted = Some(format!("run {n}: {e:#}"));
                break;
            }
        }
    }
    let max_moves = args.max_moves.unwrap_or(cluster_config::DEFAULT_MAX_CONCURRENT_MOVES);
    Ok(Report::new(max_moves, args.deadline, runs, aborted))
}

/// One fresh cluster: load, join, wait for balance, read back. An error means the run could not be made.
async fn one_run(n: usize, total: usize, binary: &Path, env: &[(&str, &str)], deadline: Duration) -> Result<RunRow> {
    eprintln!("bench: rebalance: run {n} of {total}: starting {NODES} nodes and a gateway with {SHARDS} shards…");
    let mut cluster = ProcessCluster::start(binary, NODES, 1, SHARDS, env).await.context("start the cluster")?;
    let api = cluster.gateway(0);
    let view = fetch_view(&api).await?;
    if view.shard_count != SHARDS || view.members.len() != NODES {
        bail!("the new cluster is not the one asked for: {}", view.summary());
    }
    // The driver evens out the leaders of a new cluster too: the baseline starts once it has.
    let settle = Instant::now();
    let settled = wait_for_balance(&api, NODES, "node-1", settle, deadline).await;
    if settled.balanced_at.is_none() {
        bail!("the {NODES}-node cluster did not settle before the join: {}", settled.last);
    }
    let settle = settle.elapsed();
    let users = Arc::new(sign_up_per_shard(&api).await?);

    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let worker = Worker {
                api: api.clone(),
                users: Arc::clone(&users),
                index: w,
                tag: format!("rb{n}w{w}"),
                stop: Arc::clone(&stop),
                start,
            };
            tokio::spawn(worker.run())
        })
        .collect();
    eprintln!("bench: rebalance: run {n}: {WORKERS} workers; baseline for {BASELINE:?}…");
    tokio::time::sleep_until(start + WARM_UP + BASELINE).await;

    let join_at = start.elapsed();
    // Blocks this thread until the node listens; the workers go on on the runtime's own threads.
    let newcomer = match cluster.add_node() {
        Ok(i) => i,
        Err(e) => {
            stop.store(true, Ordering::SeqCst);
            return Err(e.context("start the fourth node"));
        }
    };
    let joined_at = start.elapsed();
    let name = cluster.nodes[newcomer].name.clone();
    eprintln!(
        "bench: rebalance: run {n}: {name} listens after {:.0} ms; waiting for balance…",
        millis(joined_at - join_at)
    );
    let wait = wait_for_balance(&api, NODES + 1, &name, start, deadline).await;
    stop.store(true, Ordering::SeqCst);
    let mut log = WorkerLog::default();
    for worker in workers {
        log.merge(worker.await.context("a load worker panicked")?);
    }
    let checked = read_back(&api, &users, &log.acked).await;
    let moves = move_metrics(&cluster).await;
    drop(cluster);

    let row = RunRow::new(n, users.len(), Marks { settle, join_at, joined_at, wait: &wait }, &log, checked, moves);
    eprintln!(
        "bench: rebalance: run {n}: {}; throughput during/before {}; {} failed requests during it; {} of {} \
         acknowledged orders lost",
        row.rebalance_ms.map_or("not balanced".to_owned(), |ms| format!("balanced after {ms:.0} ms")),
        times(row.throughput_ratio),
        row.failed_during,
        row.lost,
        row.acked,
    );
    for quote in &row.error_samples {
        eprintln!("bench: rebalance: run {n}: failed: {quote}");
    }
    Ok(row)
}

/// Registers users until every shard holds one, by the shard of the user's id; returns the first of each.
async fn sign_up_per_shard(api: &Api) -> Result<Vec<SignedIn>> {
    let shards = SHARDS as usize;
    let mut by_shard: Vec<Option<SignedIn>> = vec![None; shards];
    let mut registered = 0;
    loop {
        let missing = by_shard.iter().filter(|u| u.is_none()).count();
        if missing == 0 {
            return Ok(by_shard.into_iter().flatten().collect());
        }
        if registered >= MAX_USERS_PER_SHARD * shards {
            bail!("after {registered} users, {missing} shards still hold none");
        }
        let round: Vec<Result<SignedIn>> = futures::stream::iter(registered..registered + shards)
            .map(|i| async move {
                let email = format!("rebalance-{i}@bench.example");
                let (id, token) = api.signup(&email).await?;
                Ok(SignedIn { id, token })
            })
            .buffer_unordered(SIGNUP_CONCURRENCY)
            .collect()
            .await;
        registered += shards;
        // Not measured: a sign-up that fails is left behind, and the next round registers others.
        let (mut signed, mut last_error) = (0, None);
        for user in round {
            match user {
                Ok(user) => {
                    signed += 1;
                    by_shard[playground_proto::shard_of(&user.id, SHARDS) as usize].get_or_insert(user);
                }
                Err(e) => last_error = Some(e),
            }
        }
        if let Some(e) = last_error {
            if signed == 0 {
                return Err(e.context("register the load's users"));
            }
            eprintln!("bench: rebalance: {} of {shards} sign-ups failed, the last with: {e:#}", shards - signed);
        }
    }
}

#[derive(Clone, Debug)]
struct SignedIn {
    id: String,
    token: String,
}

/// One closed-loop worker: create an order, read one of its own, again, until `stop`.
struct Worker {
    api: Api,
    users: Arc<Vec<SignedIn>>,
    index: usize,
    /// Unique per run and worker: the idempotency keys' prefix.
    tag: String,
    stop: Arc<AtomicBool>,
    start: Instant,
}

/// What a worker saw: every request's end and outcome, and the orders acknowledged.
#[derive(Default)]
struct WorkerLog {
    events: Vec<Event>,
    /// (index of the owner in the users, order id).
    acked: Vec<(usize, String)>,
    /// (when, what) of the first failed requests.
    errors: Vec<(Duration, String)>,
}

impl WorkerLog {
    fn record(&mut self, at: Duration, outcome: std::result::Result<(), String>) {
        let ok = outcome.is_ok();
        if let Err(what) = outcome {
            if self.errors.len() < ERROR_SAMPLES {
                self.errors.push((at, what));
            }
        }
        self.events.push(Event { at, ok });
    }

    fn merge(&mut self, other: WorkerLog) {
        self.events.extend(other.events);
        self.acked.extend(other.acked);
        self.errors.extend(other.errors);
    }
}

/// One request of the load: when it ended, from the load's start, and whether it got its expected answer.
#[derive(Clone, Copy, Debug)]
struct Event {
    at: Duration,
    ok: bool,
}

impl Worker {
    async fn run(self) -> WorkerLog {
        let mut log = WorkerLog::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.index as u64);
        // Orders acknowledged so far: it names the next key, which a failed create sends again.
        let mut created = 0;
        while !self.stop.load(Ordering::SeqCst) {
            let owner = (self.index + created * WORKERS) % self.users.len();
            let key = format!("{}o{created}", self.tag);
            let answer = self.api.create_order(&self.users[owner].token, &key, Some(&key)).await;
            let outcome = match answer {
                Ok(r) if (r.status == 201 || r.status == 200) && !r.field("id").is_empty() => {
                    log.acked.push((owner, r.field("id")));
                    created += 1;
                    Ok(())
                }
                Ok(r) => Err(format!("create {key}: {} {}", r.status, quote(&r.text))),
                Err(e) => Err(format!("create {key}: {e:#}")),
            };
            log.record(self.start.elapsed(), outcome);
            if log.acked.is_empty() {
                continue;
            }
            let (owner, id) = &log.acked[rng.gen_range(0..log.acked.len())];
            let outcome = match self.api.get(&format!("/v1/orders/{id}"), Some(&self.users[*owner].token)).await {
                Ok(r) if r.status == 200 => Ok(()),
                Ok(r) => Err(format!("read {id}: {} {}", r.status, quote(&r.text))),
                Err(e) => Err(format!("read {id}: {e:#}")),
            };
            log.record(self.start.elapsed(), outcome);
        }
        log
    }
}

fn quote(text: &str) -> String {
    let cut: String = text.chars().take(QUOTE_CHARS).collect();
    if cut.len() < text.len() {
        format!("{cut}…")
    } else {
        cut
    }
}

/// How the wait for balance ended, and how the newcomer's share grew on the way.
struct Wait {
    /// From the load's start, when the view was first balanced; `None` when the deadline came first.
    balanced_at: Option<Duration>,
    /// From the load's start, when the record first placed replicas evenly (leaders may still be uneven).
    placed_at: Option<Duration>,
    /// When the wait ended, balanced or not.
    ended_at: Duration,
    progress: Vec<Progress>,
    /// The last view's summary, or why it could not be read.
    last: String,
}

/// The newcomer's replicas and leaderships in the view, from the load's start, each time they changed.
#[derive(Clone, Debug, Serialize, PartialEq)]
struct Progress {
    at_ms: f64,
    replicas: usize,
    leaders: usize,
}

/// Reads the view until it is balanced over `members` members, or `deadline` passes; `newcomer`'s share is
/// followed on the way.
async fn wait_for_balance(api: &Api, members: usize, newcomer: &str, start: Instant, deadline: Duration) -> Wait {
    let limit = Instant::now() + deadline;
    let mut wait = Wait {
        balanced_at: None,
        placed_at: None,
        ended_at: Duration::ZERO,
        progress: Vec::new(),
        last: String::new(),
    };
    let mut next_word = Instant::now() + PROGRESS_EVERY;
    loop {
        match fetch_view(api).await {
            Ok(view) => {
                let at = start.elapsed();
                let spread = view.spread();
                let mine = |by: &BTreeMap<String, usize>| by.get(newcomer).copied().unwrap_or(0);
                let now =
                    Progress { at_ms: millis(at), replicas: mine(&spread.replicas), leaders: mine(&spread.leaders) };
                if wait.progress.last().is_none_or(|p| (p.replicas, p.leaders) != (now.replicas, now.leaders)) {
                    wait.progress.push(now);
                }
                if wait.placed_at.is_none() && view.replicas_even(members) {
                    wait.placed_at = Some(at);
                }
                wait.last = view.summary();
                if view.balanced(members) {
                    wait.balanced_at = Some(at);
                    wait.ended_at = at;
                    return wait;
                }
            }
            Err(e) => wait.last = format!("{e:#}"),
        }
        if Instant::now() >= limit {
            wait.ended_at = start.elapsed();
            wait.last = format!("not balanced within {deadline:?}; last view: {}", wait.last);
            return wait;
        }
        if Instant::now() >= next_word {
            eprintln!("bench: rebalance: {}", wait.last);
            next_word += PROGRESS_EVERY;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What became of the acknowledged orders, read back through the gateway after the rebalance.
#[derive(Default)]
struct ReadBack {
    /// Answered 404: the order is gone.
    lost: usize,
    /// Never answered 200 nor 404 in `READ_BACK_ATTEMPTS` attempts.
    unreadable: usize,
    samples: Vec<String>,
}

async fn read_back(api: &Api, users: &[SignedIn], acked: &[(usize, String)]) -> ReadBack {
    let outcomes: Vec<std::result::Result<(), (bool, String)>> = futures::stream::iter(acked)
        .map(|(owner, id)| async move {
            let mut last = String::new();
            for attempt in 0..READ_BACK_ATTEMPTS {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                match api.get(&format!("/v1/orders/{id}"), Some(&users[*owner].token)).await {
                    Ok(r) if r.status == 200 && r.field("id") == *id => return Ok(()),
                    Ok(r) if r.status == 404 => return Err((true, format!("order {id}: 404 {}", quote(&r.text)))),
                    Ok(r) => last = format!("order {id}: {} {}", r.status, quote(&r.text)),
                    Err(e) => last = format!("order {id}: {e:#}"),
                }
            }
            Err((false, last))
        })
        .buffer_unordered(READ_BACK_CONCURRENCY)
        .collect()
        .await;
    let mut out = ReadBack::default();
    for (lost, what) in outcomes.into_iter().filter_map(std::result::Result::err) {
        if lost {
            out.lost += 1;
        } else {
            out.unreadable += 1;
        }
        if out.samples.len() < ERROR_SAMPLES {
            out.samples.push(what);
        }
    }
    out
}

/// The placement driver's own account of its moves, summed over the nodes' `/metrics`.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
struct Moves {
    /// Shard replica moves completed.
    moves: u64,
    /// Driver rounds that completed at least one move, and their total time.
    rounds: u64,
    rounds_s: f64,
}

async fn move_metrics(cluster: &ProcessCluster) -> Option<Moves> {
    let mut sum = Moves::default();
    for i in 0..cluster.nodes.len() {
        let api = cluster.node(i);
        sum.moves += api.metric("playground_placement_moves_total", "").await.ok()? as u64;
        sum.rounds += api.metric("playground_placement_move_duration_seconds_count", "").await.ok()? as u64;
        sum.rounds_s += api.metric("playground_placement_move_duration_seconds_sum", "").await.ok()?;
    }
    Some(sum)
}

/// The parts of `GET /v1/cluster` this benchmark reads.
#[derive(Clone, Debug, Deserialize)]
struct View {
    shard_count: u32,
    members: Vec<ViewMember>,
    shards: Vec<ViewShard>,
}

#[derive(Clone, Debug, Deserialize)]
struct ViewMember {
    id: String,
}

#[derive(Clone, Debug, Deserialize)]
struct ViewShard {
    replicas: Vec<String>,
    leader: Option<String>,
}

/// Replicas and leaderships per member, members without any at zero.
struct Spread {
    replicas: BTreeMap<String, usize>,
    leaders: BTreeMap<String, usize>,
}

impl View {
    fn spread(&self) -> Spread {
        let zero = || self.members.iter().map(|m| (m.id.clone(), 0)).collect::<BTreeMap<_, _>>();
        let (mut replicas, mut leaders) = (zero(), zero());
        for shard in &self.shards {
            for r in &shard.replicas {
                *replicas.entry(r.clone()).or_default() += 1;
            }
            if let Some(l) = &shard.leader {
                *leaders.entry(l.clone()).or_default() += 1;
            }
        }
        Spread { replicas, leaders }
    }

    /// `members` members; every shard in the view with `REPLICAS` distinct replicas, each a member; replicas
    /// per member within one of each other.
    fn replicas_even(&self, members: usize) -> bool {
        let member = |id: &String| self.members.iter().any(|m| m.id == *id);
        let distinct = |r: &[String]| r.iter().collect::<std::collections::BTreeSet<_>>().len() == r.len();
        self.members.len() == members
            && self.shards.len() == self.shard_count as usize
            && self
                .shards
                .iter()
                .all(|s| s.replicas.len() == REPLICAS && distinct(&s.replicas) && s.replicas.iter().all(member))
            && within_one(&self.spread().replicas)
    }

    /// Replicas even, every shard led by one of its replicas, and leaderships per member within one of each
    /// other.
    fn balanced(&self, members: usize) -> bool {
        self.replicas_even(members)
            && self.shards.iter().all(|s| s.leader.as_ref().is_some_and(|l| s.replicas.contains(l)))
            && within_one(&self.spread().leaders)
    }

    fn summary(&self) -> String {
        let spread = self.spread();
        let list =
            |by: &BTreeMap<String, usize>| by.iter().map(|(m, n)| format!("{m} {n}")).collect::<Vec<_>>().join(", ");
        let unled = self.shards.iter().filter(|s| s.leader.is_none()).count();
        format!(
            "replicas per member: {}; leaders per member: {}; shards without a leader: {unled} of {}",
            list(&spread.replicas),
            list(&spread.leaders),
            self.shard_count
        )
    }
}

/// The largest and the smallest count differ by at most one (true of no counts at all).
fn within_one(by: &BTreeMap<String, usize>) -> bool {
    let (lo, hi) = by.values().fold((usize::MAX, 0), |(lo, hi), &n| (lo.min(n), hi.max(n)));
    by.is_empty() || hi - lo <= 1
}

async fn fetch_view(api: &Api) -> Result<View> {
    let r = api.get("/v1/cluster", Some(ADMIN_TOKEN)).await?;
    if r.status != 200 {
        bail!("GET /v1/cluster: {} {}", r.status, quote(&r.text));
    }
    serde_json::from_str(&r.text).context("read the cluster view")
}

/// Succeeded and failed requests that ended in `[from, to)`.
fn window(events: &[Event], from: Duration, to: Duration) -> (u64, u64) {
    let inside = events.iter().filter(|e| e.at >= from && e.at < to);
    inside.fold((0, 0), |(ok, failed), e| if e.ok { (ok + 1, failed) } else { (ok, failed + 1) })
}

/// Succeeded and failed requests per `BUCKET`, from the load's start.
fn buckets(events: &[Event]) -> Vec<(u64, u64)> {
    let width = BUCKET.as_millis().max(1);
    let index = |e: &Event| usize::try_from(e.at.as_millis() / width).unwrap_or(usize::MAX);
    let mut out = vec![(0, 0); events.iter().map(|e| index(e).saturating_add(1)).max().unwrap_or(0)];
    for e in events {
        let bucket = &mut out[index(e)];
        if e.ok {
            bucket.0 += 1;
        } else {
            bucket.1 += 1;
        }
    }
    out
}

/// The successes of every whole bucket inside `[from, to)`.
fn whole_buckets(buckets: &[(u64, u64)], from: Duration, to: Duration) -> Vec<u64> {
    let width = BUCKET.as_millis().max(1);
    let first = usize::try_from(from.as_millis().div_ceil(width)).unwrap_or(usize::MAX);
    let end = usize::try_from(to.as_millis() / width).unwrap_or(usize::MAX);
    (first..end).map(|i| buckets.get(i).map_or(0, |b| b.0)).collect()
}

/// The fewest successes of a whole bucket inside `[from, to)`, as a fraction of what `baseline_per_s`
/// gives in one bucket; `None` when no whole bucket fits.
fn worst_bucket(buckets: &[(u64, u64)], from: Duration, to: Duration, baseline_per_s: f64) -> Option<f64> {
    let fewest = whole_buckets(buckets, from, to).into_iter().min()?;
    ratio(fewest as f64, baseline_per_s * BUCKET.as_secs_f64())
}

/// When things happened in a run, from the load's start.
struct Marks<'a> {
    /// Not from the load's start: from the cluster ready until its leaders were even, before the load.
    settle: Duration,
    join_at: Duration,
    joined_at: Duration,
    wait: &'a Wait,
}

/// One run's figures.
#[derive(Clone, Debug, Serialize)]
struct RunRow {
    run: usize,
    users: usize,
    /// From the 3-node cluster ready until its leaders were even, before the load started.
    settle_ms: f64,
    /// From the load's start: the join began (`add_node` called), the newcomer listened, and the view was
    /// balanced (or the wait gave up).
    join_at_ms: f64,
    joined_at_ms: f64,
    ended_at_ms: f64,
    /// From the newcomer listening until the record placed replicas evenly, and until the view was balanced
    /// (the figure).
    placed_ms: Option<f64>,
    rebalance_ms: Option<f64>,
    /// Successful requests per second in the baseline window, and from the join's start until balance.
    before_per_s: f64,
    during_per_s: f64,
    throughput_ratio: Option<f64>,
    /// The worst whole bucket between the join's start and balance, against the baseline's mean bucket.
    worst_bucket_ratio: Option<f64>,
    /// Whole buckets of that window in which no request succeeded: the load stood still.
    empty_buckets: usize,
    failed_during: u64,
    failed_total: u64,
    requests: u64,
    acked: usize,
    lost: usize,
    unreadable: usize,
    moves: Option<Moves>,
    /// Why the run did not balance, if it did not.
    error: Option<String>,
    /// The first failed requests of each worker, with when they ended (s from the load's start), and the
    /// first failed read-backs.
    error_samples: Vec<String>,
    progress: Vec<Progress>,
    bucket_ms: u64,
    /// (succeeded, failed) per bucket from the load's start.
    buckets: Vec<(u64, u64)>,
}

impl RunRow {
    fn new(
        run: usize,
        users: usize,
        marks: Marks<'_>,
        log: &WorkerLog,
        checked: ReadBack,
        moves: Option<Moves>,
    ) -> Self {
        let wait = marks.wait;
        let before = window(&log.events, WARM_UP, WARM_UP + BASELINE);
        let before_per_s = before.0 as f64 / BASELINE.as_secs_f64();
        let (ok, failed_during) = window(&log.events, marks.join_at, wait.ended_at + Duration::from_nanos(1));
        let during_per_s = ratio(ok as f64, (wait.ended_at - marks.join_at).as_secs_f64()).unwrap_or(0.0);
        let buckets = buckets(&log.events);
        let mut errors = log.errors.clone();
        errors.sort_by_key(|(at, _)| *at);
        let mut error_samples: Vec<String> =
            errors.into_iter().map(|(at, what)| format!("{:.2} s: {what}", at.as_secs_f64())).collect();
        error_samples.extend(checked.samples);
        let since_joined = |at: Duration| millis(at.saturating_sub(marks.joined_at));
        Self {
            run,
            users,
            settle_ms: millis(marks.settle),
            join_at_ms: millis(marks.join_at),
            joined_at_ms: millis(marks.joined_at),
            ended_at_ms: millis(wait.ended_at),
            placed_ms: wait.placed_at.map(since_joined),
            rebalance_ms: wait.balanced_at.map(since_joined),
            before_per_s,
            during_per_s,
            throughput_ratio: ratio(during_per_s, before_per_s),
            worst_bucket_ratio: worst_bucket(&buckets, marks.join_at, wait.ended_at, before_per_s),
            empty_buckets: whole_buckets(&buckets, marks.join_at, wait.ended_at)
                .into_iter()
                .filter(|&n| n == 0)
                .count(),
            failed_during,
            failed_total: log.events.iter().filter(|e| !e.ok).count() as u64,
            requests: log.events.len() as u64,
            acked: log.acked.len(),
            lost: checked.lost,
            unreadable: checked.unreadable,
            moves,
            error: wait.balanced_at.is_none().then(|| wait.last.clone()),
            error_samples,
            progress: wait.progress.clone(),
            bucket_ms: BUCKET.as_millis() as u64,
            buckets,
        }
    }
}

/// Over the runs: the rebalance time of those that balanced, and everything else summed.
#[derive(Clone, Debug, Serialize, PartialEq)]
struct Summary {
    runs: usize,
    balanced: usize,
    median_rebalance_ms: Option<f64>,
    max_rebalance_ms: Option<f64>,
    median_throughput_ratio: Option<f64>,
    failed_during: u64,
    failed_total: u64,
    requests: u64,
    acked: usize,
    lost: usize,
    unreadable: usize,
}

fn summarize(runs: &[RunRow]) -> Summary {
    let sorted = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v
    };
    let times = sorted(runs.iter().filter_map(|r| r.rebalance_ms).collect());
    let ratios = sorted(runs.iter().filter_map(|r| r.throughput_ratio).collect());
    Summary {
        runs: runs.len(),
        balanced: times.len(),
        median_rebalance_ms: median(&times),
        max_rebalance_ms: times.last().copied(),
        median_throughput_ratio: median(&ratios),
        failed_during: runs.iter().map(|r| r.failed_during).sum(),
        failed_total: runs.iter().map(|r| r.failed_total).sum(),
        requests: runs.iter().map(|r| r.requests).sum(),
        acked: runs.iter().map(|r| r.acked).sum(),
        lost: runs.iter().map(|r| r.lost).sum(),
        unreadable: runs.iter().map(|r| r.unreadable).sum(),
    }
}

/// Everything the command found, with what is needed to compare it with another run.
#[derive(Debug, Serialize)]
struct Report {
    version: &'static str,
    git_commit: Option<String>,
    timestamp: String,
    cores: usize,
    nodes_before: usize,
    shards: u32,
    replicas: usize,
    workers: usize,
    max_concurrent_moves: u32,
    deadline_s: u64,
    warm_up_s: f64,
    baseline_s: f64,
    summary: Summary,
    verdicts: Vec<super::goals::Verdict>,
    runs: Vec<RunRow>,
    /// Why the command stopped before its last run, if it did.
    aborted: Option<String>,
}

/// How the figures are measured; kept beside the code that implements it.
const METHOD: &str = "\
- Each run starts a fresh cluster with `simulations::ProcessCluster` (3 nodes, 1 gateway, 64 shards, every shard \
on 3 replicas; the test cluster's settings: argon2id 1 MiB and 1 pass, heartbeats every 200 ms, failure timeout 1 s).
- The driver also evens out the leaders of a new cluster: the command waits until the 3-node cluster is balanced \
(leaderships within one of each other) before it registers users, until every shard holds one; the load uses one \
user per shard.
- 8 workers run a closed loop through the gateway: create an order with an `Idempotency-Key` (after a failure the \
same key is sent again), then read one of the worker's acknowledged orders. A request fails when it gets another \
status than 201/200 (create) or 200 (read), or no answer (transport error, 30 s client timeout).
- Baseline: successful requests per second from 1 s to 6 s after the load starts. Then a fourth node is started \
(`add_node`), and `GET /v1/cluster` is read every 100 ms until it is balanced: 4 members, every shard on 3 distinct \
members and led by one of them, replicas per member within one of each other (48 each) and leaderships within one \
(16 each).
- Rebalance time: from the fourth node listening until the first balanced view. Throughput during: successful \
requests per second from the call that starts the node until balance, over the baseline's. Worst 250 ms: the \
fewest successes in a whole 250 ms bucket of that window, over the baseline's mean bucket; empty 250 ms: the \
whole buckets of that window in which no request succeeded.
- After balance the load stops and every acknowledged order is read back through the gateway (up to 3 attempts): \
a 404 is a lost write.";

impl Report {
    fn new(max_concurrent_moves: u32, deadline_s: u64, runs: Vec<RunRow>, aborted: Option<String>) -> Self {
        let (s, empty) = (summarize(&runs), (!runs.is_empty()).then(|| runs.iter().map(|r| r.empty_buckets).sum()));
        Self {
            version: env!("CARGO_PKG_VERSION"),
            git_commit: git_commit(),
            timestamp: timestamp(),
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            nodes_before: NODES,
            shards: SHARDS,
            replicas: REPLICAS,
            workers: WORKERS,
            max_concurrent_moves,
            deadline_s,
            warm_up_s: WARM_UP.as_secs_f64(),
            baseline_s: BASELINE.as_secs_f64(),
            verdicts: super::goals::rebalance(s.max_rebalance_ms, s.median_throughput_ratio, empty),
            summary: s,
            runs,
            aborted,
        }
    }

    fn heading(&self) -> String {
        format!(
            "playground {} (commit {}), {}, {} cores: {} nodes + 1 joining, {} shards × {} replicas, {} workers, \
             max concurrent moves {}",
            self.version,
            self.git_commit.as_deref().unwrap_or("unknown"),
            self.timestamp,
            self.cores,
            self.nodes_before,
            self.shards,
            self.replicas,
            self.workers,
            self.max_concurrent_moves,
        )
    }

    fn summary_table(&self) -> Table {
        let s = &self.summary;
        let headers = [
            "runs",
            "balanced",
            "median rebalance s",
            "max rebalance s",
            "throughput during/before",
            "failed during",
            "failed in all",
            "requests",
            "acked orders",
            "lost",
            "unreadable",
        ];
        let mut t = Table::new(&headers, 1);
        t.row(vec![
            s.runs.to_string(),
            s.balanced.to_string(),
            secs(s.median_rebalance_ms),
            secs(s.max_rebalance_ms),
            times(s.median_throughput_ratio),
            s.failed_during.to_string(),
            s.failed_total.to_string(),
            s.requests.to_string(),
            s.acked.to_string(),
            s.lost.to_string(),
            s.unreadable.to_string(),
        ]);
        t
    }

    fn runs_table(&self) -> Table {
        let headers = [
            "run",
            "node start ms",
            "replicas placed s",
            "balanced s",
            "before req/s",
            "during req/s",
            "during/before",
            "worst 250 ms",
            "empty 250 ms",
            "failed during",
            "failed in all",
            "lost",
            "moves",
            "mean move round s",
        ];
        let mut t = Table::new(&headers, 1);
        for r in &self.runs {
            let moves = r.moves.as_ref();
            t.row(vec![
                r.run.to_string(),
                format!("{:.0}", r.joined_at_ms - r.join_at_ms),
                secs(r.placed_ms),
                r.rebalance_ms.map_or("not balanced".to_owned(), |ms| format!("{:.1}", ms / 1000.0)),
                format!("{:.0}", r.before_per_s),
                format!("{:.0}", r.during_per_s),
                times(r.throughput_ratio),
                times(r.worst_bucket_ratio),
                r.empty_buckets.to_string(),
                r.failed_during.to_string(),
                r.failed_total.to_string(),
                r.lost.to_string(),
                moves.map_or("-".to_owned(), |m| m.moves.to_string()),
                moves.and_then(|m| ratio(m.rounds_s, m.rounds as f64)).map_or("-".to_owned(), |s| format!("{s:.2}")),
            ]);
        }
        t
    }

    fn to_text(&self) -> String {
        let mut text = format!("\n{}\n\nTargets\n\n{}", self.heading(), super::goals::table(&self.verdicts).to_text());
        let _ = write!(text, "\nRebalancing after a join\n\n{}", self.summary_table().to_text());
        let _ = write!(text, "\nEach run\n\n{}", self.runs_table().to_text());
        if let Some(reason) = &self.aborted {
            let _ = write!(text, "\nstopped early: {reason}\n");
        }
        text
    }

    fn to_markdown(&self) -> String {
        let mut text = format!("# playground bench rebalance\n\n{}\n", self.heading());
        let _ = write!(text, "\n## Targets\n\n{}", super::goals::table(&self.verdicts).to_markdown());
        let _ = write!(text, "\n## Rebalancing after a join\n\n{}", self.summary_table().to_markdown());
        let _ = write!(text, "\n## Each run\n\n{}", self.runs_table().to_markdown());
        let failed: Vec<&RunRow> =
            self.runs.iter().filter(|r| !r.error_samples.is_empty() || r.error.is_some()).collect();
        if !failed.is_empty() {
            text.push_str("\n## Failures\n\n");
            for r in failed {
                if let Some(e) = &r.error {
                    let _ = writeln!(text, "- run {}: {e}", r.run);
                }
                for quote in &r.error_samples {
                    let _ = writeln!(text, "- run {}: {quote}", r.run);
                }
            }
        }
        if let Some(reason) = &self.aborted {
            let _ = write!(text, "\nStopped early: {reason}\n");
        }
        let _ = write!(text, "\n## Method\n\n{METHOD}\n");
        text
    }
}

fn write_report(report: &Report, out: &Path) -> Result<()> {
    let json = serde_json::to_string_pretty(report).map_err(anyhow::Error::from);
    super::table::write_outputs(out, "bench-rebalance", &report.to_text(), json, &report.to_markdown())
}

fn secs(ms: Option<f64>) -> String {
    ms.map_or("-".to_owned(), |ms| format!("{:.1}", ms / 1000.0))
}

fn times(v: Option<f64>) -> String {
    v.map_or("-".to_owned(), |v| format!("{v:.2}×"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<RebalanceArgs, clap::Error> {
        crate::parse_flags("rebalance", args)
    }

    #[test]
    fn flags_default_and_are_bounded() {
        let a = parse(&[]).unwrap();
        assert_eq!((a.runs, a.max_moves, a.deadline), (3, None, 120));
        assert_eq!(a.out, PathBuf::from("./bench-results"));
        let a = parse(&["--runs", "1", "--max-moves", "2", "--deadline", "30", "--out", "r"]).unwrap();
        assert_eq!((a.runs, a.max_moves, a.deadline, a.out), (1, Some(2), 30, PathBuf::from("r")));
        assert!(parse(&["--runs", "0"]).is_err());
        assert!(parse(&["--max-moves", "0"]).is_err());
        assert!(parse(&["--max-moves", "257"]).is_err());
        assert!(parse(&["--deadline", "0"]).is_err());
    }

    /// `placement[shard]` replicas, the first of each its leader unless `leaders` says otherwise.
    fn view(members: &[&str], placement: &[&[&str]], leaders: Option<&[Option<&str>]>) -> View {
        View {
            shard_count: placement.len() as u32,
            members: members.iter().map(|m| ViewMember { id: (*m).into() }).collect(),
            shards: placement
                .iter()
                .enumerate()
                .map(|(i, r)| ViewShard {
                    replicas: r.iter().map(|s| (*s).to_owned()).collect(),
                    leader: leaders.map_or(r.first().map(|s| (*s).to_owned()), |l| l[i].map(str::to_owned)),
                })
                .collect(),
        }
    }

    #[test]
    fn balanced_means_even_replicas_and_even_leaders() {
        let four = ["a", "b", "c", "d"];
        // 4 shards × 3 replicas over 4 members: 3 each; one leader each.
        let even: [&[&str]; 4] = [&["a", "b", "c"], &["b", "c", "d"], &["c", "d", "a"], &["d", "a", "b"]];
        assert!(view(&four, &even, None).balanced(4));
        assert!(!view(&four, &even, None).balanced(3), "not the number of members asked for");
        // Replicas even, but `a` leads two shards and `b` none.
        let leaders = [Some("a"), Some("c"), Some("a"), Some("d")];
        let v = view(&four, &even, Some(&leaders));
        assert!(v.replicas_even(4) && !v.balanced(4));
        assert_eq!(
            v.summary(),
            "replicas per member: a 3, b 3, c 3, d 3; leaders per member: a 2, b 0, c 1, d 1; shards without a \
             leader: 0 of 4"
        );
        // A shard without a leader, or led from outside its replicas.
        assert!(!view(&four, &even, Some(&[Some("a"), Some("b"), None, Some("d")])).balanced(4));
        assert!(!view(&four, &even, Some(&[Some("d"), Some("b"), Some("c"), Some("a")])).balanced(4));
        // The newcomer holds nothing yet: replicas 4, 4, 4, 0.
        let before: [&[&str]; 4] = [&["a", "b", "c"]; 4];
        assert!(!view(&four, &before, None).replicas_even(4));
        // Two replicas on one member, or two instead of three.
        let doubled: [&[&str]; 4] = [&["a", "a", "c"], &["b", "c", "d"], &["c", "d", "b"], &["d", "a", "b"]];
        assert!(!view(&four, &doubled, None).replicas_even(4));
        let short: [&[&str]; 4] = [&["a", "b"], &["c", "d"], &["a", "b"], &["c", "d"]];
        assert!(!view(&four, &short, None).replicas_even(4));
        // A shard missing from the view.
        let mut missing = view(&four, &even, None);
        missing.shards.pop();
        assert!(!missing.replicas_even(4));
        assert!(within_one(&BTreeMap::new()));
    }

    fn ev(ms: u64, ok: bool) -> Event {
        Event { at: Duration::from_millis(ms), ok }
    }

    #[test]
    fn windows_and_buckets_count_requests_by_when_they_ended() {
        let events = [ev(10, true), ev(240, false), ev(250, true), ev(600, true), ev(1100, true), ev(1200, false)];
        let ms = Duration::from_millis;
        assert_eq!(window(&events, ms(0), ms(250)), (1, 1));
        assert_eq!(window(&events, ms(250), ms(1200)), (3, 0));
        assert_eq!(buckets(&events), vec![(1, 1), (1, 0), (1, 0), (0, 0), (1, 1)]);
        assert!(buckets(&[]).is_empty());
        // At 8/s the baseline's bucket holds 2; the window [100, 1100) holds the whole buckets 1 to 3.
        let b = buckets(&events);
        assert_eq!(worst_bucket(&b, ms(100), ms(1100), 8.0), Some(0.0));
        assert_eq!(worst_bucket(&b, ms(250), ms(750), 8.0), Some(0.5));
        assert_eq!(worst_bucket(&b, ms(260), ms(400), 8.0), None, "no whole bucket");
        assert_eq!(worst_bucket(&b, ms(250), ms(500), 0.0), None, "no baseline");
        assert_eq!(whole_buckets(&b, ms(100), ms(2000)), vec![1, 1, 0, 1, 0, 0, 0], "past the last request: empty");
    }

    fn row(run: usize, rebalance_ms: Option<f64>, ratio: f64, failed: u64, lost: usize) -> RunRow {
        RunRow {
            run,
            users: 64,
            settle_ms: 3000.0,
            join_at_ms: 6000.0,
            joined_at_ms: 6400.0,
            ended_at_ms: 6400.0 + rebalance_ms.unwrap_or(120_000.0),
            placed_ms: rebalance_ms.map(|ms| ms / 2.0),
            rebalance_ms,
            before_per_s: 400.0,
            during_per_s: 400.0 * ratio,
            throughput_ratio: Some(ratio),
            worst_bucket_ratio: Some(ratio / 2.0),
            empty_buckets: 2,
            failed_during: failed,
            failed_total: failed + 1,
            requests: 1000,
            acked: 500,
            lost,
            unreadable: 0,
            moves: Some(Moves { moves: 48, rounds: 6, rounds_s: 12.0 }),
            error: rebalance_ms.is_none().then(|| "not balanced".to_owned()),
            error_samples: vec!["6.50 s: create k: 503 unavailable".into()],
            progress: Vec::new(),
            bucket_ms: 250,
            buckets: Vec::new(),
        }
    }

    #[test]
    fn the_summary_takes_medians_of_balanced_runs_and_sums_the_rest() {
        let runs = vec![row(1, Some(9000.0), 0.8, 0, 0), row(2, None, 0.5, 7, 0), row(3, Some(13000.0), 0.6, 2, 1)];
        let s = summarize(&runs);
        assert_eq!((s.runs, s.balanced), (3, 2));
        assert_eq!((s.median_rebalance_ms, s.max_rebalance_ms), (Some(11000.0), Some(13000.0)));
        assert_eq!(s.median_throughput_ratio, Some(0.6));
        assert_eq!((s.failed_during, s.failed_total, s.requests, s.acked, s.lost), (9, 12, 3000, 1500, 1));
        assert_eq!(summarize(&[]).median_rebalance_ms, None);

        let report = Report::new(8, 120, runs, None);
        let md = report.to_markdown();
        assert!(md.contains("| 3 | 2 | 11.0 | 13.0 | 0.60× | 9 | 12 | 3000 | 1500 | 1 | 0 |"), "{md}");
        assert!(
            md.contains("| 2 | 400 | - | not balanced | 400 | 200 | 0.50× | 0.25× | 2 | 7 | 8 | 0 | 48 | 2.00 |"),
            "{md}"
        );
        assert!(md.contains("- run 2: not balanced") && md.contains("- run 1: 6.50 s: create k: 503"), "{md}");
        assert!(report.to_text().contains("not balanced"));
        assert_eq!(quote(&"x".repeat(QUOTE_CHARS + 5)).chars().count(), QUOTE_CHARS + 1);
        assert_eq!(quote("short"), "short");
    }
}
