//! Keeps one session to each peer: dials when there is none, every 100 ms at first, then with doubling
//! pauses and jitter.
//!
//! Both ends of a pair of nodes dial each other. ractor_cluster settles simultaneous sessions itself
//! (Erlang's rule: the connection initiated by the node whose name sorts last survives, the other is
//! closed as `duplicate_connection` on both ends), so a pair never keeps two sessions; a dial happens only
//! while no authenticated session to the peer exists, and the jitter breaks any lockstep.
//!
//! A peer given by host name is resolved at every attempt (a restarted container may come back at
//! another address); a name that does not resolve is a failed attempt, with the same backoff.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cluster_config::SeedAddr;
use ractor::ActorRef;
use ractor_cluster::NodeServerMessage;
use rand::Rng;
use tokio::sync::watch;
use tracing::{debug, info};

use super::sessions::Sessions;

/// The pause between the first [`FAST_RETRIES`] attempts. A peer that was just lost is most often
/// restarting (its supervisor starts it again within a second), and every other member of the cluster
/// waits for this process to reach it: a refused connection costs one round trip, so retrying it this
/// often for a few seconds is cheap, where doubling from the start left a restarted leader unreachable
/// from a gateway for up to a second and a half after it was back.
pub(crate) const FAST_BACKOFF: Duration = Duration::from_millis(100);
/// How many attempts in a row come [`FAST_BACKOFF`] apart before the pause doubles.
pub(crate) const FAST_RETRIES: u32 = 30;
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A TCP connect to a black-holed address can hang for minutes without this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A resolver that does not answer must not stall the dialer; this counts within the connect timeout.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a dialed session may take to authenticate; loopback takes milliseconds.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// A safety net beside the session events: the connector re-checks its session this often.
const RECHECK: Duration = Duration::from_secs(1);

/// The pause after `failed` attempts in a row: [`FAST_BACKOFF`] for the first [`FAST_RETRIES`], then
/// doubling from there up to [`MAX_BACKOFF`].
pub(crate) fn backoff_after(failed: u32) -> Duration {
    let doublings = failed.saturating_sub(FAST_RETRIES).min(16);
    (FAST_BACKOFF * 2u32.pow(doublings)).min(MAX_BACKOFF)
}

/// The socket addresses to dial for `addr`: itself when it is an IP address, else what the system
/// resolver answers for the name now (IPv4 first, since that is what container networks usually give).
pub(crate) async fn resolve(addr: &SeedAddr) -> Result<Vec<SocketAddr>, String> {
    let (host, port) = match addr {
        SeedAddr::Ip(ip) => return Ok(vec![*ip]),
        SeedAddr::Name { host, port } => (host.as_str(), *port),
    };
    let found = match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => return Err(format!("cannot resolve {host}: {e}")),
        Err(_) => return Err(format!("resolving {host} timed out")),
    };
    let mut addrs: Vec<SocketAddr> = found.collect();
    addrs.sort_by_key(|a| !a.is_ipv4());
    addrs.dedup();
    if addrs.is_empty() {
        return Err(format!("{host} resolves to no address"));
    }
    Ok(addrs)
}

/// `base` scaled by a random factor in [0.5, 1.0], so that peers retrying together drift apart.
pub(crate) fn jittered(base: Duration) -> Duration {
    base.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}

pub(crate) struct Dialer {
    pub peer: String,
    pub addr: SeedAddr,
    pub server: ActorRef<NodeServerMessage>,
    pub sessions: Arc<Sessions>,
    /// Its own channel, not the transport's: it ends the dialer when the transport stops or when the
    /// peer is removed (true, or the sender dropped).
    pub shutdown: watch::Receiver<bool>,
}

impl Dialer {
    /// Runs until its shutdown.
    pub(crate) async fn run(mut self) {
        let mut changes = self.sessions.subscribe();
        let mut attempt: u32 = 0;
        loop {
            if *self.shutdown.borrow() || self.shutdown.has_changed().is_err() {
                return;
            }
            if self.sessions.has_session(&self.peer) {
                attempt = 0;
                changes.borrow_and_update();
                tokio::select! {
                    _ = changes.changed() => {}
                    _ = tokio::time::sleep(RECHECK) => {}
                    _ = self.shutdown.wait_for(|s| *s) => return,
                }
                continue;
            }
            attempt += 1;
            if self.dial(attempt).await {
                info!(peer = %self.peer, addr = %self.addr, attempt, "cluster session up");
                continue;
            }
            let pause = jittered(backoff_after(attempt));
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    /// One attempt: true once a session to the peer is authenticated (ours or one the peer dialed).
    async fn dial(&mut self, attempt: u32) -> bool {
        let target = match resolve(&self.addr).await {
            Ok(addrs) => addrs[0],
            Err(error) => {
                debug!(peer = %self.peer, addr = %self.addr, attempt, %error, "cluster dial failed");
                return false;
            }
        };
        let target_addr = target.to_string();
        let dropped = self.sessions.dropped_unauthenticated(&target_addr);
        match tokio::time::timeout(CONNECT_TIMEOUT, ractor_cluster::client_connect(&self.server, target)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                debug!(peer = %self.peer, addr = %self.addr, %target, attempt, error = %e, "cluster dial failed");
                return false;
            }
            Err(_) => {
                debug!(peer = %self.peer, addr = %self.addr, %target, attempt, "cluster dial timed out");
                return false;
            }
        }
        // `Ok` only means TCP connected: the cookie handshake decides (a rejection is reported by
        // `Sessions` when the session closes).
        let mut changes = self.sessions.subscribe();
        let deadline = tokio::time::sleep(HANDSHAKE_TIMEOUT);
        tokio::pin!(deadline);
        loop {
            if self.sessions.has_session(&self.peer) {
                return true;
            }
            // The connection closed before it authenticated: most often a peer that was dying when the
            // dial reached its listening socket. Waiting out the handshake timeout would only delay the
            // next attempt.
            if self.sessions.dropped_unauthenticated(&target_addr) > dropped {
                debug!(peer = %self.peer, %target, attempt, "cluster dial closed before it authenticated");
                return false;
            }
            tokio::select! {
                r = changes.changed() => if r.is_err() { return false },
                _ = &mut deadline => return self.sessions.has_session(&self.peer),
                _ = self.shutdown.wait_for(|s| *s) => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_short_for_a_restart_then_doubles_to_its_cap() {
        assert_eq!(backoff_after(1), FAST_BACKOFF);
        assert_eq!(backoff_after(FAST_RETRIES), FAST_BACKOFF);
        assert_eq!(backoff_after(FAST_RETRIES + 1), FAST_BACKOFF * 2);
        assert_eq!(backoff_after(FAST_RETRIES + 5), Duration::from_millis(3200));
        assert_eq!(backoff_after(FAST_RETRIES + 6), MAX_BACKOFF);
        assert_eq!(backoff_after(u32::MAX), MAX_BACKOFF);
    }

    #[tokio::test]
    async fn resolves_ips_as_they_are_and_names_each_time() {
        let ip: SeedAddr = "10.1.2.3:7101".parse().expect("ip");
        assert_eq!(resolve(&ip).await, Ok(vec!["10.1.2.3:7101".parse().expect("addr")]));
        let name: SeedAddr = "localhost:7101".parse().expect("name");
        let found = resolve(&name).await.expect("localhost resolves");
        assert!(found.iter().all(|a| a.port() == 7101 && a.ip().is_loopback()), "{found:?}");
        // `.invalid` never resolves (RFC 6761): a failed attempt, not a panic or a hang.
        let unknown: SeedAddr = "no-such-node.invalid:7101".parse().expect("name");
        assert!(resolve(&unknown).await.is_err());
    }

    #[test]
    fn jitter_stays_within_half_to_full() {
        for _ in 0..1000 {
            let j = jittered(Duration::from_secs(1));
            assert!(j >= Duration::from_millis(500) && j <= Duration::from_secs(1), "{j:?}");
        }
    }
}
