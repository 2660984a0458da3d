//! What the cache stores under what: keys in MPREG's `CacheKey` shape, the dependencies an
//! entry may have, and an entry with its metadata (docs/cache.md, "Keys and entries").
//!
//! A key is `{namespace, identifier, version, tags}`. Its identity is the namespace, the
//! identifier and the version; tags are labels the entry carries, so `invalidate` by tag drops
//! every entry that has it (a get need not repeat them). Pure: no I/O, no clock.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The version a key has when none is given (the original's default).
pub const DEFAULT_VERSION: &str = "v1.0.0";
/// Longest namespace, in bytes.
pub const MAX_NAMESPACE_BYTES: usize = 200;
/// Longest identifier or version, in bytes.
pub const MAX_IDENTIFIER_BYTES: usize = 1024;
/// Most tags or dependencies on one entry.
pub const MAX_LABELS: usize = 64;
/// The byte between the parts of a [`KeyId`]; not allowed inside them.
const SEP: char = '\u{1f}';

/// A cache key as clients send it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheKey {
    /// Which namespace (policy, budget, default TTL) the entry belongs to.
    pub namespace: String,
    /// The entry's name within its namespace.
    pub identifier: String,
    /// Version of the value (part of the identity).
    #[serde(default = "default_version")]
    pub version: String,
    /// Labels that `invalidate` by tag matches.
    #[serde(default)]
    pub tags: Vec<String>,
}

fn default_version() -> String {
    DEFAULT_VERSION.to_owned()
}

/// Why a key, a tag or a dependency is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// An empty namespace or identifier.
    #[error("{0} must not be empty")]
    Empty(&'static str),
    /// Too long.
    #[error("{what} is {len} bytes; at most {max}")]
    TooLong {
        /// Which part.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A control character.
    #[error("{0} must not contain control characters")]
    Control(&'static str),
    /// Too many tags or dependencies.
    #[error("at most {MAX_LABELS} {0}")]
    TooMany(&'static str),
    /// A dependency that is neither a tag nor a key.
    #[error(
        "a dependency is a tag (a string) or a key (an object with namespace and identifier): {0}"
    )]
    BadDependency(String),
}

fn check(what: &'static str, s: &str, max: usize, empty_ok: bool) -> Result<(), KeyError> {
    if s.is_empty() && !empty_ok {
        return Err(KeyError::Empty(what));
    }
    if s.len() > max {
        return Err(KeyError::TooLong {
            what,
            len: s.len(),
            max,
        });
    }
    if s.chars().any(char::is_control) {
        return Err(KeyError::Control(what));
    }
    Ok(())
}

impl CacheKey {
    /// A key with the default version and no tags.
    pub fn new(namespace: impl Into<String>, identifier: impl Into<String>) -> Self {
        CacheKey {
            namespace: namespace.into(),
            identifier: identifier.into(),
            version: default_version(),
            tags: Vec::new(),
        }
    }

    /// Refuses an empty or oversized part, control characters, too many tags.
    pub fn validate(&self) -> Result<(), KeyError> {
        check("namespace", &self.namespace, MAX_NAMESPACE_BYTES, false)?;
        check("identifier", &self.identifier, MAX_IDENTIFIER_BYTES, false)?;
        check("version", &self.version, MAX_IDENTIFIER_BYTES, true)?;
        if self.tags.len() > MAX_LABELS {
            return Err(KeyError::TooMany("tags"));
        }
        for t in &self.tags {
            check("tag", t, MAX_IDENTIFIER_BYTES, false)?;
        }
        Ok(())
    }

    /// Its identity.
    pub fn id(&self) -> KeyId {
        KeyId::new(&self.namespace, &self.identifier, &self.version)
    }
}

/// A key's identity (namespace, identifier, version) in one cheap-to-clone string: what the
/// tiers index, the owner rule hashes and L2 stores under.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(Arc<str>);

impl KeyId {
    /// The identity of `namespace`/`identifier`/`version` (validated parts: no separator).
    pub fn new(namespace: &str, identifier: &str, version: &str) -> Self {
        KeyId(format!("{namespace}{SEP}{identifier}{SEP}{version}").into())
    }

    /// Reads one back from its stored form; `None` when it is not one.
    pub fn parse(s: &str) -> Option<Self> {
        (s.split(SEP).count() == 3).then(|| KeyId(s.into()))
    }

    /// The stored form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn part(&self, i: usize) -> &str {
        self.0.split(SEP).nth(i).unwrap_or("")
    }

    /// Its namespace.
    pub fn namespace(&self) -> &str {
        self.part(0)
    }

    /// Its identifier.
    pub fn identifier(&self) -> &str {
        self.part(1)
    }

    /// Its version.
    pub fn version(&self) -> &str {
        self.part(2)
    }

    /// As MPREG prints a key: `namespace:identifier:version`.
    pub fn display(&self) -> String {
        format!(
            "{}:{}:{}",
            self.namespace(),
            self.identifier(),
            self.version()
        )
    }
}

/// Which keys a listing, `clear` or pattern invalidation takes.
pub enum Select {
    /// Keys of one namespace whose identifier matches a glob (`*`, `?`).
    Namespace(String, wildmatch::WildMatch),
    /// Keys of any namespace whose `namespace.identifier` matches a glob: the pattern of an
    /// invalidation published to `cache.invalidation.pattern.<pattern>` (`"ml.*"`).
    Dotted(wildmatch::WildMatch),
}

impl Select {
    /// Keys of namespace `ns` whose identifier matches `pattern`.
    pub fn namespace(ns: &str, pattern: &str) -> Self {
        Select::Namespace(ns.to_owned(), wildmatch::WildMatch::new(pattern))
    }

    /// Keys whose `namespace.identifier` matches `pattern`.
    pub fn dotted(pattern: &str) -> Self {
        Select::Dotted(wildmatch::WildMatch::new(pattern))
    }

    /// The stored-key prefix every selected key has (a namespace's), if there is one.
    pub fn prefix(&self) -> Option<String> {
        match self {
            Select::Namespace(ns, _) => Some(format!("{ns}{SEP}")),
            Select::Dotted(_) => None,
        }
    }

    /// Whether `id` is selected.
    pub fn matches(&self, id: &KeyId) -> bool {
        match self {
            Select::Namespace(ns, glob) => id.namespace() == ns && glob.matches(id.identifier()),
            Select::Dotted(glob) => {
                glob.matches(&format!("{}.{}", id.namespace(), id.identifier()))
            }
        }
    }
}

impl Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        KeyId::parse(&s).ok_or_else(|| serde::de::Error::custom("not a cache key id"))
    }
}

/// What an entry depends on: invalidating it invalidates the entry, transitively.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dependency {
    /// Another entry.
    Key(KeyId),
    /// A free tag (`"dataset:v2"`), or a tag of a key.
    Tag(String),
}

impl Dependency {
    /// From the wire: a string is a tag, an object a key (MPREG's `CacheKey` shape).
    pub fn from_json(v: &Value) -> Result<Self, KeyError> {
        match v {
            Value::String(t) => {
                check("tag", t, MAX_IDENTIFIER_BYTES, false)?;
                Ok(Dependency::Tag(t.clone()))
            }
            Value::Object(_) => {
                let key: CacheKey = serde_json::from_value(v.clone())
                    .map_err(|e| KeyError::BadDependency(e.to_string()))?;
                key.validate()?;
                Ok(Dependency::Key(key.id()))
            }
            other => Err(KeyError::BadDependency(other.to_string())),
        }
    }

    /// A list of them from the wire.
    pub fn list_from_json(v: Option<&Value>) -> Result<Vec<Self>, KeyError> {
        let items = match v {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Array(items)) => items,
            Some(other) => return Err(KeyError::BadDependency(other.to_string())),
        };
        if items.len() > MAX_LABELS {
            return Err(KeyError::TooMany("dependencies"));
        }
        let mut deps = items
            .iter()
            .map(Self::from_json)
            .collect::<Result<Vec<_>, _>>()?;
        deps.sort();
        deps.dedup();
        Ok(deps)
    }

    /// As the reply shows it: a tag as itself, a key as `namespace:identifier:version`.
    pub fn display(&self) -> String {
        match self {
            Dependency::Key(k) => k.display(),
            Dependency::Tag(t) => t.clone(),
        }
    }
}

/// How an entry's value is to be read: a plain value or one of the structures, so a list
/// operation on a set (or on a plain value) is refused rather than corrupting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Any JSON value.
    #[default]
    Value,
    /// An array of distinct members.
    Set,
    /// An array.
    List,
    /// An object.
    Map,
    /// An array of `[member, score]`, ordered by score, then member.
    SortedSet,
}

impl Kind {
    /// Its name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Value => "value",
            Kind::Set => "set",
            Kind::List => "list",
            Kind::Map => "map",
            Kind::SortedSet => "sorted_set",
        }
    }
}

/// One stored entry: the value and everything the tiers and the reply need about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Its key (with its tags).
    pub key: CacheKey,
    /// The value.
    pub value: Arc<Value>,
    /// Plain value or structure.
    #[serde(default)]
    pub kind: Kind,
    /// What it weighs in the budgets: the value's JSON length plus the key.
    pub size: u64,
    /// What it cost to compute, in milliseconds (the cost-based policy keeps the expensive).
    #[serde(default)]
    pub cost_ms: f64,
    /// Its time to live, as given.
    pub ttl_seconds: Option<f64>,
    /// When it expires (Unix milliseconds); `None`: never.
    pub expires_at_ms: Option<u64>,
    /// What invalidates it.
    #[serde(default)]
    pub dependencies: Vec<Dependency>,
    /// When it was stored (Unix milliseconds).
    pub created_ms: u64,
    /// When it was last read.
    pub accessed_ms: u64,
    /// How often it was read.
    pub access_count: u64,
}

/// Bytes an entry weighs beyond its value and key (its metadata), so a million empty values
/// are not free.
pub const ENTRY_OVERHEAD: u64 = 96;

impl Entry {
    /// A new entry of `value` (its JSON length `value_len`) stored at `now_ms`.
    pub fn new(key: CacheKey, value: Value, value_len: usize, now_ms: u64) -> Self {
        let size = value_len as u64
            + (key.namespace.len() + key.identifier.len() + key.version.len()) as u64
            + key.tags.iter().map(|t| t.len() as u64).sum::<u64>()
            + ENTRY_OVERHEAD;
        Entry {
            key,
            value: Arc::new(value),
            kind: Kind::Value,
            size,
            cost_ms: 0.0,
            ttl_seconds: None,
            expires_at_ms: None,
            dependencies: Vec::new(),
            created_ms: now_ms,
            accessed_ms: now_ms,
            access_count: 0,
        }
    }

    /// Gives it a time to live from `now_ms` (`None` or ≤ 0: none).
    pub fn with_ttl(mut self, ttl_seconds: Option<f64>, now_ms: u64) -> Self {
        match ttl_seconds.filter(|t| *t > 0.0 && t.is_finite()) {
            Some(t) => {
                self.ttl_seconds = Some(t);
                self.expires_at_ms = Some(now_ms.saturating_add((t * 1000.0).ceil() as u64));
            }
            None => {
                self.ttl_seconds = None;
                self.expires_at_ms = None;
            }
        }
        self
    }

    /// Whether it has expired at `now_ms`.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|t| t <= now_ms)
    }

    /// What a change of this entry invalidates: its identity and each of its tags.
    pub fn invalidates(&self) -> Vec<Dependency> {
        let mut out = vec![Dependency::Key(self.key.id())];
        out.extend(self.key.tags.iter().cloned().map(Dependency::Tag));
        out
    }

    /// What it listens to: its dependencies and its own tags (invalidating a tag drops the
    /// entries that carry it).
    pub fn listens(&self) -> impl Iterator<Item = Dependency> + '_ {
        self.dependencies
            .iter()
            .cloned()
            .chain(self.key.tags.iter().cloned().map(Dependency::Tag))
    }

    /// The seconds it has left at `now_ms`, for replies.
    pub fn ttl_left(&self, now_ms: u64) -> Option<f64> {
        self.expires_at_ms
            .map(|t| t.saturating_sub(now_ms) as f64 / 1000.0)
    }

    /// The entry as `cache-response` and `cache.entry` show it (the original's field names,
    /// times in Unix seconds).
    pub fn to_json(&self, now_ms: u64) -> Value {
        serde_json::json!({
            "key": self.key,
            "value": *self.value,
            "kind": self.kind.name(),
            "creation_time": self.created_ms as f64 / 1000.0,
            "last_access_time": self.accessed_ms as f64 / 1000.0,
            "access_count": self.access_count,
            "computation_cost_ms": self.cost_ms,
            "size_bytes": self.size,
            "dependencies": self.dependencies.iter().map(Dependency::display).collect::<Vec<_>>(),
            "ttl_seconds": self.ttl_left(now_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_key_reads_in_the_original_shape_with_its_defaults() {
        let k: CacheKey =
            serde_json::from_value(json!({"namespace": "ml", "identifier": "model-a"}))
                .expect("key fixture");
        assert_eq!(k.version, DEFAULT_VERSION);
        assert!(k.tags.is_empty());
        let id = k.id();
        assert_eq!(
            (id.namespace(), id.identifier(), id.version()),
            ("ml", "model-a", "v1.0.0")
        );
        assert_eq!(id.display(), "ml:model-a:v1.0.0");
        assert_eq!(KeyId::parse(id.as_str()), Some(id));
        assert_eq!(KeyId::parse("no separators"), None);
    }

    #[test]
    fn bad_keys_are_refused_with_the_reason() {
        let mut k = CacheKey::new("", "x");
        assert_eq!(k.validate(), Err(KeyError::Empty("namespace")));
        k.namespace = "ns".into();
        k.identifier = "a\u{1f}b".into();
        assert_eq!(k.validate(), Err(KeyError::Control("identifier")));
        k.identifier = "x".repeat(MAX_IDENTIFIER_BYTES + 1);
        assert!(matches!(k.validate(), Err(KeyError::TooLong { .. })));
        k.identifier = "ok".into();
        k.tags = vec!["t".into(); MAX_LABELS + 1];
        assert_eq!(k.validate(), Err(KeyError::TooMany("tags")));
        let unknown = serde_json::from_value::<CacheKey>(
            json!({"namespace": "a", "identifier": "b", "colour": 1}),
        );
        assert!(unknown.is_err());
    }

    #[test]
    fn dependencies_are_tags_or_keys() {
        let deps = Dependency::list_from_json(Some(&json!([
            "dataset:v2",
            {"namespace": "ml", "identifier": "features"},
            "dataset:v2"
        ])))
        .expect("key fixture");
        assert_eq!(deps.len(), 2, "duplicates collapse: {deps:?}");
        assert!(deps.contains(&Dependency::Tag("dataset:v2".into())));
        assert!(deps.contains(&Dependency::Key(KeyId::new("ml", "features", "v1.0.0"))));
        assert!(Dependency::list_from_json(Some(&json!([1]))).is_err());
        assert!(Dependency::list_from_json(Some(&json!("tag"))).is_err());
    }

    #[test]
    fn ttl_and_expiry() {
        let e =
            Entry::new(CacheKey::new("a", "b"), json!(1), 1, 10_000).with_ttl(Some(1.5), 10_000);
        assert_eq!(e.expires_at_ms, Some(11_500));
        assert!(!e.expired(11_499));
        assert!(e.expired(11_500));
        assert_eq!(e.ttl_left(11_000), Some(0.5));
        let forever = e.clone().with_ttl(Some(0.0), 10_000);
        assert_eq!(forever.expires_at_ms, None);
        let shown = e.to_json(10_000);
        assert_eq!(shown["key"]["identifier"], "b");
        assert_eq!(shown["creation_time"], 10.0);
    }
}
