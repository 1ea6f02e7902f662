//! The `[http]` section: how the HTTP listener treats connections, and whom it believes about a client's
//! address.

use std::ops::RangeInclusive;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::duration_str;

/// A client that has not sent a request's whole head by then is cut off; on a kept-alive HTTP/1.1
/// connection the time waiting for the next request counts too, so this bounds idle connections.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const HEADER_READ_TIMEOUT_RANGE: RangeInclusive<Duration> = Duration::from_millis(100)..=Duration::from_secs(600);
/// A body not received whole by then is answered 408: 256 KiB take a fraction of this on any link.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const BODY_READ_TIMEOUT_RANGE: RangeInclusive<Duration> = Duration::from_millis(100)..=Duration::from_secs(600);
/// Open connections one listener keeps; one more is closed as soon as it is accepted.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
pub const MAX_CONNECTIONS_RANGE: RangeInclusive<usize> = 1..=1_000_000;
/// Streams one HTTP/2 connection may have open at once (RFC 9113 recommends no fewer than 100).
pub const DEFAULT_H2_MAX_STREAMS: u32 = 100;
pub const H2_MAX_STREAMS_RANGE: RangeInclusive<u32> = 1..=10_000;

/// How the HTTP listener treats connections: deadlines, bounds, and whom it believes about a client's
/// address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Addresses (`10.0.0.7`) or networks (`10.0.0.0/8`) of proxies in front of this process: from a
    /// connection of theirs, the client is the address they report in `Forwarded` or
    /// `X-Forwarded-For`; from anyone else those headers are ignored.
    pub trusted_proxies: Vec<String>,
    #[serde(with = "duration_str")]
    pub header_read_timeout: Duration,
    #[serde(with = "duration_str")]
    pub body_read_timeout: Duration,
    pub max_connections: usize,
    pub h2_max_streams: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            trusted_proxies: vec![],
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            h2_max_streams: DEFAULT_H2_MAX_STREAMS,
        }
    }
}

/// A trusted proxy as configured: one address, or a network in CIDR notation.
pub fn parse_proxy(text: &str) -> Result<(std::net::IpAddr, u8), String> {
    let bad = || format!("{text:?} is neither an IP address nor a network like 10.0.0.0/8");
    let (addr, len) = match text.trim().split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text.trim(), None),
    };
    let addr: std::net::IpAddr = addr.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l.parse::<u8>().ok().filter(|l| *l <= max).ok_or_else(bad)?,
        None => max,
    };
    Ok((addr, len))
}
