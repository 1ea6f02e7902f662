//! A replicated cluster of separate processes on loopback: nodes and gateways, each with its own
//! configuration file, so that a test can kill, freeze and restart any one of them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::signal::Signal;

use crate::client::Api;
use crate::common::free_port;
use crate::process::NodeProcess;
use crate::proxy::FaultProxy;

/// The admin token every member of a test cluster is configured with.
pub const ADMIN_TOKEN: &str = "admin-token-of-the-test-cluster";

/// One node or gateway: its configuration, and its process while it runs.
pub struct Member {
    pub name: String,
    subcommand: &'static str,
    config: PathBuf,
    /// Environment of this member only, after the cluster's (e.g. a skewed clock).
    env: Vec<(String, String)>,
    pub process: Option<NodeProcess>,
}

impl Member {
    /// The base URL of its HTTP listener (empty while it is not running).
    pub fn url(&self) -> String {
        self.process.as_ref().map(|p| p.url.clone()).unwrap_or_default()
    }

    pub fn api(&self) -> Api {
        Api::new(&self.url())
    }
}

pub struct ProcessCluster {
    binary: PathBuf,
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
    /// The first nodes' real cluster addresses (`id@addr`): the seed list of a node that joins later.
    seeds: Vec<String>,
    shards: u32,
    pub nodes: Vec<Member>,
    pub gateways: Vec<Member>,
    /// With [`ProcessCluster::start_proxied`]: one fault proxy per directed link (from, to, proxy).
    pub links: Vec<(String, String, FaultProxy)>,
}

fn config_text(name: &str, dir: &Path, listen: u16, seeds: &[String], shards: u32) -> String {
    let seeds: Vec<String> = seeds.iter().map(|s| format!("{s:?}")).collect();
    format!(
        r#"[node]
id = "{name}"
http = "127.0.0.1:0"
data_dir = "{data}"

[cluster]
shards = {shards}
listen = "127.0.0.1:{listen}"
seeds = [{seeds}]
cookie = "the-cookie-of-the-test-cluster"
heartbeat_interval = "200ms"
failure_timeout = "1s"

[security]
token_key_file = "{key}"
admin_token = "{ADMIN_TOKEN}"
argon2_memory_kib = 1024
argon2_iterations = 1
"#,
        data = dir.join(name).display(),
        seeds = seeds.join(", "),
        key = dir.join("token.key").display(),
    )
}

impl ProcessCluster {
    /// Starts `nodes` nodes and `gateways` gateways with `shards` shards, and waits until the first
    /// gateway is ready (every shard has a leader).
    pub async fn start(
        binary: &Path,
        nodes: usize,
        gateways: usize,
        shards: u32,
        env: &[(&str, &str)],
    ) -> Result<Self> {
        Self::start_with(binary, nodes, gateways, shards, env, &[], false).await
    }

    /// Like [`ProcessCluster::start`], but every member reaches every node through a fault proxy of its
    /// own (one per directed link), so that a test can delay, cut or reset any link.
    pub async fn start_proxied(
        binary: &Path,
        nodes: usize,
        gateways: usize,
        shards: u32,
        env: &[(&str, &str)],
    ) -> Result<Self> {
        Self::start_with(binary, nodes, gateways, shards, env, &[], true).await
    }

    /// Like [`ProcessCluster::start_proxied`], with extra environment for some nodes only: `(node index,
    /// name, value)`, kept across restarts.
    pub async fn start_proxied_with_node_env(
        binary: &Path,
        nodes: usize,
        gateways: usize,
        shards: u32,
        env: &[(&str, &str)],
        node_env: &[(usize, &str, &str)],
    ) -> Result<Self> {
        Self::start_with(binary, nodes, gateways, shards, env, node_env, true).await
    }

    /// The pids of the nodes that are running, by node index.
    pub fn node_pids(&self) -> Vec<(usize, u32)> {
        self.nodes.iter().enumerate().filter_map(|(i, m)| Some((i, m.process.as_ref()?.pid()))).collect()
    }

    /// The environment member `m` starts with: the cluster's, then its own.
    fn env_of(&self, m: &Member) -> Vec<(String, String)> {
        self.env.iter().chain(m.env.iter()).cloned().collect()
    }

    /// Starts the cluster, again with other ports if a member could not bind its own (another process
    /// took the port between its choice and the member's start).
    async fn start_with(
        binary: &Path,
        nodes: usize,
        gateways: usize,
        shards: u32,
        env: &[(&str, &str)],
        node_env: &[(usize, &str, &str)],
        proxied: bool,
    ) -> Result<Self> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_once(binary, nodes, gateways, shards, env, node_env, proxied).await {
                Err(e) if attempt < 3 && format!("{e:#}").contains("exited before") => {
                    eprintln!("cluster start failed ({e:#}); trying again with other ports");
                }
                other => return other,
            }
        }
    }

    async fn start_once(
        binary: &Path,
        nodes: usize,
        gateways: usize,
        shards: u32,
        env: &[(&str, &str)],
        node_env: &[(usize, &str, &str)],
        proxied: bool,
    ) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("token.key"), "a-token-key-shared-by-every-member-0123")?;
        let ports = (0..nodes).map(|_| free_port()).collect::<Result<Vec<_>>>()?;
        let seeds: Vec<String> =
            ports.iter().enumerate().map(|(i, p)| format!("node-{}@127.0.0.1:{p}", i + 1)).collect();
        let names: Vec<String> = (0..nodes).map(|i| format!("node-{}", i + 1)).collect();
        let mut links = vec![];
        let mut member = |name: String, subcommand: &'static str, port: u16| -> Result<Member> {
            let config = dir.path().join(format!("{name}.toml"));
            let mut own_seeds = seeds.clone();
            if proxied {
                own_seeds.clear();
                for (i, to) in names.iter().enumerate() {
                    let real: std::net::SocketAddr = format!("127.0.0.1:{}", ports[i]).parse()?;
                    if *to == name {
                        own_seeds.push(format!("{to}@{real}"));
                        continue;
                    }
                    let proxy = block_on(FaultProxy::start(real, links.len() as u64))?;
                    own_seeds.push(format!("{to}@{}", proxy.addr));
                    links.push((name.clone(), to.clone(), proxy));
                }
            }
            std::fs::write(&config, config_text(&name, dir.path(), port, &own_seeds, shards))?;
            Ok(Member { name, subcommand, config, env: vec![], process: None })
        };
        let node_members =
            (0..nodes).map(|i| member(format!("node-{}", i + 1), "node", ports[i])).collect::<Result<Vec<_>>>()?;
        let gateway_members = (0..gateways)
            .map(|j| member(format!("gateway-{}", j + 1), "gateway", free_port()?))
            .collect::<Result<Vec<_>>>()?;
        let mut node_members = node_members;
        for (i, k, v) in node_env {
            if let Some(m) = node_members.get_mut(*i) {
                m.env.push(((*k).to_owned(), (*v).to_owned()));
            }
        }
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let mut cluster = ProcessCluster {
            binary: binary.to_owned(),
            env,
            dir,
            seeds: seeds.clone(),
            shards,
            nodes: node_members,
            gateways: gateway_members,
            links,
        };
        // Nodes start at once: each waits for its peers to elect leaders.
        let binary = cluster.binary.clone();
        let starts: Vec<_> = cluster
            .nodes
            .iter()
            .chain(cluster.gateways.iter())
            .map(|m| {
                let (binary, sub, config, env) = (binary.clone(), m.subcommand, m.config.clone(), cluster.env_of(m));
                std::thread::spawn(move || {
                    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    NodeProcess::start_with_config(&binary, sub, &config, &env)
                })
            })
            .collect();
        let mut started = vec![];
        for s in starts {
            started.push(s.join().map_err(|_| anyhow::anyhow!("a start thread panicked"))??);
        }
        for (m, p) in cluster.nodes.iter_mut().chain(cluster.gateways.iter_mut()).zip(started) {
            m.process = Some(p);
        }
        cluster.wait_ready(Duration::from_secs(60)).await?;
        Ok(cluster)
    }

    /// Waits until every gateway answers `/readyz` with 200.
    pub async fn wait_ready(&self, deadline: Duration) -> Result<()> {
        for g in &self.gateways {
            g.api().wait_ready(deadline).await.with_context(|| format!("{} is ready", g.name))?;
        }
        Ok(())
    }

    pub fn gateway(&self, i: usize) -> Api {
        self.gateways[i].api()
    }

    pub fn node(&self, i: usize) -> Api {
        self.nodes[i].api()
    }

    fn running(&mut self, i: usize) -> Result<&mut NodeProcess> {
        self.nodes[i].process.as_mut().with_context(|| format!("node {i} is not running"))
    }

    pub fn kill9(&mut self, i: usize) -> Result<()> {
        self.running(i)?.kill9()?;
        self.nodes[i].process = None;
        Ok(())
    }

    pub fn freeze(&mut self, i: usize) -> Result<()> {
        self.running(i)?.signal(Signal::SIGSTOP)
    }

    pub fn thaw(&mut self, i: usize) -> Result<()> {
        self.running(i)?.signal(Signal::SIGCONT)
    }

    /// SIGTERM node `i` (a graceful stop) and waits up to `deadline` for it to exit.
    pub fn terminate(&mut self, i: usize, deadline: Duration) -> Result<()> {
        self.running(i)?.terminate(deadline)?;
        self.nodes[i].process = None;
        Ok(())
    }

    /// Starts every node that is not running again on its data, all at once (each waits for its peers).
    pub fn restart_all(&mut self) -> Result<()> {
        let starts: Vec<_> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, m)| m.process.is_none())
            .map(|(i, m)| {
                let (binary, sub, config, env) = (self.binary.clone(), m.subcommand, m.config.clone(), self.env_of(m));
                (
                    i,
                    std::thread::spawn(move || {
                        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                        NodeProcess::start_with_config(&binary, sub, &config, &env)
                    }),
                )
            })
            .collect();
        for (i, s) in starts {
            self.nodes[i].process = Some(s.join().map_err(|_| anyhow::anyhow!("a start thread panicked"))??);
        }
        Ok(())
    }

    /// Starts one more node, `node-N`, pointed at the first nodes as its seeds (directly, not through a
    /// proxy), and returns its index; it joins the running cluster.
    pub fn add_node(&mut self) -> Result<usize> {
        let i = self.nodes.len();
        let name = format!("node-{}", i + 1);
        let config = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&config, config_text(&name, self.dir.path(), free_port()?, &self.seeds, self.shards))?;
        let mut m = Member { name, subcommand: "node", config, env: vec![], process: None };
        let env = self.env_of(&m);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        m.process = Some(NodeProcess::start_with_config(&self.binary, m.subcommand, &m.config, &env)?);
        self.nodes.push(m);
        Ok(i)
    }

    /// Starts node `i` again on its data.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        let env = self.env_of(&self.nodes[i]);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let m = &mut self.nodes[i];
        m.process = Some(NodeProcess::start_with_config(&self.binary, m.subcommand, &m.config, &env)?);
        Ok(())
    }
}

/// Runs a future to completion from synchronous code inside the test's (multi-thread) runtime.
fn block_on<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

impl ProcessCluster {
    /// Every proxy on a link from or to `node`.
    pub fn links_of<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a FaultProxy> + 'a {
        self.links.iter().filter(move |(from, to, _)| from == node || to == node).map(|(_, _, p)| p)
    }

    /// Cuts `node` off from every other member, both ways; its process keeps running.
    pub fn isolate(&self, node: &str) {
        for p in self.links_of(node) {
            p.blackhole(None);
        }
    }

    /// Cuts `node` off from the other nodes, both ways, while every gateway still reaches it: a node on
    /// the minority side that clients can still talk to, where a stale read would show.
    pub fn split(&self, node: &str) {
        let member = |n: &str| n.starts_with("node-");
        for (from, to, p) in &self.links {
            if member(from) && member(to) && (from == node || to == node) {
                p.blackhole(None);
            }
        }
    }

    /// An asymmetric partition: every byte `node` sends is held back (its outgoing links forward, the
    /// answers on links into it); what it receives still arrives.
    pub fn silence(&self, node: &str) {
        for (from, to, p) in &self.links {
            if from == node {
                p.blackhole(Some(crate::proxy::Direction::Forward));
            } else if to == node {
                p.blackhole(Some(crate::proxy::Direction::Backward));
            }
        }
    }

    /// Closes every open connection on every link.
    pub fn reset_all(&self) {
        for (_, _, p) in &self.links {
            p.reset();
        }
    }

    /// Clears every fault on every link.
    pub fn heal(&self) {
        for (_, _, p) in &self.links {
            p.heal();
        }
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        // A frozen process would ignore the kill until thawed.
        for m in self.nodes.iter_mut().chain(self.gateways.iter_mut()) {
            if let Some(p) = &m.process {
                let _ = p.signal(Signal::SIGCONT);
            }
            m.process = None;
        }
    }
}
