//! Phone numbers as they may appear outside the stores: one keyed hash, used by logs, CSV
//! exports, SMS response ids and the admin API alike, so a number has one pseudonym
//! everywhere and a log line can be matched to an exported row by whoever holds both.
//!
//! The pseudonym is the first 64 bits of HMAC-SHA256(key, number), in hex: collisions are
//! negligible for any survey size, and without the key it cannot be reversed by trying every
//! number. It never returns or logs the number itself; the key comes from config
//! ([`crate::config::Config::pseudonym_key`], at least 16 bytes).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Hex digits kept (64 bits).
const HEX_DIGITS: usize = 16;

/// The keyed hash, ready to use (the key schedule done once).
#[derive(Clone)]
pub struct Pseudonymiser {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Pseudonymiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonymiser(<key redacted>)")
    }
}

impl Pseudonymiser {
    /// A pseudonymiser with `key` (HMAC takes a key of any length; config enforces 16 bytes).
    pub fn new(key: &[u8]) -> Pseudonymiser {
        // HMAC hashes a long key and pads a short one: no length is refused.
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
            .unwrap_or_else(|_| <Hmac<Sha256> as hmac::digest::KeyInit>::new(&Default::default()));
        Pseudonymiser { mac }
    }

    /// The pseudonym of `number`.
    pub fn of(&self, number: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(number.as_bytes());
        let mut digest = hex::encode(mac.finalize().into_bytes());
        digest.truncate(HEX_DIGITS);
        digest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_number_one_pseudonym_per_key() {
        let a = Pseudonymiser::new(b"0123456789abcdef");
        let b = Pseudonymiser::new(b"fedcba9876543210");
        let p = a.of("+254700000001");
        assert_eq!(p.len(), HEX_DIGITS);
        assert!(p.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(p, a.of("+254700000001"));
        assert_ne!(p, a.of("+254700000002"));
        assert_ne!(p, b.of("+254700000001"));
        assert!(!p.contains("254700000001"));
    }
}
