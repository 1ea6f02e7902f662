//! A fault proxy in user space (the kernel here has no netem): every byte of one directed link between
//! two processes passes through it, and a test or a simulation breaks the link on purpose.
//!
//! Faults, each per direction where that makes sense: delay with jitter, black-hole (bytes are held
//! back, connections stay open, as a partition looks to TCP), a bandwidth limit, and a reset of every
//! open connection in the middle of its stream. `heal` clears them all. Jitter comes from a seeded RNG,
//! so one seed gives one schedule of delays.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Which way bytes flow through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the process that connects to the one it connects to.
    Forward,
    /// The answers.
    Backward,
}

/// The faults in force on one link.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    pub delay: Duration,
    pub jitter: Duration,
    pub blackhole_forward: bool,
    pub blackhole_backward: bool,
    /// Bytes per second in each direction; `None` is unlimited.
    pub bandwidth: Option<u64>,
    /// Bumped by `reset`: connections opened before the bump are closed.
    pub reset_epoch: u64,
}

struct Shared {
    faults: watch::Sender<Faults>,
    rng: Mutex<rand::rngs::StdRng>,
}

/// A running proxy from `addr` to `upstream`. Dropping it stops accepting; open connections end when
/// either side closes or on `reset`.
pub struct FaultProxy {
    pub addr: SocketAddr,
    pub upstream: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Closing every connection too: a dropped proxy is a cut cable.
        self.shared.faults.send_modify(|f| f.reset_epoch += 1);
    }
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr, seed: u64) -> Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (faults, _) = watch::channel(Faults::default());
        let shared = Arc::new(Shared { faults, rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)) });
        let accepting = shared.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let shared = accepting.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        relay(client, server, shared).await;
                    }
                });
            }
        });
        Ok(FaultProxy { addr, upstream, shared, accept })
    }

    pub fn faults(&self) -> Faults {
        self.shared.faults.borrow().clone()
    }

    /// Changes the faults in force; open connections follow at once.
    pub fn set(&self, change: impl FnOnce(&mut Faults)) {
        self.shared.faults.send_modify(change);
    }

    pub fn delay(&self, delay: Duration, jitter: Duration) {
        self.set(|f| {
            f.delay = delay;
            f.jitter = jitter;
        });
    }

    /// Holds back every byte in `direction` (both, when `None`).
    pub fn blackhole(&self, direction: Option<Direction>) {
        self.set(|f| match direction {
            Some(Direction::Forward) => f.blackhole_forward = true,
            Some(Direction::Backward) => f.blackhole_backward = true,
            None => {
                f.blackhole_forward = true;
                f.blackhole_backward = true;
            }
        });
    }

    pub fn bandwidth(&self, bytes_per_second: Option<u64>) {
        self.set(|f| f.bandwidth = bytes_per_second);
    }

    /// Closes every open connection, mid-stream; new ones are accepted as usual.
    pub fn reset(&self) {
        self.set(|f| f.reset_epoch += 1);
    }

    /// Clears every fault (open connections stay).
    pub fn heal(&self) {
        self.set(|f| {
            let epoch = f.reset_epoch;
            *f = Faults { reset_epoch: epoch, ..Faults::default() };
        });
    }
}

async fn relay(client: TcpStream, server: TcpStream, shared: Arc<Shared>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let epoch = shared.faults.borrow().reset_epoch;
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let forward = pump(client_read, server_write, Direction::Forward, shared.clone(), epoch);
    let backward = pump(server_read, client_write, Direction::Backward, shared, epoch);
    // Either side ending (or a reset) ends both: half-open links are not what a test asks for.
    tokio::select! {
        _ = forward => {}
        _ = backward => {}
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    direction: Direction,
    shared: Arc<Shared>,
    epoch: u64,
) {
    let mut faults = shared.faults.subscribe();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = faults.changed() => {
                if changed.is_err() || faults.borrow().reset_epoch != epoch {
                    return;
                }
                continue;
            }
        };
        // Wait out a black-hole (or a reset) before passing the bytes on.
        loop {
            let f = faults.borrow_and_update().clone();
            if f.reset_epoch != epoch {
                return;
            }
            let held = match direction {
                Direction::Forward => f.blackhole_forward,
                Direction::Backward => f.blackhole_backward,
            };
            if !held {
                let pause = pause_for(&f, n, &shared);
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
                break;
            }
            if faults.changed().await.is_err() {
                return;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// How long `n` bytes wait under `f`: the delay, a jitter drawn from the seeded RNG, and the time the
/// bandwidth limit gives them.
fn pause_for(f: &Faults, n: usize, shared: &Shared) -> Duration {
    let jitter = if f.jitter.is_zero() {
        Duration::ZERO
    } else {
        let nanos = f.jitter.as_nanos().min(u128::from(u64::MAX)) as u64;
        Duration::from_nanos(shared.rng.lock().map(|mut r| r.gen_range(0..=nanos)).unwrap_or(0))
    };
    let transfer = match f.bandwidth {
        Some(bps) if bps > 0 => Duration::from_secs_f64(n as f64 / bps as f64),
        _ => Duration::ZERO,
    };
    f.delay + jitter + transfer
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// An echo server: what it reads, it writes back.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(s: &mut TcpStream, within: Duration) -> Option<Duration> {
        let started = Instant::now();
        s.write_all(b"ping").await.ok()?;
        let mut buf = [0u8; 4];
        match tokio::time::timeout(within, s.read_exact(&mut buf)).await {
            Ok(Ok(_)) if &buf == b"ping" => Some(started.elapsed()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn passes_bytes_then_delays_holds_and_heals() {
        let proxy = FaultProxy::start(echo().await, 7).await.expect("proxy");
        let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
        assert!(round_trip(&mut s, Duration::from_secs(2)).await.is_some(), "a healthy link passes bytes");

        proxy.delay(Duration::from_millis(100), Duration::ZERO);
        let rtt = round_trip(&mut s, Duration::from_secs(2)).await.expect("delayed, not lost");
        assert!(rtt >= Duration::from_millis(200), "both directions wait 100 ms: {rtt:?}");

        proxy.heal();
        proxy.blackhole(Some(Direction::Backward));
        assert!(round_trip(&mut s, Duration::from_millis(300)).await.is_none(), "answers are held back");
        proxy.heal();
        // The held answer arrives on healing, then the link works again.
        let mut buf = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf)).await.expect("released").expect("read");
        assert!(round_trip(&mut s, Duration::from_secs(2)).await.is_some());
    }

    #[tokio::test]
    async fn a_reset_closes_open_connections_but_not_the_proxy() {
        let proxy = FaultProxy::start(echo().await, 1).await.expect("proxy");
        let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
        assert!(round_trip(&mut s, Duration::from_secs(2)).await.is_some());
        proxy.reset();
        let mut buf = [0u8; 4];
        let closed = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await.expect("closed in time");
        assert!(matches!(closed, Ok(0) | Err(_)), "the connection ends");
        let mut again = TcpStream::connect(proxy.addr).await.expect("reconnect");
        assert!(round_trip(&mut again, Duration::from_secs(2)).await.is_some(), "new connections work");
    }

    #[tokio::test]
    async fn bandwidth_limits_and_seeded_jitter() {
        let proxy = FaultProxy::start(echo().await, 3).await.expect("proxy");
        proxy.bandwidth(Some(40));
        let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
        let rtt = round_trip(&mut s, Duration::from_secs(3)).await.expect("slow, not lost");
        assert!(rtt >= Duration::from_millis(150), "4 bytes at 40 B/s each way: {rtt:?}");
        // The same seed draws the same jitter.
        let draw = |seed| {
            let shared = Shared {
                faults: watch::channel(Faults::default()).0,
                rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)),
            };
            let f = Faults { jitter: Duration::from_millis(50), ..Faults::default() };
            (0..5).map(|_| pause_for(&f, 1, &shared)).collect::<Vec<_>>()
        };
        assert_eq!(draw(9), draw(9));
        assert_ne!(draw(9), draw(10));
    }
}
