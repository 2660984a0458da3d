//! The admin API's credentials: a token checked against its stored sha256, so the token
//! itself is never kept on the node.

use crate::digest::sha256_hex;

/// Checks admin tokens against a sha256, so the token itself is never stored.
#[derive(Clone)]
pub struct AdminAuth {
    hash: String,
}

impl AdminAuth {
    /// From the token itself.
    pub fn from_token(token: &str) -> Self {
        AdminAuth {
            hash: sha256_hex(token.as_bytes()),
        }
    }

    /// From a stored hash.
    pub fn from_hash(hash: String) -> Self {
        AdminAuth { hash }
    }

    /// The hash, for storing.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Whether `token` is the admin token (constant time in the token's hash).
    pub fn accepts(&self, token: &str) -> bool {
        let presented = sha256_hex(token.as_bytes());
        presented.len() == self.hash.len()
            && presented
                .bytes()
                .zip(self.hash.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_compared_by_hash() {
        let auth = AdminAuth::from_token("0123456789abcdef");
        assert!(auth.accepts("0123456789abcdef"));
        assert!(!auth.accepts("0123456789abcdeg"));
        assert!(!auth.accepts(""));
        let again = AdminAuth::from_hash(auth.hash().to_owned());
        assert!(again.accepts("0123456789abcdef"));
    }
}
