//! Passwords and session tokens.
//!
//! Passwords: argon2id (RFC 9106), by default m = 19 MiB, t = 2, p = 1, OWASP's recommended minimum;
//! configurable under `[security]`. A stored hash carries its own parameters, so changing them applies to
//! new hashes without invalidating old ones. Hashing runs on the blocking pool, never on an actor.
//!
//! Tokens: `pg1.<user_id>.<session_id>.<secret>`, where the secret is 256 random bits. The user id routes
//! the check to the shard that holds the session; the node stores only HMAC-SHA256(key, session, secret)
//! under the configured token key, so a copy of the data cannot be turned into a working token.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;

use playground_proto::ApiError;

const TOKEN_PREFIX: &str = "pg1";

pub struct Passwords {
    params: Params,
    /// Each hash holds `m` KiB for its duration: bounding how many run at once bounds memory (I8) and
    /// keeps logins from starving every other request of CPU.
    slots: tokio::sync::Semaphore,
    /// Verified against when an email is unknown, so that a failed login costs the same either way.
    dummy_hash: String,
}

impl Passwords {
    pub fn new(memory_kib: u32, iterations: u32, parallelism: u32) -> Result<Self, String> {
        let params = Params::new(memory_kib, iterations, parallelism, None).map_err(|e| e.to_string())?;
        let mut dummy = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut dummy);
        let dummy_hash = hash_with(&params, &base64::engine::general_purpose::STANDARD.encode(dummy))?;
        let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(2);
        Ok(Self { params, slots: tokio::sync::Semaphore::new(cores * 2), dummy_hash })
    }

    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        let _slot = self.slots.acquire().await.map_err(|_| ApiError::Unavailable("shutting down".into()))?;
        let params = self.params.clone();
        tokio::task::spawn_blocking(move || hash_with(&params, &password))
            .await
            .map_err(|e| ApiError::Unavailable(format!("password hashing failed: {e}")))?
            .map_err(ApiError::Unavailable)
    }

    /// Verifies `password` against `hash`, or against a dummy hash when there is none.
    pub async fn verify(&self, password: String, hash: Option<String>) -> bool {
        let Ok(_slot) = self.slots.acquire().await else { return false };
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy_hash.clone());
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
        })
        .await
        .unwrap_or(false);
        ok && known
    }
}

fn hash_with(params: &Params, password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Parts of a well-formed token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    pub user_id: String,
    pub session_id: String,
    pub verifier: Vec<u8>,
}

pub struct Tokens {
    key: Vec<u8>,
}

impl Tokens {
    pub fn new(key: Vec<u8>) -> Self {
        Self { key }
    }

    /// A new token for a session, and the verifier to store for it.
    pub fn issue(&self, user_id: &str, session_id: &str) -> (String, Vec<u8>) {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
        let token = format!("{TOKEN_PREFIX}.{user_id}.{session_id}.{secret}");
        (token, self.verifier(session_id, &secret))
    }

    pub fn parse(&self, token: &str) -> Option<TokenClaims> {
        let mut parts = token.split('.');
        let (prefix, user_id, session_id, secret) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let id_ok = |s: &str| (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric());
        if parts.next().is_some()
            || prefix != TOKEN_PREFIX
            || !id_ok(user_id)
            || !id_ok(session_id)
            || secret.len() != 43
        {
            return None;
        }
        Some(TokenClaims {
            user_id: user_id.to_owned(),
            session_id: session_id.to_owned(),
            verifier: self.verifier(session_id, secret),
        })
    }

    fn verifier(&self, session_id: &str, secret: &str) -> Vec<u8> {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(session_id.as_bytes());
        mac.update(b".");
        mac.update(secret.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passwords_verify_only_themselves() {
        let p = Passwords::new(64, 1, 1).expect("params");
        let h = p.hash("correct horse".into()).await.expect("hash");
        assert!(h.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{h}");
        assert!(p.verify("correct horse".into(), Some(h.clone())).await);
        assert!(!p.verify("wrong horse".into(), Some(h)).await);
        assert!(!p.verify("anything".into(), None).await);
    }

    #[test]
    fn tokens_parse_back_and_bind_to_the_key() {
        let t = Tokens::new(vec![7; 32]);
        let (token, verifier) = t.issue("01J0USER", "01J0SESSION");
        let claims = t.parse(&token).expect("parses");
        assert_eq!(claims.user_id, "01J0USER");
        assert_eq!(claims.session_id, "01J0SESSION");
        assert_eq!(claims.verifier, verifier);
        let other = Tokens::new(vec![8; 32]);
        assert_ne!(other.parse(&token).expect("parses").verifier, verifier);
        for bad in ["", "pg1", "pg1.a.b", "pg2.a.b.c", &format!("{token}.x"), "pg1.a-b.c.ddd"] {
            assert!(t.parse(bad).is_none(), "{bad}");
        }
    }
}
