//! `monoize:plugin/crypto`: the secrets handling the host does for the dashboard. Passwords are
//! hashed with argon2id (PHC strings, a fresh salt each), tokens come from the operating
//! system's randomness, and API keys and session tokens are stored under
//! [`hash_secret`], which is the gateway's own [`hash_api_key`]: a key the dashboard creates
//! must authenticate at the gateway.
//!
//! Argon2 is slow on purpose (tens of milliseconds), so it runs on a blocking thread and the
//! wait is credited to the call's time bound: a login never times the plugin out. The OS
//! failing to give randomness is a host fault, and traps the call.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64ct::{Base64UrlUnpadded, Encoding};

use crate::gateway::auth::hash_api_key;

use super::store::PluginState;
use super::wit::latest::crypto::Host;

/// The fewest and most random bytes a token is made of.
pub const TOKEN_BYTES: std::ops::RangeInclusive<u32> = 16..=64;

/// Why a secret could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The operating system gave no randomness.
    #[error("no randomness from the operating system: {0}")]
    Randomness(String),
    /// Argon2 refused the input.
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// An argon2id PHC string of `password` with a fresh 16-byte salt (the crate's default
/// parameters: 19 MiB, 2 passes, 1 lane).
pub fn hash_password(password: &str) -> Result<String, CryptoError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|error| CryptoError::Randomness(error.to_string()))?;
    let salt =
        SaltString::encode_b64(&salt).map_err(|error| CryptoError::Hash(error.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| CryptoError::Hash(error.to_string()))
}

/// Whether `password` matches the PHC string `hash`; false for a malformed hash.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// `bytes` (clamped to [`TOKEN_BYTES`]) random bytes from the OS, URL-safe base64 without
/// padding.
pub fn random_token(bytes: u32) -> Result<String, CryptoError> {
    let count = bytes.clamp(*TOKEN_BYTES.start(), *TOKEN_BYTES.end()) as usize;
    let mut buffer = vec![0u8; count];
    getrandom::fill(&mut buffer).map_err(|error| CryptoError::Randomness(error.to_string()))?;
    Ok(Base64UrlUnpadded::encode_string(&buffer))
}

/// The hash an API key or session token is stored and looked up under.
pub fn hash_secret(secret: &str) -> String {
    hash_api_key(secret)
}

impl Host for PluginState {
    async fn hash_password(&mut self, password: String) -> wasmtime::Result<String> {
        let hashed = self
            .host_wait(tokio::task::spawn_blocking(move || {
                hash_password(&password)
            }))
            .await??;
        Ok(hashed)
    }

    async fn verify_password(&mut self, password: String, hash: String) -> wasmtime::Result<bool> {
        let matches = self
            .host_wait(tokio::task::spawn_blocking(move || {
                verify_password(&password, &hash)
            }))
            .await?;
        Ok(matches)
    }

    async fn random_token(&mut self, bytes: u32) -> wasmtime::Result<String> {
        Ok(random_token(bytes)?)
    }

    async fn hash_secret(&mut self, secret: String) -> wasmtime::Result<String> {
        Ok(hash_secret(&secret))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_to_argon2id_and_verify() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("correct horsf", &hash));
        assert_ne!(hash, hash_password("correct horse").unwrap(), "fresh salt");
        assert!(!verify_password("x", "not a phc string"));
        assert!(!verify_password("x", ""));
    }

    #[test]
    fn tokens_are_url_safe_and_clamped() {
        let token = random_token(32).unwrap();
        assert_eq!(token.len(), 43);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_ne!(token, random_token(32).unwrap());
        assert_eq!(random_token(0).unwrap().len(), 22);
        assert_eq!(random_token(1000).unwrap().len(), 86);
    }

    #[test]
    fn secrets_hash_like_the_gateway() {
        assert_eq!(hash_secret("sk-abc"), hash_api_key("sk-abc"));
    }
}
