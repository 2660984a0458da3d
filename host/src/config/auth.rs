//! `[auth]`: who may connect and what each identity may do (docs/security.md).
//!
//! ```toml
//! [auth]
//! keys_file = "keys.toml"          # API keys, managed by `mpreg auth key new|list|revoke`
//! anonymous = "public"             # role of clients without a credential (unset: refused)
//!
//! [auth.roles.public]
//! functions = ["echo"]
//!
//! [[auth.jwt]]
//! algorithm = "HS256"
//! secret_env = "MPREG_JWT_SECRET"
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::auth::policy::{Policy, PolicySpec, Roles};

/// `[auth]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The API keys file (`[[key]]` entries holding sha256 hashes, never keys); re-read when it
    /// changes, so a key added or revoked takes effect without a restart.
    pub keys_file: Option<PathBuf>,
    /// Keys that verify bearer JWTs; a token verified by any of them is accepted.
    pub jwt: Vec<JwtKeyConfig>,
    /// Named policies, given to identities by name (`roles = [...]` of a key or a token).
    pub roles: Roles,
    /// The role of a client that presents no credential; unset: such a client is refused
    /// with 401.
    pub anonymous: Option<String>,
    /// `/metrics`, `/monitor/*` and the dashboard without credentials (otherwise they need an
    /// identity with the admin scope `read`).
    pub public_metrics: bool,
    /// Identities of clients by their verified certificate (`tls.client_ca`): the key is the
    /// sha256 of the leaf certificate's DER, in hex (`openssl x509 -noout -fingerprint
    /// -sha256`, colons allowed). The only way a TCP client, which sends no headers, gets an
    /// identity other than the anonymous role.
    pub certificates: BTreeMap<String, CertificateIdentity>,
}

/// The identity of a client certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateIdentity {
    /// Its name in logs and denials.
    pub name: String,
    /// Its roles.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// A certificate fingerprint as written (hex, any case, colons allowed) in the form the
/// table is looked up by: lowercase hex without colons.
pub fn fingerprint_key(written: &str) -> String {
    written
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase()
}

/// One key that verifies JWTs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtKeyConfig {
    /// `HS256`, `HS384`, `HS512`, `RS256`, `RS384`, `RS512`, `PS256`, `ES256`, `ES384` or
    /// `EdDSA`.
    pub algorithm: String,
    /// The shared secret of an HMAC algorithm, from this environment variable.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// The shared secret of an HMAC algorithm, from this file (its bytes, trailing newline
    /// removed).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// The public key (PEM) of an RSA, EC or Ed25519 algorithm.
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
    /// Required `iss`, when set.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Required `aud`, when set.
    #[serde(default)]
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_s: u64,
}

fn default_leeway() -> u64 {
    30
}

impl AuthConfig {
    /// Whether clients must present credentials (a keys file, a JWT key or a certificate
    /// identity is configured).
    pub fn enabled(&self) -> bool {
        self.keys_file.is_some() || !self.jwt.is_empty() || !self.certificates.is_empty()
    }

    /// Makes relative paths relative to `base` (the config file's folder).
    pub fn resolve_paths(&mut self, base: &std::path::Path) {
        let jwt_paths = self
            .jwt
            .iter_mut()
            .flat_map(|k| [&mut k.secret_file, &mut k.public_key_file]);
        for path in std::iter::once(&mut self.keys_file)
            .chain(jwt_paths)
            .flatten()
        {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }

    /// Checks roles compile and references resolve; the first problem, said plainly.
    pub fn validate(&self) -> Result<(), String> {
        for (name, spec) in &self.roles {
            Policy::new(spec.clone()).map_err(|e| format!("auth.roles.{name}: {e}"))?;
        }
        if let Some(role) = &self.anonymous
            && !self.roles.contains_key(role)
        {
            return Err(format!(
                "auth.anonymous names the role '{role}', which [auth.roles] does not define"
            ));
        }
        if self.anonymous.is_some() && !self.enabled() {
            return Err(
                "auth.anonymous needs auth.keys_file, an [[auth.jwt]] key or auth.certificates"
                    .into(),
            );
        }
        for (fp, id) in &self.certificates {
            let key = fingerprint_key(fp);
            if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "auth.certificates: '{fp}' is not a sha256 fingerprint (64 hex digits)"
                ));
            }
            if let Some(r) = id.roles.iter().find(|r| !self.roles.contains_key(*r)) {
                return Err(format!(
                    "auth.certificates['{fp}'] names the role '{r}', which [auth.roles] does not define"
                ));
            }
        }
        for (i, k) in self.jwt.iter().enumerate() {
            let hmac = k.algorithm.starts_with("HS");
            let secrets =
                usize::from(k.secret_env.is_some()) + usize::from(k.secret_file.is_some());
            match (hmac, secrets, k.public_key_file.is_some()) {
                (true, 1, false) | (false, 0, true) => {}
                (true, _, _) => {
                    return Err(format!(
                        "auth.jwt[{i}]: {} needs exactly one of secret_env and secret_file",
                        k.algorithm
                    ));
                }
                (false, _, _) => {
                    return Err(format!(
                        "auth.jwt[{i}]: {} needs public_key_file (and no secret)",
                        k.algorithm
                    ));
                }
            }
        }
        Ok(())
    }

    /// The policy of `roles` merged (unknown roles are skipped and named in the second
    /// value).
    pub fn policy_of<'a>(
        &self,
        roles: impl IntoIterator<Item = &'a str>,
    ) -> (PolicySpec, Vec<String>) {
        let mut spec = PolicySpec::default();
        let mut unknown = Vec::new();
        for r in roles {
            match self.roles.get(r) {
                Some(p) => spec.merge(p),
                None => unknown.push(r.to_owned()),
            }
        }
        (spec, unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> AuthConfig {
        toml::from_str(text).expect("auth config")
    }

    #[test]
    fn roles_and_keys_are_read_and_checked() {
        let c = parse(
            r#"
            keys_file = "keys.toml"
            anonymous = "public"
            [roles.public]
            functions = ["echo"]
            [roles.ops]
            admin = ["*"]
            [[jwt]]
            algorithm = "HS256"
            secret_env = "S"
            "#,
        );
        assert!(c.enabled());
        c.validate().expect("valid");
        let (spec, unknown) = c.policy_of(["public", "ops", "ghost"]);
        assert_eq!(spec.functions, ["echo"]);
        assert_eq!(spec.admin, ["*"]);
        assert_eq!(unknown, ["ghost"]);
    }

    #[test]
    fn mistakes_are_named() {
        let bad = |t: &str| parse(t).validate().expect_err("invalid");
        assert!(bad("anonymous = \"x\"\nkeys_file = \"k\"").contains("'x'"));
        assert!(bad("[roles.r]\nfunctions = [\"f@>>\"]").contains("auth.roles.r"));
        assert!(bad("[[jwt]]\nalgorithm = \"HS256\"").contains("secret_env"));
        assert!(
            bad("[[jwt]]\nalgorithm = \"RS256\"\nsecret_env = \"S\"").contains("public_key_file")
        );
        assert!(bad("anonymous = \"p\"\n[roles.p]\nfunctions = [\"echo\"]").contains("keys_file"));
        assert!(
            toml::from_str::<AuthConfig>("keyfile = \"x\"").is_err(),
            "unknown keys"
        );
    }
}
