//! The tracing subscriber: `RUST_LOG` filters (default `info`), text or JSON lines on stderr.

use cluster_config::LogFormat;
use tracing_subscriber::EnvFilter;

/// Without `RUST_LOG`: our own events at info; openraft's off, since it logs every unanswered vote of a
/// cluster still starting as an error (our raft module logs leadership changes itself); ractor_cluster's
/// from warn, since it logs every session at info.
const DEFAULT_FILTER: &str = "info,openraft=off,ractor_cluster=warn";

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
