use std::fmt::Debug;
use std::ops::RangeInclusive;
use std::time::Duration;

use crate::error::ConfigError;
use crate::http::{
    parse_proxy, BODY_READ_TIMEOUT_RANGE, H2_MAX_STREAMS_RANGE, HEADER_READ_TIMEOUT_RANGE, MAX_CONNECTIONS_RANGE,
};
use crate::model::{
    Config, ARGON2_ITERATIONS_RANGE, ARGON2_MEMORY_KIB_RANGE, ARGON2_PARALLELISM_RANGE, DEAD_MEMBER_TIMEOUT_RANGE,
    ENTITY_IDLE_TIMEOUT_RANGE, FAILURE_TIMEOUT_RANGE, HEARTBEAT_INTERVAL_RANGE, LOGIN_BURST_RANGE, LOGIN_PERIOD_RANGE,
    MAX_CONCURRENT_MOVES_RANGE, MAX_ENTITIES_PER_SHARD_RANGE, MAX_IN_FLIGHT_RANGE, MAX_PASSWORD_REQUESTS_RANGE,
    MIN_ADMIN_TOKEN_CHARS, MIN_COOKIE_CHARS, MIN_TOKEN_KEY_BYTES, NODE_ID_MAX_LEN, RATE_LIMIT_BURST_RANGE,
    RATE_LIMIT_PER_SECOND_RANGE, REPLICATION_FACTOR_RANGE, REQUEST_TIMEOUT_RANGE, RETRY_AFTER_SECS_RANGE,
    SESSION_TTL_RANGE, SHARDS_RANGE,
};

impl Config {
    /// Checks ranges and cross-field rules. Does no I/O: the content of
    /// `security.token_key_file` is checked by [`Config::token_key`].
    /// `source` names the file (or "environment") in the error.
    pub fn validate(&self, source: &str) -> Result<(), ConfigError> {
        let err = |field: &str, msg: String| ConfigError::new(source, field, msg);

        validate_node_id(&self.node.id).map_err(|m| err("node.id", m))?;
        if self.node.data_dir.as_os_str().is_empty() {
            return Err(err("node.data_dir", "must not be empty".into()));
        }

        in_range(self.cluster.shards, &SHARDS_RANGE).map_err(|m| err("cluster.shards", m))?;
        self.validate_membership(source)?;
        in_duration_range(self.sessions.ttl, &SESSION_TTL_RANGE).map_err(|m| err("sessions.ttl", m))?;

        let sec = &self.security;
        if sec.token_key.is_some() && sec.token_key_file.is_some() {
            return Err(err(
                "security.token_key",
                "token_key and token_key_file are mutually exclusive; set only one".into(),
            ));
        }
        if let Some(key) = &sec.token_key {
            if key.len() < MIN_TOKEN_KEY_BYTES {
                return Err(err(
                    "security.token_key",
                    format!("must be at least {MIN_TOKEN_KEY_BYTES} bytes (got {})", key.len()),
                ));
            }
        }
        if let Some(path) = &sec.token_key_file {
            if path.as_os_str().is_empty() {
                return Err(err("security.token_key_file", "must not be empty".into()));
            }
        }
        if let Some(token) = &sec.admin_token {
            let n = token.chars().count();
            if n < MIN_ADMIN_TOKEN_CHARS {
                return Err(err(
                    "security.admin_token",
                    format!("must be at least {MIN_ADMIN_TOKEN_CHARS} characters (got {n})"),
                ));
            }
        }
        in_range(sec.argon2_memory_kib, &ARGON2_MEMORY_KIB_RANGE).map_err(|m| err("security.argon2_memory_kib", m))?;
        in_range(sec.argon2_iterations, &ARGON2_ITERATIONS_RANGE).map_err(|m| err("security.argon2_iterations", m))?;
        in_range(sec.argon2_parallelism, &ARGON2_PARALLELISM_RANGE)
            .map_err(|m| err("security.argon2_parallelism", m))?;
        in_range(sec.login_account_burst, &LOGIN_BURST_RANGE).map_err(|m| err("security.login_account_burst", m))?;
        in_duration_range(sec.login_account_period, &LOGIN_PERIOD_RANGE)
            .map_err(|m| err("security.login_account_period", m))?;
        in_range(sec.login_client_burst, &LOGIN_BURST_RANGE).map_err(|m| err("security.login_client_burst", m))?;
        in_duration_range(sec.login_client_period, &LOGIN_PERIOD_RANGE)
            .map_err(|m| err("security.login_client_period", m))?;

        let lim = &self.limits;
        in_range(lim.max_in_flight, &MAX_IN_FLIGHT_RANGE).map_err(|m| err("limits.max_in_flight", m))?;
        in_duration_range(lim.request_timeout, &REQUEST_TIMEOUT_RANGE).map_err(|m| err("limits.request_timeout", m))?;
        in_duration_range(lim.entity_idle_timeout, &ENTITY_IDLE_TIMEOUT_RANGE)
            .map_err(|m| err("limits.entity_idle_timeout", m))?;
        in_range(lim.max_entities_per_shard, &MAX_ENTITIES_PER_SHARD_RANGE)
            .map_err(|m| err("limits.max_entities_per_shard", m))?;
        in_range(lim.retry_after_secs, &RETRY_AFTER_SECS_RANGE).map_err(|m| err("limits.retry_after_secs", m))?;
        in_range(lim.rate_limit_per_second, &RATE_LIMIT_PER_SECOND_RANGE)
            .map_err(|m| err("limits.rate_limit_per_second", m))?;
        in_range(lim.rate_limit_burst, &RATE_LIMIT_BURST_RANGE).map_err(|m| err("limits.rate_limit_burst", m))?;
        in_range(lim.max_password_requests, &MAX_PASSWORD_REQUESTS_RANGE)
            .map_err(|m| err("limits.max_password_requests", m))?;
        let http = &self.http;
        for proxy in &http.trusted_proxies {
            parse_proxy(proxy).map_err(|m| err("http.trusted_proxies", m))?;
        }
        in_duration_range(http.header_read_timeout, &HEADER_READ_TIMEOUT_RANGE)
            .map_err(|m| err("http.header_read_timeout", m))?;
        in_duration_range(http.body_read_timeout, &BODY_READ_TIMEOUT_RANGE)
            .map_err(|m| err("http.body_read_timeout", m))?;
        in_range(http.max_connections, &MAX_CONNECTIONS_RANGE).map_err(|m| err("http.max_connections", m))?;
        in_range(http.h2_max_streams, &H2_MAX_STREAMS_RANGE).map_err(|m| err("http.h2_max_streams", m))?;
        #[cfg(feature = "failpoints")]
        in_range(self.faults.clock_skew_ms, &crate::model::CLOCK_SKEW_MS_RANGE)
            .map_err(|m| err("faults.clock_skew_ms", m))?;

        Ok(())
    }
}

impl Config {
    fn validate_membership(&self, source: &str) -> Result<(), ConfigError> {
        let err = |field: &str, msg: String| ConfigError::new(source, field, msg);
        let c = &self.cluster;
        in_range(c.replication_factor, &REPLICATION_FACTOR_RANGE).map_err(|m| err("cluster.replication_factor", m))?;
        in_duration_range(c.heartbeat_interval, &HEARTBEAT_INTERVAL_RANGE)
            .map_err(|m| err("cluster.heartbeat_interval", m))?;
        in_duration_range(c.failure_timeout, &FAILURE_TIMEOUT_RANGE).map_err(|m| err("cluster.failure_timeout", m))?;
        in_range(c.max_concurrent_moves, &MAX_CONCURRENT_MOVES_RANGE)
            .map_err(|m| err("cluster.max_concurrent_moves", m))?;
        in_duration_range(c.dead_member_timeout, &DEAD_MEMBER_TIMEOUT_RANGE)
            .map_err(|m| err("cluster.dead_member_timeout", m))?;
        if let Some(advertise) = &c.advertise {
            crate::model::parse_seed(&format!("x@{advertise}"))
                .map_err(|m| err("cluster.advertise", format!("{advertise:?} is not a host:port: {m}")))?;
        }
        if c.failure_timeout <= c.heartbeat_interval {
            return Err(err("cluster.failure_timeout", "must be longer than cluster.heartbeat_interval".into()));
        }
        let mut ids = std::collections::HashSet::new();
        let mut addrs = std::collections::HashSet::new();
        for (i, text) in c.seeds.iter().enumerate() {
            let field = format!("cluster.seeds[{i}]");
            let seed = crate::model::parse_seed(text).map_err(|m| err(&field, m))?;
            validate_node_id(&seed.id).map_err(|m| err(&field, m))?;
            if !ids.insert(seed.id.clone()) || !addrs.insert(seed.addr) {
                return Err(err(&field, format!("{text:?} repeats an id or address of an earlier seed")));
            }
        }
        if let Some(cookie) = &c.cookie {
            let n = cookie.chars().count();
            if n < MIN_COOKIE_CHARS {
                return Err(err("cluster.cookie", format!("must be at least {MIN_COOKIE_CHARS} characters (got {n})")));
            }
        } else if !c.seeds.is_empty() {
            return Err(err("cluster.cookie", "is required when cluster.seeds names other members".into()));
        }
        Ok(())
    }
}

fn validate_node_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("must not be empty".into());
    }
    if id.len() > NODE_ID_MAX_LEN {
        return Err(format!("must be at most {NODE_ID_MAX_LEN} characters (got {})", id.len()));
    }
    if let Some(bad) = id.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("invalid character {bad:?} in {id:?}; allowed: A-Z a-z 0-9 . _ -"));
    }
    Ok(())
}

fn in_range<T: PartialOrd + Debug>(value: T, range: &RangeInclusive<T>) -> Result<(), String> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(format!("{value:?} is out of range {:?}..={:?}", range.start(), range.end()))
    }
}

fn in_duration_range(value: Duration, range: &RangeInclusive<Duration>) -> Result<(), String> {
    if range.contains(&value) {
        Ok(())
    } else {
        // Humantime formatting, so the message uses the same units the file does.
        let h = humantime::format_duration;
        Err(format!("{} is out of range {}..={}", h(value), h(*range.start()), h(*range.end())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn field_of(c: &Config) -> String {
        let e = c.validate("test.toml").expect_err("should be invalid");
        assert_eq!(e.origin, "test.toml");
        assert!(e.to_string().starts_with("test.toml: "), "{e}");
        e.field
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate("defaults").expect("defaults valid");
        #[cfg(feature = "failpoints")]
        {
            let mut c = Config::default();
            c.faults.break_idempotency = true;
            c.faults.clock_skew_ms = -86_400_000;
            c.validate("test-only switch").expect("valid");
        }
    }

    #[test]
    fn each_range_error_names_its_field() {
        type Mutation = fn(&mut Config);
        let cases: &[(&str, Mutation)] = &[
            ("node.id", |c| c.node.id = String::new()),
            ("node.id", |c| c.node.id = "a b".into()),
            ("node.id", |c| c.node.id = "x".repeat(65)),
            ("node.data_dir", |c| c.node.data_dir = PathBuf::new()),
            ("cluster.shards", |c| c.cluster.shards = 0),
            ("cluster.shards", |c| c.cluster.shards = 4097),
            ("sessions.ttl", |c| c.sessions.ttl = Duration::from_millis(999)),
            ("sessions.ttl", |c| c.sessions.ttl = Duration::from_secs(366 * 86_400)),
            ("security.token_key", |c| c.security.token_key = Some("short".into())),
            ("security.token_key", |c| {
                c.security.token_key = Some("k".repeat(32));
                c.security.token_key_file = Some("key".into());
            }),
            ("security.token_key_file", |c| c.security.token_key_file = Some(PathBuf::new())),
            ("security.admin_token", |c| c.security.admin_token = Some("x".repeat(15))),
            ("security.argon2_memory_kib", |c| c.security.argon2_memory_kib = 7),
            ("security.argon2_memory_kib", |c| c.security.argon2_memory_kib = 1_048_577),
            ("security.argon2_iterations", |c| c.security.argon2_iterations = 0),
            ("security.argon2_iterations", |c| c.security.argon2_iterations = 17),
            ("security.argon2_parallelism", |c| c.security.argon2_parallelism = 0),
            ("security.argon2_parallelism", |c| c.security.argon2_parallelism = 17),
            ("limits.max_in_flight", |c| c.limits.max_in_flight = 0),
            ("limits.max_in_flight", |c| c.limits.max_in_flight = 1_000_001),
            ("limits.request_timeout", |c| c.limits.request_timeout = Duration::from_millis(9)),
            ("limits.request_timeout", |c| c.limits.request_timeout = Duration::from_secs(301)),
            ("limits.entity_idle_timeout", |c| c.limits.entity_idle_timeout = Duration::from_millis(99)),
            ("limits.entity_idle_timeout", |c| c.limits.entity_idle_timeout = Duration::from_secs(86_401)),
            ("limits.max_entities_per_shard", |c| c.limits.max_entities_per_shard = 0),
            ("limits.max_entities_per_shard", |c| c.limits.max_entities_per_shard = 10_000_001),
            ("limits.retry_after_secs", |c| c.limits.retry_after_secs = 0),
            ("limits.retry_after_secs", |c| c.limits.retry_after_secs = 3601),
            ("limits.rate_limit_burst", |c| c.limits.rate_limit_burst = 0),
            ("http.trusted_proxies", |c| c.http.trusted_proxies = vec!["10.0.0.0/33".into()]),
            ("http.trusted_proxies", |c| c.http.trusted_proxies = vec!["proxy.internal".into()]),
            ("http.header_read_timeout", |c| c.http.header_read_timeout = Duration::from_millis(1)),
            ("http.body_read_timeout", |c| c.http.body_read_timeout = Duration::from_secs(601)),
            ("http.max_connections", |c| c.http.max_connections = 0),
            ("limits.max_password_requests", |c| c.limits.max_password_requests = 0),
            ("http.h2_max_streams", |c| c.http.h2_max_streams = 0),
            ("cluster.max_concurrent_moves", |c| c.cluster.max_concurrent_moves = 0),
            ("cluster.advertise", |c| c.cluster.advertise = Some("no port".into())),
        ];
        #[cfg(feature = "failpoints")]
        let faults: &[(&str, Mutation)] = &[
            ("faults.clock_skew_ms", |c| c.faults.clock_skew_ms = 86_400_001),
            ("faults.clock_skew_ms", |c| c.faults.clock_skew_ms = -86_400_001),
        ];
        #[cfg(not(feature = "failpoints"))]
        let faults: &[(&str, Mutation)] = &[];
        for (field, mutate) in cases.iter().chain(faults) {
            let mut c = Config::default();
            mutate(&mut c);
            assert_eq!(field_of(&c), *field);
        }
    }

    #[test]
    fn range_bounds_are_inclusive() {
        let mut c = Config::default();
        c.node.id = "A.z_9-".repeat(10);
        c.cluster.shards = 4096;
        c.sessions.ttl = Duration::from_secs(1);
        c.security.token_key = Some("k".repeat(32));
        c.security.admin_token = Some("t".repeat(16));
        c.security.argon2_memory_kib = 8;
        c.security.argon2_iterations = 16;
        c.security.argon2_parallelism = 16;
        c.limits.max_in_flight = 1_000_000;
        c.limits.request_timeout = Duration::from_millis(10);
        c.limits.entity_idle_timeout = Duration::from_secs(86_400);
        c.limits.retry_after_secs = 3600;
        c.validate("t").expect("bounds valid");
    }

    #[test]
    fn duration_range_message_uses_humantime_units() {
        let mut c = Config::default();
        c.limits.request_timeout = Duration::from_secs(301);
        let e = c.validate("t").expect_err("invalid");
        assert!(e.message.contains("5m 1s"), "{e}");
    }

    #[test]
    fn seeds_need_a_cookie_and_a_valid_form() {
        let mut c = Config::default();
        c.cluster.seeds = vec!["node-1@127.0.0.1:7101".into(), "node-2@127.0.0.1:7102".into()];
        assert_eq!(c.validate("f.toml").expect_err("no cookie").field, "cluster.cookie");
        c.cluster.cookie = Some("short".into());
        assert_eq!(c.validate("f.toml").expect_err("short cookie").field, "cluster.cookie");
        c.cluster.cookie = Some("a-cookie-of-16-chars".into());
        assert!(c.validate("f.toml").is_ok());
        c.cluster.seeds.push("node-1@127.0.0.1:7103".into());
        assert_eq!(c.validate("f.toml").expect_err("repeated id").field, "cluster.seeds[2]");
        c.cluster.seeds[2] = "no-at-sign".into();
        assert_eq!(c.validate("f.toml").expect_err("bad form").field, "cluster.seeds[2]");
        c.cluster.seeds[2] = "node-3@localhost".into();
        assert_eq!(c.validate("f.toml").expect_err("bad addr").field, "cluster.seeds[2]");
        c.cluster.seeds[2] = "node-3@bad_host!:7103".into();
        assert_eq!(c.validate("f.toml").expect_err("bad host").field, "cluster.seeds[2]");
        c.cluster.seeds[2] = "node-3@node-3:7103".into();
        assert!(c.validate("f.toml").is_ok(), "a host name is a valid seed address");
        c.cluster.seeds[2] = "node-3@node-3:7103".into();
        c.cluster.seeds.push("node-4@node-3:7103".into());
        assert_eq!(c.validate("f.toml").expect_err("repeated address").field, "cluster.seeds[3]");
        c.cluster.seeds.pop();
        c.cluster.seeds.pop();
        c.cluster.failure_timeout = c.cluster.heartbeat_interval;
        assert_eq!(c.validate("f.toml").expect_err("timeouts").field, "cluster.failure_timeout");
    }

    #[test]
    fn the_cookie_is_redacted() {
        let mut c = Config::default();
        c.cluster.cookie = Some("a-cookie-of-16-chars".into());
        assert!(!format!("{c:?}").contains("a-cookie-of-16-chars"));
    }
}
