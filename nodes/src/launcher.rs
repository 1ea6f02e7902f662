//! `playground up`: a whole cluster on this machine as child processes of this one, data under one
//! directory, kept across restarts.
//!
//! - The embedded default (one node, one gateway) is a single node process that serves the HTTP API
//!   itself: the fastest start and the fewest moving parts for a new user.
//! - `--nodes N --gateways G` runs N node processes that replicate every shard (factor min(3, N)) and G
//!   gateway processes, the first on `--http`, the next on the following ports.
//! - `--add-node`, against the data directory of a running `--nodes N` cluster, starts one more node
//!   that joins it: `node-K`, K one more than the highest `node-*` folder there, configured like
//!   `node-1` (shards, cookie, token key, admin token), with the cluster's nodes (`cluster.ports`) as its
//!   seeds and a cluster port of its own. The placement driver then moves shard replicas onto it. Every
//!   run adds a new node; an added node is started again after a stop with
//!   `playground node --config DIR/node-K/node.toml` (a later `up --nodes N` starts node-1..N only).
//!
//! A child that dies is started again with backoff while the others keep running; SIGINT or SIGTERM
//! stops the gateways, then the nodes, then this process.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::builder::BoolishValueParser;
use clap::Args;
use cluster_config::Config;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::settings;
use crate::ConfigArgs;

#[derive(Args, Clone, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Node processes to run (1 to 7) [env: PLAYGROUND_NODES].
    #[arg(long, env = "PLAYGROUND_NODES", default_value_t = 1)]
    pub nodes: u32,
    /// Gateways to run, the first on --http, the next on the following ports [env: PLAYGROUND_GATEWAYS].
    #[arg(long, env = "PLAYGROUND_GATEWAYS", default_value_t = 1)]
    pub gateways: u32,
    /// Start one more node that joins the cluster running under --data-dir, and supervise it; every run
    /// adds a new node [env: PLAYGROUND_ADD_NODE].
    #[arg(long, env = "PLAYGROUND_ADD_NODE", value_parser = BoolishValueParser::new())]
    pub add_node: bool,
}

impl Default for UpArgs {
    fn default() -> Self {
        Self { config: ConfigArgs::default(), nodes: 1, gateways: 1, add_node: false }
    }
}

/// How long a child gets to finish its requests and commits after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(15);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long a node asked to drain (SIGTERM) gets: its own drain deadline, and the stop after it.
const DRAIN_GRACE: Duration = Duration::from_secs(135);

pub fn run(args: UpArgs) -> Result<()> {
    if args.add_node {
        for (flag, value) in [("--nodes", args.nodes), ("--gateways", args.gateways)] {
            if value != 1 {
                bail!(
                    "--add-node cannot be combined with {flag} {value}: it adds one node to the cluster already \
                     running under --data-dir (check PLAYGROUND_NODES and PLAYGROUND_GATEWAYS too)"
                );
            }
        }
    }
    if !(1..=7).contains(&args.nodes) {
        bail!("--nodes: {} is out of range; run 1 to 7 nodes", args.nodes);
    }
    if !(1..=16).contains(&args.gateways) {
        bail!("--gateways: {} is out of range; run 1 to 16 gateways", args.gateways);
    }
    let config = settings::resolve(&args.config)?;
    crate::logging::init(config.log.format);
    let specs = if args.add_node {
        let (spec, listen) = prepare_join(&config)?;
        println!(
            "{} joining the cluster at {listen}; each `up --add-node` adds a new node, so to start this one again \
             after a stop run `playground node --config {}`",
            spec.name,
            spec.config_path.display()
        );
        vec![spec]
    } else {
        let specs = prepare(&config, args.nodes, args.gateways)?;
        let root = std::fs::canonicalize(&config.node.data_dir)?;
        println!("playground: data in {}; admin token in {}", root.display(), root.join("admin.token").display());
        specs
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?
        .block_on(supervise(specs))
}

/// One child process: what it runs, and how it is named in the output.
struct ChildSpec {
    name: String,
    subcommand: &'static str,
    config_path: PathBuf,
    /// Whether its `listening on` line is a gateway's URL.
    serves_api: bool,
    /// How it is asked to stop: SIGINT stops a node at once (the whole cluster stops: there is no one to
    /// hand its shards to); SIGTERM drains it first (a node added with `--add-node` leaving).
    stop_signal: Signal,
}

/// A free loopback port below Linux's ephemeral range (32768 and up), so that outgoing connections
/// cannot take it between now and the child binding it. Another process still may; the child then fails
/// to start with a message naming the address, and is started again.
fn free_port() -> Result<u16> {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    for _ in 0..200 {
        let port = rng.gen_range(20_000..32_000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn offset(addr: SocketAddr, by: u16) -> SocketAddr {
    if addr.port() == 0 {
        addr
    } else {
        SocketAddr::new(addr.ip(), addr.port().saturating_add(by))
    }
}

/// Writes each child's configuration: everything the parent resolved, with the child's own name,
/// folder and addresses, and the cluster's shared secrets (created under the data directory once).
fn prepare(config: &Config, nodes: u32, gateways: u32) -> Result<Vec<ChildSpec>> {
    let root = &config.node.data_dir;
    std::fs::create_dir_all(root).with_context(|| format!("create data dir {}", root.display()))?;
    let root = std::fs::canonicalize(root)?;
    let mut base = config.clone();
    if base.security.token_key.is_none() && base.security.token_key_file.is_none() {
        let path = root.join("token.key");
        settings::load_or_create_secret(&path, 32)?;
        base.security.token_key_file = Some(path);
    }
    if base.security.admin_token.is_none() {
        base.security.admin_token = Some(settings::load_or_create_secret(&root.join("admin.token"), 24)?);
    }
    let embedded = nodes == 1 && gateways == 1;
    if !embedded {
        if base.cluster.cookie.is_none() {
            base.cluster.cookie = Some(settings::load_or_create_secret(&root.join("cluster.cookie"), 24)?);
        }
        // Ports are remembered under the data directory so that a restarted cluster finds its members
        // where they were.
        let ports_file = root.join("cluster.ports");
        let ports: Vec<u16> = match std::fs::read_to_string(&ports_file) {
            Ok(text) => text.split_whitespace().filter_map(|p| p.parse().ok()).collect(),
            Err(_) => vec![],
        };
        let ports = if ports.len() == nodes as usize {
            ports
        } else {
            let fresh = (0..nodes).map(|_| free_port()).collect::<Result<Vec<_>>>()?;
            let text: Vec<String> = fresh.iter().map(u16::to_string).collect();
            std::fs::write(&ports_file, text.join(" "))?;
            fresh
        };
        base.cluster.seeds = seeds(&ports);
    }
    let mut specs = vec![];
    for i in 1..=nodes {
        let mut child = base.clone();
        child.node.id = format!("node-{i}");
        child.node.data_dir = root.join(&child.node.id);
        if !embedded {
            // Nodes keep an HTTP endpoint for health and metrics; the API's front door is the gateways.
            child.node.http = SocketAddr::new(config.node.http.ip(), 0);
            // The launcher wrote these seeds itself, with IP addresses.
            let seed = cluster_config::parse_seed(&base.cluster.seeds[i as usize - 1]).map_err(anyhow::Error::msg)?;
            child.cluster.listen =
                seed.addr.ip().ok_or_else(|| anyhow::anyhow!("seed {} is not an IP address", seed.addr))?;
        }
        specs.push(write_spec(&child, "node", embedded)?);
    }
    if !embedded {
        for j in 1..=gateways {
            let mut child = base.clone();
            child.node.id = format!("gateway-{j}");
            child.node.data_dir = root.join(&child.node.id);
            child.node.http = offset(config.node.http, j as u16 - 1);
            child.cluster.listen = SocketAddr::new(config.cluster.listen.ip(), free_port()?);
            specs.push(write_spec(&child, "gateway", true)?);
        }
    }
    Ok(specs)
}

/// The seed list of the cluster's nodes on `ports`: `node-1@127.0.0.1:PORT`, and so on.
fn seeds(ports: &[u16]) -> Vec<String> {
    ports.iter().enumerate().map(|(i, p)| format!("node-{}@127.0.0.1:{p}", i + 1)).collect()
}

/// Writes the configuration of one more node for the cluster `up --nodes N` runs under the data
/// directory, and returns it with the cluster address the node listens on.
///
/// The node is configured like node-1 (read from the file the launcher wrote for it, so shards, cookie,
/// token key and admin token are the cluster's whatever flags started it), with its own name, folder
/// and addresses, and the cluster's nodes as its seeds. Not being among them, it joins.
fn prepare_join(config: &Config) -> Result<(ChildSpec, SocketAddr)> {
    let dir = &config.node.data_dir;
    let no_cluster = || anyhow!("no running cluster under {}: start one with `playground up --nodes 3`", dir.display());
    let root = std::fs::canonicalize(dir).map_err(|_| no_cluster())?;
    let first_path = root.join("node-1").join("node.toml");
    let first = cluster_config::load(&first_path).ok();
    if first.as_ref().is_some_and(|c| c.cluster.seeds.is_empty()) {
        bail!(
            "--add-node: {} holds a one-node (embedded) cluster, which nodes cannot join; start a cluster of its \
             own with `playground up --nodes 3 --data-dir DIR`",
            dir.display()
        );
    }
    let ports_file = root.join("cluster.ports");
    if !ports_file.is_file() || !root.join("cluster.cookie").is_file() {
        return Err(no_cluster());
    }
    let text = std::fs::read_to_string(&ports_file).with_context(|| format!("read {}", ports_file.display()))?;
    let ports = text.split_whitespace().map(str::parse).collect::<Result<Vec<u16>, _>>().ok().filter(|p| !p.is_empty());
    let Some(ports) = ports else {
        bail!("{}: {text:?} is not the list of ports `playground up --nodes N` writes", ports_file.display());
    };
    let mut child = match first {
        Some(first) => first,
        // Names the file and what is wrong with it.
        None => cluster_config::load(&first_path)?,
    };
    // Each process formats its own logs; the rest is the cluster's.
    child.log = config.log.clone();
    let (id, folder) = new_node_folder(&root)?;
    let listen = SocketAddr::new([127, 0, 0, 1].into(), free_port()?);
    child.node.id = id;
    child.node.data_dir = folder;
    // Nodes keep an HTTP endpoint for health and metrics; the API's front door is the gateways.
    child.node.http = SocketAddr::new(child.node.http.ip(), 0);
    child.cluster.listen = listen;
    child.cluster.advertise = None;
    child.cluster.seeds = seeds(&ports);
    let spec = ChildSpec { stop_signal: Signal::SIGTERM, ..write_spec(&child, "node", false)? };
    Ok((spec, listen))
}

/// Creates the folder of the next node, `node-K` with K one more than the highest `node-*` folder under
/// `root`. Creating it claims the name: two `--add-node` runs at once get different ones.
fn new_node_folder(root: &Path) -> Result<(String, PathBuf)> {
    let mut highest = 0;
    for entry in std::fs::read_dir(root).with_context(|| format!("read {}", root.display()))? {
        let entry = entry?;
        let number = entry.file_name().to_str().and_then(|n| n.strip_prefix("node-")?.parse::<u32>().ok());
        if let (Some(k), true) = (number, entry.path().is_dir()) {
            highest = highest.max(k);
        }
    }
    for k in highest + 1..highest + 100 {
        let id = format!("node-{k}");
        let folder = root.join(&id);
        match std::fs::create_dir(&folder) {
            Ok(()) => return Ok((id, folder)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("create {}", folder.display())),
        }
    }
    bail!("{}: no free node-K folder name after node-{highest}", root.display())
}

fn write_spec(child: &Config, subcommand: &'static str, serves_api: bool) -> Result<ChildSpec> {
    std::fs::create_dir_all(&child.node.data_dir)?;
    let path = child.node.data_dir.join(format!("{subcommand}.toml"));
    settings::write_private(&path, &child.to_toml())?;
    Ok(ChildSpec {
        name: child.node.id.clone(),
        subcommand,
        config_path: path,
        serves_api,
        stop_signal: Signal::SIGINT,
    })
}

fn spawn(spec: &ChildSpec) -> Result<Child> {
    let exe = std::env::current_exe().context("find the playground binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg(spec.subcommand).arg("--config").arg(&spec.config_path).stdout(Stdio::piped()).kill_on_drop(true);
    // The parent applied the environment into the child's file already; applying it twice would undo
    // the per-child names, folders and addresses.
    for &(var, _) in cluster_config::env_vars() {
        cmd.env_remove(var);
    }
    cmd.spawn().with_context(|| format!("start {}", spec.name))
}

/// Passes the child's stdout through, announcing its URL once it listens.
fn watch_output(child: &mut Child, name: String, serves_api: bool) {
    let Some(out) = child.stdout.take() else { return };
    tokio::spawn(async move {
        let mut lines = BufReader::new(out).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            match line.strip_prefix("listening on ") {
                Some(url) if serves_api => println!("{name}: gateway ready at {url}"),
                Some(url) => println!("{name}: node listening at {url}"),
                None => println!("{name}: {line}"),
            }
        }
    });
}

/// Keeps one child running until `stop` turns true, then stops it.
async fn keep_running(spec: ChildSpec, mut stop: watch::Receiver<bool>) -> Result<()> {
    let mut backoff = Duration::from_millis(500);
    loop {
        let mut child = spawn(&spec)?;
        watch_output(&mut child, spec.name.clone(), spec.serves_api);
        let started = tokio::time::Instant::now();
        tokio::select! {
            status = child.wait() => {
                let status = status?;
                // A child that ran for a while earns a fresh backoff.
                if started.elapsed() > MAX_BACKOFF {
                    backoff = Duration::from_millis(500);
                }
                tracing::warn!(child = %spec.name, %status, retry_in = ?backoff, "child exited; starting it again");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return Ok(()),
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            _ = stop.changed() => return terminate(&spec.name, child, spec.stop_signal).await,
        }
    }
}

async fn terminate(name: &str, mut child: Child, stop_signal: Signal) -> Result<()> {
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), stop_signal);
    }
    // A drain takes as long as moving the node's shards does; a plain stop, a few seconds.
    let grace = if stop_signal == Signal::SIGTERM { DRAIN_GRACE } else { STOP_GRACE };
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => tracing::info!(child = name, status = %status?, "stopped"),
        Err(_) => {
            tracing::warn!(child = name, "did not stop in time; killing it");
            child.kill().await?;
        }
    }
    Ok(())
}

/// Keeps every child running until SIGINT or SIGTERM, then stops the gateways, then the nodes.
async fn supervise(specs: Vec<ChildSpec>) -> Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    // Gateways stop before nodes, so that no request is cut off by a node going first.
    let (stop_gateways, gateways_rx) = watch::channel(false);
    let (stop_nodes, nodes_rx) = watch::channel(false);
    let mut gateway_tasks = vec![];
    let mut node_tasks = vec![];
    for spec in specs {
        if spec.subcommand == "gateway" {
            gateway_tasks.push(tokio::spawn(keep_running(spec, gateways_rx.clone())));
        } else {
            node_tasks.push(tokio::spawn(keep_running(spec, nodes_rx.clone())));
        }
    }
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    let _ = stop_gateways.send(true);
    for t in gateway_tasks {
        t.await??;
    }
    let _ = stop_nodes.send(true);
    for t in node_tasks {
        t.await??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_default_is_one_node_serving_the_api() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::default();
        config.node.data_dir = dir.path().to_owned();
        let specs = prepare(&config, 1, 1).expect("prepare");
        assert_eq!(specs.len(), 1);
        assert!(specs[0].serves_api && specs[0].subcommand == "node");
        let child = cluster_config::load(&specs[0].config_path).expect("child config parses");
        assert!(child.cluster.seeds.is_empty());
        assert_eq!(child.node.http, config.node.http);
    }

    #[test]
    fn a_cluster_gets_seeds_a_cookie_and_gateways_on_following_ports() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::default();
        config.node.data_dir = dir.path().to_owned();
        let specs = prepare(&config, 3, 2).expect("prepare");
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["node-1", "node-2", "node-3", "gateway-1", "gateway-2"]);
        let configs: Vec<Config> =
            specs.iter().map(|s| cluster_config::load(&s.config_path).expect("parses")).collect();
        assert!(configs.iter().all(|c| c.cluster.seeds.len() == 3 && c.cluster.cookie.is_some()));
        assert_eq!(configs[3].node.http.port(), 8080);
        assert_eq!(configs[4].node.http.port(), 8081);
        assert!(configs[..3].iter().all(|c| c.node.http.port() == 0));
        let again = prepare(&config, 3, 2).expect("prepare again");
        let seeds_again = cluster_config::load(&again[0].config_path).expect("parses").cluster.seeds;
        assert_eq!(seeds_again, configs[0].cluster.seeds, "members keep their addresses across restarts");
    }

    #[test]
    fn an_added_node_is_the_next_one_configured_like_node_1_with_the_nodes_as_seeds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::default();
        config.node.data_dir = dir.path().to_owned();
        config.cluster.shards = 8;
        prepare(&config, 3, 1).expect("prepare");
        let first = cluster_config::load(&dir.path().join("node-1/node.toml")).expect("node-1 parses");

        // The launcher's own settings say nothing about the cluster: node-1's file does.
        let mut joiner = Config::default();
        joiner.node.data_dir = dir.path().to_owned();
        let (spec, listen) = prepare_join(&joiner).expect("prepare a joining node");
        assert_eq!((spec.name.as_str(), spec.subcommand, spec.serves_api), ("node-4", "node", false));
        let added = cluster_config::load(&spec.config_path).expect("its config parses");
        assert_eq!(added.node.id, "node-4");
        assert_eq!(added.node.data_dir, std::fs::canonicalize(dir.path()).expect("canonical").join("node-4"));
        assert_eq!(added.node.http.port(), 0);
        assert_eq!(added.cluster.listen, listen);
        assert_eq!(added.cluster.seeds, first.cluster.seeds);
        assert!(!first.cluster.seeds.iter().any(|s| s.ends_with(&format!(":{}", listen.port()))));
        assert_eq!(added.cluster.shards, 8);
        assert_eq!(added.cluster.cookie, first.cluster.cookie);
        assert_eq!(added.security.admin_token, first.security.admin_token);
        assert_eq!(added.security.token_key_file, first.security.token_key_file);

        let (again, _) = prepare_join(&joiner).expect("prepare another");
        assert_eq!(again.name, "node-5", "every run adds a new node");
    }

    #[test]
    fn only_a_cluster_of_nodes_can_be_joined() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::default();
        config.node.data_dir = dir.path().to_owned();
        let err = prepare_join(&config).err().expect("an empty directory holds no cluster").to_string();
        assert!(err.contains("no running cluster under") && err.contains(&dir.path().display().to_string()), "{err}");
        prepare(&config, 1, 1).expect("prepare the embedded default");
        let err = prepare_join(&config).err().expect("the embedded default cannot be joined").to_string();
        assert!(err.contains("one-node"), "{err}");
        assert!(!dir.path().join("node-2").exists(), "a refused run leaves no folder behind");
    }
}
