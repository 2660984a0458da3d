//! Bearer JWTs (`[[auth.jwt]]`): verified with the configured keys by `jsonwebtoken`, `exp`
//! required and `nbf` honoured, with the identity in `sub` and its permissions in `roles`
//! (names of `[auth.roles]`) and an optional `mpreg` claim (a policy of its own).

use std::path::Path;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::policy::PolicySpec;
use crate::config::auth::JwtKeyConfig;

/// What a token says about its holder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// The identity.
    pub sub: String,
    /// Expiry (Unix seconds).
    pub exp: u64,
    /// Not before (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// Roles of `[auth.roles]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Permissions of its own, merged with its roles'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mpreg: Option<PolicySpec>,
}

/// A JWT key that cannot be used, or a token that is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// The configured key is unusable.
    #[error("auth.jwt key: {0}")]
    Key(String),
    /// The token expired.
    #[error("the token has expired")]
    Expired,
    /// The token is not valid yet (`nbf`).
    #[error("the token is not valid yet (nbf)")]
    NotYet,
    /// No configured key verifies its signature (or takes its algorithm).
    #[error("the token's signature is not valid for any configured key")]
    Signature,
    /// Wrong `iss` or `aud`.
    #[error("the token's {0} is not accepted")]
    Claim(&'static str),
    /// Not a JWT, or claims missing or of the wrong type.
    #[error("the token is malformed: {0}")]
    Malformed(String),
}

/// One verifying key with its rules.
struct Key {
    key: DecodingKey,
    validation: Validation,
}

/// Verifies tokens against every configured key.
pub struct Verifier {
    keys: Vec<Key>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keys.len())
            .finish()
    }
}

fn algorithm(name: &str) -> Result<Algorithm, JwtError> {
    name.parse()
        .map_err(|_| JwtError::Key(format!("unknown algorithm '{name}'")))
}

/// The HMAC secret of `k`, from its environment variable or file.
fn secret(k: &JwtKeyConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<u8>, JwtError> {
    let bytes = match (&k.secret_env, &k.secret_file) {
        (Some(var), _) => env(var)
            .ok_or_else(|| JwtError::Key(format!("environment variable {var} is not set")))?
            .into_bytes(),
        (None, Some(path)) => {
            let mut b = std::fs::read(path)
                .map_err(|e| JwtError::Key(format!("{}: {e}", path.display())))?;
            while b.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
                b.pop();
            }
            b
        }
        (None, None) => return Err(JwtError::Key("no secret configured".into())),
    };
    if bytes.len() < 32 {
        return Err(JwtError::Key(
            "an HMAC secret must be at least 32 bytes".into(),
        ));
    }
    Ok(bytes)
}

fn read_pem(path: &Path) -> Result<Vec<u8>, JwtError> {
    std::fs::read(path).map_err(|e| JwtError::Key(format!("{}: {e}", path.display())))
}

impl Verifier {
    /// Loads every key; `env` reads environment variables.
    pub fn new(
        configs: &[JwtKeyConfig],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Verifier, JwtError> {
        let mut keys = Vec::with_capacity(configs.len());
        for k in configs {
            let alg = algorithm(&k.algorithm)?;
            let key = match (alg, &k.public_key_file) {
                (Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512, _) => {
                    Ok(DecodingKey::from_secret(&secret(k, env)?))
                }
                (_, None) => return Err(JwtError::Key(format!("{alg:?} needs public_key_file"))),
                (Algorithm::EdDSA, Some(p)) => DecodingKey::from_ed_pem(&read_pem(p)?),
                (Algorithm::ES256 | Algorithm::ES384, Some(p)) => {
                    DecodingKey::from_ec_pem(&read_pem(p)?)
                }
                (_, Some(p)) => DecodingKey::from_rsa_pem(&read_pem(p)?),
            }
            .map_err(|e| JwtError::Key(e.to_string()))?;
            let mut validation = Validation::new(alg);
            validation.leeway = k.leeway_s;
            validation.validate_nbf = true;
            validation.set_required_spec_claims(&["exp", "sub"]);
            match &k.audience {
                Some(a) => validation.set_audience(&[a]),
                None => validation.validate_aud = false,
            }
            if let Some(i) = &k.issuer {
                validation.set_issuer(&[i]);
            }
            keys.push(Key { key, validation });
        }
        Ok(Verifier { keys })
    }

    /// The claims of `token` when a configured key verifies it. The most telling failure is
    /// returned (an expired token says so rather than "bad signature" from the other keys).
    pub fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| JwtError::Malformed(e.to_string()))?;
        let mut best = JwtError::Signature;
        for k in self
            .keys
            .iter()
            .filter(|k| k.validation.algorithms.contains(&header.alg))
        {
            match jsonwebtoken::decode::<Claims>(token, &k.key, &k.validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => {
                    let mine = match e.kind() {
                        ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => continue,
                        ErrorKind::ExpiredSignature => JwtError::Expired,
                        ErrorKind::ImmatureSignature => JwtError::NotYet,
                        ErrorKind::InvalidIssuer => JwtError::Claim("issuer (iss)"),
                        ErrorKind::InvalidAudience => JwtError::Claim("audience (aud)"),
                        _ => JwtError::Malformed(e.to_string()),
                    };
                    best = mine;
                }
            }
        }
        Err(best)
    }
}

/// Signs `claims` with an HMAC `secret` (HS256) or a PEM private key of `algorithm`: for
/// `mpreg auth token` and tests.
pub fn mint(claims: &Claims, algorithm_name: &str, key: &[u8]) -> Result<String, JwtError> {
    let alg = algorithm(algorithm_name)?;
    let key = match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Ok(EncodingKey::from_secret(key)),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(key),
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(key),
        _ => EncodingKey::from_rsa_pem(key),
    }
    .map_err(|e| JwtError::Key(e.to_string()))?;
    jsonwebtoken::encode(&Header::new(alg), claims, &key).map_err(|e| JwtError::Key(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn config() -> JwtKeyConfig {
        JwtKeyConfig {
            algorithm: "HS256".into(),
            secret_env: Some("S".into()),
            secret_file: None,
            public_key_file: None,
            issuer: Some("tests".into()),
            audience: None,
            leeway_s: 0,
        }
    }

    fn verifier() -> Verifier {
        Verifier::new(&[config()], &|_| Some(SECRET.into())).expect("verifier")
    }

    fn claims(exp_in: i64) -> Claims {
        let now = crate::clock::unix_now() as i64;
        Claims {
            sub: "alice".into(),
            exp: (now + exp_in) as u64,
            nbf: None,
            iat: None,
            iss: Some("tests".into()),
            aud: None,
            roles: vec!["reader".into()],
            mpreg: None,
        }
    }

    #[test]
    fn a_signed_token_is_accepted_and_its_claims_read() {
        let t = mint(&claims(60), "HS256", SECRET.as_bytes()).expect("mint");
        let c = verifier().verify(&t).expect("valid");
        assert_eq!(c.sub, "alice");
        assert_eq!(c.roles, ["reader"]);
    }

    #[test]
    fn expired_premature_forged_and_foreign_tokens_are_refused() {
        let v = verifier();
        let expired = mint(&claims(-120), "HS256", SECRET.as_bytes()).expect("mint");
        assert_eq!(v.verify(&expired), Err(JwtError::Expired));
        let mut early = claims(600);
        early.nbf = Some(early.exp - 60);
        let early = mint(&early, "HS256", SECRET.as_bytes()).expect("mint");
        assert_eq!(v.verify(&early), Err(JwtError::NotYet));
        let forged =
            mint(&claims(60), "HS256", b"another secret of thirty-two bytes!").expect("mint");
        assert_eq!(v.verify(&forged), Err(JwtError::Signature));
        let mut foreign = claims(60);
        foreign.iss = Some("elsewhere".into());
        let foreign = mint(&foreign, "HS256", SECRET.as_bytes()).expect("mint");
        assert_eq!(v.verify(&foreign), Err(JwtError::Claim("issuer (iss)")));
        assert!(matches!(v.verify("not.a.jwt"), Err(JwtError::Malformed(_))));
    }

    #[test]
    fn weak_or_missing_keys_are_refused() {
        let short = Verifier::new(&[config()], &|_| Some("short".into()));
        assert!(matches!(short, Err(JwtError::Key(m)) if m.contains("32 bytes")));
        let unset = Verifier::new(&[config()], &|_| None);
        assert!(matches!(unset, Err(JwtError::Key(m)) if m.contains("not set")));
        let mut bad = config();
        bad.algorithm = "none".into();
        assert!(matches!(
            Verifier::new(&[bad], &|_| Some(SECRET.into())),
            Err(JwtError::Key(_))
        ));
    }

    proptest! {
        /// Arbitrary text never verifies and never panics; a valid token with any one byte
        /// changed is refused.
        #[test]
        fn tampering_is_always_refused(junk in ".{0,200}", at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let v = verifier();
            prop_assert!(v.verify(&junk).is_err());
            let token = mint(&claims(60), "HS256", SECRET.as_bytes()).expect("mint");
            let mut bytes = token.clone().into_bytes();
            let i = at.index(bytes.len());
            prop_assume!(bytes[i] != byte);
            bytes[i] = byte;
            if let Ok(t) = String::from_utf8(bytes) {
                // base64 padding bits can make two encodings decode alike: compare claims.
                if let Ok(c) = v.verify(&t) {
                    prop_assert_eq!(c, v.verify(&token).expect("original"));
                }
            }
        }
    }
}
