//! Turning a presented credential into a [`Principal`] (`[auth]`): a static key looked up by
//! its sha256 in the keys file (re-read when the file changes), or a JWT verified by a
//! configured key; with no credential, the anonymous role if one is configured.
//!
//! Failures say what is wrong with the credential in general terms and never echo it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::Principal;
use super::credentials::Credential;
use super::jwt::{JwtError, Verifier};
use super::keys::{KeysError, KeysFile};
use super::policy::{Policy, PolicySpec};
use crate::config::AuthConfig;
use crate::config::auth::fingerprint_key;
use crate::digest::sha256_hex;

/// Why a client is not let in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Credentials are required and none came.
    #[error(
        "this node requires credentials: send `Authorization: Bearer <token>` or `X-API-Key: <key>`"
    )]
    Missing,
    /// No key matches.
    #[error("the API key is not known (revoked, or from another node)")]
    UnknownKey,
    /// A JWT was refused.
    #[error("{0}")]
    Token(#[from] JwtError),
    /// The identity holds a role that no longer exists, or a policy that does not compile.
    #[error("the identity's permissions cannot be read: {0}")]
    Policy(String),
}

impl AuthError {
    /// The HTTP status the upgrade is refused with.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::Missing | AuthError::UnknownKey | AuthError::Token(_) => 401,
            AuthError::Policy(_) => 403,
        }
    }

    /// A short label for the refusal counter.
    pub fn label(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::UnknownKey => "unknown_key",
            AuthError::Token(JwtError::Expired) => "expired",
            AuthError::Token(_) => "bad_token",
            AuthError::Policy(_) => "bad_policy",
        }
    }
}

/// The keys file as last read: principals by the sha256 of their key.
#[derive(Default)]
struct Keys {
    stamp: Option<(SystemTime, u64)>,
    by_hash: HashMap<String, Principal>,
}

/// Authenticates clients for one node.
pub struct Authenticator {
    config: AuthConfig,
    keys_file: Option<PathBuf>,
    keys: Mutex<Keys>,
    jwt: Option<Verifier>,
    anonymous: Option<Principal>,
    /// Keys file re-reads that failed (the previous keys stay in force).
    pub reload_errors: AtomicU64,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("keys_file", &self.keys_file)
            .field("jwt", &self.jwt)
            .finish_non_exhaustive()
    }
}

/// The `[auth]` section cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The keys file.
    #[error(transparent)]
    Keys(#[from] KeysError),
    /// A JWT key.
    #[error(transparent)]
    Jwt(#[from] JwtError),
    /// A role.
    #[error("{0}")]
    Policy(String),
}

impl Authenticator {
    /// Sets up from `[auth]`; `None` when no credentials are configured (every client is
    /// anonymous and unrestricted, on loopback only unless `--insecure`).
    pub fn new(
        config: &AuthConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Arc<Authenticator>>, SetupError> {
        if !config.enabled() {
            return Ok(None);
        }
        let jwt = (!config.jwt.is_empty())
            .then(|| Verifier::new(&config.jwt, env))
            .transpose()?;
        let anonymous = match &config.anonymous {
            Some(role) => Some(
                principal(config, "anonymous", std::slice::from_ref(role), None)
                    .map_err(SetupError::Policy)?,
            ),
            None => None,
        };
        let auth = Authenticator {
            config: config.clone(),
            keys_file: config.keys_file.clone(),
            keys: Mutex::new(Keys::default()),
            jwt,
            anonymous,
            reload_errors: AtomicU64::new(0),
        };
        // A bad keys file stops the start, rather than a node that lets nobody in.
        if let Some(path) = &auth.keys_file {
            let file = KeysFile::load(path)?;
            let mut keys = auth.lock();
            keys.by_hash = auth.index(&file).map_err(SetupError::Policy)?;
            keys.stamp = stamp(path);
        }
        Ok(Some(Arc::new(auth)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Keys> {
        // Nothing panics while it is held.
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn index(&self, file: &KeysFile) -> Result<HashMap<String, Principal>, String> {
        file.key
            .iter()
            .map(|k| {
                let p = principal(&self.config, &k.name, &k.roles, k.policy.as_ref())
                    .map_err(|e| format!("key '{}': {e}", k.id))?;
                Ok((k.sha256.to_ascii_lowercase(), p))
            })
            .collect()
    }

    /// Re-reads the keys file when its modification time or size changed. A file that no
    /// longer reads keeps the keys in force and is counted.
    fn refresh(&self) {
        let Some(path) = &self.keys_file else { return };
        let now = stamp(path);
        let mut keys = self.lock();
        if now == keys.stamp {
            return;
        }
        match KeysFile::load(path)
            .map_err(|e| e.to_string())
            .and_then(|f| self.index(&f))
        {
            Ok(by_hash) => {
                keys.by_hash = by_hash;
                keys.stamp = now;
            }
            Err(e) => {
                keys.stamp = now;
                self.reload_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "keys file not reloaded; the previous keys stay in force");
            }
        }
    }

    /// The principal of a verified client certificate (`der`, the leaf), when
    /// `[auth.certificates]` names it.
    pub fn certificate(&self, der: &[u8]) -> Option<Result<Principal, AuthError>> {
        let key = sha256_hex(der);
        let id = self
            .config
            .certificates
            .iter()
            .find(|(fp, _)| fingerprint_key(fp) == key)
            .map(|(_, id)| id)?;
        Some(principal(&self.config, &id.name, &id.roles, None).map_err(AuthError::Policy))
    }

    /// The principal `credential` stands for.
    pub fn authenticate(&self, credential: Option<&Credential>) -> Result<Principal, AuthError> {
        let Some(c) = credential else {
            return self.anonymous.clone().ok_or(AuthError::Missing);
        };
        if let (Some(v), true) = (&self.jwt, c.looks_like_jwt()) {
            let claims = v.verify(c.secret())?;
            return principal(
                &self.config,
                &claims.sub,
                &claims.roles,
                claims.mpreg.as_ref(),
            )
            .map_err(AuthError::Policy);
        }
        self.refresh();
        let hash = sha256_hex(c.secret().as_bytes());
        match self.lock().by_hash.get(&hash) {
            Some(p) => Ok(p.clone()),
            None if self.jwt.is_some() && self.keys_file.is_none() => {
                Err(AuthError::Token(JwtError::Malformed("not a JWT".into())))
            }
            None => Err(AuthError::UnknownKey),
        }
    }
}

fn stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// The principal `name` with `roles` and its own `extra` permissions.
fn principal(
    config: &AuthConfig,
    name: &str,
    roles: &[String],
    extra: Option<&PolicySpec>,
) -> Result<Principal, String> {
    let (mut spec, unknown) = config.policy_of(roles.iter().map(String::as_str));
    if let Some(first) = unknown.first() {
        return Err(format!("role '{first}' is not defined in [auth.roles]"));
    }
    if let Some(e) = extra {
        spec.merge(e);
    }
    let policy = Policy::new(spec).map_err(|e| e.to_string())?;
    Ok(Principal::new(name, Arc::new(policy)))
}

#[cfg(test)]
mod tests {
    use super::super::jwt::{Claims, mint};
    use super::super::policy::Need;
    use super::*;
    use crate::config::auth::JwtKeyConfig;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn config(dir: &std::path::Path) -> AuthConfig {
        let mut c: AuthConfig = toml::from_str(
            r#"
            [roles.reader]
            functions = ["echo"]
            [roles.all]
            functions = ["*"]
            "#,
        )
        .expect("config");
        c.keys_file = Some(dir.join("keys.toml"));
        c.jwt.push(JwtKeyConfig {
            algorithm: "HS256".into(),
            secret_env: Some("S".into()),
            secret_file: None,
            public_key_file: None,
            issuer: None,
            audience: None,
            leeway_s: 0,
        });
        c
    }

    fn echo() -> Need<'static> {
        Need::Call {
            name: "echo",
            function_id: "echo",
            version: None,
        }
    }

    #[test]
    fn keys_and_tokens_become_principals_and_revocation_takes_effect() {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = config(dir.path());
        let path = cfg.keys_file.clone().expect("path");
        let mut file = KeysFile::default();
        let (key, entry) = file.add("ci", vec!["reader".into()]).expect("add");
        file.save(&path).expect("save");
        let auth = Authenticator::new(&cfg, &|_| Some(SECRET.into()))
            .expect("setup")
            .expect("enabled");
        assert_eq!(auth.authenticate(None).err(), Some(AuthError::Missing));
        let p = auth
            .authenticate(Some(&Credential::ApiKey(key.clone())))
            .expect("key");
        assert_eq!(p.name(), "ci");
        assert!(p.may(&echo()));
        assert_eq!(
            auth.authenticate(Some(&Credential::Bearer("mpreg_nope".into())))
                .err(),
            Some(AuthError::UnknownKey)
        );
        let claims = Claims {
            sub: "bob".into(),
            exp: crate::clock::unix_now() as u64 + 60,
            nbf: None,
            iat: None,
            iss: None,
            aud: None,
            roles: vec!["all".into()],
            mpreg: None,
        };
        let token = mint(&claims, "HS256", SECRET.as_bytes()).expect("mint");
        let bob = auth
            .authenticate(Some(&Credential::Bearer(token)))
            .expect("token");
        assert_eq!(bob.name(), "bob");
        // Revoke: the file changes, the next connection is refused.
        file.revoke(&entry.id).expect("revoke");
        std::thread::sleep(std::time::Duration::from_millis(20));
        file.save(&path).expect("save");
        assert_eq!(
            auth.authenticate(Some(&Credential::ApiKey(key))).err(),
            Some(AuthError::UnknownKey)
        );
        let mut ghost = claims.clone();
        ghost.roles = vec!["ghost".into()];
        let token = mint(&ghost, "HS256", SECRET.as_bytes()).expect("mint");
        let e = auth
            .authenticate(Some(&Credential::Bearer(token)))
            .expect_err("unknown role");
        assert_eq!(e.status(), 403);
    }

    #[test]
    fn the_anonymous_role_is_given_to_clients_without_credentials() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut cfg = config(dir.path());
        cfg.anonymous = Some("reader".into());
        let auth = Authenticator::new(&cfg, &|_| Some(SECRET.into()))
            .expect("setup")
            .expect("enabled");
        let anon = auth.authenticate(None).expect("anonymous");
        assert!(anon.may(&echo()));
        assert!(!anon.may(&Need::Publish("x")));
        assert!(
            Authenticator::new(&AuthConfig::default(), &|_| None)
                .expect("off")
                .is_none()
        );
    }
}
