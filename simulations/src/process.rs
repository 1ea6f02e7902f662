//! Processes under test. Each binds port 0 and reports its address on stdout, so tests never race for a
//! fixed port; each is killed when its handle drops, so a failing test leaves nothing running.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long a process may take to report its address: a debug build on a busy 2-core machine.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// Environment that keeps tests fast and quiet without changing behaviour: cheap argon2 parameters,
/// warnings only. A test's own environment comes after, and wins.
const TEST_ENV: &[(&str, &str)] = &[
    ("PLAYGROUND_ARGON2_MEMORY_KIB", "1024"),
    ("PLAYGROUND_ARGON2_ITERATIONS", "1"),
    ("RUST_LOG", "error,openraft=off"),
    // Injected panics are expected; their backtraces would bury real failures in the output.
    ("RUST_BACKTRACE", "0"),
];

/// A running `playground` process and the lines it prints.
pub struct NodeProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// The base URL, `http://127.0.0.1:PORT`.
    pub url: String,
}

fn spawn_with_lines(mut cmd: Command, env: &[(&str, &str)]) -> Result<(Child, mpsc::Receiver<String>)> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    cmd.envs(TEST_ENV.iter().copied());
    cmd.envs(env.iter().copied());
    let mut child = cmd.spawn().context("spawn playground")?;
    let out = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok((child, rx))
}

fn wait_for_line(rx: &mpsc::Receiver<String>, marker: &str, deadline: Duration) -> Result<String> {
    let until = Instant::now() + deadline;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(pos) = line.find(marker) {
                    return Ok(line[pos + marker.len()..].trim().to_owned());
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => bail!("no line containing {marker:?} within {deadline:?}"),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                bail!("the process exited before printing a line containing {marker:?}")
            }
        }
    }
}

impl NodeProcess {
    /// Starts `playground node` on a free port over `data_dir`, with extra environment.
    pub fn start(binary: &Path, data_dir: &Path, env: &[(&str, &str)]) -> Result<Self> {
        let mut cmd = Command::new(binary);
        cmd.args(["node", "--http", "127.0.0.1:0", "--data-dir"]).arg(data_dir);
        let (child, lines) = spawn_with_lines(cmd, env)?;
        let url = wait_for_line(&lines, "listening on ", START_DEADLINE)?;
        Ok(NodeProcess { child, lines, url })
    }

    /// Starts `playground <subcommand> --config FILE` (a node or a gateway of a cluster).
    pub fn start_with_config(binary: &Path, subcommand: &str, config: &Path, env: &[(&str, &str)]) -> Result<Self> {
        let mut cmd = Command::new(binary);
        cmd.arg(subcommand).arg("--config").arg(config);
        let (child, lines) = spawn_with_lines(cmd, env)?;
        let url = wait_for_line(&lines, "listening on ", START_DEADLINE)?;
        Ok(NodeProcess { child, lines, url })
    }

    /// Starts `playground up` on a free port over `data_dir`; `url` is its first gateway.
    pub fn start_launcher(binary: &Path, data_dir: &Path, env: &[(&str, &str)]) -> Result<Self> {
        let mut cmd = Command::new(binary);
        cmd.args(["up", "--http", "127.0.0.1:0", "--data-dir"]).arg(data_dir);
        let (child, lines) = spawn_with_lines(cmd, env)?;
        let url = wait_for_line(&lines, "gateway ready at ", START_DEADLINE)?;
        Ok(NodeProcess { child, lines, url })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the next printed line containing `marker`, and returns what follows it.
    pub fn wait_for_line(&self, marker: &str, deadline: Duration) -> Result<String> {
        wait_for_line(&self.lines, marker, deadline)
    }

    pub fn signal(&self, signal: Signal) -> Result<()> {
        kill(Pid::from_raw(self.child.id() as i32), signal).context("signal the process")
    }

    /// kill -9, and reap it.
    pub fn kill9(&mut self) -> Result<()> {
        self.signal(Signal::SIGKILL)?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM, then waits for the exit with a deadline.
    pub fn terminate(&mut self, deadline: Duration) -> Result<ExitStatus> {
        self.signal(Signal::SIGTERM)?;
        let until = Instant::now() + deadline;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= until {
                bail!("process {} did not exit within {deadline:?} of SIGTERM", self.child.id());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if !self.exited() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One node over its own temporary data directory, restartable on the same data.
pub struct TestCluster {
    binary: PathBuf,
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
    pub node: NodeProcess,
}

impl TestCluster {
    pub fn start(binary: &Path, env: &[(&str, &str)]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let node = NodeProcess::start(binary, dir.path(), env)?;
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Ok(TestCluster { binary: binary.to_owned(), env, dir, node })
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts the node again over the same data (after a kill or a stop).
    pub fn restart(&mut self) -> Result<()> {
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.node = NodeProcess::start(&self.binary, self.dir.path(), &env)?;
        Ok(())
    }
}

/// Polls `check` until it returns `Some`, or fails after `deadline`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() >= until {
            bail!("{what}: not within {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
