//! The history a workload records: one event per invocation and one per completion, Jepsen-style. An
//! outcome the client cannot know (timeout, connection error, most 5xx) is `info`, never `fail`.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    pub process: u64,
    #[serde(rename = "type")]
    pub kind: String,
    pub f: String,
    pub key: String,
    pub value: Value,
    /// When the operation was meant to be sent, in ms since the start of the run.
    pub intended: u64,
    /// When this event happened, in ms since the start of the run.
    pub at: u64,
}

impl Event {
    pub fn is(&self, kind: &str, f: &str) -> bool {
        self.kind == kind && self.f == f
    }
}

/// A shared, append-only history with the run's clock.
#[derive(Clone)]
pub struct History {
    start: Instant,
    events: Arc<Mutex<Vec<Event>>>,
}

impl History {
    pub fn new(start: Instant) -> Self {
        History { start, events: Arc::new(Mutex::new(vec![])) }
    }

    /// Milliseconds since the start of the run.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub fn push(&self, e: Event) {
        if let Ok(mut events) = self.events.lock() {
            events.push(e);
        }
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

pub fn write_jsonl(path: &Path, events: &[Event]) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for e in events {
        serde_json::to_writer(&mut out, e)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}
