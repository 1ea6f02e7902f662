//! A replicated cluster on this machine, started the way a user starts one: the product's
//! `up --nodes 3 --gateways 1` on a fresh data folder, through the harness. The guard stops it with
//! SIGTERM to the launcher (which stops its children) and deletes the folder, on success and on error
//! alike.
//!
//! Also what the failover benchmark needs to see inside it: which process is which member (the
//! launcher's children, named by the folder of their `--config`), and the cluster view.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use simulations::NodeProcess;
use tempfile::TempDir;

use super::targets::product_launch;

/// Node processes of the measured cluster: the smallest that keeps every shard writable when one dies.
pub const NODES: usize = 3;
/// Three nodes open every shard and elect its leaders before the gateway is ready; a busy machine is slow.
const STARTUP_LIMIT: Duration = Duration::from_secs(90);
/// The launcher stops the gateway, then the nodes, each with up to 15 s of grace.
const STOP_LIMIT: Duration = Duration::from_secs(45);

/// The last time a member's process announced its HTTP address, and how many times it has so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listening {
    pub generation: u64,
    pub url: String,
}

/// What `playground up` is asked to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub nodes: usize,
    pub gateways: usize,
    /// `PLAYGROUND_SHARDS` and `PLAYGROUND_REPLICATION_FACTOR`; the product's defaults when `None`.
    pub shards: Option<u32>,
    pub replication_factor: Option<u32>,
}

impl Shape {
    /// The measured cluster: [`NODES`] nodes, one gateway, `shards` shards (or the product's default).
    pub fn standard(shards: Option<u32>) -> Self {
        Self { nodes: NODES, gateways: 1, shards, replication_factor: None }
    }
}

/// `playground up --nodes N --gateways G` on 127.0.0.1:0 and a fresh temporary folder.
pub struct ClusterProcess {
    // Fields drop in order: the launcher and its children are gone before their folder is removed.
    launcher: NodeProcess,
    _dir: TempDir,
    admin_token: String,
    listening: Arc<Mutex<HashMap<String, Listening>>>,
    shape: Shape,
}

impl ClusterProcess {
    /// Starts the cluster and returns once its gateway listens; `/readyz` is the caller's to wait for.
    /// `shards` overrides the product's shard count, `argon2_memory_kib` its password hashing memory.
    pub fn start(binary: &Path, argon2_memory_kib: Option<u32>, shards: Option<u32>) -> Result<Self> {
        Self::start_shaped(binary, argon2_memory_kib, Shape::standard(shards))
    }

    /// Starts the cluster `shape` says and returns once every gateway listens.
    pub fn start_shaped(binary: &Path, argon2_memory_kib: Option<u32>, shape: Shape) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("playground-bench-cluster-")
            .tempdir()
            .context("create the cluster's folder")?;
        let (data, nodes, gateways) = (dir.path().join("data"), shape.nodes.to_string(), shape.gateways.to_string());
        let args = [
            "up".as_ref(),
            "--nodes".as_ref(),
            nodes.as_ref(),
            "--gateways".as_ref(),
            gateways.as_ref(),
            "--http".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--data-dir".as_ref(),
            data.as_os_str(),
        ];
        let listening = Arc::new(Mutex::new(HashMap::new()));
        let seen = Arc::clone(&listening);
        let mut launch = product_launch(&dir.path().join("cluster.log"), argon2_memory_kib)
            .deadline(STARTUP_LIMIT)
            .on_line(move |line| {
                if let Some((name, url)) = parse_listening(line) {
                    let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
                    let entry = seen.entry(name.to_owned()).or_insert(Listening { generation: 0, url: String::new() });
                    entry.generation += 1;
                    entry.url = url.to_owned();
                }
            });
        if let Some(shards) = shape.shards {
            launch = launch.env("PLAYGROUND_SHARDS", &shards.to_string());
        }
        if let Some(factor) = shape.replication_factor {
            launch = launch.env("PLAYGROUND_REPLICATION_FACTOR", &factor.to_string());
        }
        let launcher = NodeProcess::launch(binary, args, "gateway-1: gateway ready at ", launch)
            .context("start the cluster (playground up)")?;
        // From here on the guard owns the launcher and the folder, so every error below cleans both up.
        let mut cluster = Self { launcher, _dir: dir, admin_token: String::new(), listening, shape };
        cluster.wait_for_gateways()?;
        cluster.launcher.url = cluster.launcher.url.trim_end_matches('/').to_owned();
        let token_path = data.join("admin.token");
        cluster.admin_token = std::fs::read_to_string(&token_path)
            .with_context(|| format!("read the cluster's admin token {}", token_path.display()))?
            .trim()
            .to_owned();
        eprintln!("bench: started a {}-node cluster, gateways at {}", shape.nodes, cluster.gateway_urls().join(" "));
        Ok(cluster)
    }

    /// Waits until every gateway after the first has announced its address too.
    fn wait_for_gateways(&self) -> Result<()> {
        let deadline = std::time::Instant::now() + STARTUP_LIMIT;
        while self.gateway_urls().len() < self.shape.gateways {
            if std::time::Instant::now() >= deadline {
                bail!(
                    "only {} of {} gateways were ready within {STARTUP_LIMIT:?}",
                    self.gateway_urls().len(),
                    self.shape.gateways
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// Every gateway's base URL, `gateway-1` first.
    pub fn gateway_urls(&self) -> Vec<String> {
        let seen = self.listening.lock().unwrap_or_else(PoisonError::into_inner);
        (1..=self.shape.gateways)
            .filter_map(|j| seen.get(&format!("gateway-{j}")).map(|l| l.url.trim_end_matches('/').to_owned()))
            .collect()
    }

    /// The launcher and every process it started, by member name, for their CPU time.
    pub fn processes(&self) -> Vec<crate::cpu::Watched> {
        let mut members = self.launcher.members();
        members.sort_by_key(|(name, _)| member_order(name));
        let launcher = i32::try_from(self.launcher.pid()).unwrap_or(i32::MAX);
        std::iter::once(crate::cpu::Watched::new(LAUNCHER, launcher))
            .chain(members.into_iter().map(|(name, pid)| crate::cpu::Watched::new(name, pid)))
            .collect()
    }

    pub fn url(&self) -> &str {
        &self.launcher.url
    }

    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The last announced address of member `name` (`node-2`), with how often it has started.
    pub fn listening(&self, name: &str) -> Option<Listening> {
        self.listening.lock().unwrap_or_else(PoisonError::into_inner).get(name).cloned()
    }

    /// The launcher's node processes by member name (`node-1` → pid); gateways are left out.
    pub fn node_processes(&self) -> HashMap<String, i32> {
        self.launcher.members().into_iter().filter(|(name, _)| name.starts_with("node-")).collect()
    }

    pub fn log_tail(&self) -> String {
        self.launcher.log_tail()
    }
}

impl Drop for ClusterProcess {
    fn drop(&mut self) {
        // The harness kills what is still running, the launcher's children first, once `launcher` drops.
        if self.launcher.terminate(STOP_LIMIT).is_err() {
            eprintln!("bench: the cluster did not stop within {STOP_LIMIT:?}; killing it");
        }
    }
}

/// The name the launcher's own process has in CPU reports.
pub const LAUNCHER: &str = "launcher";

/// Gateways first, then nodes, each by number: `gateway-1`, `node-1`, `node-2`, …, `node-10`.
fn member_order(name: &str) -> (u8, u32, String) {
    let (kind, number) = name.rsplit_once('-').unwrap_or((name, ""));
    (u8::from(kind != "gateway"), number.parse().unwrap_or(u32::MAX), name.to_owned())
}

/// `("node-2", url)` from the launcher's `node-2: node listening at http://…`.
fn parse_listening(line: &str) -> Option<(&str, &str)> {
    let (name, rest) = line.split_once(": ")?;
    let url = rest.strip_prefix("node listening at ").or_else(|| rest.strip_prefix("gateway ready at "))?;
    Some((name, url.trim()))
}

/// The parts of `GET /v1/cluster` the benchmarks read.
#[derive(Clone, Debug, Deserialize)]
pub struct View {
    pub shard_count: u32,
    pub members: Vec<Member>,
    pub shards: Vec<ShardLeader>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Member {
    pub id: String,
    pub state: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ShardLeader {
    pub leader: Option<String>,
}

impl View {
    /// The member that leads the most shards, and how many; ties go to the first name.
    pub fn busiest_leader(&self) -> Option<(String, usize)> {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for leader in self.shards.iter().filter_map(|s| s.leader.as_deref()) {
            *counts.entry(leader).or_default() += 1;
        }
        let mut counts: Vec<(&str, usize)> = counts.into_iter().collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        counts.first().map(|(name, n)| ((*name).to_owned(), *n))
    }

    /// Every one of `nodes` members up, and every shard with a leader that is one of them.
    pub fn is_whole(&self, nodes: usize) -> bool {
        let up = |name: &str| self.members.iter().any(|m| m.id == name && m.state == "up");
        self.members.len() == nodes
            && self.members.iter().all(|m| m.state == "up")
            && self.shards.len() == self.shard_count as usize
            && self.shards.iter().all(|s| s.leader.as_deref().is_some_and(up))
    }

    /// What `is_whole` waits for, in a few words, for an error message.
    pub fn summary(&self) -> String {
        let members: Vec<String> = self.members.iter().map(|m| format!("{} {}", m.id, m.state)).collect();
        let led = self.shards.iter().filter(|s| s.leader.is_some()).count();
        format!("members: {}; shards with a leader: {led} of {}", members.join(", "), self.shard_count)
    }
}

/// `GET /v1/cluster` with the admin token.
pub async fn fetch_view(client: &reqwest::Client, base: &str, admin_token: &str) -> Result<View> {
    let response =
        client.get(format!("{base}/v1/cluster")).bearer_auth(admin_token).send().await.context("GET /v1/cluster")?;
    let status = response.status();
    if !status.is_success() {
        bail!("GET /v1/cluster: status {}", status.as_u16());
    }
    response.json::<View>().await.context("read the cluster view")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn view(members: &[(&str, &str)], leaders: &[Option<&str>]) -> View {
        View {
            shard_count: leaders.len() as u32,
            members: members.iter().map(|(id, state)| Member { id: (*id).into(), state: (*state).into() }).collect(),
            shards: leaders.iter().map(|l| ShardLeader { leader: l.map(str::to_owned) }).collect(),
        }
    }

    #[test]
    fn launcher_lines_are_parsed() {
        assert_eq!(
            parse_listening("node-3: node listening at http://127.0.0.1:4002"),
            Some(("node-3", "http://127.0.0.1:4002"))
        );
        assert_eq!(parse_listening("playground: data in /d; admin token in /d/admin.token"), None);
    }

    #[test]
    fn members_are_listed_gateways_first_then_nodes_by_number() {
        let mut names = vec!["node-10", "node-2", "gateway-2", "node-1", "gateway-1"];
        names.sort_by_key(|n| member_order(n));
        assert_eq!(names, ["gateway-1", "gateway-2", "node-1", "node-2", "node-10"]);
        assert_eq!(
            Shape::standard(Some(16)),
            Shape { nodes: 3, gateways: 1, shards: Some(16), replication_factor: None }
        );
    }

    #[test]
    fn the_busiest_leader_leads_the_most_shards() {
        let up = [("node-1", "up"), ("node-2", "up"), ("node-3", "up")];
        let v = view(&up, &[Some("node-2"), Some("node-1"), Some("node-2"), None]);
        assert_eq!(v.busiest_leader(), Some(("node-2".into(), 2)));
        let tie = view(&up, &[Some("node-3"), Some("node-1")]);
        assert_eq!(tie.busiest_leader(), Some(("node-1".into(), 1)));
        assert_eq!(view(&up, &[None]).busiest_leader(), None);
    }

    #[test]
    fn whole_means_every_member_up_and_every_shard_led() {
        let up = [("node-1", "up"), ("node-2", "up"), ("node-3", "up")];
        assert!(view(&up, &[Some("node-1"), Some("node-3")]).is_whole(3));
        assert!(!view(&up, &[Some("node-1"), None]).is_whole(3));
        assert!(!view(&up, &[Some("node-4")]).is_whole(3), "a leader that is not a member");
        let down = [("node-1", "up"), ("node-2", "down"), ("node-3", "up")];
        assert!(!view(&down, &[Some("node-1")]).is_whole(3));
        assert!(!view(&up[..2], &[Some("node-1")]).is_whole(3));
        let mut missing = view(&up, &[Some("node-1"), Some("node-1")]);
        missing.shards.pop();
        assert!(!missing.is_whole(3));
        assert_eq!(missing.summary(), "members: node-1 up, node-2 up, node-3 up; shards with a leader: 1 of 2");
    }
}
