use std::fmt::Display;

/// A configuration problem, located well enough for an operator to fix it
/// without reading code: which file (or "environment"), which field (or
/// environment variable), and what is wrong.
///
/// The origin is not called `source` because thiserror would treat such a
/// field as the underlying error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {field}: {message}")]
pub struct ConfigError {
    /// File name, or "environment" for environment variables.
    pub origin: String,
    /// `section.field` path, environment variable name, or a line reference.
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(origin: impl Display, field: impl Display, message: impl Display) -> Self {
        Self { origin: origin.to_string(), field: field.to_string(), message: message.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_origin_and_field() {
        let e = ConfigError::new("a.toml", "cluster.shards", "too big");
        assert_eq!(e.to_string(), "a.toml: cluster.shards: too big");
    }

    #[test]
    fn origin_is_not_treated_as_error_source() {
        use std::error::Error;
        let e = ConfigError::new("a.toml", "x", "y");
        assert!(e.source().is_none());
    }
}
