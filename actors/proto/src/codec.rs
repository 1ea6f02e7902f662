//! Versioned encoding: one version byte, then bincode 2. Stored records carry [`RECORD_V1`]; messages
//! between processes carry [`WIRE_V2`], so that the two formats move independently. A record written by an
//! older format stays readable; an unknown version is reported, never guessed at.

use serde::{de::DeserializeOwned, Serialize};

/// The version byte of every stored record (and of the records a raft log entry carries).
pub const RECORD_V1: u8 = 1;

/// The version byte of every message between processes. Version 1 was the untyped shard answer; version 2
/// carries one answer type per operation and routing signals apart from API errors.
pub const WIRE_V2: u8 = 2;

/// Records and messages are small; anything larger is corruption, not data.
pub const MAX_DECODE_BYTES: usize = 4 * 1024 * 1024;

/// A record or message that could not be read, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} is unreadable: {reason}")]
pub struct DecodeError {
    /// The stored key, or the kind of message.
    pub key: String,
    pub reason: String,
}

fn encode_with<T: Serialize>(version: u8, value: &T) -> Vec<u8> {
    let mut out = vec![version];
    // Encoding plain structs into a Vec cannot fail: there is no size limit and no I/O.
    let body = bincode::serde::encode_to_vec(value, bincode::config::standard())
        .expect("records encode infallibly into memory");
    out.extend_from_slice(&body);
    out
}

fn decode_with<T: DeserializeOwned>(version: u8, key: &[u8], bytes: &[u8]) -> Result<T, DecodeError> {
    let fail = |reason: String| DecodeError { key: String::from_utf8_lossy(key).into_owned(), reason };
    match bytes.split_first() {
        Some((&v, body)) if v == version => {
            let config = bincode::config::standard().with_limit::<MAX_DECODE_BYTES>();
            bincode::serde::decode_from_slice(body, config).map(|(value, _)| value).map_err(|e| fail(e.to_string()))
        }
        Some((v, _)) => Err(fail(format!("unknown format version {v}, expected {version}"))),
        None => Err(fail("empty record".to_owned())),
    }
}

/// A stored record: [`RECORD_V1`] + bincode.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    encode_with(RECORD_V1, value)
}

/// Reads a stored record written by [`encode`]; `key` names it in the error.
pub fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, DecodeError> {
    decode_with(RECORD_V1, key, bytes)
}

/// A message to another process: [`WIRE_V2`] + bincode.
pub fn encode_wire<T: Serialize>(value: &T) -> Vec<u8> {
    encode_with(WIRE_V2, value)
}

/// Reads a message written by [`encode_wire`]; `what` names it in the error.
pub fn decode_wire<T: DeserializeOwned>(what: &[u8], bytes: &[u8]) -> Result<T, DecodeError> {
    decode_with(WIRE_V2, what, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Sample {
        a: String,
        b: Option<u64>,
        c: Vec<i64>,
    }

    #[test]
    fn round_trips_with_a_version_byte() {
        let s = Sample { a: "x".into(), b: Some(7), c: vec![-1, 2] };
        let bytes = encode(&s);
        assert_eq!(bytes[0], RECORD_V1);
        assert_eq!(decode::<Sample>(b"k", &bytes).expect("decodes"), s);
        let wire = encode_wire(&s);
        assert_eq!(wire[0], WIRE_V2);
        assert_eq!(decode_wire::<Sample>(b"k", &wire).expect("decodes"), s);
    }

    #[test]
    fn rejects_unknown_versions_and_garbage() {
        let mut bytes = encode(&Sample { a: "x".into(), b: None, c: vec![] });
        assert!(decode_wire::<Sample>(b"k", &bytes).is_err(), "a record is no message");
        bytes[0] = 9;
        assert!(decode::<Sample>(b"k", &bytes).is_err());
        assert!(decode::<Sample>(b"k", &[]).is_err());
        assert!(decode::<Sample>(b"k", &[RECORD_V1, 0xff, 0xff, 0xff]).is_err());
    }
}
