//! Processes under test or under measurement: the one way the lab starts the product. Each binds port 0
//! and reports its address on stdout, so no caller races for a fixed port; each is killed (with the
//! processes it started) when its handle drops, so a failing run leaves nothing running.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long a process may take to report its address: a debug build on a busy 2-core machine.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// How much of a process's log an error quotes.
const LOG_TAIL_BYTES: u64 = 4096;

/// Environment that keeps tests fast and quiet without changing behaviour: cheap argon2 parameters,
/// warnings only. A test's own environment comes after, and wins.
const TEST_ENV: &[(&str, &str)] = &[
    ("PLAYGROUND_ARGON2_MEMORY_KIB", "1024"),
    ("PLAYGROUND_ARGON2_ITERATIONS", "1"),
    ("RUST_LOG", "error,openraft=off"),
    // Injected panics are expected; their backtraces would bury real failures in the output.
    ("RUST_BACKTRACE", "0"),
];

/// What a started process's environment holds besides [`Launch::env`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Settings {
    /// The test settings (cheap argon2, quiet logs) over the caller's environment: fast tests, and the
    /// same behaviour.
    #[default]
    Test,
    /// The product as documented: no test settings, none of the caller's `PLAYGROUND_*` variables, which
    /// would make what a benchmark measures differ from what it reports, and no terminal input.
    Product,
}

/// Something that reads every line a process prints (see [`Launch::on_line`]).
type LineObserver = Box<dyn FnMut(&str) + Send>;

/// How a process is started: its settings and extra environment, where its stderr goes, how long it may
/// take to announce itself, and who else reads what it prints.
pub struct Launch {
    settings: Settings,
    env: Vec<(String, String)>,
    log: Option<PathBuf>,
    deadline: Duration,
    on_line: Option<LineObserver>,
}

impl Launch {
    /// A process under test: the test settings, then `env`.
    pub fn test(env: &[(&str, &str)]) -> Self {
        let mut launch = Self::with(Settings::Test);
        for (k, v) in env {
            launch = launch.env(k, v);
        }
        launch
    }

    /// The product as a user runs it (see [`Settings::Product`]).
    pub fn product() -> Self {
        Self::with(Settings::Product)
    }

    fn with(settings: Settings) -> Self {
        Launch { settings, env: vec![], log: None, deadline: START_DEADLINE, on_line: None }
    }

    /// One more environment variable, after the settings: it wins over them.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Its stderr into the file `path` instead of this process's stderr; errors quote the file's end.
    pub fn log(mut self, path: &Path) -> Self {
        self.log = Some(path.to_owned());
        self
    }

    /// How long it may take to print its ready line [default: a minute].
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Also hands every line it prints to `observe`, as soon as it is read, for as long as it runs.
    pub fn on_line(mut self, observe: impl FnMut(&str) + Send + 'static) -> Self {
        self.on_line = Some(Box::new(observe));
        self
    }
}

/// A running `playground` process and the lines it prints.
pub struct NodeProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Option<PathBuf>,
    /// The base URL, `http://127.0.0.1:PORT`.
    pub url: String,
}

fn spawn_with_lines(mut cmd: Command, launch: Launch) -> Result<(Child, mpsc::Receiver<String>)> {
    cmd.stdout(Stdio::piped());
    match &launch.log {
        Some(path) => cmd.stderr(File::create(path).with_context(|| format!("create {}", path.display()))?),
        None => cmd.stderr(Stdio::inherit()),
    };
    match launch.settings {
        Settings::Test => {
            cmd.envs(TEST_ENV.iter().copied());
        }
        Settings::Product => {
            cmd.stdin(Stdio::null());
            for (var, _) in std::env::vars_os() {
                if var.to_string_lossy().starts_with("PLAYGROUND_") {
                    cmd.env_remove(var);
                }
            }
        }
    }
    cmd.envs(launch.env.iter().map(|(k, v)| (k, v)));
    let mut child = cmd.spawn().context("spawn playground")?;
    let out = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let (tx, rx) = mpsc::channel();
    let mut observe = launch.on_line;
    // Reads until the process exits, even when no one waits for lines, so it never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut queue = Some(tx);
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(observe) = observe.as_mut() {
                observe(&line);
            }
            if queue.as_ref().is_some_and(|tx| tx.send(line).is_err()) {
                queue = None;
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

/// The last [`LOG_TAIL_BYTES`] of the file `path`, or nothing when it cannot be read.
fn tail_of(path: &Path) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut file) = File::open(path) {
        let len = file.metadata().map_or(0, |m| m.len());
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)));
        let _ = file.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

impl NodeProcess {
    /// Starts `binary ARGS` as `launch` says, and waits until it prints a line containing `ready`; `url`
    /// is what follows it on that line.
    pub fn launch<S: AsRef<OsStr>>(
        binary: &Path,
        args: impl IntoIterator<Item = S>,
        ready: &str,
        launch: Launch,
    ) -> Result<Self> {
        let mut cmd = Command::new(binary);
        cmd.args(args);
        let (log, deadline) = (launch.log.clone(), launch.deadline);
        let (child, lines) = spawn_with_lines(cmd, launch)?;
        // From here on the handle owns the child, so an error below kills it.
        let mut process = NodeProcess { child, lines, log, url: String::new() };
        match wait_for_line(&process.lines, ready, deadline) {
            Ok(url) => process.url = url,
            Err(e) if process.log.is_some() => return Err(anyhow!("{e:#}; its log ends:\n{}", process.log_tail())),
            Err(e) => return Err(e),
        }
        Ok(process)
    }

    /// Starts `playground node` on a free port over `data_dir`, with extra environment.
    pub fn start(binary: &Path, data_dir: &Path, env: &[(&str, &str)]) -> Result<Self> {
        let args =
            ["node".as_ref(), "--http".as_ref(), "127.0.0.1:0".as_ref(), "--data-dir".as_ref(), data_dir.as_os_str()];
        Self::launch(binary, args, "listening on ", Launch::test(env))
    }

    /// Starts `playground <subcommand> --config FILE` (a node or a gateway of a cluster).
    pub fn start_with_config(binary: &Path, subcommand: &str, config: &Path, env: &[(&str, &str)]) -> Result<Self> {
        let args = [subcommand.as_ref(), "--config".as_ref(), config.as_os_str()];
        Self::launch(binary, args, "listening on ", Launch::test(env))
    }

    /// Starts `playground up` on a free port over `data_dir`; `url` is its first gateway.
    pub fn start_launcher(binary: &Path, data_dir: &Path, env: &[(&str, &str)]) -> Result<Self> {
        let args =
            ["up".as_ref(), "--http".as_ref(), "127.0.0.1:0".as_ref(), "--data-dir".as_ref(), data_dir.as_os_str()];
        Self::launch(binary, args, "gateway ready at ", Launch::test(env))
    }

    /// The end of its log file (see [`Launch::log`]); empty without one.
    pub fn log_tail(&self) -> String {
        self.log.as_deref().map(tail_of).unwrap_or_default()
    }

    /// The processes it started (a launcher's nodes and gateways), by the member name their command line
    /// gives: the folder of their `--config` file (`node-2` for `…/node-2/node.toml`).
    pub fn members(&self) -> Vec<(String, i32)> {
        children_of(self.child.id())
            .into_iter()
            .filter_map(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                Some((member_name(&cmdline)?, pid))
            })
            .collect()
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
            // A launcher's children would outlive a launcher killed with SIGKILL.
            for pid in children_of(self.child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The children of process `pid`, from every one of its threads: a runtime may start them from any.
fn children_of(pid: u32) -> Vec<i32> {
    let mut pids: Vec<i32> = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                pids.extend(text.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
            }
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// `node-2` from the command line `playground node --config …/node-2/node.toml` (NUL-separated).
fn member_name(cmdline: &[u8]) -> Option<String> {
    let mut args = cmdline.split(|b| *b == 0).map(String::from_utf8_lossy);
    args.by_ref().find(|a| a == "--config")?;
    let config = args.next()?;
    let folder = Path::new(config.as_ref()).parent()?.file_name()?;
    Some(folder.to_string_lossy().into_owned())
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn members_are_named_by_their_config_folder() {
        let node = b"/x/playground\0node\0--config\0/tmp/d/data/node-2/node.toml\0";
        assert_eq!(member_name(node).as_deref(), Some("node-2"));
        let gateway = b"playground\0gateway\0--config\0/tmp/d/data/gateway-1/gateway.toml\0";
        assert_eq!(member_name(gateway).as_deref(), Some("gateway-1"));
        assert_eq!(member_name(b"playground\0up\0--nodes\x003\0"), None);
        assert_eq!(member_name(b"playground\0node\0--config\0"), None);
    }

    #[test]
    fn a_log_tail_is_the_end_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, format!("{}end", "x".repeat(LOG_TAIL_BYTES as usize))).unwrap();
        let tail = tail_of(&path);
        assert_eq!(tail.len(), LOG_TAIL_BYTES as usize);
        assert!(tail.ends_with("xend"));
        assert_eq!(tail_of(&dir.path().join("missing")), "");
    }
}
