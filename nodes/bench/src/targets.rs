//! The two servers a run measures: the bare warp baseline inside this process, and the product as a child
//! process on a fresh data folder, started by the harness as [`product_launch`] says. Both are guards:
//! dropping one stops its server and, for the node, deletes its folder, on success and on error alike.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use simulations::Launch;
use tempfile::TempDir;
use warp::Filter;

/// A node opens its shards before it listens; on a busy machine that can take a while.
const STARTUP_LIMIT: Duration = Duration::from_secs(60);
/// How long a node gets to finish after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// `GET /hello` → 200 "hello", on its own runtime so its scheduling does not mix with the client's.
pub struct Baseline {
    // Dropping the runtime stops the server; it must happen outside any async context, as `run` does.
    _runtime: tokio::runtime::Runtime,
    url: String,
    addr: std::net::SocketAddr,
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
        Ok(Self { _runtime: runtime, url: format!("http://{addr}"), addr })
    }

    /// Its address, for a proxy in front of it.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

/// `playground node` on 127.0.0.1:0 and a fresh temporary folder, stopped and removed on drop.
pub struct NodeProcess {
    // Fields drop in order: the node is gone before its folder is removed.
    process: simulations::NodeProcess,
    _dir: TempDir,
}

impl NodeProcess {
    pub fn start(binary: &Path, argon2_memory_kib: Option<u32>) -> Result<Self> {
        Self::start_with(binary, argon2_memory_kib, &[])
    }

    /// [`NodeProcess::start`] with `PLAYGROUND_*` settings of its own, for a baseline that differs from
    /// the product as shipped in those alone.
    pub fn start_with(binary: &Path, argon2_memory_kib: Option<u32>, env: &[(&str, &str)]) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("playground-bench-").tempdir().context("create the node's folder")?;
        let data = dir.path().join("data");
        let args =
            ["node".as_ref(), "--http".as_ref(), "127.0.0.1:0".as_ref(), "--data-dir".as_ref(), data.as_os_str()];
        let launch = env.iter().fold(
            product_launch(&dir.path().join("node.log"), argon2_memory_kib).deadline(STARTUP_LIMIT),
            |launch, (key, value)| launch.env(key, value),
        );
        let mut process =
            simulations::NodeProcess::launch(binary, args, "listening on ", launch).context("start the node")?;
        process.url = process.url.trim_end_matches('/').to_owned();
        eprintln!("bench: started a node at {}", process.url);
        Ok(Self { process, _dir: dir })
    }

    pub fn url(&self) -> &str {
        &self.process.url
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.process.pid()).unwrap_or(i32::MAX)
    }
}

/// How the benchmarks start the product: as a user gets it ([`simulations::Settings::Product`]: none of the caller's
/// `PLAYGROUND_*` settings, which would make what is measured differ from what is documented), its stderr
/// into `log`, and with `argon2_memory_kib` when given.
pub fn product_launch(log: &Path, argon2_memory_kib: Option<u32>) -> Launch {
    let launch = Launch::product().log(log);
    match argon2_memory_kib {
        Some(kib) => launch.env("PLAYGROUND_ARGON2_MEMORY_KIB", &kib.to_string()),
        None => launch,
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        // The harness kills what is still running once `process` drops.
        if self.process.terminate(STOP_GRACE).is_err() {
            eprintln!("bench: the node did not stop within {STOP_GRACE:?}; killing it");
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
