//! Configuration for the Microservices Playground cluster.
//!
//! Every node, the gateway and the launcher read the same TOML file format,
//! so this crate is the single definition of what a node can be told: the
//! types, their `DEFAULT_*` values and valid ranges, parsing, environment
//! overrides and validation. It is deliberately pure — the environment is
//! passed in as a lookup function rather than read from globals — so callers
//! decide precedence and tests stay hermetic.
//!
//! Precedence is: built-in defaults, then the file ([`Config::parse`] /
//! [`load`]), then environment variables ([`Config::apply_env`], see
//! [`env_vars`]). Every step ends with [`Config::validate`].
//!
//! Module layout:
//! - `model`: the config types, defaults and ranges.
//! - `parse`: TOML parsing, loading, serialization, key-file reading.
//! - `validate`: range and consistency checks.
//! - `env`: the environment-variable table and overrides.
//! - `error`: [`ConfigError`], which always names the source and the field.

mod env;
mod error;
mod http;
mod model;
mod parse;
mod validate;

#[cfg(feature = "failpoints")]
pub use env::FAULT_ENV_VARS;
pub use env::{check_env_names, env_vars, ENV_PREFIX, ENV_VARS};
pub use error::ConfigError;
pub use http::{
    parse_proxy, HttpConfig, BODY_READ_TIMEOUT_RANGE, DEFAULT_BODY_READ_TIMEOUT, DEFAULT_H2_MAX_STREAMS,
    DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_MAX_CONNECTIONS, H2_MAX_STREAMS_RANGE, HEADER_READ_TIMEOUT_RANGE,
    MAX_CONNECTIONS_RANGE,
};
pub use model::{
    parse_seed, ClusterConfig, Config, LimitsConfig, LogConfig, LogEngine, LogFormat, NodeConfig, SecurityConfig, Seed,
    SeedAddr, SessionsConfig, ARGON2_ITERATIONS_RANGE, ARGON2_MEMORY_KIB_RANGE, ARGON2_PARALLELISM_RANGE,
    DEAD_MEMBER_TIMEOUT_RANGE, DEFAULT_ARGON2_ITERATIONS, DEFAULT_ARGON2_MEMORY_KIB, DEFAULT_ARGON2_PARALLELISM,
    DEFAULT_CLUSTER_LISTEN, DEFAULT_DATA_DIR, DEFAULT_DEAD_MEMBER_TIMEOUT, DEFAULT_ENTITY_IDLE_TIMEOUT,
    DEFAULT_FAILURE_TIMEOUT, DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_HTTP, DEFAULT_LOGIN_ACCOUNT_BURST,
    DEFAULT_LOGIN_ACCOUNT_PERIOD, DEFAULT_LOGIN_CLIENT_BURST, DEFAULT_LOGIN_CLIENT_PERIOD, DEFAULT_LOG_ENGINE,
    DEFAULT_LOG_FORMAT, DEFAULT_MAX_CONCURRENT_MOVES, DEFAULT_MAX_ENTITIES_PER_SHARD, DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_NODE_ID, DEFAULT_RATE_LIMIT_BURST, DEFAULT_RATE_LIMIT_PER_SECOND, DEFAULT_REPLICATION_FACTOR,
    DEFAULT_REQUEST_TIMEOUT, DEFAULT_RETRY_AFTER_SECS, DEFAULT_SESSION_TTL, DEFAULT_SHARDS, ENTITY_IDLE_TIMEOUT_RANGE,
    FAILURE_TIMEOUT_RANGE, HEARTBEAT_INTERVAL_RANGE, LOGIN_BURST_RANGE, LOGIN_PERIOD_RANGE, MAX_CONCURRENT_MOVES_RANGE,
    MAX_ENTITIES_PER_SHARD_RANGE, MAX_IN_FLIGHT_RANGE, MIN_ADMIN_TOKEN_CHARS, MIN_COOKIE_CHARS, MIN_TOKEN_KEY_BYTES,
    NODE_ID_MAX_LEN, RATE_LIMIT_BURST_RANGE, RATE_LIMIT_PER_SECOND_RANGE, REPLICATION_FACTOR_RANGE,
    REQUEST_TIMEOUT_RANGE, RETRY_AFTER_SECS_RANGE, SESSION_TTL_RANGE, SHARDS_RANGE,
};
#[cfg(feature = "failpoints")]
pub use model::{
    FaultsConfig, CLOCK_SKEW_MS_RANGE, DEFAULT_BREAK_IDEMPOTENCY, DEFAULT_CLOCK_SKEW_MS, DEFAULT_PANIC_INJECTION,
    DEFAULT_STALE_READS,
};
pub use model::{DEFAULT_MAX_PASSWORD_REQUESTS, MAX_PASSWORD_REQUESTS_RANGE};
pub use parse::load;
