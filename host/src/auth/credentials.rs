//! Reading a credential from what a client sends when it connects: `Authorization: Bearer
//! <token>` or `X-API-Key: <key>` (MPREG's clients), and for browsers, which cannot set
//! headers on a WebSocket, a `Sec-WebSocket-Protocol` entry `mpreg.bearer.<token>` or an
//! `access_token` query parameter.
//!
//! Parsing only: nothing here is checked or logged. A credential's [`std::fmt::Debug`] hides it,
//! so it cannot end up in a log line by accident.

/// The subprotocol a browser offers beside its credential, and the node selects (a browser
/// refuses a connection whose offered protocols the server does not answer).
pub const PROTOCOL: &str = "mpreg";
/// The prefix of a credential carried as a subprotocol.
pub const PROTOCOL_BEARER: &str = "mpreg.bearer.";
/// The query parameter a credential may come in.
pub const QUERY_PARAMETER: &str = "access_token";

/// A presented credential.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// A bearer token: a JWT or a static key.
    Bearer(String),
    /// `X-API-Key`: a static key.
    ApiKey(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Credential::ApiKey(_) => f.write_str("ApiKey(<redacted>)"),
        }
    }
}

impl Credential {
    /// The secret itself.
    pub fn secret(&self) -> &str {
        match self {
            Credential::Bearer(s) | Credential::ApiKey(s) => s,
        }
    }

    /// Whether it has the shape of a JWT (three base64url parts).
    pub fn looks_like_jwt(&self) -> bool {
        let s = self.secret();
        s.split('.').count() == 3
            && s.split('.').all(|p| {
                !p.is_empty()
                    && p.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'=')
            })
    }
}

/// A credential that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// `Authorization` with another scheme than `Bearer`.
    #[error("unsupported Authorization scheme '{0}': use `Authorization: Bearer <token>`")]
    Scheme(String),
    /// An empty or non-ASCII value.
    #[error("the {0} credential is empty or not printable ASCII")]
    Unreadable(&'static str),
    /// Two different credentials.
    #[error("more than one credential was sent ({0} and {1}); send one")]
    Conflicting(&'static str, &'static str),
}

/// The parts of a connection request a credential may be in.
#[derive(Debug, Default, Clone, Copy)]
pub struct Presented<'a> {
    /// The `Authorization` header.
    pub authorization: Option<&'a [u8]>,
    /// The `X-API-Key` header.
    pub api_key: Option<&'a [u8]>,
    /// The `Sec-WebSocket-Protocol` header (comma-separated).
    pub protocols: Option<&'a [u8]>,
    /// The request's query string (without `?`).
    pub query: Option<&'a str>,
}

/// Longest credential read (a JWT with many claims fits easily).
pub const MAX_CREDENTIAL_BYTES: usize = 8 << 10;

fn printable(what: &'static str, raw: &[u8]) -> Result<String, CredentialError> {
    let s = std::str::from_utf8(raw)
        .ok()
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.len() <= MAX_CREDENTIAL_BYTES)
        .filter(|s| s.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or(CredentialError::Unreadable(what))?;
    Ok(s.to_owned())
}

/// Decodes `%XX` and `+` of a query value; `None` when it is not valid UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'%' => return None,
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The credential presented, if any. Several places holding the same secret count as one;
/// different secrets are refused rather than one picked silently.
pub fn read(p: Presented<'_>) -> Result<Option<Credential>, CredentialError> {
    let mut found: Vec<(&'static str, Credential)> = Vec::new();
    if let Some(raw) = p.authorization {
        let v = printable_header(raw)?;
        let (scheme, token) = v.split_once(' ').unwrap_or((v.as_str(), ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(CredentialError::Scheme(scheme.chars().take(16).collect()));
        }
        let token = printable("Authorization", token.as_bytes())?;
        found.push(("Authorization", Credential::Bearer(token)));
    }
    if let Some(raw) = p.api_key {
        found.push((
            "X-API-Key",
            Credential::ApiKey(printable("X-API-Key", raw)?),
        ));
    }
    if let Some(raw) = p.protocols {
        let list = std::str::from_utf8(raw)
            .map_err(|_| CredentialError::Unreadable("Sec-WebSocket-Protocol"))?;
        for entry in list.split(',').map(str::trim) {
            if let Some(token) = entry.strip_prefix(PROTOCOL_BEARER) {
                let token = printable("Sec-WebSocket-Protocol", token.as_bytes())?;
                found.push(("Sec-WebSocket-Protocol", Credential::Bearer(token)));
            }
        }
    }
    if let Some(q) = p.query {
        for pair in q.split('&') {
            if let Some(v) = pair
                .strip_prefix(QUERY_PARAMETER)
                .and_then(|r| r.strip_prefix('='))
            {
                let v = percent_decode(v).ok_or(CredentialError::Unreadable(QUERY_PARAMETER))?;
                found.push((
                    QUERY_PARAMETER,
                    Credential::Bearer(printable(QUERY_PARAMETER, v.as_bytes())?),
                ));
            }
        }
    }
    let mut it = found.into_iter();
    let Some((first_where, first)) = it.next() else {
        return Ok(None);
    };
    for (other_where, other) in it {
        if other.secret() != first.secret() {
            return Err(CredentialError::Conflicting(first_where, other_where));
        }
    }
    Ok(Some(first))
}

fn printable_header(raw: &[u8]) -> Result<String, CredentialError> {
    let s = std::str::from_utf8(raw)
        .ok()
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.len() <= MAX_CREDENTIAL_BYTES + 16)
        .filter(|s| s.bytes().all(|b| b == b' ' || b.is_ascii_graphic()))
        .ok_or(CredentialError::Unreadable("Authorization"))?;
    Ok(s.to_owned())
}

/// Whether the client offered [`PROTOCOL`] (so the node must select it in its answer).
pub fn offers_protocol(protocols: Option<&[u8]>) -> bool {
    protocols
        .and_then(|raw| std::str::from_utf8(raw).ok())
        .is_some_and(|list| list.split(',').any(|e| e.trim() == PROTOCOL))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bearer(s: &str) -> Credential {
        Credential::Bearer(s.into())
    }

    #[test]
    fn each_place_is_read() {
        let r = |p| read(p).expect("read");
        assert_eq!(r(Presented::default()), None);
        assert_eq!(
            r(Presented {
                authorization: Some(b"Bearer abc"),
                ..Presented::default()
            }),
            Some(bearer("abc"))
        );
        assert_eq!(
            r(Presented {
                authorization: Some(b"bearer   abc  "),
                ..Presented::default()
            }),
            Some(bearer("abc")),
            "the scheme is case-insensitive"
        );
        assert_eq!(
            r(Presented {
                api_key: Some(b" k1 "),
                ..Presented::default()
            }),
            Some(Credential::ApiKey("k1".into()))
        );
        assert_eq!(
            r(Presented {
                protocols: Some(b"mpreg, mpreg.bearer.t.o.k"),
                ..Presented::default()
            }),
            Some(bearer("t.o.k"))
        );
        assert_eq!(
            r(Presented {
                query: Some("x=1&access_token=a%2Eb-c&y"),
                ..Presented::default()
            }),
            Some(bearer("a.b-c"))
        );
    }

    #[test]
    fn bad_credentials_are_refused_with_a_reason() {
        let e = |p| read(p).expect_err("refused");
        assert_eq!(
            e(Presented {
                authorization: Some(b"Basic dXNlcjpwdw=="),
                ..Presented::default()
            }),
            CredentialError::Scheme("Basic".into())
        );
        assert_eq!(
            e(Presented {
                authorization: Some(b"Bearer "),
                ..Presented::default()
            }),
            CredentialError::Unreadable("Authorization")
        );
        assert_eq!(
            e(Presented {
                authorization: Some(b"Bearer a"),
                api_key: Some(b"b"),
                ..Presented::default()
            }),
            CredentialError::Conflicting("Authorization", "X-API-Key")
        );
        assert_eq!(
            e(Presented {
                query: Some("access_token=%zz"),
                ..Presented::default()
            }),
            CredentialError::Unreadable(QUERY_PARAMETER)
        );
        assert_eq!(
            e(Presented {
                query: Some("access_token=a+b"),
                ..Presented::default()
            }),
            CredentialError::Unreadable(QUERY_PARAMETER),
            "a decoded space is not part of a credential"
        );
        let same = read(Presented {
            authorization: Some(b"Bearer a"),
            api_key: Some(b"a"),
            ..Presented::default()
        })
        .expect("the same secret twice is one credential");
        assert_eq!(same, Some(bearer("a")));
    }

    #[test]
    fn a_credential_never_prints() {
        let c = bearer("s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(bearer("a.b.c").looks_like_jwt());
        assert!(!bearer("mpreg_abc").looks_like_jwt());
        assert!(offers_protocol(Some(b"x, mpreg")));
        assert!(!offers_protocol(Some(b"mpreg.bearer.x")));
    }

    proptest! {
        /// Whatever bytes arrive, reading never panics, and anything read is printable ASCII
        /// within the length limit.
        #[test]
        fn reading_arbitrary_bytes_is_total(
            a in prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
            k in prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
            p in prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
            q in prop::option::of(".{0,64}"),
        ) {
            let out = read(Presented {
                authorization: a.as_deref(),
                api_key: k.as_deref(),
                protocols: p.as_deref(),
                query: q.as_deref(),
            });
            if let Ok(Some(c)) = out {
                prop_assert!(!c.secret().is_empty());
                prop_assert!(c.secret().len() <= MAX_CREDENTIAL_BYTES);
                prop_assert!(c.secret().bytes().all(|b| b.is_ascii_graphic()));
            }
        }
    }
}
