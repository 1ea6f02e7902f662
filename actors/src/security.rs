//! Passwords and session tokens.
//!
//! Passwords: argon2id (RFC 9106), by default m = 19 MiB, t = 2, p = 1, OWASP's recommended minimum;
//! configurable under `[security]`. A stored hash carries its own parameters, so changing them applies to
//! new hashes without invalidating old ones. Hashing runs on the blocking pool, never on an actor, in a
//! fixed number of slots that each own one working memory, reused from hash to hash.
//!
//! Tokens: `pg1.<user_id>.<session_id>.<secret>`, where the secret is 256 random bits. The user id routes
//! the check to the shard that holds the session; the node stores only HMAC-SHA256(key, session, secret)
//! under the configured token key, so a copy of the data cannot be turned into a working token.

use std::sync::Mutex;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;

use playground_proto::ApiError;

const TOKEN_PREFIX: &str = "pg1";

pub struct Passwords {
    params: Params,
    /// Each hash holds `m` KiB for its duration: bounding how many run at once bounds memory (I8) and
    /// keeps logins from starving every other request of CPU (at most half the cores hash at once). A permit entitles its holder to one of
    /// `buffers`.
    slots: tokio::sync::Semaphore,
    /// One working memory of `params`' size per slot, allocated once and reused: a buffer allocated per
    /// hash on the blocking pool's threads lands in their malloc arenas and is never given back to the
    /// system, so a burst of logins would leave the process hundreds of megabytes larger for good.
    buffers: Mutex<Vec<Vec<Block>>>,
    /// Verified against when an email is unknown, so that a failed login costs the same either way.
    dummy_hash: String,
}

impl Passwords {
    pub fn new(memory_kib: u32, iterations: u32, parallelism: u32) -> Result<Self, String> {
        let params = Params::new(memory_kib, iterations, parallelism, None).map_err(|e| e.to_string())?;
        let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(2);
        // Half the cores at most: however many registrations and logins arrive, the other half stays
        // for every other request.
        let count = (cores / 2).max(1);
        let mut buffers: Vec<Vec<Block>> = (0..count).map(|_| vec![Block::default(); params.block_count()]).collect();
        let mut dummy = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut dummy);
        let dummy_password = base64::engine::general_purpose::STANDARD.encode(dummy);
        let dummy_hash = hash_with(&params, dummy_password.as_bytes(), &mut buffers[0])?;
        Ok(Self { params, slots: tokio::sync::Semaphore::new(count), buffers: Mutex::new(buffers), dummy_hash })
    }

    /// Runs `work` on the blocking pool with a slot's buffer, and puts the buffer back afterwards.
    async fn with_buffer<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut [Block]) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let _slot = self.slots.acquire().await.map_err(|_| ApiError::Unavailable("shutting down".into()))?;
        let taken = self.buffers.lock().ok().and_then(|mut b| b.pop());
        // Only a hashing task that panicked loses its buffer; its slot then gets a new one.
        let mut buffer = taken.unwrap_or_else(|| vec![Block::default(); self.params.block_count()]);
        let (out, buffer) = tokio::task::spawn_blocking(move || {
            let out = work(&mut buffer);
            (out, buffer)
        })
        .await
        .map_err(|e| ApiError::Unavailable(format!("password hashing failed: {e}")))?;
        if let Ok(mut buffers) = self.buffers.lock() {
            buffers.push(buffer);
        }
        Ok(out)
    }

    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        let params = self.params.clone();
        self.with_buffer(move |buffer| hash_with(&params, password.as_bytes(), buffer))
            .await?
            .map_err(ApiError::Unavailable)
    }

    /// Verifies `password` against `hash`, or against a dummy hash when there is none.
    pub async fn verify(&self, password: String, hash: Option<String>) -> bool {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy_hash.clone());
        let ok = self.with_buffer(move |buffer| verify_with(password.as_bytes(), &hash, buffer)).await.unwrap_or(false);
        ok && known
    }
}

fn hash_with(params: &Params, password: &[u8], buffer: &mut [Block]) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes).map_err(|e| e.to_string())?;
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let output = Output::init_with(len, |out| {
        argon2.hash_password_into_with_memory(password, salt_bytes, out, &mut *buffer).map_err(Into::into)
    })
    .map_err(|e| e.to_string())?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|e| e.to_string())?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(phc.to_string())
}

/// Checks `password` against a PHC string with the string's own algorithm, version and parameters. The
/// slot's buffer serves when the parameters are the configured ones; a hash stored under other
/// parameters gets memory of its own size for this check only.
fn verify_with(password: &[u8], phc: &str, buffer: &mut [Block]) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else { return false };
    let (Ok(algorithm), Ok(params), Some(expected), Some(salt)) =
        (Algorithm::try_from(parsed.algorithm), Params::try_from(&parsed), parsed.hash, parsed.salt)
    else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_bytes) else { return false };
    let mut own;
    let memory: &mut [Block] = if buffer.len() == params.block_count() {
        buffer
    } else {
        own = vec![Block::default(); params.block_count()];
        &mut own
    };
    let argon2 = Argon2::new(algorithm, version, params);
    let mut out = vec![0u8; expected.len()];
    if argon2.hash_password_into_with_memory(password, salt_bytes, &mut out, memory).is_err() {
        return false;
    }
    // `Output`'s equality runs in constant time.
    Output::new(&out).is_ok_and(|computed| computed == expected)
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

    #[tokio::test]
    async fn hashes_are_standard_phc_strings_and_other_parameters_still_verify() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let p = Passwords::new(64, 1, 1).expect("params");
        let ours = p.hash("correct horse".into()).await.expect("hash");
        let parsed = PasswordHash::new(&ours).expect("phc");
        assert!(Argon2::default().verify_password(b"correct horse", &parsed).is_ok(), "{ours}");
        // A hash stored before the parameters changed carries its own, and needs memory of its own size.
        let older = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(128, 2, 1, None).expect("params"))
            .hash_password(b"older horse", &SaltString::generate(&mut OsRng))
            .expect("hash")
            .to_string();
        assert!(p.verify("older horse".into(), Some(older.clone())).await);
        assert!(!p.verify("other horse".into(), Some(older)).await);
        assert!(!p.verify("correct horse".into(), Some("$argon2id$v=19$m=64,t=1,p=1$bm90aGluZw".into())).await);
        // Every buffer is back in the pool after use.
        assert_eq!(p.buffers.lock().expect("pool").len(), p.slots.available_permits());
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
