use std::path::PathBuf;
use std::str::FromStr;

use crate::error::ConfigError;
use crate::model::{duration_str, Config, LogEngine, LogFormat};

const ENV_ORIGIN: &str = "environment";

/// Every environment override as (variable, `section.field`). This is the
/// one list: `apply_env` walks it and `--help` prints it.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("PLAYGROUND_NODE_ID", "node.id"),
    ("PLAYGROUND_HTTP", "node.http"),
    ("PLAYGROUND_DATA_DIR", "node.data_dir"),
    ("PLAYGROUND_SHARDS", "cluster.shards"),
    ("PLAYGROUND_LOG_ENGINE", "cluster.log"),
    ("PLAYGROUND_CLUSTER_LISTEN", "cluster.listen"),
    ("PLAYGROUND_SEEDS", "cluster.seeds"),
    ("PLAYGROUND_COOKIE", "cluster.cookie"),
    ("PLAYGROUND_REPLICATION_FACTOR", "cluster.replication_factor"),
    ("PLAYGROUND_HEARTBEAT_INTERVAL", "cluster.heartbeat_interval"),
    ("PLAYGROUND_FAILURE_TIMEOUT", "cluster.failure_timeout"),
    ("PLAYGROUND_ADVERTISE", "cluster.advertise"),
    ("PLAYGROUND_MAX_CONCURRENT_MOVES", "cluster.max_concurrent_moves"),
    ("PLAYGROUND_DEAD_MEMBER_TIMEOUT", "cluster.dead_member_timeout"),
    ("PLAYGROUND_QUIET_GROUPS", "cluster.quiet_groups"),
    ("PLAYGROUND_SESSION_TTL", "sessions.ttl"),
    ("PLAYGROUND_TOKEN_KEY", "security.token_key"),
    ("PLAYGROUND_TOKEN_KEY_FILE", "security.token_key_file"),
    ("PLAYGROUND_ADMIN_TOKEN", "security.admin_token"),
    ("PLAYGROUND_ARGON2_MEMORY_KIB", "security.argon2_memory_kib"),
    ("PLAYGROUND_ARGON2_ITERATIONS", "security.argon2_iterations"),
    ("PLAYGROUND_ARGON2_PARALLELISM", "security.argon2_parallelism"),
    ("PLAYGROUND_LOGIN_ACCOUNT_BURST", "security.login_account_burst"),
    ("PLAYGROUND_LOGIN_ACCOUNT_PERIOD", "security.login_account_period"),
    ("PLAYGROUND_LOGIN_CLIENT_BURST", "security.login_client_burst"),
    ("PLAYGROUND_LOGIN_CLIENT_PERIOD", "security.login_client_period"),
    ("PLAYGROUND_MAX_IN_FLIGHT", "limits.max_in_flight"),
    ("PLAYGROUND_REQUEST_TIMEOUT", "limits.request_timeout"),
    ("PLAYGROUND_ENTITY_IDLE_TIMEOUT", "limits.entity_idle_timeout"),
    ("PLAYGROUND_MAX_ENTITIES_PER_SHARD", "limits.max_entities_per_shard"),
    ("PLAYGROUND_RETRY_AFTER_SECS", "limits.retry_after_secs"),
    ("PLAYGROUND_RATE_LIMIT_PER_SECOND", "limits.rate_limit_per_second"),
    ("PLAYGROUND_RATE_LIMIT_BURST", "limits.rate_limit_burst"),
    ("PLAYGROUND_MAX_PASSWORD_REQUESTS", "limits.max_password_requests"),
    ("PLAYGROUND_TRUSTED_PROXIES", "http.trusted_proxies"),
    ("PLAYGROUND_HEADER_READ_TIMEOUT", "http.header_read_timeout"),
    ("PLAYGROUND_BODY_READ_TIMEOUT", "http.body_read_timeout"),
    ("PLAYGROUND_MAX_CONNECTIONS", "http.max_connections"),
    ("PLAYGROUND_H2_MAX_STREAMS", "http.h2_max_streams"),
    ("PLAYGROUND_LOG_FORMAT", "log.format"),
];

/// The test-only fault switches' variables, known only to builds with the `failpoints` feature: a
/// production build does not even contain their names, and refuses them as unknown variables.
#[cfg(feature = "failpoints")]
pub const FAULT_ENV_VARS: &[(&str, &str)] = &[
    ("PLAYGROUND_PANIC_INJECTION", "faults.panic_injection"),
    ("PLAYGROUND_BREAK_IDEMPOTENCY", "faults.break_idempotency"),
    ("PLAYGROUND_STALE_READS", "faults.stale_reads"),
    ("PLAYGROUND_CLOCK_SKEW_MS", "faults.clock_skew_ms"),
];

/// Every variable this build reads, as (variable, `section.field`).
pub fn env_vars() -> impl Iterator<Item = &'static (&'static str, &'static str)> {
    let vars = ENV_VARS.iter();
    #[cfg(feature = "failpoints")]
    let vars = vars.chain(FAULT_ENV_VARS.iter());
    vars
}

/// The prefix of every variable of the product's: one it does not know is a mistake, never ignored.
pub const ENV_PREFIX: &str = "PLAYGROUND_";

/// Refuses a `PLAYGROUND_*` variable among `names` that this build does not read (a typo, or a test-only
/// switch set on a production build), naming it.
pub fn check_env_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<(), ConfigError> {
    for name in names {
        if name.starts_with(ENV_PREFIX) && !env_vars().any(|(var, _)| *var == name) {
            return Err(ConfigError::new(
                ENV_ORIGIN,
                name,
                "not a setting of this build (see --help for the variables it reads)".to_owned(),
            ));
        }
    }
    Ok(())
}

impl Config {
    /// Applies overrides from environment variables (see [`env_vars`]), then
    /// re-validates with "environment" as the error origin. `env` is the
    /// lookup (e.g. `&|k| std::env::var(k).ok()`), so tests need not touch
    /// the process environment.
    ///
    /// Setting one of the two token-key variables clears the other key
    /// source from the file, since env beats file and both may not be set.
    /// An empty value for an optional secret clears it.
    pub fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        for &(var, field) in env_vars() {
            if let Some(value) = env(var) {
                self.set_field(field, &value).map_err(|message| ConfigError::new(ENV_ORIGIN, var, message))?;
            }
        }
        self.validate(ENV_ORIGIN)
    }

    fn set_field(&mut self, field: &str, value: &str) -> Result<(), String> {
        match field {
            "node.id" => self.node.id = value.to_owned(),
            "node.http" => self.node.http = parse_num(value, "a socket address like 127.0.0.1:8080")?,
            "node.data_dir" => self.node.data_dir = PathBuf::from(value),
            "cluster.shards" => self.cluster.shards = parse_num(value, "an integer")?,
            "cluster.listen" => self.cluster.listen = parse_num(value, "a socket address like 127.0.0.1:7100")?,
            // Comma-separated, since an environment variable holds one string.
            "cluster.seeds" => {
                self.cluster.seeds =
                    value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
            }
            "cluster.cookie" => self.cluster.cookie = (!value.is_empty()).then(|| value.to_owned()),
            "cluster.replication_factor" => self.cluster.replication_factor = parse_num(value, "an integer")?,
            "cluster.heartbeat_interval" => self.cluster.heartbeat_interval = duration_str::parse(value)?,
            "cluster.failure_timeout" => self.cluster.failure_timeout = duration_str::parse(value)?,
            "cluster.advertise" => self.cluster.advertise = non_empty(value),
            "cluster.dead_member_timeout" => self.cluster.dead_member_timeout = duration_str::parse(value)?,
            "cluster.quiet_groups" => self.cluster.quiet_groups = parse_bool(value)?,
            "cluster.max_concurrent_moves" => {
                self.cluster.max_concurrent_moves = parse_num(value, "an integer")?;
            }
            "cluster.log" => {
                self.cluster.log = LogEngine::from_name(value.trim())
                    .ok_or_else(|| format!("invalid value {value:?}; expected \"local\" or \"raft\""))?;
            }
            "sessions.ttl" => self.sessions.ttl = duration_str::parse(value)?,
            "security.token_key" => {
                self.security.token_key = non_empty(value);
                if self.security.token_key.is_some() {
                    self.security.token_key_file = None;
                }
            }
            "security.token_key_file" => {
                self.security.token_key_file = non_empty(value).map(PathBuf::from);
                if self.security.token_key_file.is_some() {
                    self.security.token_key = None;
                }
            }
            "security.admin_token" => self.security.admin_token = non_empty(value),
            "security.argon2_memory_kib" => {
                self.security.argon2_memory_kib = parse_num(value, "an integer")?;
            }
            "security.argon2_iterations" => {
                self.security.argon2_iterations = parse_num(value, "an integer")?;
            }
            "security.argon2_parallelism" => {
                self.security.argon2_parallelism = parse_num(value, "an integer")?;
            }
            "security.login_account_burst" => {
                self.security.login_account_burst = parse_num(value, "an integer")?;
            }
            "security.login_account_period" => self.security.login_account_period = duration_str::parse(value)?,
            "security.login_client_burst" => self.security.login_client_burst = parse_num(value, "an integer")?,
            "security.login_client_period" => self.security.login_client_period = duration_str::parse(value)?,
            "limits.max_in_flight" => self.limits.max_in_flight = parse_num(value, "an integer")?,
            "limits.request_timeout" => self.limits.request_timeout = duration_str::parse(value)?,
            "limits.entity_idle_timeout" => {
                self.limits.entity_idle_timeout = duration_str::parse(value)?;
            }
            "limits.max_entities_per_shard" => {
                self.limits.max_entities_per_shard = parse_num(value, "an integer")?;
            }
            "limits.rate_limit_per_second" => {
                self.limits.rate_limit_per_second = parse_num(value, "an integer")?;
            }
            "limits.rate_limit_burst" => self.limits.rate_limit_burst = parse_num(value, "an integer")?,
            "limits.max_password_requests" => {
                self.limits.max_password_requests = parse_num(value, "an integer")?;
            }
            "limits.retry_after_secs" => {
                self.limits.retry_after_secs = parse_num(value, "an integer")?;
            }
            "http.trusted_proxies" => {
                self.http.trusted_proxies =
                    value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
            }
            "http.header_read_timeout" => self.http.header_read_timeout = duration_str::parse(value)?,
            "http.body_read_timeout" => self.http.body_read_timeout = duration_str::parse(value)?,
            "http.max_connections" => self.http.max_connections = parse_num(value, "an integer")?,
            "http.h2_max_streams" => self.http.h2_max_streams = parse_num(value, "an integer")?,
            #[cfg(feature = "failpoints")]
            "faults.panic_injection" => self.faults.panic_injection = parse_bool(value)?,
            #[cfg(feature = "failpoints")]
            "faults.break_idempotency" => self.faults.break_idempotency = parse_bool(value)?,
            #[cfg(feature = "failpoints")]
            "faults.stale_reads" => self.faults.stale_reads = parse_bool(value)?,
            #[cfg(feature = "failpoints")]
            "faults.clock_skew_ms" => self.faults.clock_skew_ms = parse_num(value, "an integer (ms)")?,
            "log.format" => {
                self.log.format = LogFormat::from_name(value.trim())
                    .ok_or_else(|| format!("invalid value {value:?}; expected \"text\" or \"json\""))?;
            }
            // Guarded by a test that every ENV_VARS entry is handled here.
            other => return Err(format!("no override for field {other}")),
        }
        Ok(())
    }
}

fn parse_num<T: FromStr>(value: &str, expected: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    value.trim().parse().map_err(|e| format!("invalid value {value:?} ({e}); expected {expected}"))
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("invalid value {value:?}; expected true, false, 1 or 0")),
    }
}

fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn no_env_changes_nothing() {
        let mut c = Config::default();
        c.apply_env(&|_| None).expect("valid");
        assert_eq!(c, Config::default());
    }

    #[test]
    fn env_beats_file() {
        let file = "[node]\nid = \"from-file\"\n[cluster]\nshards = 8\n[log]\nformat = \"text\"\n";
        let mut c = Config::parse(file, "f.toml").expect("valid");
        c.apply_env(&env_of(&[("PLAYGROUND_NODE_ID", "from-env"), ("PLAYGROUND_LOG_FORMAT", "json")])).expect("valid");
        assert_eq!(c.node.id, "from-env");
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.cluster.shards, 8, "untouched file value kept");
    }

    #[test]
    fn every_variable_applies() {
        let key = "k".repeat(32);
        let mut c = Config::default();
        c.apply_env(&env_of(&[
            ("PLAYGROUND_NODE_ID", "n9"),
            ("PLAYGROUND_HTTP", "0.0.0.0:1234"),
            ("PLAYGROUND_DATA_DIR", "/d"),
            ("PLAYGROUND_SHARDS", "16"),
            ("PLAYGROUND_LOG_ENGINE", "raft"),
            ("PLAYGROUND_CLUSTER_LISTEN", "127.0.0.1:7300"),
            ("PLAYGROUND_SEEDS", "n9@127.0.0.1:7300, n8@127.0.0.1:7301"),
            ("PLAYGROUND_COOKIE", "a-cookie-of-16-chars"),
            ("PLAYGROUND_REPLICATION_FACTOR", "2"),
            ("PLAYGROUND_HEARTBEAT_INTERVAL", "100ms"),
            ("PLAYGROUND_FAILURE_TIMEOUT", "1s"),
            ("PLAYGROUND_SESSION_TTL", "1h"),
            ("PLAYGROUND_TOKEN_KEY", &key),
            ("PLAYGROUND_ADMIN_TOKEN", "0123456789abcdef"),
            ("PLAYGROUND_ARGON2_MEMORY_KIB", "1024"),
            ("PLAYGROUND_ARGON2_ITERATIONS", "3"),
            ("PLAYGROUND_ARGON2_PARALLELISM", "4"),
            ("PLAYGROUND_LOGIN_ACCOUNT_BURST", "5"),
            ("PLAYGROUND_LOGIN_ACCOUNT_PERIOD", "2m"),
            ("PLAYGROUND_LOGIN_CLIENT_BURST", "50"),
            ("PLAYGROUND_LOGIN_CLIENT_PERIOD", "500ms"),
            ("PLAYGROUND_MAX_IN_FLIGHT", "10"),
            ("PLAYGROUND_REQUEST_TIMEOUT", "250ms"),
            ("PLAYGROUND_ENTITY_IDLE_TIMEOUT", "1m"),
            ("PLAYGROUND_MAX_ENTITIES_PER_SHARD", "64"),
            ("PLAYGROUND_RETRY_AFTER_SECS", "5"),
            ("PLAYGROUND_RATE_LIMIT_PER_SECOND", "50"),
            ("PLAYGROUND_RATE_LIMIT_BURST", "7"),
            ("PLAYGROUND_LOG_FORMAT", "json"),
        ]))
        .expect("valid");
        assert_eq!(c.node.id, "n9");
        assert_eq!(c.node.http.port(), 1234);
        assert_eq!(c.node.data_dir, PathBuf::from("/d"));
        assert_eq!(c.cluster.shards, 16);
        assert_eq!(c.cluster.log, LogEngine::Raft);
        assert_eq!(c.cluster.listen.port(), 7300);
        assert_eq!(c.cluster.seed_list().iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), vec!["n9", "n8"]);
        assert_eq!(c.cluster.cookie.as_deref(), Some("a-cookie-of-16-chars"));
        assert_eq!(c.cluster.replication_factor, 2);
        assert_eq!(c.cluster.heartbeat_interval, Duration::from_millis(100));
        assert_eq!(c.cluster.failure_timeout, Duration::from_secs(1));
        assert_eq!(c.sessions.ttl, Duration::from_secs(3600));
        assert_eq!(c.security.token_key.as_deref(), Some(key.as_str()));
        assert_eq!(c.security.admin_token.as_deref(), Some("0123456789abcdef"));
        assert_eq!(c.security.argon2_memory_kib, 1024);
        assert_eq!(c.security.argon2_iterations, 3);
        assert_eq!(c.security.argon2_parallelism, 4);
        assert_eq!(c.security.login_account_burst, 5);
        assert_eq!(c.security.login_account_period, Duration::from_secs(120));
        assert_eq!(c.security.login_client_burst, 50);
        assert_eq!(c.security.login_client_period, Duration::from_millis(500));
        assert_eq!(c.limits.max_in_flight, 10);
        assert_eq!(c.limits.request_timeout, Duration::from_millis(250));
        assert_eq!(c.limits.entity_idle_timeout, Duration::from_secs(60));
        assert_eq!(c.limits.max_entities_per_shard, 64);
        assert_eq!(c.limits.retry_after_secs, 5);
        assert_eq!(c.limits.rate_limit_per_second, 50);
        assert_eq!(c.limits.rate_limit_burst, 7);
        assert_eq!(c.log.format, LogFormat::Json);
    }

    #[test]
    fn every_table_entry_has_a_setter() {
        for &(var, field) in env_vars() {
            let mut c = Config::default();
            let result = c.set_field(field, "");
            if let Err(m) = result {
                assert!(!m.starts_with("no override"), "{var} -> {field}: {m}");
            }
        }
    }

    #[test]
    fn bad_env_value_names_the_variable() {
        let cases = [
            ("PLAYGROUND_SHARDS", "lots"),
            ("PLAYGROUND_HTTP", "localhost"),
            ("PLAYGROUND_SESSION_TTL", "forever"),
            ("PLAYGROUND_MAX_IN_FLIGHT", "-1"),
            ("PLAYGROUND_LOG_FORMAT", "xml"),
            ("PLAYGROUND_LOG_ENGINE", "paxos"),
        ];
        for (var, value) in cases {
            let mut c = Config::default();
            let e = c.apply_env(&env_of(&[(var, value)])).expect_err(var);
            assert_eq!(e.origin, "environment");
            assert_eq!(e.field, var);
            assert!(e.to_string().starts_with(&format!("environment: {var}: ")), "{e}");
        }
    }

    #[test]
    fn out_of_range_env_value_fails_revalidation() {
        let mut c = Config::default();
        let e = c.apply_env(&env_of(&[("PLAYGROUND_SHARDS", "0")])).expect_err("range");
        assert_eq!(e.origin, "environment");
        assert_eq!(e.field, "cluster.shards");
    }

    #[test]
    fn unknown_variables_of_the_prefix_are_refused() {
        assert!(check_env_names(["PLAYGROUND_SHARDS", "HOME", "RUST_LOG"]).is_ok());
        let e = check_env_names(["PLAYGROUND_SHRADS"]).expect_err("a typo");
        assert_eq!((e.origin.as_str(), e.field.as_str()), ("environment", "PLAYGROUND_SHRADS"));
    }

    #[cfg(not(feature = "failpoints"))]
    #[test]
    fn a_production_build_refuses_the_fault_switches() {
        let names = ["PLAYGROUND", "PANIC", "INJECTION"].join("_");
        assert!(check_env_names([names.as_str()]).is_err(), "{names}");
    }

    #[cfg(feature = "failpoints")]
    #[test]
    fn panic_injection_accepts_true_false_1_0() {
        for (v, want) in [("true", true), ("false", false), ("1", true), ("0", false)] {
            let mut c = Config::default();
            c.apply_env(&env_of(&[("PLAYGROUND_PANIC_INJECTION", v)])).expect(v);
            assert_eq!(c.faults.panic_injection, want);
        }
    }

    #[cfg(feature = "failpoints")]
    #[test]
    fn break_idempotency_is_off_unless_set() {
        let mut c = Config::default();
        c.apply_env(&env_of(&[])).expect("empty");
        assert!(!c.faults.break_idempotency);
        c.apply_env(&env_of(&[("PLAYGROUND_BREAK_IDEMPOTENCY", "true")])).expect("true");
        assert!(c.faults.break_idempotency);
        assert!(c.apply_env(&env_of(&[("PLAYGROUND_BREAK_IDEMPOTENCY", "yes")])).is_err());
        assert!(!c.faults.stale_reads);
        c.apply_env(&env_of(&[("PLAYGROUND_STALE_READS", "true")])).expect("true");
        assert!(c.faults.stale_reads);
    }

    #[cfg(feature = "failpoints")]
    #[test]
    fn clock_skew_is_a_signed_number_of_milliseconds() {
        let mut c = Config::default();
        c.apply_env(&env_of(&[("PLAYGROUND_CLOCK_SKEW_MS", "-4000")])).expect("-4000");
        assert_eq!(c.faults.clock_skew_ms, -4000);
        let e = c.apply_env(&env_of(&[("PLAYGROUND_CLOCK_SKEW_MS", "4s")])).expect_err("not a number");
        assert!(e.to_string().contains("PLAYGROUND_CLOCK_SKEW_MS"), "{e}");
    }

    #[test]
    fn env_token_key_replaces_file_key_source() {
        let file = "[security]\ntoken_key_file = \"/run/secrets/key\"\n";
        let mut c = Config::parse(file, "f.toml").expect("valid");
        c.apply_env(&env_of(&[("PLAYGROUND_TOKEN_KEY", &"e".repeat(32))])).expect("valid");
        assert_eq!(c.security.token_key_file, None);
        assert!(c.security.token_key.is_some());
    }
}
