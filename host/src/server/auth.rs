//! Who is asking, for every surface of the node (docs/security.md): client connections (the
//! WebSocket upgrade's credentials, a TCP client's certificate), the admin API (scoped
//! credentials, or the node's admin token) and the monitoring endpoints. Refusals are answered
//! before anything else happens (a WebSocket is refused before it is upgraded, an upload
//! before its body is read), counted by reason, and never echo the credential.

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};

use super::handshake::Peer;
use crate::auth::Principal;
use crate::auth::authenticate::{AuthError, Authenticator};
use crate::auth::credentials::{self, Credential, Presented};
use crate::auth::policy::{AdminScope, Need};
use crate::digest::sha256_hex;
use crate::metrics::{Counter, Family, Registry};

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

/// Why a request is not let in: its HTTP status, a short kind and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 401 (no or a wrong credential) or 403 (a good one without the permission).
    pub status: StatusCode,
    /// `unauthorized` or `forbidden`.
    pub kind: &'static str,
    /// What was wrong, in general terms.
    pub message: String,
}

impl Refusal {
    fn unauthorized(message: impl Into<String>) -> Refusal {
        Refusal {
            status: StatusCode::UNAUTHORIZED,
            kind: "unauthorized",
            message: message.into(),
        }
    }

    fn forbidden(message: impl Into<String>) -> Refusal {
        Refusal {
            status: StatusCode::FORBIDDEN,
            kind: "forbidden",
            message: message.into(),
        }
    }

    fn from_auth(e: &AuthError) -> Refusal {
        if e.status() == 403 {
            Refusal::forbidden(e.to_string())
        } else {
            Refusal::unauthorized(e.to_string())
        }
    }
}

/// Clients refused for their credentials, logged at most once a second.
static REFUSED_CLIENTS: crate::throttle::Throttle =
    crate::throttle::Throttle::new(std::time::Duration::from_secs(1));

/// Logs (throttled) a client refused for its credentials: where from and why, never the
/// credential.
pub fn log_refused(remote: Option<std::net::SocketAddr>, r: &Refusal) {
    if let Some(suppressed) = REFUSED_CLIENTS.admit() {
        let remote = remote.map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(%remote, status = r.status.as_u16(), reason = %r.message, suppressed, "client refused");
    }
}

type RefusalLabels = Vec<(&'static str, &'static str)>;

/// The node's gatekeeper: its authenticator (none when `[auth]` configures no credentials),
/// the admin token, whether monitoring is public, and the refusal counter.
pub struct Guard {
    authenticator: Option<Arc<Authenticator>>,
    admin: AdminAuth,
    public_metrics: bool,
    refused: Family<RefusalLabels, Counter>,
}

impl Guard {
    /// A guard over `authenticator` (`None`: every client is anonymous and unrestricted) and
    /// the admin token.
    pub fn new(
        authenticator: Option<Arc<Authenticator>>,
        admin: AdminAuth,
        public_metrics: bool,
    ) -> Guard {
        Guard {
            authenticator,
            admin,
            public_metrics,
            refused: Family::default(),
        }
    }

    /// Whether clients must authenticate.
    pub fn required(&self) -> bool {
        self.authenticator.is_some()
    }

    /// Registers the refusal counter.
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "auth_refused",
            "Connections and admin or monitoring requests refused for their credentials, by surface and reason",
            self.refused.clone(),
        );
    }

    /// Counts a peer link refused for its certificate.
    pub fn count_peer_refusal(&self) {
        self.count("peer", "certificate");
    }

    fn count(&self, surface: &'static str, reason: &'static str) {
        self.refused
            .get_or_create(&vec![("surface", surface), ("reason", reason)])
            .inc();
    }

    /// The client a WebSocket upgrade (`headers`, `query`) over `peer` is: its credential,
    /// else its verified client certificate, else the anonymous role.
    pub fn client(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        peer: &Peer,
    ) -> Result<Principal, Refusal> {
        let Some(auth) = &self.authenticator else {
            return Ok(Principal::anonymous());
        };
        let credential = self.read(headers, query, "client")?;
        self.identify(auth, credential.as_ref(), peer, "client")
    }

    /// The client a TCP connection over `peer` is: MPREG's TCP transport carries no headers,
    /// so its verified client certificate, else the anonymous role.
    pub fn tcp_client(&self, peer: &Peer) -> Result<Principal, Refusal> {
        let Some(auth) = &self.authenticator else {
            return Ok(Principal::anonymous());
        };
        self.identify(auth, None, peer, "tcp")
    }

    fn identify(
        &self,
        auth: &Authenticator,
        credential: Option<&Credential>,
        peer: &Peer,
        surface: &'static str,
    ) -> Result<Principal, Refusal> {
        if credential.is_none()
            && let Some(cert) = &peer.client_cert
            && let Some(p) = auth.certificate(&cert.der)
        {
            return p.map_err(|e| {
                self.count(surface, e.label());
                Refusal::from_auth(&e)
            });
        }
        auth.authenticate(credential).map_err(|e| {
            self.count(surface, e.label());
            Refusal::from_auth(&e)
        })
    }

    fn read(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        surface: &'static str,
    ) -> Result<Option<Credential>, Refusal> {
        let header = |name| headers.get(name).map(|v| v.as_bytes());
        credentials::read(Presented {
            authorization: header(header::AUTHORIZATION.as_str()),
            api_key: header("x-api-key"),
            protocols: header(header::SEC_WEBSOCKET_PROTOCOL.as_str()),
            query,
        })
        .map_err(|e| {
            self.count(surface, "unreadable");
            Refusal::unauthorized(e.to_string())
        })
    }

    /// `Ok` when the request may use the admin API's `scope`: it carries the node's admin
    /// token, or a credential whose policy grants the scope.
    pub fn admin(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        scope: AdminScope,
    ) -> Result<(), Refusal> {
        self.scoped(headers, query, scope, "admin")
    }

    fn scoped(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        scope: AdminScope,
        surface: &'static str,
    ) -> Result<(), Refusal> {
        let help = match surface {
            "admin" => {
                "the admin API needs `Authorization: Bearer <admin token>` (or an API key or token with the admin scope); nothing was changed"
            }
            _ => {
                "monitoring needs a credential with the admin scope `read` (`Authorization: Bearer`, `X-API-Key` or `?access_token=`), or auth.public_metrics = true"
            }
        };
        let credential = match self.read(headers, query, surface)? {
            Some(c) => c,
            None => {
                self.count(surface, "missing");
                return Err(Refusal::unauthorized(help));
            }
        };
        if self.admin.accepts(credential.secret()) {
            return Ok(());
        }
        let Some(auth) = &self.authenticator else {
            self.count(surface, "wrong_token");
            return Err(Refusal::forbidden("wrong admin token; nothing was changed"));
        };
        let principal = auth.authenticate(Some(&credential)).map_err(|e| {
            self.count(surface, e.label());
            Refusal::from_auth(&e)
        })?;
        principal.check(&Need::Admin(scope)).map_err(|d| {
            self.count(surface, "scope");
            Refusal::forbidden(format!("{d}; nothing was changed"))
        })
    }

    /// `Ok` when the request may read metrics and monitoring: always when monitoring is public
    /// or no credentials are configured, else with the admin scope `read`.
    pub fn monitoring(&self, headers: &HeaderMap, query: Option<&str>) -> Result<(), Refusal> {
        if self.public_metrics || self.authenticator.is_none() {
            return Ok(());
        }
        self.scoped(headers, query, AdminScope::Read, "monitoring")
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

    #[test]
    fn without_auth_clients_are_anonymous_and_the_admin_token_rules() {
        let guard = Guard::new(None, AdminAuth::from_token("admin-secret-token"), false);
        let none = HeaderMap::new();
        let p = guard.client(&none, None, &Peer::default()).expect("open");
        assert!(p.unrestricted());
        assert!(guard.monitoring(&none, None).is_ok());
        let e = guard
            .admin(&none, None, AdminScope::Read)
            .expect_err("needs token");
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            "Bearer bad-guess-12345".parse().expect("header"),
        );
        let e = guard
            .admin(&h, None, AdminScope::Read)
            .expect_err("wrong token");
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert!(!e.message.contains("bad-guess"), "{}", e.message);
        h.insert(
            header::AUTHORIZATION,
            "bearer admin-secret-token".parse().expect("header"),
        );
        assert!(guard.admin(&h, None, AdminScope::Retire).is_ok());
    }
}
