//! Who is asking ([`Principal`]) and what it may do ([`policy`]). Every call carries its
//! principal, so the dispatcher, the built-ins of every service and the nested calls a plugin
//! makes on its caller's behalf check the same identity; the node's own work runs as
//! [`Principal::system`].
//!
//! How a principal is established from credentials (API keys, JWTs, client certificates) is
//! [`credentials`] and, on the node, `auth::authenticate`.

pub mod credentials;
pub mod policy;

#[cfg(feature = "node")]
pub mod authenticate;
#[cfg(feature = "node")]
pub mod jwt;
#[cfg(feature = "node")]
pub mod keys;

use std::sync::Arc;

use policy::{Need, Policy};

/// An authenticated identity and its policy; `None` for the policy means unrestricted (a node
/// without `[auth]`, or the node itself). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Principal {
    name: Arc<str>,
    policy: Option<Arc<Policy>>,
}

/// A request an identity's policy does not allow (MPREG's 1006).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{who}' is not allowed to {what}")]
pub struct Denied {
    /// The identity.
    pub who: String,
    /// What it asked (`call function 'x'`).
    pub what: String,
}

impl Principal {
    /// Anyone, when the node requires no credentials.
    pub fn anonymous() -> Principal {
        Principal {
            name: "anonymous".into(),
            policy: None,
        }
    }

    /// The node itself (queue push consumers, replication).
    pub fn system() -> Principal {
        Principal {
            name: "system".into(),
            policy: None,
        }
    }

    /// An identity held to `policy`.
    pub fn new(name: impl Into<Arc<str>>, policy: Arc<Policy>) -> Principal {
        Principal {
            name: name.into(),
            policy: Some(policy),
        }
    }

    /// Its name (a key's name, a token's `sub`, a certificate's subject).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its policy; `None` when unrestricted.
    pub fn policy(&self) -> Option<&Arc<Policy>> {
        self.policy.as_ref()
    }

    /// Whether it may do anything at all without asking.
    pub fn unrestricted(&self) -> bool {
        self.policy.is_none()
    }

    /// Whether it may do `need`.
    pub fn may(&self, need: &Need<'_>) -> bool {
        self.policy.as_ref().is_none_or(|p| p.permits(need))
    }

    /// `Ok` when it may do `need`, else the denial naming it.
    pub fn check(&self, need: &Need<'_>) -> Result<(), Denied> {
        if self.may(need) {
            Ok(())
        } else {
            Err(Denied {
                who: self.name.to_string(),
                what: need.to_string(),
            })
        }
    }
}

/// A principal's policy as another node sent it could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the forwarded identity '{name}' has an unreadable policy: {reason}")]
pub struct BadForwarded {
    /// The identity.
    pub name: String,
    /// What is wrong.
    pub reason: String,
}

impl Principal {
    /// Its name and policy as sent to a peer: the policy as written (JSON), `None` when
    /// unrestricted.
    pub fn to_parts(&self) -> (String, Option<String>) {
        let policy = self
            .policy
            .as_ref()
            .and_then(|p| serde_json::to_string(p.spec()).ok());
        (self.name.to_string(), policy)
    }

    /// The principal a peer sent ([`Principal::to_parts`]).
    pub fn from_parts(name: &str, policy: Option<&str>) -> Result<Principal, BadForwarded> {
        let Some(text) = policy else {
            return Ok(Principal {
                name: name.into(),
                policy: None,
            });
        };
        let bad = |reason: String| BadForwarded {
            name: name.to_owned(),
            reason,
        };
        let spec: policy::PolicySpec =
            serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        let policy = Policy::new(spec).map_err(|e| bad(e.to_string()))?;
        Ok(Principal::new(name, Arc::new(policy)))
    }
}

impl Default for Principal {
    fn default() -> Self {
        Principal::anonymous()
    }
}

#[cfg(test)]
mod tests {
    use super::policy::PolicySpec;
    use super::*;

    #[test]
    fn a_denial_names_the_identity_and_the_request() {
        let p = Policy::new(PolicySpec {
            functions: vec!["echo".into()],
            ..PolicySpec::default()
        })
        .expect("policy");
        let alice = Principal::new("alice", Arc::new(p));
        let need = Need::Call {
            name: "secret",
            function_id: "vault",
            version: None,
        };
        let e = alice.check(&need).expect_err("denied");
        assert_eq!(
            e.to_string(),
            "'alice' is not allowed to call function 'secret'"
        );
        assert!(Principal::anonymous().check(&need).is_ok());
        assert!(Principal::system().unrestricted());
    }

    #[test]
    fn a_principal_crosses_a_link_with_its_policy() {
        let p = Policy::new(PolicySpec {
            functions: vec!["echo".into(), "!secret".into()],
            ..PolicySpec::default()
        })
        .expect("policy");
        let alice = Principal::new("alice", Arc::new(p));
        let (name, policy) = alice.to_parts();
        let back = Principal::from_parts(&name, policy.as_deref()).expect("back");
        assert_eq!(back.name(), "alice");
        assert_eq!(
            back.policy().map(|p| p.spec()),
            alice.policy().map(|p| p.spec())
        );
        let (name, policy) = Principal::system().to_parts();
        assert!(policy.is_none());
        assert!(
            Principal::from_parts(&name, None)
                .expect("system")
                .unrestricted()
        );
        let e = Principal::from_parts("mallory", Some(r#"{"functions": 3}"#)).expect_err("bad");
        assert!(e.to_string().contains("mallory"), "{e}");
    }
}
