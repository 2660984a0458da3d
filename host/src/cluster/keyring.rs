//! The cluster keyring: gossip datagrams sealed with XChaCha20-Poly1305 (AEAD), so a node
//! without a key of the ring can neither read the cluster's gossip nor inject into it.
//!
//! As Serf/memberlist's keyring: several keys at once, the first seals what this node sends,
//! every key opens what it receives. A key is rotated without downtime by (1) adding the new
//! key on every node, (2) making it the first on every node, (3) removing the old one. Each
//! sealed datagram names its key by a one-byte id (the first byte of the key's sha256), so
//! opening tries one key, not all.
//!
//! Sealed datagram: `[1 version][1 key id][24 nonce][ciphertext + 16 tag]`, the version and key
//! id bound as associated data. A random 24-byte nonce per datagram cannot repeat in practice.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::digest::sha256_hex;

/// Bytes of a key.
pub const KEY_LEN: usize = 32;
/// Bytes a sealed datagram adds to its plaintext.
pub const OVERHEAD: usize = 2 + NONCE_LEN + TAG_LEN;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const VERSION: u8 = 1;

/// A keyring that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    /// No key in it.
    #[error("the gossip keyring holds no key (one hex key of 64 digits per line)")]
    Empty,
    /// A line is not a key.
    #[error("gossip keyring line {line}: {why}")]
    BadKey {
        /// 1-based line number.
        line: usize,
        /// What is wrong (never the key itself).
        why: &'static str,
    },
    /// Two keys share their one-byte id.
    #[error("gossip keyring lines {0} and {1} have the same key id; generate another key")]
    Collision(usize, usize),
    /// No randomness for a nonce or a key.
    #[error("no randomness: {0}")]
    Random(String),
}

/// Why a datagram was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Too short, or of another version.
    #[error("not a sealed gossip datagram")]
    Malformed,
    /// Sealed with a key this ring does not hold.
    #[error("sealed with a key this node does not hold")]
    UnknownKey,
    /// The tag does not verify: altered, or sealed with another key of the same id.
    #[error("does not verify")]
    Forged,
}

struct Key {
    id: u8,
    cipher: XChaCha20Poly1305,
}

/// The keys of a cluster; the first seals.
pub struct Keyring {
    keys: Vec<Key>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<u8> = self.keys.iter().map(|k| k.id).collect();
        f.debug_struct("Keyring").field("key_ids", &ids).finish()
    }
}

fn hex_key(text: &str) -> Option<[u8; KEY_LEN]> {
    if text.len() != KEY_LEN * 2 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; KEY_LEN];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl Keyring {
    /// Reads a keyring file's text: one key per line as 64 hex digits, the first seals; empty
    /// lines and `#` comments are skipped.
    pub fn parse(text: &str) -> Result<Keyring, KeyringError> {
        let mut keys: Vec<(usize, Key)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let raw = hex_key(line).ok_or(KeyringError::BadKey {
                line: i + 1,
                why: "not 64 hex digits (make one with `mpreg cluster keygen`)",
            })?;
            let id = u8::from_str_radix(&sha256_hex(&raw)[..2], 16).unwrap_or(0);
            if let Some((other, _)) = keys.iter().find(|(_, k)| k.id == id) {
                return Err(KeyringError::Collision(*other, i + 1));
            }
            let cipher =
                XChaCha20Poly1305::new_from_slice(&raw).map_err(|_| KeyringError::BadKey {
                    line: i + 1,
                    why: "not a 32-byte key",
                })?;
            keys.push((i + 1, Key { id, cipher }));
        }
        if keys.is_empty() {
            return Err(KeyringError::Empty);
        }
        Ok(Keyring {
            keys: keys.into_iter().map(|(_, k)| k).collect(),
        })
    }

    /// A new random key, as a keyring line.
    pub fn generate() -> Result<String, KeyringError> {
        let mut raw = [0u8; KEY_LEN];
        getrandom::fill(&mut raw).map_err(|e| KeyringError::Random(e.to_string()))?;
        Ok(raw.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// How many keys it holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether it holds none (never, once parsed).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// `plain` sealed with the first key.
    pub fn seal(&self, plain: &[u8]) -> Result<Vec<u8>, KeyringError> {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| KeyringError::Random(e.to_string()))?;
        let aad = [VERSION, key.id];
        let sealed = key
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            .map_err(|_| KeyringError::Random("encryption failed".into()))?;
        let mut out = Vec::with_capacity(OVERHEAD + plain.len());
        out.extend_from_slice(&aad);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The plaintext of a datagram sealed with any key of the ring.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        if sealed.len() < OVERHEAD || sealed[0] != VERSION {
            return Err(OpenError::Malformed);
        }
        let id = sealed[1];
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or(OpenError::UnknownKey)?;
        let nonce = XNonce::from_slice(&sealed[2..2 + NONCE_LEN]);
        key.cipher
            .decrypt(
                nonce,
                Payload {
                    msg: &sealed[2 + NONCE_LEN..],
                    aad: &sealed[..2],
                },
            )
            .map_err(|_| OpenError::Forged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ring(lines: &[&str]) -> Keyring {
        Keyring::parse(&lines.join("\n")).expect("keyring")
    }

    fn key() -> String {
        Keyring::generate().expect("key")
    }

    #[test]
    fn the_first_key_seals_and_every_key_opens() {
        let (old, new) = (key(), key());
        let before = ring(&[&old]);
        let during = ring(&[&old, &new]);
        let after = ring(&[&new, &old]);
        let done = ring(&[&new]);
        let m = b"gossip";
        // Every step of a rotation reads what the steps next to it send.
        for (a, b) in [(&before, &during), (&during, &after), (&after, &done)] {
            assert_eq!(b.open(&a.seal(m).expect("seal")).expect("open"), m);
            assert_eq!(a.open(&b.seal(m).expect("seal")).expect("open"), m);
        }
        assert_eq!(
            done.open(&before.seal(m).expect("seal")),
            Err(OpenError::UnknownKey)
        );
    }

    #[test]
    fn altered_foreign_and_short_datagrams_are_refused() {
        let r = ring(&[&key()]);
        let mut sealed = r.seal(b"state").expect("seal");
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert_eq!(r.open(&sealed), Err(OpenError::Forged));
        sealed[last] ^= 1;
        sealed[1] ^= 0xff;
        assert!(r.open(&sealed).is_err(), "another key id");
        assert_eq!(r.open(b"short"), Err(OpenError::Malformed));
        assert_eq!(
            r.open(&[0u8; OVERHEAD + 4]),
            Err(OpenError::Malformed),
            "version 0"
        );
    }

    #[test]
    fn bad_keyring_files_say_which_line() {
        assert_eq!(
            Keyring::parse("# nothing\n\n").err(),
            Some(KeyringError::Empty)
        );
        let e = Keyring::parse(&format!("{}\nnot-a-key\n", key())).expect_err("bad");
        assert!(matches!(e, KeyringError::BadKey { line: 2, .. }), "{e}");
        let k = key();
        let e = Keyring::parse(&format!("{k}\n{k}\n")).expect_err("same key twice");
        assert_eq!(e, KeyringError::Collision(1, 2));
    }

    proptest! {
        /// Whatever arrives, opening never panics, and only the sealed text opens.
        #[test]
        fn opening_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let r = ring(&["00".repeat(32).as_str()]);
            let _ = r.open(&bytes);
            let sealed = r.seal(&bytes).expect("seal");
            prop_assert_eq!(r.open(&sealed).expect("open"), bytes);
        }
    }
}
