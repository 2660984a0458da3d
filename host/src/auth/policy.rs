//! What an identity may do ([`Policy`]), read from the same shape wherever it is written: a
//! role in `[auth.roles.<name>]`, a key's roles, a JWT's `mpreg` claim.
//!
//! Each permission is a list of patterns; one that starts with `!` denies, and a denial wins
//! over any allow. A permission not listed allows nothing. Names (functions, queues, cache
//! namespaces) match with `*` and `?` globs; a function pattern may add `@<constraint>`
//! (`ml.predict@>=2, <3`) and then matches only versions within it. Topics use the pub/sub
//! pattern syntax (`*` one segment, `#` any number); a subscription is allowed when every topic
//! it could receive is allowed, so `#` is refused to an identity denied `audit.#`.

use std::collections::BTreeMap;

use semver::Version;
use serde::{Deserialize, Serialize};
use wildmatch::WildMatch;

use crate::pubsub::topic::{Pattern, Segment, TopicError};
use crate::rpc::version::VersionConstraint;

/// An admin operation (the admin HTTP API and the node's monitoring endpoints).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminScope {
    /// Publish plugins.
    Publish,
    /// Retire plugin versions.
    Retire,
    /// Read: list and describe plugins, metrics, monitoring.
    Read,
}

impl AdminScope {
    /// The scope's name in a policy.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminScope::Publish => "publish",
            AdminScope::Retire => "retire",
            AdminScope::Read => "read",
        }
    }
}

/// One thing an identity asks to do.
#[derive(Debug, Clone, Copy)]
pub enum Need<'a> {
    /// Call a function: its name, `function_id` and the version that would run (`None` for a
    /// built-in, which only patterns without a constraint match).
    Call {
        /// The name called.
        name: &'a str,
        /// Its `function_id`.
        function_id: &'a str,
        /// The version that would run.
        version: Option<&'a Version>,
    },
    /// Publish on a topic.
    Publish(&'a str),
    /// Subscribe with a pattern.
    Subscribe(&'a str),
    /// Send to a queue.
    QueueSend(&'a str),
    /// Receive (and acknowledge) from a queue.
    QueueReceive(&'a str),
    /// Create, purge, delete or inspect a queue.
    QueueAdmin(&'a str),
    /// Read a cache namespace.
    CacheRead(&'a str),
    /// Write or invalidate in a cache namespace.
    CacheWrite(&'a str),
    /// An admin operation.
    Admin(AdminScope),
}

impl std::fmt::Display for Need<'_> {
    /// What was asked, as a denial names it (`call function 'x'`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Need::Call {
                name,
                version: Some(v),
                ..
            } => write!(f, "call function '{name}' version {v}"),
            Need::Call { name, .. } => write!(f, "call function '{name}'"),
            Need::Publish(t) => write!(f, "publish to topic '{t}'"),
            Need::Subscribe(p) => write!(f, "subscribe to '{p}'"),
            Need::QueueSend(q) => write!(f, "send to queue '{q}'"),
            Need::QueueReceive(q) => write!(f, "receive from queue '{q}'"),
            Need::QueueAdmin(q) => write!(f, "administer queue '{q}'"),
            Need::CacheRead(n) => write!(f, "read cache namespace '{n}'"),
            Need::CacheWrite(n) => write!(f, "write cache namespace '{n}'"),
            Need::Admin(s) => write!(f, "use the admin scope '{}'", s.as_str()),
        }
    }
}

/// A policy as written: each permission's list of patterns (`!` denies).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// Functions, by name or `function_id`, optionally `@<version constraint>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub functions: Vec<String>,
    /// Topics published to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<String>,
    /// Topic patterns subscribed to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscribe: Vec<String>,
    /// Queues sent to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queue_send: Vec<String>,
    /// Queues received from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queue_receive: Vec<String>,
    /// Queues created, purged, deleted, inspected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queue_admin: Vec<String>,
    /// Cache namespaces read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cache_read: Vec<String>,
    /// Cache namespaces written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cache_write: Vec<String>,
    /// Admin scopes: `publish`, `retire`, `read` (or `*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admin: Vec<String>,
}

impl PolicySpec {
    /// Everything allowed.
    pub fn everything() -> PolicySpec {
        let all = || vec!["*".to_owned()];
        PolicySpec {
            functions: all(),
            publish: vec!["#".into()],
            subscribe: vec!["#".into()],
            queue_send: all(),
            queue_receive: all(),
            queue_admin: all(),
            cache_read: all(),
            cache_write: all(),
            admin: all(),
        }
    }

    /// The union of two policies: what either allows, minus what either denies.
    pub fn merge(&mut self, other: &PolicySpec) {
        let lists = [
            (&mut self.functions, &other.functions),
            (&mut self.publish, &other.publish),
            (&mut self.subscribe, &other.subscribe),
            (&mut self.queue_send, &other.queue_send),
            (&mut self.queue_receive, &other.queue_receive),
            (&mut self.queue_admin, &other.queue_admin),
            (&mut self.cache_read, &other.cache_read),
            (&mut self.cache_write, &other.cache_write),
            (&mut self.admin, &other.admin),
        ];
        for (mine, theirs) in lists {
            for p in theirs {
                if !mine.contains(p) {
                    mine.push(p.clone());
                }
            }
        }
    }
}

/// A pattern that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{permission} pattern '{pattern}': {reason}")]
pub struct PolicyError {
    /// The permission it is listed under.
    pub permission: &'static str,
    /// The pattern as written.
    pub pattern: String,
    /// What is wrong.
    pub reason: String,
}

/// A name glob, with an optional version constraint for functions.
#[derive(Debug, Clone)]
struct NameRule {
    glob: WildMatch,
    constraint: Option<VersionConstraint>,
}

impl NameRule {
    fn matches(&self, name: &str) -> bool {
        self.glob.matches(name)
    }
}

/// Allowed and denied patterns of one permission.
#[derive(Debug, Clone)]
struct Rules<P> {
    allow: Vec<P>,
    deny: Vec<P>,
}

impl<P> Default for Rules<P> {
    fn default() -> Self {
        Rules {
            allow: Vec::new(),
            deny: Vec::new(),
        }
    }
}

fn split(text: &str) -> (bool, &str) {
    match text.strip_prefix('!') {
        Some(rest) => (true, rest.trim()),
        None => (false, text.trim()),
    }
}

impl Rules<NameRule> {
    fn names(
        permission: &'static str,
        list: &[String],
        versions: bool,
    ) -> Result<Self, PolicyError> {
        let mut rules = Rules::default();
        for text in list {
            let err = |reason: String| PolicyError {
                permission,
                pattern: text.clone(),
                reason,
            };
            let (deny, body) = split(text);
            let (glob, constraint) = match body.split_once('@') {
                Some((g, c)) if versions => {
                    let c = VersionConstraint::parse(c).map_err(|e| err(e.to_string()))?;
                    (g.trim(), Some(c))
                }
                Some(_) => return Err(err("only function patterns take '@<version>'".into())),
                None => (body, None),
            };
            if glob.is_empty() {
                return Err(err("empty pattern".into()));
            }
            let rule = NameRule {
                glob: WildMatch::new(glob),
                constraint,
            };
            if deny {
                rules.deny.push(rule);
            } else {
                rules.allow.push(rule);
            }
        }
        Ok(rules)
    }

    fn permits(&self, names: &[&str]) -> bool {
        let hit = |r: &NameRule| names.iter().any(|n| r.matches(n));
        !self.deny.iter().any(hit) && self.allow.iter().any(hit)
    }

    fn permits_call(&self, name: &str, function_id: &str, version: Option<&Version>) -> bool {
        let hit = |r: &NameRule| {
            (r.matches(name) || r.matches(function_id))
                && match (&r.constraint, version) {
                    (None, _) => true,
                    (Some(c), Some(v)) => c.matches(v),
                    (Some(_), None) => false,
                }
        };
        // A denial with a constraint denies only the versions within it.
        !self.deny.iter().any(hit) && self.allow.iter().any(hit)
    }
}

/// Reads a topic pattern as pub/sub does ([`Pattern::parse`]), which also bounds its length, so
/// the tables below stay small.
fn pattern(text: &str) -> Result<Pattern, TopicError> {
    Pattern::parse(text, false)
}

/// Whether every topic `p` matches is matched by `a`.
fn covers(a: &Pattern, p: &Pattern) -> bool {
    let (a, p) = (a.segments(), p.segments());
    // memo[i][j]: a[i..] covers p[j..].
    let (n, m) = (a.len(), p.len());
    let mut memo = vec![vec![false; m + 1]; n + 1];
    for i in (0..=n).rev() {
        for j in (0..=m).rev() {
            memo[i][j] = if i == n {
                j == m
            } else {
                match (&a[i], p.get(j)) {
                    // `#` in `a` takes nothing, or absorbs one more token of `p` (any kind).
                    (Segment::Any, _) => memo[i + 1][j] || (j < m && memo[i][j + 1]),
                    (_, None) | (_, Some(Segment::Any)) => false,
                    (Segment::One, Some(_)) => memo[i + 1][j + 1],
                    (Segment::Literal(x), Some(Segment::Literal(y))) => {
                        x == y && memo[i + 1][j + 1]
                    }
                    (Segment::Literal(_), Some(Segment::One)) => false,
                }
            };
        }
    }
    memo[0][0]
}

/// Whether some topic is matched by both `a` and `b`.
fn overlaps(a: &Pattern, b: &Pattern) -> bool {
    let (a, b) = (a.segments(), b.segments());
    let (n, m) = (a.len(), b.len());
    let mut memo = vec![vec![false; m + 1]; n + 1];
    for i in (0..=n).rev() {
        for j in (0..=m).rev() {
            memo[i][j] = match (a.get(i), b.get(j)) {
                (None, None) => true,
                (Some(Segment::Any), _) => memo[i + 1][j] || (j < m && memo[i][j + 1]),
                (_, Some(Segment::Any)) => memo[i][j + 1] || (i < n && memo[i + 1][j]),
                (None, Some(_)) | (Some(_), None) => false,
                (Some(Segment::Literal(x)), Some(Segment::Literal(y))) => {
                    x == y && memo[i + 1][j + 1]
                }
                (Some(_), Some(_)) => memo[i + 1][j + 1],
            };
        }
    }
    memo[0][0]
}

impl Rules<Pattern> {
    fn topics(permission: &'static str, list: &[String]) -> Result<Self, PolicyError> {
        let mut rules = Rules::default();
        for text in list {
            let (deny, body) = split(text);
            let segs = pattern(body).map_err(|e| PolicyError {
                permission,
                pattern: text.clone(),
                reason: e.to_string(),
            })?;
            if deny {
                rules.deny.push(segs);
            } else {
                rules.allow.push(segs);
            }
        }
        Ok(rules)
    }

    /// Whether every topic `pattern` matches is allowed (a published topic is a pattern with
    /// no wildcards).
    fn permits(&self, text: &str) -> bool {
        let Ok(p) = pattern(text) else {
            return false;
        };
        !self.deny.iter().any(|d| overlaps(d, &p)) && self.allow.iter().any(|a| covers(a, &p))
    }
}

/// A compiled policy.
#[derive(Debug, Clone)]
pub struct Policy {
    spec: PolicySpec,
    functions: Rules<NameRule>,
    publish: Rules<Pattern>,
    subscribe: Rules<Pattern>,
    queue_send: Rules<NameRule>,
    queue_receive: Rules<NameRule>,
    queue_admin: Rules<NameRule>,
    cache_read: Rules<NameRule>,
    cache_write: Rules<NameRule>,
    admin: Rules<NameRule>,
}

impl Policy {
    /// Compiles `spec`, or names the first pattern that cannot be read.
    pub fn new(spec: PolicySpec) -> Result<Policy, PolicyError> {
        for scope in &spec.admin {
            let (_, s) = split(scope);
            if !matches!(s, "publish" | "retire" | "read" | "*") {
                return Err(PolicyError {
                    permission: "admin",
                    pattern: scope.clone(),
                    reason: "admin scopes are 'publish', 'retire', 'read' or '*'".into(),
                });
            }
        }
        Ok(Policy {
            functions: Rules::names("functions", &spec.functions, true)?,
            publish: Rules::topics("publish", &spec.publish)?,
            subscribe: Rules::topics("subscribe", &spec.subscribe)?,
            queue_send: Rules::names("queue_send", &spec.queue_send, false)?,
            queue_receive: Rules::names("queue_receive", &spec.queue_receive, false)?,
            queue_admin: Rules::names("queue_admin", &spec.queue_admin, false)?,
            cache_read: Rules::names("cache_read", &spec.cache_read, false)?,
            cache_write: Rules::names("cache_write", &spec.cache_write, false)?,
            admin: Rules::names("admin", &spec.admin, false)?,
            spec,
        })
    }

    /// The policy as written.
    pub fn spec(&self) -> &PolicySpec {
        &self.spec
    }

    /// Whether the policy allows `need`.
    pub fn permits(&self, need: &Need<'_>) -> bool {
        match *need {
            Need::Call {
                name,
                function_id,
                version,
            } => self.functions.permits_call(name, function_id, version),
            Need::Publish(t) => self.publish.permits(t),
            Need::Subscribe(p) => self.subscribe.permits(p),
            Need::QueueSend(q) => self.queue_send.permits(&[q]),
            Need::QueueReceive(q) => self.queue_receive.permits(&[q]),
            Need::QueueAdmin(q) => self.queue_admin.permits(&[q]),
            Need::CacheRead(n) => self.cache_read.permits(&[n]),
            Need::CacheWrite(n) => self.cache_write.permits(&[n]),
            Need::Admin(s) => self.admin.permits(&[s.as_str()]),
        }
    }
}

/// Named roles (`[auth.roles]`), each a policy; an identity's policy is the merge of its roles'
/// and its own.
pub type Roles = BTreeMap<String, PolicySpec>;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy(f: impl FnOnce(&mut PolicySpec)) -> Policy {
        let mut spec = PolicySpec::default();
        f(&mut spec);
        Policy::new(spec).expect("policy")
    }

    fn v(s: &str) -> Version {
        Version::parse(s).expect("version")
    }

    #[test]
    fn functions_match_by_name_or_id_with_versions_and_denials_win() {
        let p = policy(|s| {
            s.functions = vec![
                "math.*".into(),
                "predict@>=2, <3".into(),
                "!math.secret".into(),
                "ml-*".into(),
            ]
        });
        let call = |name, id, ver: Option<&Version>| {
            p.permits(&Need::Call {
                name,
                function_id: id,
                version: ver,
            })
        };
        assert!(call("math.add", "x", Some(&v("1.0.0"))));
        assert!(!call("math.secret", "x", Some(&v("1.0.0"))));
        assert!(call("predict", "p", Some(&v("2.5.0"))));
        assert!(!call("predict", "p", Some(&v("3.0.0"))));
        assert!(!call("predict", "p", None), "a built-in has no version");
        assert!(
            call("run", "ml-models", Some(&v("1.0.0"))),
            "by function_id"
        );
        assert!(!call("echo", "echo", None));
    }

    #[test]
    fn a_missing_permission_allows_nothing_and_everything_allows_all() {
        let none = policy(|_| {});
        let all = Policy::new(PolicySpec::everything()).expect("all");
        for need in [
            Need::Publish("a.b"),
            Need::Subscribe("#"),
            Need::QueueSend("q"),
            Need::QueueReceive("q"),
            Need::QueueAdmin("q"),
            Need::CacheRead("n"),
            Need::CacheWrite("n"),
            Need::Admin(AdminScope::Retire),
        ] {
            assert!(!none.permits(&need), "{need}");
            assert!(all.permits(&need), "{need}");
        }
    }

    #[test]
    fn a_subscription_must_stay_inside_what_is_allowed_and_clear_of_denials() {
        let p = policy(|s| s.subscribe = vec!["sensors.#".into(), "!sensors.private.#".into()]);
        assert!(p.permits(&Need::Subscribe("sensors.temp")));
        assert!(p.permits(&Need::Subscribe("sensors.temp.*")));
        assert!(
            !p.permits(&Need::Subscribe("sensors.*.celsius")),
            "sensors.private.celsius"
        );
        assert!(!p.permits(&Need::Subscribe("#")), "wider than allowed");
        assert!(
            !p.permits(&Need::Subscribe("sensors.#")),
            "could receive private"
        );
        assert!(
            !p.permits(&Need::Subscribe("sensors.*.x")),
            "sensors.private.x"
        );
        assert!(!p.permits(&Need::Subscribe("audit.log")));
    }

    #[test]
    fn bad_patterns_are_named() {
        let e = Policy::new(PolicySpec {
            functions: vec!["f@>>1".into()],
            ..PolicySpec::default()
        })
        .expect_err("bad constraint");
        assert_eq!(e.permission, "functions");
        assert!(e.to_string().contains("f@>>1"), "{e}");
        let e = Policy::new(PolicySpec {
            queue_send: vec!["q@1".into()],
            ..PolicySpec::default()
        })
        .expect_err("version on a queue");
        assert!(e.reason.contains("only function"), "{e}");
        let e = Policy::new(PolicySpec {
            admin: vec!["root".into()],
            ..PolicySpec::default()
        })
        .expect_err("unknown scope");
        assert!(e.reason.contains("publish"), "{e}");
    }

    #[test]
    fn merged_policies_allow_either_and_deny_both() {
        let mut a = PolicySpec {
            functions: vec!["a".into()],
            ..PolicySpec::default()
        };
        a.merge(&PolicySpec {
            functions: vec!["b".into(), "!a".into()],
            ..PolicySpec::default()
        });
        let p = Policy::new(a).expect("merged");
        let call = |n| {
            p.permits(&Need::Call {
                name: n,
                function_id: n,
                version: None,
            })
        };
        assert!(call("b"));
        assert!(!call("a"));
    }

    /// Every topic of up to four segments over a small alphabet.
    fn topics() -> Vec<Vec<&'static str>> {
        let alphabet = ["a", "b", "c"];
        let mut all = vec![vec![]];
        let mut frontier: Vec<Vec<&str>> = vec![vec![]];
        for _ in 0..4 {
            let mut next = Vec::new();
            for t in &frontier {
                for s in alphabet {
                    let mut t = t.clone();
                    t.push(s);
                    next.push(t);
                }
            }
            all.extend(next.iter().cloned());
            frontier = next;
        }
        all.retain(|t| !t.is_empty());
        all
    }

    fn matches(p: &Pattern, t: &[&str]) -> bool {
        p.matches(&t.join("."))
    }

    fn any_pattern() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(vec!["a", "b", "*", "#"]), 1..4)
            .prop_map(|s| s.join("."))
    }

    proptest! {
        /// Against brute force over every short topic: `covers` never claims a topic `a` does
        /// not match, and `overlaps` finds one both match whenever one exists among them.
        #[test]
        fn covers_and_overlaps_agree_with_brute_force(a in any_pattern(), b in any_pattern()) {
            let (sa, sb) = (pattern(&a).expect("a"), pattern(&b).expect("b"));
            let all = topics();
            let b_topics: Vec<_> = all.iter().filter(|t| matches(&sb, t)).collect();
            if covers(&sa, &sb) {
                for t in &b_topics {
                    prop_assert!(matches(&sa, t), "{a} covers {b} but not {t:?}");
                }
            } else if !b.contains('#') {
                // Without `#`, every topic `b` matches has its length: a miss must show.
                prop_assert!(b_topics.iter().any(|t| !matches(&sa, t)) || b_topics.is_empty(),
                    "{a} does not cover {b}, yet matches all of it");
            }
            let both = all.iter().any(|t| matches(&sa, t) && matches(&sb, t));
            if both {
                prop_assert!(overlaps(&sa, &sb), "{a} and {b} share a topic");
            }
            if !overlaps(&sa, &sb) {
                prop_assert!(!both);
            }
        }
    }
}
