//! The two servers a run measures: the bare warp baseline inside this process, and the product as a child
//! process on a fresh data folder. Both are guards: dropping one stops its server and, for the node,
//! deletes its folder, on success and on error alike.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use warp::Filter;

/// A node opens its shards before it listens; on a busy machine that can take a while.
const STARTUP_LIMIT: Duration = Duration::from_secs(60);
/// How long a node gets to finish after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// How much of the node's log an error quotes.
const LOG_TAIL_BYTES: usize = 4096;

/// `GET /hello` → 200 "hello", on its own runtime so its scheduling does not mix with the client's.
pub struct Baseline {
    // Dropping the runtime stops the server; it must happen outside any async context, as `run` does.
    _runtime: tokio::runtime::Runtime,
    url: String,
}

impl Baseline {
    pub fn start() -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("bench-baseline")
            .build()
            .context("start the baseline's runtime")?;
        let listener =
            runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).context("bind the baseline server")?;
        let addr = listener.local_addr().context("read the baseline's address")?;
        let hello = warp::get().and(warp::path("hello")).and(warp::path::end()).map(|| "hello");
        runtime.spawn(warp::serve(hello).incoming(listener).run());
        Ok(Self { _runtime: runtime, url: format!("http://{addr}") })
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

/// `playground node` on 127.0.0.1:0 and a fresh temporary folder, stopped and removed on drop.
pub struct NodeProcess {
    child: Child,
    dir: PathBuf,
    url: String,
}

impl NodeProcess {
    pub fn start(argon2_memory_kib: Option<u32>) -> Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("playground-bench-{}-{:08x}", std::process::id(), rand::random::<u32>()));
        std::fs::create_dir(&dir).with_context(|| format!("create {}", dir.display()))?;
        let spawned = spawn(&dir, argon2_memory_kib);
        let child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        // From here on the guard owns the child and the folder, so every error below cleans both up.
        let mut node = Self { child, dir, url: String::new() };
        let stdout = node.child.stdout.take().context("the node's stdout was not piped")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            // Keep reading until the node exits, so it never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(STARTUP_LIMIT) {
            Ok(Some(Ok(line))) => line,
            Ok(_) => bail!("the node exited before listening; its log ends:\n{}", node.log_tail()),
            Err(_) => bail!("the node did not listen within {STARTUP_LIMIT:?}; its log ends:\n{}", node.log_tail()),
        };
        let Some(url) = line.strip_prefix("listening on ") else {
            bail!("unexpected first line from the node: {line:?}");
        };
        node.url = url.trim_end_matches('/').to_owned();
        eprintln!("bench: started a node at {}", node.url);
        Ok(node)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(self.dir.join("node.log")) {
            let _ = file.read_to_string(&mut text);
        }
        let start = text.len().saturating_sub(LOG_TAIL_BYTES);
        let start = (start..text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(text.len());
        text[start..].to_owned()
    }
}

/// The `playground` binary run with `args`, its stdout piped, its stderr into `log`, and none of the
/// caller's `PLAYGROUND_*` settings: they would make what is measured differ from what is documented.
pub(super) fn product_command(
    args: &[&std::ffi::OsStr],
    log: &std::path::Path,
    argon2_memory_kib: Option<u32>,
) -> Result<Command> {
    let exe = std::env::current_exe().context("find the playground binary")?;
    let log = std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
    let mut cmd = Command::new(exe);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log);
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("PLAYGROUND_") {
            cmd.env_remove(var);
        }
    }
    if let Some(kib) = argon2_memory_kib {
        cmd.env("PLAYGROUND_ARGON2_MEMORY_KIB", kib.to_string());
    }
    Ok(cmd)
}

fn spawn(dir: &std::path::Path, argon2_memory_kib: Option<u32>) -> Result<Child> {
    let data = dir.join("data");
    let args = ["node".as_ref(), "--http".as_ref(), "127.0.0.1:0".as_ref(), "--data-dir".as_ref(), data.as_os_str()];
    product_command(&args, &dir.join("node.log"), argon2_memory_kib)?.spawn().context("start the node process")
}

/// SIGTERM to `child`, then waits up to `grace` for it to exit; `false` when it is still running.
pub(super) fn stop_gracefully(child: &mut Child, grace: Duration) -> bool {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return true,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => return false,
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if !stop_gracefully(&mut self.child, STOP_GRACE) {
            eprintln!("bench: the node did not stop within {STOP_GRACE:?}; killing it");
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("bench: could not remove {}: {e}", self.dir.display());
        }
    }
}

/// Waits until the target answers `/readyz` with 200: a node listens before its shards have leaders.
pub async fn wait_ready(client: &reqwest::Client, base: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + STARTUP_LIMIT;
    let url = format!("{base}/readyz");
    loop {
        let last = match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => format!("status {}", r.status()),
            Err(e) => e.to_string(),
        };
        if tokio::time::Instant::now() >= deadline {
            bail!("{base} was not ready within {STARTUP_LIMIT:?} (last answer: {last})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
