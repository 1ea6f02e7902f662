use std::fs;
use std::path::Path;

use crate::error::ConfigError;
use crate::model::{Config, MIN_TOKEN_KEY_BYTES};

/// Field used when an error concerns the file as a whole rather than a key.
const WHOLE_FILE: &str = "(file)";

/// Reads and parses the config file at `path`; errors name the file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let origin = path.display().to_string();
    let text = fs::read_to_string(path)
        .map_err(|e| ConfigError::new(&origin, WHOLE_FILE, format!("cannot read config file: {e}")))?;
    Config::parse(&text, &origin)
}

impl Config {
    /// Parses TOML text and validates it. `source` is the file name used in
    /// errors; missing sections and fields take their defaults.
    pub fn parse(text: &str, source: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| toml_error(text, source, &e))?;
        config.validate(source)?;
        Ok(config)
    }

    /// Same as the free function [`load`](crate::load).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        load(path)
    }

    /// Serializes the full configuration, secrets included: the launcher
    /// writes these as child configs with mode 0600.
    ///
    /// Only an unvalidated config can fail to serialize (e.g. a
    /// `max_in_flight` beyond TOML's i64). Rather than panic or silently
    /// drop fields, the output is then a document that `parse` rejects with
    /// the reason, so the failure surfaces wherever the file is read.
    pub fn to_toml(&self) -> String {
        match toml::to_string(self) {
            Ok(text) => text,
            Err(e) => {
                let reason = toml::Value::String(format!("to_toml failed: {e}"));
                format!("serialization_error = {reason}\n")
            }
        }
    }

    /// The token-signing key: the inline key's bytes, or the trimmed content
    /// of `security.token_key_file`, or `None` when neither is set. The file
    /// is read here rather than at parse time so parsing does no I/O beyond
    /// the config file itself, and key rotation only needs a re-read.
    pub fn token_key(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        const FIELD: &str = "security.token_key_file";
        if let Some(key) = &self.security.token_key {
            return Ok(Some(key.as_bytes().to_vec()));
        }
        let Some(path) = &self.security.token_key_file else {
            return Ok(None);
        };
        let origin = path.display().to_string();
        let raw = fs::read(path).map_err(|e| ConfigError::new(&origin, FIELD, format!("cannot read key file: {e}")))?;
        // Editors and `echo` add a trailing newline that must not become key material.
        let key = raw.trim_ascii();
        if key.len() < MIN_TOKEN_KEY_BYTES {
            return Err(ConfigError::new(
                origin,
                FIELD,
                format!("key must be at least {MIN_TOKEN_KEY_BYTES} bytes after trimming (got {})", key.len()),
            ));
        }
        Ok(Some(key.to_vec()))
    }
}

/// Turns a toml error into one that names the offending key as a
/// `section.field` path. toml only gives a message and a byte span, so the
/// path is recovered from the line the span points at and the table header
/// above it; the line and column are kept in the message either way.
fn toml_error(text: &str, source: &str, err: &toml::de::Error) -> ConfigError {
    let message = err.message().trim().to_owned();
    let Some(span) = err.span() else {
        let field = backticked(&message).unwrap_or(WHOLE_FILE).to_owned();
        return ConfigError::new(source, field, message);
    };
    let start = span.start.min(text.len());
    let before = text.get(..start).unwrap_or_default();
    let line_no = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    let line = text.get(line_start..).and_then(|rest| rest.lines().next()).unwrap_or_default();

    let field = if let Some(header) = header_name(line) {
        header
    } else if let Some(key) = key_name(line) {
        let table = before.get(..line_start).unwrap_or_default().lines().rev().find_map(header_name);
        match table {
            Some(t) => format!("{t}.{key}"),
            None => key,
        }
    } else {
        format!("line {line_no}")
    };
    ConfigError::new(source, field, format!("{message} (line {line_no}, column {column})"))
}

/// `[a.b]` or `[[a.b]]` -> `a.b`.
fn header_name(line: &str) -> Option<String> {
    let rest = line.trim_start().strip_prefix('[')?;
    let rest = rest.strip_prefix('[').unwrap_or(rest);
    let name = rest.split(']').next()?;
    Some(normalize_key(name))
}

/// `a.b = value` -> `a.b`.
fn key_name(line: &str) -> Option<String> {
    let (key, _) = line.split_once('=')?;
    let key = normalize_key(key);
    (!key.is_empty() && !key.starts_with('#')).then_some(key)
}

fn normalize_key(raw: &str) -> String {
    raw.split('.').map(|part| part.trim().trim_matches(|c| c == '"' || c == '\'')).collect::<Vec<_>>().join(".")
}

fn backticked(message: &str) -> Option<&str> {
    let (_, rest) = message.split_once('`')?;
    rest.split('`').next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LogEngine, LogFormat, DEFAULT_SHARDS};
    use std::path::PathBuf;
    use std::time::Duration;

    fn parse_err(text: &str) -> ConfigError {
        Config::parse(text, "cluster.toml").expect_err("should fail")
    }

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(Config::parse("", "empty.toml"), Ok(Config::default()));
    }

    #[test]
    fn partial_section_keeps_other_defaults() {
        let c = Config::parse("[cluster]\nshards = 8\n", "a.toml").expect("valid");
        assert_eq!(c.cluster.shards, 8);
        assert_eq!(c.node, Config::default().node);
    }

    #[test]
    fn full_file_parses() {
        let text = r#"
            [node]
            id = "n-2"
            http = "0.0.0.0:9000"
            data_dir = "/var/lib/pg"
            [cluster]
            shards = 128
            log = "raft"
            [sessions]
            ttl = "2h 30m"
            [security]
            admin_token = "0123456789abcdef"
            argon2_memory_kib = 4096
            [limits]
            request_timeout = "300ms"
            entity_idle_timeout = "10m"
            [log]
            format = "json"
        "#;
        let c = Config::parse(text, "a.toml").expect("valid");
        assert_eq!(c.node.http.port(), 9000);
        assert_eq!(c.node.data_dir, PathBuf::from("/var/lib/pg"));
        assert_eq!(c.cluster.shards, 128);
        assert_eq!(c.cluster.log, LogEngine::Raft);
        assert_eq!(c.sessions.ttl, Duration::from_secs(9000));
        assert_eq!(c.limits.request_timeout, Duration::from_millis(300));
        assert_eq!(c.limits.entity_idle_timeout, Duration::from_secs(600));
        assert_eq!(c.log.format, LogFormat::Json);
    }

    #[cfg(feature = "failpoints")]
    #[test]
    fn a_failpoints_build_reads_the_faults_section() {
        let c = Config::parse("[faults]\npanic_injection = true\n", "a.toml").expect("valid");
        assert!(c.faults.panic_injection);
    }

    #[cfg(not(feature = "failpoints"))]
    #[test]
    fn a_production_build_refuses_the_faults_section() {
        let e = Config::parse("[faults]\npanic_injection = true\n", "a.toml").expect_err("unknown section");
        assert!(e.to_string().contains("faults"), "{e}");
    }

    #[test]
    fn durations_parse_24h() {
        let c = Config::parse("[sessions]\nttl = \"24h\"\n", "a.toml").expect("valid");
        assert_eq!(c.sessions.ttl, Duration::from_secs(86_400));
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let e = parse_err("[node]\nid = \"a\"\nbogus_key = 1\n");
        assert_eq!(e.origin, "cluster.toml");
        assert_eq!(e.field, "node.bogus_key");
        let shown = e.to_string();
        assert!(shown.starts_with("cluster.toml: node.bogus_key: "), "{shown}");
        assert!(shown.contains("line 3"), "{shown}");
    }

    #[test]
    fn unknown_section_names_section() {
        let e = parse_err("[nodes]\nid = \"a\"\n");
        assert_eq!(e.field, "nodes", "{e}");
    }

    #[test]
    fn unknown_top_level_key_is_error() {
        let e = parse_err("shards = 3\n");
        assert_eq!(e.field, "shards", "{e}");
    }

    #[test]
    fn type_errors_name_the_field() {
        assert_eq!(parse_err("[cluster]\nshards = \"many\"\n").field, "cluster.shards");
        assert_eq!(parse_err("[sessions]\nttl = \"soon\"\n").field, "sessions.ttl");
        assert_eq!(parse_err("[sessions]\nttl = 5\n").field, "sessions.ttl");
        assert_eq!(parse_err("[node]\nhttp = \"nope\"\n").field, "node.http");
        assert_eq!(parse_err("[log]\nformat = \"xml\"\n").field, "log.format");
        assert_eq!(parse_err("[cluster]\nlog = \"paxos\"\n").field, "cluster.log");
        assert_eq!(parse_err("[cluster]\nshards = -1\n").field, "cluster.shards");
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        let e = parse_err("[node]\nid = \n");
        assert_eq!(e.origin, "cluster.toml");
        assert!(e.to_string().contains("line 2"), "{e}");
    }

    #[test]
    fn validation_runs_after_parse() {
        let e = parse_err("[cluster]\nshards = 0\n");
        assert_eq!(e.field, "cluster.shards");
    }

    #[test]
    fn load_names_unreadable_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("missing.toml");
        let e = load(&path).expect_err("missing");
        assert!(e.origin.ends_with("missing.toml"), "{e}");
    }

    #[test]
    fn load_reads_file_and_names_it_in_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.toml");
        fs::write(&path, "[cluster]\nshards = 2\n").expect("write");
        assert_eq!(Config::load(&path).expect("valid").cluster.shards, 2);
        fs::write(&path, "[cluster]\nshardz = 2\n").expect("write");
        let e = load(&path).expect_err("unknown key");
        assert_eq!(e.origin, path.display().to_string());
        assert_eq!(e.field, "cluster.shardz");
    }

    #[test]
    fn to_toml_round_trips() {
        let mut c = Config::default();
        assert_eq!(Config::parse(&c.to_toml(), "rt.toml"), Ok(c.clone()));

        c.node.id = "node-7".into();
        c.node.http = "[::1]:7070".parse().expect("addr");
        c.node.data_dir = "/tmp/with space/ü".into();
        c.cluster.shards = 1;
        c.sessions.ttl = Duration::from_millis(1500);
        c.security.token_key = Some("k\"ey\\with".repeat(4));
        c.security.admin_token = Some("admin-token-0123456789".into());
        c.security.argon2_memory_kib = 65536;
        c.limits.max_in_flight = 7;
        c.http.trusted_proxies = vec!["10.0.0.0/8".into(), "::1".into()];
        c.http.body_read_timeout = Duration::from_millis(2500);
        c.limits.request_timeout = Duration::from_millis(10);
        c.limits.entity_idle_timeout = Duration::from_secs(86_400);
        c.limits.retry_after_secs = 30;
        #[cfg(feature = "failpoints")]
        {
            c.faults.panic_injection = true;
        }
        c.log.format = LogFormat::Json;
        let text = c.to_toml();
        assert_eq!(Config::parse(&text, "rt.toml"), Ok(c.clone()), "{text}");

        c.security.token_key = None;
        c.security.token_key_file = Some("/run/secrets/key".into());
        assert_eq!(Config::parse(&c.to_toml(), "rt.toml"), Ok(c));
    }

    #[test]
    fn to_toml_failure_is_not_silent() {
        let mut c = Config::default();
        c.limits.max_in_flight = usize::MAX;
        let e = Config::parse(&c.to_toml(), "child.toml").expect_err("must not parse");
        assert_eq!(e.field, "serialization_error", "{e}");
    }

    #[test]
    fn token_key_inline_file_or_none() {
        let mut c = Config::default();
        assert_eq!(c.token_key(), Ok(None));

        c.security.token_key = Some("i".repeat(32));
        assert_eq!(c.token_key(), Ok(Some(vec![b'i'; 32])));

        let mut file = tempfile::NamedTempFile::new().expect("tempfile");
        std::io::Write::write_all(&mut file, format!("  {}\n", "f".repeat(40)).as_bytes()).expect("write");
        c.security.token_key = None;
        c.security.token_key_file = Some(file.path().to_path_buf());
        assert_eq!(c.token_key(), Ok(Some(vec![b'f'; 40])));
    }

    #[test]
    fn token_key_file_errors_name_file_and_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let short = dir.path().join("short.key");
        fs::write(&short, "too-short\n").expect("write");
        let mut c = Config::default();
        c.security.token_key_file = Some(short.clone());
        let e = c.token_key().expect_err("short");
        assert_eq!(e.origin, short.display().to_string());
        assert_eq!(e.field, "security.token_key_file");

        let missing = dir.path().join("missing.key");
        c.security.token_key_file = Some(missing.clone());
        let e = c.token_key().expect_err("missing");
        assert_eq!(e.origin, missing.display().to_string());
        assert_eq!(e.field, "security.token_key_file");
    }

    #[test]
    fn examples_parse() {
        let single = Config::parse(include_str!("../examples/single-node.toml"), "single-node.toml")
            .expect("single-node example");
        assert_eq!(single.cluster.shards, DEFAULT_SHARDS);
        assert_eq!(single.cluster.log, LogEngine::Local);
        let minimal = Config::parse(include_str!("../examples/minimal.toml"), "minimal.toml").expect("minimal example");
        assert_eq!(minimal.cluster, Config::default().cluster);
    }

    #[test]
    fn every_example_file_parses() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
        let mut seen = 0;
        for entry in fs::read_dir(dir).expect("examples dir") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                load(&path).unwrap_or_else(|e| panic!("{e}"));
                seen += 1;
            }
        }
        assert!(seen >= 2, "expected at least the two shipped examples");
    }
}
