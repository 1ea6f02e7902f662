//! The cluster transport between real processes, through its public API only.
//!
//! pg and the actor registry are global to a process, so each peer is a second process: this test
//! binary re-executed with `--exact transport_peer`, its configuration in `PEER_ENV`. That test does
//! nothing when the variable is unset. The peer exits when its stdin closes, so it never outlives the
//! test. The scenarios take a shared lock so that they do not compete for the machine's two cores.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cluster_config::{parse_seed, Seed};
use cluster_transport::{CallHandler, PeerState, Role, Transport, TransportConfig, TransportError};
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::{Deserialize, Serialize};

const PEER_ENV: &str = "PLAYGROUND_TRANSPORT_TEST_PEER";
const COOKIE: &str = "a-cookie-of-sixteen-or-more";
const HEARTBEAT: Duration = Duration::from_millis(100);
const FAILURE_TIMEOUT: Duration = Duration::from_millis(1000);
const CALL_TIMEOUT: Duration = Duration::from_millis(500);

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Serialize, Deserialize, Clone)]
struct PeerSpec {
    id: String,
    listen: SocketAddr,
    /// `id@addr` of the test process.
    parent: String,
    cookie: String,
    /// The peer does not have the test process among its seeds, so it never dials it.
    #[serde(default)]
    passive: bool,
}

/// Echoes, except that `relay:X` makes the peer call the test process with `X` and answer with what
/// it got back: the call in the other direction.
struct PeerHandler {
    transport: Arc<OnceLock<Arc<Transport>>>,
    parent: String,
}

impl CallHandler for PeerHandler {
    fn handle(&self, payload: Vec<u8>) -> BoxFuture<'static, Vec<u8>> {
        let transport = self.transport.get().cloned();
        let parent = self.parent.clone();
        async move {
            let Some(rest) = payload.strip_prefix(b"relay:") else { return payload };
            let Some(transport) = transport else { return b"not started".to_vec() };
            match transport.call(&parent, rest.to_vec(), CALL_TIMEOUT).await {
                Ok(answer) => [b"relayed:".as_slice(), &answer].concat(),
                Err(e) => format!("relay failed: {e}").into_bytes(),
            }
        }
        .boxed()
    }
}

struct Echo;

impl CallHandler for Echo {
    fn handle(&self, payload: Vec<u8>) -> BoxFuture<'static, Vec<u8>> {
        async move { [b"echo:".as_slice(), &payload].concat() }.boxed()
    }
}

/// The peer process. Prints `PEER ready` once its transport runs, then serves until stdin closes.
#[test]
fn transport_peer() {
    let Ok(spec) = std::env::var(PEER_ENV) else { return };
    let spec: PeerSpec = serde_json::from_str(&spec).expect("peer spec");
    let _ = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter("warn").try_init();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let parent = cluster_config::parse_seed(&spec.parent).expect("parent seed");
        let cell = Arc::new(OnceLock::new());
        let handler = PeerHandler { transport: cell.clone(), parent: parent.id.clone() };
        let config = TransportConfig {
            id: spec.id.clone(),
            role: Role::Node,
            listen: spec.listen,
            seeds: if spec.passive { vec![] } else { vec![parent] },
            cookie: spec.cookie.clone(),
            heartbeat_interval: HEARTBEAT,
            failure_timeout: FAILURE_TIMEOUT,
        };
        let transport = Transport::start(config, Some(Arc::new(handler))).await.expect("peer transport starts");
        let _ = cell.set(transport.clone());
        println!("PEER ready {}", transport.local_addr());
        std::io::stdout().flush().expect("stdout");
        // Blocking read on its own thread: EOF means the test is gone.
        tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {}
        })
        .await
        .expect("stdin reader");
        transport.stop().await;
    });
}

/// A peer process, killed when dropped.
struct Peer {
    child: Child,
}

impl Peer {
    fn spawn(spec: &PeerSpec) -> Peer {
        let exe = std::env::current_exe().expect("test binary");
        let mut child = Command::new(exe)
            .args(["--exact", "transport_peer", "--nocapture", "--test-threads", "1"])
            .env(PEER_ENV, serde_json::to_string(spec).expect("spec"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn peer");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("PEER ready") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(30)).expect("peer reports ready");
        Peer { child }
    }

    fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits"))
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), sig).expect("signal peer");
    }

    /// SIGSTOP, and wait until the kernel reports the process stopped: the signal is only queued when
    /// `kill` returns, and on a loaded machine the peer may still answer a call sent right after it.
    fn freeze(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
        let stat = format!("/proc/{}/stat", self.child.id());
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(&stat).unwrap_or_default();
            // The state is the field after the parenthesised command name.
            let state = text.rsplit(')').next().and_then(|rest| rest.split_whitespace().next());
            if matches!(state, Some("T" | "t")) {
                return;
            }
            assert!(Instant::now() < deadline, "the peer did not stop: {text}");
            std::thread::yield_now();
        }
    }

    fn kill9(mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // SIGCONT first: a stopped process does not die of SIGKILL until it runs again on some kernels.
        let _ = nix::sys::signal::kill(self.pid(), nix::sys::signal::Signal::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago. ractor_cluster's NodeServer does not report the port it bound, and
/// the test process must know the peer's address before either starts, so the port is chosen here by
/// binding port 0 and releasing it; the small race with other processes is accepted in tests.
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port")
}

fn captured_logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info")
            .with_ansi(false)
            .with_writer(move || LogWriter(logs))
            .try_init();
        logs
    })
}

struct LogWriter(&'static Mutex<Vec<u8>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::io::stderr().write_all(buf)?;
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Starts the test process's transport (port 0) with `peer` as its seed, and the peer process.
async fn pair(prefix: &str, peer_cookie: &str) -> (Arc<Transport>, Peer, PeerSpec) {
    pair_as(prefix, peer_cookie, Role::Node).await
}

async fn pair_as(prefix: &str, peer_cookie: &str, role: Role) -> (Arc<Transport>, Peer, PeerSpec) {
    captured_logs();
    let peer_addr = free_port();
    let parent_id = format!("{prefix}-a");
    let peer_id = format!("{prefix}-b");
    let config = TransportConfig {
        id: parent_id.clone(),
        role,
        listen: "127.0.0.1:0".parse().expect("addr"),
        seeds: vec![Seed { id: peer_id.clone(), addr: peer_addr.into() }],
        cookie: COOKIE.into(),
        heartbeat_interval: HEARTBEAT,
        failure_timeout: FAILURE_TIMEOUT,
    };
    let transport = Transport::start(config, Some(Arc::new(Echo))).await.expect("transport starts");
    let spec = PeerSpec {
        id: peer_id,
        listen: peer_addr,
        parent: format!("{parent_id}@{}", transport.local_addr()),
        cookie: peer_cookie.into(),
        passive: false,
    };
    let peer = Peer::spawn(&spec);
    (transport, peer, spec)
}

/// Waits until `node` is in `state`; returns how long that took.
async fn wait_state(t: &Transport, node: &str, state: PeerState, deadline: Duration) -> Duration {
    let start = Instant::now();
    let mut rx = t.watch();
    loop {
        if t.state_of(node) == Some(state) {
            return start.elapsed();
        }
        let left = deadline.checked_sub(start.elapsed()).unwrap_or_default();
        assert!(!left.is_zero(), "{node} not {state:?} within {deadline:?}: {:?}", t.peers());
        let _ = tokio::time::timeout(left.min(Duration::from_millis(50)), rx.changed()).await;
    }
}

fn counter(name: &str, peer: &str) -> f64 {
    prometheus::gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| m.get_label().iter().any(|l| l.name() == "peer" && l.value() == peer))
        .map(|m| m.get_counter().get_value())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_round_trip_in_both_directions() {
    let _serial = SERIAL.lock().await;
    let (t, _peer, spec) = pair("rt", COOKIE).await;
    let took = wait_state(&t, &spec.id, PeerState::Up, Duration::from_secs(10)).await;
    eprintln!("round trip: peer up after {took:?}");

    let answer = t.call(&spec.id, b"hello".to_vec(), CALL_TIMEOUT).await.expect("call to the peer");
    assert_eq!(answer, b"hello");
    let answer = t.call(&spec.id, b"relay:ping".to_vec(), CALL_TIMEOUT).await.expect("relay through the peer");
    assert_eq!(answer, b"relayed:echo:ping", "the peer called us back");

    let big = vec![7u8; 1 << 20];
    assert_eq!(t.call(&spec.id, big.clone(), Duration::from_secs(5)).await.expect("1 MiB call"), big);
    assert_eq!(t.peers().len(), 1);
    assert!(t.peers()[0].since_heard.is_some());
    assert_eq!(
        t.call("nobody", vec![], CALL_TIMEOUT).await,
        Err(TransportError::NotConnected { peer: "nobody".into() })
    );
    t.stop().await;
    assert_eq!(t.call(&spec.id, vec![], CALL_TIMEOUT).await, Err(TransportError::Stopped));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_cookie_is_reported_and_no_session_forms() {
    let _serial = SERIAL.lock().await;
    let (t, _peer, spec) = pair("ck", "another-cookie-entirely").await;
    let start = Instant::now();
    while counter("playground_transport_auth_failures_total", &spec.id) < 1.0 {
        assert!(start.elapsed() < Duration::from_secs(10), "no auth failure counted: {:?}", t.peers());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("wrong cookie: reported after {:?}", start.elapsed());
    let logs = String::from_utf8_lossy(&captured_logs().lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    assert!(
        logs.lines().any(|l| l.contains("ERROR") && l.contains("cookie rejected") && l.contains(&spec.id)),
        "no error line names the peer"
    );
    assert_eq!(t.state_of(&spec.id), Some(PeerState::Down));
    assert_eq!(
        t.call(&spec.id, b"x".to_vec(), CALL_TIMEOUT).await,
        Err(TransportError::NotConnected { peer: spec.id.clone() })
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_peer_goes_down_and_comes_back() {
    let _serial = SERIAL.lock().await;
    let (t, peer, spec) = pair("fz", COOKIE).await;
    wait_state(&t, &spec.id, PeerState::Up, Duration::from_secs(10)).await;

    let mut rx = t.watch();
    rx.borrow_and_update();
    peer.freeze();
    let frozen = Instant::now();
    let started = Instant::now();
    let outcome = t.call(&spec.id, b"x".to_vec(), CALL_TIMEOUT).await;
    let took = started.elapsed();
    assert!(matches!(outcome, Err(TransportError::Timeout { .. })), "{outcome:?}");
    // Generous margins: the point is that the call is bounded, on a shared and noisy machine.
    assert!(took < CALL_TIMEOUT + Duration::from_millis(1500), "call bounded by its timeout, took {took:?}");

    let down = wait_state(&t, &spec.id, PeerState::Down, FAILURE_TIMEOUT * 3).await;
    let down = frozen.elapsed().max(down);
    eprintln!("frozen: call gave up after {took:?}, peer down after {down:?}");
    assert!(down <= FAILURE_TIMEOUT + HEARTBEAT * 2 + Duration::from_millis(1500), "down after {down:?}");
    let mut seen = vec![];
    while rx.has_changed().unwrap_or(false) {
        seen.push(rx.borrow_and_update()[0].state);
    }
    assert!(seen.contains(&PeerState::Down), "watch published {seen:?}");

    let started = Instant::now();
    let outcome = t.call(&spec.id, b"x".to_vec(), CALL_TIMEOUT).await;
    assert_eq!(outcome, Err(TransportError::PeerDown { peer: spec.id.clone() }));
    assert!(started.elapsed() < Duration::from_millis(500), "a down peer fails at once, not after a timeout");

    peer.signal(nix::sys::signal::Signal::SIGCONT);
    let up = wait_state(&t, &spec.id, PeerState::Up, Duration::from_secs(5)).await;
    eprintln!("thawed: peer up after {up:?}");
    assert_eq!(t.call(&spec.id, b"back".to_vec(), CALL_TIMEOUT).await.expect("call after SIGCONT"), b"back");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_peer_restarted_on_its_port_is_reconnected() {
    let _serial = SERIAL.lock().await;
    let (t, peer, spec) = pair("kl", COOKIE).await;
    wait_state(&t, &spec.id, PeerState::Up, Duration::from_secs(10)).await;

    peer.kill9();
    let down = wait_state(&t, &spec.id, PeerState::Down, Duration::from_secs(2)).await;
    eprintln!("killed: peer down after {down:?}");
    let outcome = t.call(&spec.id, b"x".to_vec(), CALL_TIMEOUT).await;
    assert!(matches!(outcome, Err(TransportError::NotConnected { .. })), "{outcome:?}");

    // Long enough for the dialer to back off a few times against the closed port.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restarted = Instant::now();
    let _peer = Peer::spawn(&spec);
    let up = wait_state(&t, &spec.id, PeerState::Up, Duration::from_secs(15)).await;
    eprintln!("restarted: peer up {:?} after its restart ({up:?} after it reported ready)", restarted.elapsed());
    assert_eq!(t.call(&spec.id, b"again".to_vec(), CALL_TIMEOUT).await.expect("call after restart"), b"again");
    let answer = t.call(&spec.id, b"relay:again".to_vec(), CALL_TIMEOUT).await.expect("relay after restart");
    assert_eq!(answer, b"relayed:echo:again");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_calls_nodes_but_serves_no_calls() {
    let _serial = SERIAL.lock().await;
    let (t, _peer, spec) = pair_as("gw", COOKIE, Role::Gateway).await;
    wait_state(&t, &spec.id, PeerState::Up, Duration::from_secs(10)).await;
    assert_eq!(t.call(&spec.id, b"hi".to_vec(), CALL_TIMEOUT).await.expect("gateway calls the node"), b"hi");
    let answer = t.call(&spec.id, b"relay:hi".to_vec(), CALL_TIMEOUT).await.expect("relay answer");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("relay failed: no session to peer gw-a"), "{answer}");
    t.stop().await;
}

/// Seeds given by host name are resolved when dialing, on both sides; a seed whose name does not resolve
/// is a failed dial (retried with backoff) that keeps its peer down without holding up the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeds_given_by_host_name_are_resolved_when_dialing() {
    let _serial = SERIAL.lock().await;
    captured_logs();
    let peer_addr = free_port();
    let (parent_id, peer_id) = ("dns-a".to_owned(), "dns-b".to_owned());
    let config = TransportConfig {
        id: parent_id.clone(),
        role: Role::Node,
        listen: "127.0.0.1:0".parse().expect("addr"),
        seeds: vec![
            parse_seed(&format!("{peer_id}@localhost:{}", peer_addr.port())).expect("seed by name"),
            parse_seed("dns-nowhere@no-such-node.invalid:7100").expect("seed by a name that never resolves"),
        ],
        cookie: COOKIE.into(),
        heartbeat_interval: HEARTBEAT,
        failure_timeout: FAILURE_TIMEOUT,
    };
    let t = Transport::start(config, Some(Arc::new(Echo))).await.expect("transport starts");
    let spec = PeerSpec {
        id: peer_id,
        listen: peer_addr,
        parent: format!("{parent_id}@localhost:{}", t.local_addr().port()),
        cookie: COOKIE.into(),
        passive: false,
    };
    let _peer = Peer::spawn(&spec);
    wait_state(&t, &spec.id, PeerState::Up, Duration::from_secs(10)).await;
    assert_eq!(t.call(&spec.id, b"by name".to_vec(), CALL_TIMEOUT).await.expect("call"), b"by name");
    let answer = t.call(&spec.id, b"relay:back".to_vec(), CALL_TIMEOUT).await.expect("relay through the peer");
    assert_eq!(answer, b"relayed:echo:back");

    assert_eq!(t.state_of("dns-nowhere"), Some(PeerState::Down));
    let peers = t.peers();
    let shown: Vec<String> = peers.iter().map(|p| format!("{}={}", p.id, p.addr)).collect();
    assert!(shown.contains(&format!("dns-b=localhost:{}", peer_addr.port())), "{shown:?}");
    assert!(shown.contains(&"dns-nowhere=no-such-node.invalid:7100".to_owned()), "{shown:?}");
    t.stop().await;
}

/// A peer learned at run time is dialed and watched like a seed; once removed it is gone from the
/// detector, its session closes, and it can be added again. The peer never dials the test process, so
/// every session here is one that `add_peer`'s dialer made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_can_be_added_and_removed_at_run_time() {
    let _serial = SERIAL.lock().await;
    captured_logs();
    let peer_addr = free_port();
    let (parent_id, peer_id, seed_id) = ("dyn-a", "dyn-b", "dyn-seed");
    let config = TransportConfig {
        id: parent_id.into(),
        role: Role::Node,
        listen: "127.0.0.1:0".parse().expect("addr"),
        // A seed that never answers: the added peer must not wait for it.
        seeds: vec![Seed { id: seed_id.into(), addr: free_port().into() }],
        cookie: COOKIE.into(),
        heartbeat_interval: HEARTBEAT,
        failure_timeout: FAILURE_TIMEOUT,
    };
    let t = Transport::start(config, Some(Arc::new(Echo))).await.expect("transport starts");
    assert!(!t.add_peer(parent_id, peer_addr.into()), "its own id is not a peer");
    assert!(!t.add_peer(seed_id, peer_addr.into()), "a seed is a peer already");
    assert_eq!(t.state_of(seed_id), Some(PeerState::Down));

    let spec = PeerSpec {
        id: peer_id.into(),
        listen: peer_addr,
        parent: format!("{parent_id}@{}", t.local_addr()),
        cookie: COOKIE.into(),
        passive: true,
    };
    let _peer = Peer::spawn(&spec);
    assert_eq!(t.state_of(peer_id), None);
    assert_eq!(
        t.call(peer_id, b"x".to_vec(), CALL_TIMEOUT).await,
        Err(TransportError::NotConnected { peer: peer_id.into() }),
        "no session before it is added"
    );

    for round in ["added", "added again"] {
        let mut rx = t.watch();
        assert!(t.add_peer(peer_id, peer_addr.into()), "{round}");
        assert!(!t.add_peer(peer_id, peer_addr.into()), "{round}: a second add changes nothing");
        assert!(rx.borrow_and_update().iter().any(|p| p.id == peer_id), "{round}: the addition is published");
        let up = wait_state(&t, peer_id, PeerState::Up, Duration::from_secs(10)).await;
        eprintln!("{round}: peer up after {up:?}");
        let answer = t.call(peer_id, b"hello".to_vec(), CALL_TIMEOUT).await.expect("call to the added peer");
        assert_eq!(answer, b"hello", "{round}");
        let ids: Vec<String> = t.peers().into_iter().map(|p| p.id).collect();
        assert_eq!(ids, [seed_id, peer_id], "{round}");

        assert!(t.remove_peer(peer_id), "{round}: removed");
        assert!(!t.remove_peer(peer_id), "{round}: removed twice");
        assert_eq!(t.state_of(peer_id), None, "{round}");
        assert!(!t.peers().iter().any(|p| p.id == peer_id), "{round}: {:?}", t.peers());
        assert!(!rx.borrow_and_update().iter().any(|p| p.id == peer_id), "{round}: the removal is published");
        // Its session closes soon after, and nothing dials it again.
        let start = Instant::now();
        loop {
            match t.call(peer_id, b"x".to_vec(), CALL_TIMEOUT).await {
                Err(TransportError::NotConnected { .. }) => break,
                other => {
                    assert!(
                        start.elapsed() < Duration::from_secs(5),
                        "{round}: still reachable when removed: {other:?}"
                    )
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(t.state_of(seed_id), Some(PeerState::Down), "{round}: the seed is untouched");
    }

    assert!(t.add_peer(peer_id, peer_addr.into()), "added a third time, to be stopped with the transport");
    t.stop().await;
    assert!(!t.add_peer("dyn-c", peer_addr.into()), "a stopped transport adds no peer");
    let logs = String::from_utf8_lossy(&captured_logs().lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    assert!(
        !logs.lines().any(|l| l.contains("did not stop in time") && l.contains(parent_id)),
        "every dialer stopped with the transport"
    );
}

fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn plain_counter(name: &str) -> f64 {
    prometheus::gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter())
        .map(|m| m.get_counter().get_value())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_announcing_huge_frames_are_cut_off_before_they_cost_memory() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _serial = SERIAL.lock().await;
    let (t, _peer, spec) = pair("fr", COOKIE).await;
    wait_state(&t, &spec.id, PeerState::Up, Duration::from_secs(10)).await;
    let before = resident_kib();
    let refused_before = plain_counter("playground_transport_guard_refused_total");
    // Twenty strangers, each announcing a 16 MiB frame and sending its first mebibyte.
    let mut strangers = vec![];
    for _ in 0..20 {
        let mut s = tokio::net::TcpStream::connect(t.local_addr()).await.expect("connect");
        let _ = s.write_all(&(16u64 * 1024 * 1024 - 1).to_be_bytes()).await;
        let _ = s.write_all(&vec![0u8; 1 << 20]).await;
        strangers.push(s);
    }
    for mut s in strangers {
        let mut sink = vec![];
        let closed = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut sink)).await;
        assert!(closed.is_ok(), "a stranger's connection is closed");
    }
    let grown_mib = resident_kib().saturating_sub(before) / 1024;
    eprintln!("20 strangers announcing 16 MiB frames: resident memory +{grown_mib} MiB");
    assert!(grown_mib < 64, "the frames were never allocated: +{grown_mib} MiB");
    assert!(plain_counter("playground_transport_guard_refused_total") >= refused_before + 20.0);
    // The real peer's session is unaffected, large calls included.
    let big = vec![7u8; 4 << 20];
    assert_eq!(t.call(&spec.id, big.clone(), Duration::from_secs(10)).await.expect("4 MiB call"), big);
    t.stop().await;
}
