//! The gateway's baseline: nginx as a reverse proxy in front of the bench's bare warp handler, the
//! lightest proxy hop this machine can make. The bench starts it as a child with a config it writes into
//! a temporary folder (error log, pid file and temporary files in there too) and stops it on drop, on
//! success and on error alike. When nginx is not installed, the figure is not measured.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

/// The script that installs what the benchmarks need; named whenever nginx is missing.
pub const SETUP_SCRIPT: &str = "deploy/scripts/bench-setup.sh";
/// Idle upstream connections nginx keeps to warp: more than the bench's connections, so that every
/// client connection finds one and nginx never opens a connection per request.
const UPSTREAM_KEEPALIVE: usize = 256;
/// How long nginx gets to listen after it starts, and to stop after SIGQUIT.
const START_LIMIT: Duration = Duration::from_secs(10);
const STOP_LIMIT: Duration = Duration::from_secs(5);
/// Where Debian puts the binary, for a PATH without /usr/sbin.
const KNOWN_PATHS: [&str; 2] = ["/usr/sbin/nginx", "/usr/local/sbin/nginx"];

/// `worker_processes`: `auto`, one worker per core, as the gateway's runtime has one worker thread per
/// core; so both get the same parallelism on the same cores.
pub const WORKER_PROCESSES: &str = "auto";

/// The nginx binary: on `PATH`, or where Debian puts it.
pub fn find() -> Option<PathBuf> {
    find_in(std::env::var_os("PATH").as_deref(), &KNOWN_PATHS)
}

/// The first `nginx` file in the folders of `path` (a `PATH` value), else the first of `known` that exists.
fn find_in(path: Option<&std::ffi::OsStr>, known: &[&str]) -> Option<PathBuf> {
    let on_path = path.map(|p| std::env::split_paths(p).map(|dir| dir.join("nginx")).collect::<Vec<_>>());
    on_path.unwrap_or_default().into_iter().chain(known.iter().map(PathBuf::from)).find(|p| p.is_file())
}

/// The whole config: one server on `listen` proxying every request to `upstream` over kept-alive
/// HTTP/1.1 connections, everything it writes under `prefix`, and no access log (the gateway writes
/// none per request either).
pub fn config(listen: SocketAddr, upstream: SocketAddr, prefix: &Path, workers: &str) -> String {
    let p = prefix.display();
    format!(
        "\
worker_processes {workers};
pid {p}/nginx.pid;
error_log {p}/error.log warn;

events {{
    worker_connections 4096;
}}

http {{
    access_log off;
    client_body_temp_path {p}/client_body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;

    upstream warp {{
        server {upstream};
        keepalive {UPSTREAM_KEEPALIVE};
        keepalive_requests 1000000;
    }}

    server {{
        listen {listen};
        location / {{
            proxy_pass http://warp;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }}
    }}
}}
"
    )
}

/// nginx running as a child of the bench, on `url`.
pub struct Nginx {
    child: Child,
    url: String,
    // Dropped after the child has stopped: the config, logs and pid file go with it.
    dir: TempDir,
}

impl Nginx {
    /// Starts `binary` proxying to `upstream` and waits until it accepts connections.
    pub fn start(binary: &Path, upstream: SocketAddr) -> Result<Self> {
        let dir =
            tempfile::Builder::new().prefix("playground-bench-nginx-").tempdir().context("create nginx's folder")?;
        // A free port, released just before nginx binds it; nothing else on this machine asks for it meanwhile.
        let listen = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("find a free port for nginx")?;
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config(listen, upstream, dir.path(), WORKER_PROCESSES))
            .with_context(|| format!("write {}", conf.display()))?;
        let log = std::fs::File::create(dir.path().join("stderr.log")).context("create nginx's stderr log")?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        // From here on the guard owns the child, so an error below stops it.
        let mut nginx = Self { child, url: format!("http://{listen}"), dir };
        nginx.wait_listening(listen)?;
        eprintln!("bench: started nginx ({WORKER_PROCESSES} workers) at {} in front of http://{upstream}", nginx.url);
        Ok(nginx)
    }

    fn wait_listening(&mut self, listen: SocketAddr) -> Result<()> {
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Some(status) = self.child.try_wait().context("wait for nginx")? {
                bail!("nginx exited with {status} before it listened; {}", self.logs());
            }
            if std::net::TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("nginx did not listen on {listen} within {START_LIMIT:?}; {}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn logs(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("its stderr: {:?}; its error log: {:?}", read("stderr.log").trim(), read("error.log").trim())
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The master and its workers, for their CPU time: the master's children are the workers.
    pub fn processes(&self) -> Vec<crate::cpu::Watched> {
        let master = i32::try_from(self.child.id()).unwrap_or(i32::MAX);
        let mut out = vec![crate::cpu::Watched::new("nginx master", master)];
        let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children")).unwrap_or_default();
        for (n, pid) in children.split_whitespace().filter_map(|p| p.parse::<i32>().ok()).enumerate() {
            out.push(crate::cpu::Watched::new(format!("nginx worker {}", n + 1), pid));
        }
        out
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT: a graceful stop; the workers finish their requests, then everything exits.
        let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(i32::MAX));
        let _ = kill(pid, Signal::SIGQUIT);
        let deadline = Instant::now() + STOP_LIMIT;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("bench: nginx did not stop within {STOP_LIMIT:?} of SIGQUIT; killing it");
        // The workers exit on their own once their master is gone.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_config_proxies_over_kept_alive_http_1_1_and_writes_only_under_its_prefix() {
        let listen: SocketAddr = "127.0.0.1:18080".parse().unwrap();
        let upstream: SocketAddr = "127.0.0.1:4321".parse().unwrap();
        let text = config(listen, upstream, Path::new("/tmp/nx"), "auto");
        for needed in [
            "worker_processes auto;",
            "pid /tmp/nx/nginx.pid;",
            "error_log /tmp/nx/error.log warn;",
            "server 127.0.0.1:4321;",
            "keepalive 256;",
            "listen 127.0.0.1:18080;",
            "proxy_pass http://warp;",
            "proxy_http_version 1.1;",
            "proxy_set_header Connection \"\";",
            "access_log off;",
        ] {
            assert!(text.contains(needed), "{needed:?} missing from:\n{text}");
        }
        // Every path nginx writes to is under the prefix: it needs no root and leaves nothing behind.
        for line in text.lines().filter(|l| l.contains("_path ") || l.trim_start().starts_with("pid ")) {
            assert!(line.contains("/tmp/nx/"), "{line}");
        }
        // Balanced braces: nginx refuses the config otherwise.
        assert_eq!(text.matches('{').count(), text.matches('}').count());
        assert!(config(listen, upstream, Path::new("/p"), "1").contains("worker_processes 1;"));
    }

    #[test]
    fn nginx_is_found_on_the_path_or_where_debian_puts_it_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(find_in(Some(dir.path().as_os_str()), &["/nonexistent/nginx"]), None);
        assert_eq!(find_in(None, &[]), None);
        let binary = dir.path().join("nginx");
        std::fs::write(&binary, "").unwrap();
        assert_eq!(find_in(Some(dir.path().as_os_str()), &["/nonexistent/nginx"]), Some(binary.clone()));
        assert_eq!(find_in(None, &["/nonexistent/nginx", binary.to_str().unwrap()]), Some(binary));
    }

    #[test]
    fn the_workers_are_one_per_core() {
        assert_eq!(WORKER_PROCESSES, "auto");
        assert!(SETUP_SCRIPT.ends_with("bench-setup.sh"));
    }
}
