//! API keys: minting them and hashing them into the argon2id PHC strings the config stores.

use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;

/// 256 random bits, URL-safe base64 (43 characters): safe in a Basic password and a shell.
pub fn new_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// argon2id, m = 7 MiB, t = 5, p = 1: one of the settings the OWASP Password Storage Cheat Sheet
/// lists as equal in strength to its m = 19 MiB, t = 2 minimum. Each first verification of a key
/// allocates m: the peak after it is 12 MiB lower, and the check itself quicker
/// (benches/ANALYSIS.md).
pub fn hash_key(key: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(hasher()?.hash_password(key.as_bytes(), &salt)?.to_string())
}

const MEMORY_KIB: u32 = 7 * 1024;
const ITERATIONS: u32 = 5;

fn hasher() -> Result<Argon2<'static>, argon2::password_hash::Error> {
    let params = argon2::Params::new(MEMORY_KIB, ITERATIONS, 1, None)?;
    Ok(Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        params,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHash, PasswordVerifier};

    #[test]
    fn new_keys_are_long_random_and_url_safe() {
        let (a, b) = (new_key(), new_key());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }

    #[test]
    fn hash_verifies_only_its_own_key() {
        let hash = hash_key("s3cret").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{hash}");
        let parsed = PasswordHash::new(&hash).unwrap();
        assert!(Argon2::default()
            .verify_password(b"s3cret", &parsed)
            .is_ok());
        assert!(Argon2::default()
            .verify_password(b"s3cret ", &parsed)
            .is_err());
    }
}
