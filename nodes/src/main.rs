//! `playground`: the product binary of Microservices Playground.
//!
//! - `up` (the default): a whole working cluster on this machine, as child processes it supervises.
//! - `node`: one cluster node with its HTTP gateway.
//! - `gateway`: one gateway, routing the HTTP API to the nodes.
//! - `sim`: fault-injection scenarios with checkers and a report (runs `playground-sim`).
//! - `bench`: load benchmarks, each beside a bare-warp baseline measured in the same run (runs
//!   `playground-bench`).
//! - `health`: a health check of a running process (for container health checks).
//! - `admin`: operations on a running cluster (draining a node).
//! - `lab`: `sim` and `bench` hand over to their own binaries, which are not linked into this one.

mod admin;
mod health;
mod lab;
mod launcher;
mod logging;
mod node;
mod settings;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

fn env_help() -> String {
    let mut text = String::from(
        "Settings come from flags, then PLAYGROUND_* environment variables, then the --config file, then \
         defaults, in that order of precedence.\n\nEnvironment variables:\n",
    );
    for &(var, field) in cluster_config::env_vars() {
        text.push_str(&format!("  {var:<32} {field}\n"));
    }
    text
}

#[derive(Parser)]
#[command(name = "playground", version, about = "Microservices Playground: users, orders and sessions as supervised actors over durable shards", after_help = env_help())]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a whole cluster on this machine (the default).
    Up(launcher::UpArgs),
    /// Run one cluster node: shard replicas, and the HTTP API.
    Node(NodeArgs),
    /// Run one gateway: the HTTP API, routed to the nodes of cluster.seeds.
    Gateway(NodeArgs),
    /// Run a fault-injection scenario (or `all`, or `list`) with its checkers and report; `sim --help`
    /// lists its flags.
    Sim(lab::LabArgs),
    /// Run the load benchmarks beside their baseline; `bench --help` lists its flags and benchmarks.
    Bench(lab::LabArgs),
    /// GET /healthz (or /readyz) of a running process: exit 0 when it answers 2xx, else 1.
    Health(health::HealthArgs),
    /// Operations on a running cluster through its HTTP API, with the admin token.
    Admin(admin::AdminArgs),
}

/// Flags every process that reads a configuration file takes.
#[derive(Args, Clone, Debug, Default)]
pub struct ConfigArgs {
    /// TOML configuration file (see cluster-config/examples).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// HTTP listen address [env: PLAYGROUND_HTTP].
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    /// Data directory [env: PLAYGROUND_DATA_DIR].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Args)]
pub struct NodeArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// The variables the command line reads (`env = "PLAYGROUND_..."` on a flag), of every subcommand.
fn flag_env_vars(cmd: &clap::Command, out: &mut Vec<String>) {
    for arg in cmd.get_arguments() {
        if let Some(var) = arg.get_env().and_then(|v| v.to_str()) {
            out.push(var.to_owned());
        }
    }
    for sub in cmd.get_subcommands() {
        flag_env_vars(sub, out);
    }
}

/// A `PLAYGROUND_*` variable that neither the configuration nor a flag reads is a mistake (a typo, or a
/// test-only switch on a production build): refused like an unknown key in the file, never ignored.
fn check_environment() -> Result<(), cluster_config::ConfigError> {
    let mut flags = vec![];
    flag_env_vars(&<Cli as clap::CommandFactory>::command(), &mut flags);
    let names: Vec<String> = std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()).collect();
    cluster_config::check_env_names(names.iter().map(String::as_str).filter(|n| !flags.iter().any(|f| f == n)))
}

fn main() -> ExitCode {
    // Everything this process creates (data directories, the store holding password hashes and session
    // verifiers, secrets, child configs) is its owner's alone.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let cli = Cli::parse();
    if let Err(e) = check_environment() {
        eprintln!("playground: {e}");
        return ExitCode::FAILURE;
    }
    let command = cli.command.unwrap_or_else(|| Command::Up(launcher::UpArgs::default()));
    let result = match command {
        Command::Up(args) => launcher::run(args),
        Command::Node(args) => node::run(args, node::Kind::Node),
        Command::Gateway(args) => node::run(args, node::Kind::Gateway),
        Command::Sim(args) => lab::run(lab::SIM, args),
        Command::Bench(args) => lab::run(lab::BENCH, args),
        Command::Health(args) => health::run(args),
        Command::Admin(args) => admin::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("playground: {e:#}");
            ExitCode::FAILURE
        }
    }
}
