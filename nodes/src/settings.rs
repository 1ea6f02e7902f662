//! Turning flags, environment and file into one validated configuration, and the secrets a node needs
//! that the configuration may leave out.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use base64::Engine;
use cluster_config::{Config, ConfigError};
use rand::RngCore;

use crate::ConfigArgs;

/// Defaults, then the file, then the environment, then the flags.
pub fn resolve(args: &ConfigArgs) -> Result<Config, ConfigError> {
    let mut config = match &args.config {
        Some(path) => cluster_config::load(path)?,
        None => Config::default(),
    };
    config.apply_env(&|k| std::env::var(k).ok())?;
    if let Some(http) = &args.http {
        config.node.http = http.parse().map_err(|_| {
            ConfigError::new("command line", "--http", format!("{http:?} is not an address like 127.0.0.1:8080"))
        })?;
    }
    if let Some(dir) = &args.data_dir {
        config.node.data_dir = dir.clone();
    }
    config.validate("command line")?;
    Ok(config)
}

/// A random secret of `bytes` bytes, base64url, kept in `path` (created 0600 on first use).
pub fn load_or_create_secret(path: &Path, bytes: usize) -> Result<String> {
    if let Ok(text) = fs::read_to_string(path) {
        let text = text.trim().to_owned();
        anyhow::ensure!(!text.is_empty(), "{} is empty; delete it to have a new secret made", path.display());
        return Ok(text);
    }
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    let mut raw = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    file.write_all(secret.as_bytes())?;
    file.sync_all()?;
    Ok(secret)
}

/// Writes a file readable by its owner only.
pub fn write_private(path: &Path, text: &str) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("write {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}
