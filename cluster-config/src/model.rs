use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::http::HttpConfig;

pub const DEFAULT_NODE_ID: &str = "node-1";
pub const DEFAULT_HTTP: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 8080));
pub const DEFAULT_DATA_DIR: &str = "./data";
/// Node ids end up in file names, metrics labels and URLs, so they are kept
/// to a conservative alphabet and length.
pub const NODE_ID_MAX_LEN: usize = 64;

pub const DEFAULT_SHARDS: u32 = 64;
pub const SHARDS_RANGE: RangeInclusive<u32> = 1..=4096;
pub const DEFAULT_LOG_ENGINE: LogEngine = LogEngine::Local;
pub const DEFAULT_CLUSTER_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7100);
pub const DEFAULT_REPLICATION_FACTOR: u32 = 3;
pub const REPLICATION_FACTOR_RANGE: RangeInclusive<u32> = 1..=7;
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);
pub const HEARTBEAT_INTERVAL_RANGE: RangeInclusive<Duration> = Duration::from_millis(10)..=Duration::from_secs(60);
pub const DEFAULT_FAILURE_TIMEOUT: Duration = Duration::from_secs(2);
pub const FAILURE_TIMEOUT_RANGE: RangeInclusive<Duration> = Duration::from_millis(50)..=Duration::from_secs(600);
/// How many shards the placement driver moves at once: enough to rebalance 64 shards in seconds, few
/// enough that a join never starves the shards that are not moving.
pub const DEFAULT_MAX_CONCURRENT_MOVES: u32 = 8;
pub const MAX_CONCURRENT_MOVES_RANGE: RangeInclusive<u32> = 1..=256;
/// Long enough to ride out a restart or a short partition without re-creating a node's replicas.
pub const DEFAULT_DEAD_MEMBER_TIMEOUT: Duration = Duration::from_secs(300);
pub const DEAD_MEMBER_TIMEOUT_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(7 * 24 * 60 * 60);
pub const MIN_COOKIE_CHARS: usize = 16;

pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(24 * 60 * 60);
pub const SESSION_TTL_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(365 * 24 * 60 * 60);

/// HMAC keys shorter than the hash output weaken the token MAC.
pub const MIN_TOKEN_KEY_BYTES: usize = 32;
pub const MIN_ADMIN_TOKEN_CHARS: usize = 16;
/// OWASP's recommended Argon2id baseline (19 MiB, 2 passes, 1 lane).
pub const DEFAULT_ARGON2_MEMORY_KIB: u32 = 19456;
pub const ARGON2_MEMORY_KIB_RANGE: RangeInclusive<u32> = 8..=1_048_576;
pub const DEFAULT_ARGON2_ITERATIONS: u32 = 2;
pub const ARGON2_ITERATIONS_RANGE: RangeInclusive<u32> = 1..=16;
pub const DEFAULT_ARGON2_PARALLELISM: u32 = 1;
pub const ARGON2_PARALLELISM_RANGE: RangeInclusive<u32> = 1..=16;
/// Failed logins one account may take at once before it is refused (429): enough for a person who
/// mistypes, far too few to guess a password that passed the strength rule.
pub const DEFAULT_LOGIN_ACCOUNT_BURST: u32 = 10;
/// How often one more failed login is allowed to an account past its burst: the refusal always ends.
pub const DEFAULT_LOGIN_ACCOUNT_PERIOD: Duration = Duration::from_secs(30);
/// Failed logins one client address may have at once, over every account it tries: larger than an
/// account's, since many people may share an address.
pub const DEFAULT_LOGIN_CLIENT_BURST: u32 = 100;
pub const DEFAULT_LOGIN_CLIENT_PERIOD: Duration = Duration::from_secs(1);
pub const LOGIN_BURST_RANGE: RangeInclusive<u32> = 1..=10_000_000;
pub const LOGIN_PERIOD_RANGE: RangeInclusive<Duration> = Duration::from_millis(1)..=Duration::from_secs(24 * 60 * 60);

pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
pub const MAX_IN_FLIGHT_RANGE: RangeInclusive<usize> = 1..=1_000_000;
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
pub const REQUEST_TIMEOUT_RANGE: RangeInclusive<Duration> = Duration::from_millis(10)..=Duration::from_secs(300);
pub const DEFAULT_ENTITY_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
pub const ENTITY_IDLE_TIMEOUT_RANGE: RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(24 * 60 * 60);
/// Live entity actors one shard keeps before it stops the least recently used idle one: far above what
/// the simulations and benchmarks keep busy at once, low enough that a flood of distinct keys cannot
/// grow a node's memory without bound.
pub const DEFAULT_MAX_ENTITIES_PER_SHARD: usize = 10_000;
pub const MAX_ENTITIES_PER_SHARD_RANGE: RangeInclusive<usize> = 1..=10_000_000;
pub const DEFAULT_RETRY_AFTER_SECS: u32 = 1;
/// Requests that hash a password (registration, login, a password change), each worth tens of
/// milliseconds of a core, handled or waiting at once; more are refused with 503 at once, so that a flood
/// of them holds few of the `max_in_flight` slots that every other request needs.
pub const DEFAULT_MAX_PASSWORD_REQUESTS: usize = 64;
pub const MAX_PASSWORD_REQUESTS_RANGE: RangeInclusive<usize> = 1..=100_000;
/// Per-client rate limit: off by default, since a local cluster's clients all share one address.
pub const DEFAULT_RATE_LIMIT_PER_SECOND: u32 = 0;
pub const RATE_LIMIT_PER_SECOND_RANGE: RangeInclusive<u32> = 0..=10_000_000;
pub const DEFAULT_RATE_LIMIT_BURST: u32 = 100;
pub const RATE_LIMIT_BURST_RANGE: RangeInclusive<u32> = 1..=10_000_000;
pub const RETRY_AFTER_SECS_RANGE: RangeInclusive<u32> = 1..=3600;

#[cfg(feature = "failpoints")]
pub const DEFAULT_PANIC_INJECTION: bool = false;
/// Test-only; never enable it (see [`FaultsConfig::break_idempotency`]).
#[cfg(feature = "failpoints")]
pub const DEFAULT_BREAK_IDEMPOTENCY: bool = false;
/// Test-only; never enable it (see [`FaultsConfig::stale_reads`]).
#[cfg(feature = "failpoints")]
pub const DEFAULT_STALE_READS: bool = false;
/// Test-only; see [`FaultsConfig::clock_skew_ms`].
#[cfg(feature = "failpoints")]
pub const DEFAULT_CLOCK_SKEW_MS: i64 = 0;
/// A day either way: enough to exercise expiry and ordering, small enough to catch a unit mistake.
#[cfg(feature = "failpoints")]
pub const CLOCK_SKEW_MS_RANGE: RangeInclusive<i64> = -86_400_000..=86_400_000;
pub const DEFAULT_LOG_FORMAT: LogFormat = LogFormat::Text;

/// The whole configuration of one node. Every section is optional in the
/// file; missing ones take their defaults.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub node: NodeConfig,
    pub cluster: ClusterConfig,
    pub sessions: SessionsConfig,
    pub security: SecurityConfig,
    pub limits: LimitsConfig,
    pub http: HttpConfig,
    /// Test-only fault switches: a section only builds with the `failpoints` feature know (elsewhere
    /// `[faults]` is an unknown key, and refused).
    #[cfg(feature = "failpoints")]
    pub faults: FaultsConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    pub id: String,
    pub http: SocketAddr,
    #[serde(serialize_with = "path_lossy::serialize")]
    pub data_dir: PathBuf,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self { id: DEFAULT_NODE_ID.to_owned(), http: DEFAULT_HTTP, data_dir: PathBuf::from(DEFAULT_DATA_DIR) }
    }
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    pub shards: u32,
    /// What each shard's log is: see [`LogEngine`].
    pub log: LogEngine,
    /// Where this process listens for the cluster transport (nodes and gateways alike).
    pub listen: SocketAddr,
    /// The cluster's nodes, each `id@host:port` (its cluster `listen` address; the host an IP address
    /// or a DNS name, resolved at each dial). Empty: a one-node cluster of this node alone.
    pub seeds: Vec<String>,
    /// Shared secret every member presents to join the transport; required with seeds.
    pub cookie: Option<String>,
    /// Replicas per shard, capped at the number of nodes.
    pub replication_factor: u32,
    /// How often the failure detector pings each peer.
    #[serde(with = "duration_str")]
    pub heartbeat_interval: Duration,
    /// Silence after which a peer is marked down.
    #[serde(with = "duration_str")]
    pub failure_timeout: Duration,
    /// The `host:port` other members reach this node's `listen` at, recorded when it joins; `None`: the
    /// `listen` address itself (right when it is not a wildcard and no proxy or NAT sits between).
    pub advertise: Option<String>,
    /// How many shards the placement driver moves at once.
    pub max_concurrent_moves: u32,
    /// A member down for longer is removed from the cluster and its replicas are re-created on the
    /// others; if it comes back, it joins again as a new, empty member.
    #[serde(with = "duration_str")]
    pub dead_member_timeout: Duration,
    /// Whether a shard group nobody uses goes quiet: no raft heartbeats or timers, the failure
    /// detector watching its leader instead (the default). Off, every group heartbeats all the time.
    pub quiet_groups: bool,
}

impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("shards", &self.shards)
            .field("log", &self.log)
            .field("listen", &self.listen)
            .field("seeds", &self.seeds)
            .field("cookie", &self.cookie.as_ref().map(|_| Redacted))
            .field("replication_factor", &self.replication_factor)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("failure_timeout", &self.failure_timeout)
            .field("advertise", &self.advertise)
            .field("max_concurrent_moves", &self.max_concurrent_moves)
            .field("dead_member_timeout", &self.dead_member_timeout)
            .field("quiet_groups", &self.quiet_groups)
            .finish()
    }
}

/// One entry of `cluster.seeds`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    pub id: String,
    pub addr: SeedAddr,
}

/// Where a seed listens: an IP socket address, or a DNS name and a port, resolved each time the
/// transport dials it (a restarted container may come back at another address).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SeedAddr {
    Ip(SocketAddr),
    Name { host: String, port: u16 },
}

impl SeedAddr {
    pub fn port(&self) -> u16 {
        match self {
            Self::Ip(addr) => addr.port(),
            Self::Name { port, .. } => *port,
        }
    }

    /// The socket address, when the seed is given by IP.
    pub fn ip(&self) -> Option<SocketAddr> {
        match self {
            Self::Ip(addr) => Some(*addr),
            Self::Name { .. } => None,
        }
    }
}

impl From<SocketAddr> for SeedAddr {
    fn from(addr: SocketAddr) -> Self {
        Self::Ip(addr)
    }
}

impl fmt::Display for SeedAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(addr) => addr.fmt(f),
            Self::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl std::str::FromStr for SeedAddr {
    type Err = String;

    /// `IP:port` (`[v6]:port`) or `name:port`, the name a DNS host name (letters, digits, `-`, `_`,
    /// dots between labels).
    fn from_str(text: &str) -> Result<Self, String> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(Self::Ip(addr));
        }
        let expected = "an address like 127.0.0.1:7100 or node-1:7100";
        let (host, port) = text.rsplit_once(':').ok_or_else(|| format!("{text:?} is not {expected}"))?;
        let port: u16 = port.parse().map_err(|_| format!("{text:?} is not {expected} (bad port {port:?})"))?;
        if port == 0 {
            return Err(format!("{text:?}: the port must not be 0"));
        }
        validate_host_name(host).map_err(|m| format!("{text:?} is not {expected} ({m})"))?;
        Ok(Self::Name { host: host.to_owned(), port })
    }
}

fn validate_host_name(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("empty host".into());
    }
    if host.len() > 253 {
        return Err("host name longer than 253 characters".into());
    }
    for label in host.strip_suffix('.').unwrap_or(host).split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("bad host name {host:?}"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("host name label {label:?} starts or ends with '-'"));
        }
        if let Some(bad) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))) {
            return Err(format!("invalid character {bad:?} in host name {host:?}"));
        }
    }
    // All-numeric dotted names are mistyped IPs, not host names.
    if host.split('.').all(|l| l.chars().all(|c| c.is_ascii_digit())) {
        return Err(format!("{host:?} is neither an IP address nor a host name"));
    }
    Ok(())
}

impl ClusterConfig {
    /// The parsed seed list; `validate` has checked every entry.
    pub fn seed_list(&self) -> Vec<Seed> {
        self.seeds.iter().filter_map(|s| parse_seed(s).ok()).collect()
    }
}

/// Parses `id@host:port`, the host an IP address or a DNS name.
pub fn parse_seed(text: &str) -> Result<Seed, String> {
    let (id, addr) = text.split_once('@').ok_or_else(|| format!("{text:?} is not of the form id@host:port"))?;
    let addr = addr.parse::<SeedAddr>().map_err(|m| format!("{m} in {text:?}"))?;
    Ok(Seed { id: id.to_owned(), addr })
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            shards: DEFAULT_SHARDS,
            log: DEFAULT_LOG_ENGINE,
            listen: DEFAULT_CLUSTER_LISTEN,
            seeds: vec![],
            cookie: None,
            replication_factor: DEFAULT_REPLICATION_FACTOR,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            failure_timeout: DEFAULT_FAILURE_TIMEOUT,
            advertise: None,
            max_concurrent_moves: DEFAULT_MAX_CONCURRENT_MOVES,
            dead_member_timeout: DEFAULT_DEAD_MEMBER_TIMEOUT,
            quiet_groups: true,
        }
    }
}

/// The engine behind each shard's log. Both apply entries to the same per-shard state in the store, so
/// entities cannot tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogEngine {
    /// One committer thread applies entries and makes them durable on this node.
    #[default]
    Local,
    /// Each shard is an openraft group (one member for now) whose state machine is the shard's tree.
    Raft,
}

impl LogEngine {
    /// Shared with the environment parser so file and env accept the same spellings.
    pub(crate) fn from_name(s: &str) -> Option<Self> {
        match s {
            "local" => Some(Self::Local),
            "raft" => Some(Self::Raft),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    #[serde(with = "duration_str")]
    pub ttl: Duration,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self { ttl: DEFAULT_SESSION_TTL }
    }
}

/// Debug is implemented by hand so secrets never reach a log line.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// Inline token-signing key, at least [`MIN_TOKEN_KEY_BYTES`] bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_key: Option<String>,
    /// File whose trimmed content is the token-signing key; read lazily by
    /// [`Config::token_key`] so that parsing stays free of I/O.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "path_lossy::serialize_opt")]
    pub token_key_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
    /// Failed logins an account may take at once; past them, 429 until the period gives one back.
    pub login_account_burst: u32,
    /// One failed login given back to an account per this long.
    #[serde(with = "duration_str")]
    pub login_account_period: Duration,
    /// Failed logins one client address may have at once, over every account.
    pub login_client_burst: u32,
    /// One failed login given back to a client address per this long.
    #[serde(with = "duration_str")]
    pub login_client_period: Duration,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            token_key: None,
            token_key_file: None,
            admin_token: None,
            argon2_memory_kib: DEFAULT_ARGON2_MEMORY_KIB,
            argon2_iterations: DEFAULT_ARGON2_ITERATIONS,
            argon2_parallelism: DEFAULT_ARGON2_PARALLELISM,
            login_account_burst: DEFAULT_LOGIN_ACCOUNT_BURST,
            login_account_period: DEFAULT_LOGIN_ACCOUNT_PERIOD,
            login_client_burst: DEFAULT_LOGIN_CLIENT_BURST,
            login_client_period: DEFAULT_LOGIN_CLIENT_PERIOD,
        }
    }
}

struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Debug for SecurityConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Whether a secret is set is useful when debugging; its value is not.
        f.debug_struct("SecurityConfig")
            .field("token_key", &self.token_key.as_ref().map(|_| Redacted))
            .field("token_key_file", &self.token_key_file)
            .field("admin_token", &self.admin_token.as_ref().map(|_| Redacted))
            .field("argon2_memory_kib", &self.argon2_memory_kib)
            .field("argon2_iterations", &self.argon2_iterations)
            .field("argon2_parallelism", &self.argon2_parallelism)
            .field("login_account_burst", &self.login_account_burst)
            .field("login_account_period", &self.login_account_period)
            .field("login_client_burst", &self.login_client_burst)
            .field("login_client_period", &self.login_client_period)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_in_flight: usize,
    #[serde(with = "duration_str")]
    pub request_timeout: Duration,
    #[serde(with = "duration_str")]
    pub entity_idle_timeout: Duration,
    /// Live entity actors per shard; past it, the least recently used idle one is stopped.
    pub max_entities_per_shard: usize,
    pub retry_after_secs: u32,
    /// Requests per second one client address may send to the API; 0 turns the limit off.
    pub rate_limit_per_second: u32,
    /// Requests a client may send at once above its rate.
    pub rate_limit_burst: u32,
    /// Registrations, logins and password changes handled or waiting at once; more get 503.
    pub max_password_requests: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            entity_idle_timeout: DEFAULT_ENTITY_IDLE_TIMEOUT,
            max_entities_per_shard: DEFAULT_MAX_ENTITIES_PER_SHARD,
            retry_after_secs: DEFAULT_RETRY_AFTER_SECS,
            rate_limit_per_second: DEFAULT_RATE_LIMIT_PER_SECOND,
            rate_limit_burst: DEFAULT_RATE_LIMIT_BURST,
            max_password_requests: DEFAULT_MAX_PASSWORD_REQUESTS,
        }
    }
}

#[cfg(feature = "failpoints")]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultsConfig {
    pub panic_injection: bool,
    /// Test-only, never to be enabled: creates ignore an existing idempotency record, breaking I5 on
    /// purpose so that the simulations can prove their duplicates checker fails end to end.
    pub break_idempotency: bool,
    /// Test-only, never to be enabled: reads are served by whichever node believes it leads, without the
    /// lease or read-index check, breaking I2 on purpose so that the simulations can prove their
    /// linearizability checker fails end to end.
    pub stale_reads: bool,
    /// Test-only: shifts this process's wall clock (timestamps, session expiry) by a signed number of
    /// milliseconds, so that the simulations can run a node whose clock is wrong. 0 leaves it alone.
    pub clock_skew_ms: i64,
}

#[cfg(feature = "failpoints")]
impl Default for FaultsConfig {
    fn default() -> Self {
        Self {
            panic_injection: DEFAULT_PANIC_INJECTION,
            break_idempotency: DEFAULT_BREAK_IDEMPOTENCY,
            stale_reads: DEFAULT_STALE_READS,
            clock_skew_ms: DEFAULT_CLOCK_SKEW_MS,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: DEFAULT_LOG_FORMAT }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl LogFormat {
    /// Shared with the environment parser so file and env accept the same
    /// spellings.
    pub(crate) fn from_name(s: &str) -> Option<Self> {
        match s {
            "text" => Some(Self::Text),
            "json" => Some(Self::Json),
            _ => None,
        }
    }
}

/// Durations are humantime strings ("24h", "300ms") because bare integers
/// leave the unit ambiguous.
pub(crate) mod duration_str {
    use std::time::Duration;

    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map_err(D::Error::custom)
    }

    pub fn parse(text: &str) -> Result<Duration, String> {
        humantime::parse_duration(text.trim())
            .map_err(|e| format!("invalid duration {text:?} ({e}); expected e.g. \"24h\", \"5s\", \"300ms\""))
    }
}

/// `to_toml` must not fail, and TOML strings must be UTF-8, so non-UTF-8
/// paths are written lossily rather than aborting the whole serialization.
mod path_lossy {
    use std::path::{Path, PathBuf};

    use serde::Serializer;

    pub fn serialize<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&p.to_string_lossy())
    }

    // serde's `serialize_with` hands over `&Option<PathBuf>`, so the
    // signature cannot take `Option<&Path>`.
    pub fn serialize_opt<S: Serializer>(p: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
        match p {
            Some(p) => serialize(p, s),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_documented_values() {
        let c = Config::default();
        assert_eq!(c.node.id, "node-1");
        assert_eq!(c.node.http.to_string(), "127.0.0.1:8080");
        assert_eq!(c.node.data_dir, PathBuf::from("./data"));
        assert_eq!(c.cluster.shards, 64);
        assert_eq!(c.cluster.log, LogEngine::Local);
        assert_eq!(c.sessions.ttl, Duration::from_secs(86_400));
        assert_eq!(c.security.argon2_memory_kib, 19456);
        assert_eq!(c.security.argon2_iterations, 2);
        assert_eq!(c.security.argon2_parallelism, 1);
        assert_eq!(c.limits.max_in_flight, 1024);
        assert_eq!(c.limits.request_timeout, Duration::from_secs(5));
        assert_eq!(c.limits.entity_idle_timeout, Duration::from_secs(300));
        assert_eq!(c.limits.max_entities_per_shard, 10_000);
        assert_eq!(c.limits.retry_after_secs, 1);
        #[cfg(feature = "failpoints")]
        {
            assert!(!c.faults.panic_injection);
            assert!(!c.faults.break_idempotency);
            assert!(!c.faults.stale_reads);
            assert_eq!(c.faults.clock_skew_ms, 0);
        }
        assert_eq!(c.log.format, LogFormat::Text);
    }

    #[test]
    fn debug_redacts_secrets() {
        let mut c = Config::default();
        c.security.token_key = Some("k".repeat(40));
        c.security.admin_token = Some("super-secret-admin-token".into());
        for text in [format!("{c:?}"), format!("{:#?}", c.security)] {
            assert!(!text.contains("kkkk"), "{text}");
            assert!(!text.contains("super-secret"), "{text}");
            assert!(text.contains("<redacted>"), "{text}");
        }
        let unset = format!("{:?}", SecurityConfig::default());
        assert!(!unset.contains("<redacted>"), "{unset}");
    }

    #[test]
    fn durations_parse_humantime() {
        assert_eq!(duration_str::parse("24h"), Ok(Duration::from_secs(24 * 3600)));
        assert_eq!(duration_str::parse("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(duration_str::parse("5s"), Ok(Duration::from_secs(5)));
        assert!(duration_str::parse("5 parsecs").is_err());
        assert!(duration_str::parse("").is_err());
    }

    #[test]
    fn log_format_names() {
        assert_eq!(LogFormat::from_name("json"), Some(LogFormat::Json));
        assert_eq!(LogFormat::from_name("text"), Some(LogFormat::Text));
        assert_eq!(LogFormat::from_name("xml"), None);
    }

    #[test]
    fn seeds_take_ips_and_host_names() {
        let ip = parse_seed("node-1@127.0.0.1:7101").expect("ip seed");
        assert_eq!(ip.id, "node-1");
        assert_eq!(ip.addr, SeedAddr::Ip("127.0.0.1:7101".parse().expect("addr")));
        assert_eq!(ip.addr.to_string(), "127.0.0.1:7101");
        let v6 = parse_seed("n@[::1]:7101").expect("v6 seed");
        assert_eq!(v6.addr.ip(), Some("[::1]:7101".parse().expect("addr")));
        assert_eq!(v6.addr.to_string(), "[::1]:7101");
        let name = parse_seed("node-2@node-2:7102").expect("name seed");
        assert_eq!(name.addr, SeedAddr::Name { host: "node-2".into(), port: 7102 });
        assert_eq!(name.addr.to_string(), "node-2:7102");
        assert_eq!(name.addr.port(), 7102);
        assert_eq!(name.addr.ip(), None);
        let fqdn = parse_seed("n3@node-3.playground_default.svc.cluster.local:7103").expect("fqdn");
        assert_eq!(fqdn.addr.to_string(), "node-3.playground_default.svc.cluster.local:7103");
        for bad in [
            "node-3@localhost",
            "node-3@:7103",
            "node-3@host:port",
            "node-3@host:70000",
            "node-3@host:0",
            "node-3@-host:7103",
            "node-3@ho st:7103",
            "node-3@a..b:7103",
            "node-3@10.0.0:7103",
            "node-3@::1:7103",
            "no-at-sign",
        ] {
            assert!(parse_seed(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn log_engine_names() {
        assert_eq!(LogEngine::from_name("local"), Some(LogEngine::Local));
        assert_eq!(LogEngine::from_name("raft"), Some(LogEngine::Raft));
        assert_eq!(LogEngine::from_name("Raft"), None);
    }
}
