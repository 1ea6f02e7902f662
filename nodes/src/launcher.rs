//! `playground up`: a whole cluster on this machine as child processes of this one, data under one
//! directory, kept across restarts.
//!
//! - The embedded default (one node, one gateway) is a single node process that serves the HTTP API
//!   itself: the fastest start and the fewest moving parts for a new user.
//! - `--nodes N --gateways G` runs N node processes that replicate every shard (factor min(3, N)) and G
//!   gateway processes, the first on `--http`, the next on the following ports.
//!
//! A child that dies is started again with backoff while the others keep running; SIGINT or SIGTERM
//! stops the gateways, then the nodes, then this process.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
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
}

impl Default for UpArgs {
    fn default() -> Self {
        Self { config: ConfigArgs::default(), nodes: 1, gateways: 1 }
    }
}

/// How long a child gets to finish its requests and commits after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(15);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub fn run(args: UpArgs) -> Result<()> {
    if !(1..=7).contains(&args.nodes) {
        bail!("--nodes: {} is out of range; run 1 to 7 nodes", args.nodes);
    }
    if !(1..=16).contains(&args.gateways) {
        bail!("--gateways: {} is out of range; run 1 to 16 gateways", args.gateways);
    }
    let config = settings::resolve(&args.config)?;
    crate::logging::init(config.log.format);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?
        .block_on(supervise(config, args.nodes, args.gateways))
}

/// One child process: what it runs, and how it is named in the output.
struct ChildSpec {
    name: String,
    subcommand: &'static str,
    config_path: PathBuf,
    /// Whether its `listening on` line is a gateway's URL.
    serves_api: bool,
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
        base.cluster.seeds = ports.iter().enumerate().map(|(i, p)| format!("node-{}@127.0.0.1:{p}", i + 1)).collect();
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

fn write_spec(child: &Config, subcommand: &'static str, serves_api: bool) -> Result<ChildSpec> {
    std::fs::create_dir_all(&child.node.data_dir)?;
    let path = child.node.data_dir.join(format!("{subcommand}.toml"));
    settings::write_private(&path, &child.to_toml())?;
    Ok(ChildSpec { name: child.node.id.clone(), subcommand, config_path: path, serves_api })
}

fn spawn(spec: &ChildSpec) -> Result<Child> {
    let exe = std::env::current_exe().context("find the playground binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg(spec.subcommand).arg("--config").arg(&spec.config_path).stdout(Stdio::piped()).kill_on_drop(true);
    // The parent applied the environment into the child's file already; applying it twice would undo
    // the per-child names, folders and addresses.
    for (var, _) in cluster_config::ENV_VARS {
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
            _ = stop.changed() => return terminate(&spec.name, child).await,
        }
    }
}

async fn terminate(name: &str, mut child: Child) -> Result<()> {
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    match tokio::time::timeout(STOP_GRACE, child.wait()).await {
        Ok(status) => tracing::info!(child = name, status = %status?, "stopped"),
        Err(_) => {
            tracing::warn!(child = name, "did not stop in time; killing it");
            child.kill().await?;
        }
    }
    Ok(())
}

async fn supervise(config: Config, nodes: u32, gateways: u32) -> Result<()> {
    let specs = prepare(&config, nodes, gateways)?;
    let root = std::fs::canonicalize(&config.node.data_dir)?;
    println!("playground: data in {}; admin token in {}", root.display(), root.join("admin.token").display());
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
}
