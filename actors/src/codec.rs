//! Versioned record encoding: one version byte, then bincode. A record written by an older format stays
//! readable; an unknown version is reported as corrupt, never guessed at.

use serde::{de::DeserializeOwned, Serialize};

use crate::error::StoreError;

/// The version byte written in front of every record of the current format.
pub const RECORD_V1: u8 = 1;

/// Records are small; anything larger is corruption, not data.
const MAX_RECORD_BYTES: usize = 4 * 1024 * 1024;

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![RECORD_V1];
    // Encoding plain structs into a Vec cannot fail: there is no size limit and no I/O.
    let body = bincode::serde::encode_to_vec(value, bincode::config::standard())
        .expect("records encode infallibly into memory");
    out.extend_from_slice(&body);
    out
}

pub fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt { key: String::from_utf8_lossy(key).into_owned(), reason };
    match bytes.split_first() {
        Some((&RECORD_V1, body)) => {
            let config = bincode::config::standard().with_limit::<MAX_RECORD_BYTES>();
            bincode::serde::decode_from_slice(body, config).map(|(value, _)| value).map_err(|e| corrupt(e.to_string()))
        }
        Some((version, _)) => Err(corrupt(format!("unknown record version {version}"))),
        None => Err(corrupt("empty record".to_owned())),
    }
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
    }

    #[test]
    fn rejects_unknown_versions_and_garbage() {
        let mut bytes = encode(&Sample { a: "x".into(), b: None, c: vec![] });
        bytes[0] = 9;
        assert!(matches!(decode::<Sample>(b"k", &bytes), Err(StoreError::Corrupt { .. })));
        assert!(decode::<Sample>(b"k", &[]).is_err());
        assert!(decode::<Sample>(b"k", &[RECORD_V1, 0xff, 0xff, 0xff]).is_err());
    }
}
