//! What nodes tell each other through gossip, and the routing view built from it.
//!
//! Each node owns a set of key-values in the gossip state (chitchat replicates them and expires
//! a node's whole set when the failure detector declares it dead). This module is the schema of
//! those keys and the pure code that turns the live nodes' key-values into a [`ClusterView`]:
//! no I/O, so every rule is unit-tested here.

use std::collections::HashMap;
use std::sync::Arc;

use semver::Version;
use serde::{Deserialize, Serialize};

use crate::pubsub::topic::{MatchScratch, Pattern, TopicTrie};
use crate::rpc::route::Candidate;
use crate::sandbox::Sandbox;

/// `["ws://host:port", …]`: where clients and peers reach the node.
pub const KEY_URLS: &str = "urls";
/// The node's region label.
pub const KEY_REGION: &str = "region";
/// `["gpu", …]`: the node's resource tags.
pub const KEY_RESOURCES: &str = "resources";
/// [`LoadAd`] as JSON, refreshed a few times a second when it changes.
pub const KEY_LOAD: &str = "load";
/// Unix seconds at start.
pub const KEY_STARTED: &str = "started";
/// Set (any value) by a node that is leaving the cluster on purpose: peers drop it from their
/// view at once instead of waiting for the failure detector.
pub const KEY_LEAVING: &str = "leaving";
/// `f:{name}@{version}/{function_id}` → [`FunctionAd`]: one callable function version. The key
/// only has to be unique; readers take the identity from the value.
pub const FUNCTION_PREFIX: &str = "f:";
/// `p:{name}@{version}` → [`PluginAd`]: a published plugin version and its state.
pub const PLUGIN_PREFIX: &str = "p:";
/// `q:{name}` → `""`: a queue this node owns.
pub const QUEUE_PREFIX: &str = "q:";
/// Gossip key prefix of a wildcard pattern some local subscription holds.
pub const INTEREST_PREFIX: &str = "s:";
/// Gossip key prefix of an `exact_match` pattern.
pub const EXACT_INTEREST_PREFIX: &str = "e:";

/// The node's state sequence: the `seq` of the last pushed state batch (`wire::StateBatch`)
/// whose changes this gossip state holds. Written after those changes, so a peer that gossips
/// this value holds them too (chitchat delivers a node's keys in version order).
pub const KEY_SEQ: &str = "seq";

/// Whether `key` is part of the state a node pushes to its peers as it changes (and not only
/// gossips): what clients wait on (subscriptions, queues, functions and plugin states).
pub fn is_pushed(key: &str) -> bool {
    [
        FUNCTION_PREFIX,
        PLUGIN_PREFIX,
        QUEUE_PREFIX,
        INTEREST_PREFIX,
        EXACT_INTEREST_PREFIX,
    ]
    .iter()
    .any(|p| key.starts_with(p))
}

/// A function version a node serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionAd {
    /// Name clients call.
    pub name: String,
    /// Its version.
    pub version: Version,
    /// Identity for `function_id` matching.
    pub function_id: String,
    /// The function's own resource tags (the node's are added when matching).
    #[serde(default)]
    pub resources: Vec<String>,
    /// WIT signature, for `rpc_describe`.
    #[serde(default)]
    pub signature: String,
    /// From the manifest.
    #[serde(default)]
    pub description: Option<String>,
    /// The plugin that provides it.
    #[serde(default)]
    pub plugin: String,
    /// The sha256 of the component that provides it (memoized results are keyed by it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sha256: String,
    /// Memoized by default, as its plugin declares (`caching` export).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<crate::protocol::CacheRule>,
}

/// A published plugin version as one node holds it. The newest `changed_at` across the cluster
/// is the version's desired state (see `distribute`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginAd {
    /// sha256 of the component: what a node fetches and verifies.
    pub sha256: String,
    /// Component size in bytes.
    pub size: u64,
    /// Published (true) or retired (false).
    pub active: bool,
    /// When it was last published or retired, Unix seconds (last writer wins).
    pub changed_at: f64,
    /// Resource tags a node must have to host it; empty: every node.
    #[serde(default)]
    pub placement: Vec<String>,
    /// Limits and grants it runs with.
    #[serde(default)]
    pub sandbox: Sandbox,
}

/// How busy a node is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadAd {
    /// MPREG's `load_score`: plugin calls running on the node (lower is less busy).
    pub score: f64,
    /// Open client connections.
    pub clients: u64,
    /// Client requests being executed.
    pub requests: u64,
}

/// The gossip key of a function version.
pub fn function_key(name: &str, version: &str, function_id: &str) -> String {
    format!("{FUNCTION_PREFIX}{name}@{version}/{function_id}")
}

/// The gossip key of a plugin version.
pub fn plugin_key(name: &str, version: &str) -> String {
    format!("{PLUGIN_PREFIX}{name}@{version}")
}

/// Splits `name@version` (the part after a prefix).
fn split_at_version(s: &str) -> Option<(&str, &str)> {
    let at = s.rfind('@')?;
    Some((&s[..at], &s[at + 1..]))
}

/// Another live node of the cluster, as its gossip state describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerNode {
    /// Node id.
    pub node_id: String,
    /// Incremented each time the node restarts (its start time in ms).
    pub generation: u64,
    /// URLs clients and peers use.
    pub urls: Vec<String>,
    /// Region label.
    pub region: String,
    /// Resource tags.
    pub resources: Vec<String>,
    /// Its load.
    pub load: LoadAd,
    /// Start time, Unix seconds.
    pub started: f64,
    /// Function versions it serves.
    pub functions: Vec<Arc<FunctionAd>>,
    /// Plugin versions it holds: (name, version, ad).
    pub plugins: Vec<(String, String, PluginAd)>,
    /// Patterns its subscribers hold (`s:{pattern}` / `e:{topic}` keys): publishes on other
    /// nodes are forwarded to it only when they match one.
    pub interest: Vec<Pattern>,
    /// Queues it owns (`q:{name}` keys): `queue.*` calls naming them run there.
    pub queues: Vec<String>,
}

impl PeerNode {
    /// Reads a node's key-values. `None` when the node has not advertised where to reach it
    /// yet (it is joining). A malformed entry is skipped and reported in `skipped`, so one bad
    /// key cannot hide a node.
    pub fn parse<'a>(
        node_id: &str,
        generation: u64,
        kvs: impl IntoIterator<Item = (&'a str, &'a str)>,
        skipped: &mut Vec<String>,
    ) -> Option<PeerNode> {
        Self::parse_cached(
            node_id,
            generation,
            kvs,
            &mut ParseCache::default(),
            skipped,
        )
    }

    /// [`parse`](Self::parse), reusing what `cache` holds of entries read before with the same
    /// value: a view rebuilt for one changed key parses only that key. The cache keeps exactly
    /// the entries of this read.
    pub fn parse_cached<'a>(
        node_id: &str,
        generation: u64,
        kvs: impl IntoIterator<Item = (&'a str, &'a str)>,
        cache: &mut ParseCache,
        skipped: &mut Vec<String>,
    ) -> Option<PeerNode> {
        let mut node = PeerNode {
            node_id: node_id.to_owned(),
            generation,
            urls: Vec::new(),
            region: String::new(),
            resources: Vec::new(),
            load: LoadAd::default(),
            started: 0.0,
            functions: Vec::new(),
            plugins: Vec::new(),
            interest: Vec::new(),
            queues: Vec::new(),
        };
        cache.read += 1;
        let read = cache.read;
        for (k, v) in kvs {
            let ok = match k {
                KEY_URLS => serde_json::from_str(v).map(|u| node.urls = u).is_ok(),
                KEY_REGION => {
                    node.region = v.to_owned();
                    true
                }
                KEY_RESOURCES => serde_json::from_str(v).map(|r| node.resources = r).is_ok(),
                KEY_LOAD => serde_json::from_str(v).map(|l| node.load = l).is_ok(),
                KEY_STARTED => v.parse().map(|s| node.started = s).is_ok(),
                KEY_SEQ => v.parse::<u64>().is_ok(),
                KEY_LEAVING => return None,
                _ => {
                    let cached = match cache.entries.get_mut(k) {
                        Some(c) if c.value == v => {
                            c.read = read;
                            Some(&c.entry)
                        }
                        _ => match Entry::parse(k, v) {
                            Some(entry) => {
                                let c = Cached {
                                    value: v.to_owned(),
                                    entry,
                                    read,
                                };
                                let slot = cache.entries.entry(k.to_owned()).insert_entry(c);
                                Some(&slot.into_mut().entry)
                            }
                            None => None,
                        },
                    };
                    match cached {
                        Some(entry) => {
                            match entry {
                                Entry::Function(f) => node.functions.push(f.clone()),
                                Entry::Plugin(p) => node.plugins.push((**p).clone()),
                                Entry::Interest(p) => node.interest.push(p.clone()),
                                Entry::Queue(q) => node.queues.push(q.clone()),
                                Entry::Unknown => {}
                            }
                            true
                        }
                        None => false,
                    }
                }
            };
            if !ok {
                skipped.push(format!("{node_id}: {k}"));
            }
        }
        cache.entries.retain(|_, c| c.read == read);
        (!node.urls.is_empty()).then_some(node)
    }

    /// The URL peers dial.
    pub fn url(&self) -> &str {
        self.urls.first().map_or("", String::as_str)
    }
}

/// Parsed entries of one node's gossip state, by key, with the value they were read from.
#[derive(Debug, Default)]
pub struct ParseCache {
    entries: HashMap<String, Cached>,
    /// Reads so far: an entry not seen in the latest read is gone.
    read: u64,
}

#[derive(Debug)]
struct Cached {
    value: String,
    entry: Entry,
    read: u64,
}

/// One parsed prefixed entry.
#[derive(Debug, Clone)]
enum Entry {
    Function(Arc<FunctionAd>),
    Plugin(Box<(String, String, PluginAd)>),
    Interest(Pattern),
    Queue(String),
    /// A key of a newer node version: ignored, not an error.
    Unknown,
}

impl Entry {
    /// `None` when the value is malformed.
    fn parse(k: &str, v: &str) -> Option<Entry> {
        if k.starts_with(FUNCTION_PREFIX) {
            serde_json::from_str(v)
                .ok()
                .map(|f| Entry::Function(Arc::new(f)))
        } else if let Some(q) = k.strip_prefix(QUEUE_PREFIX) {
            Some(Entry::Queue(q.to_owned()))
        } else if let Some(p) = k.strip_prefix(INTEREST_PREFIX) {
            Pattern::parse(p, false).ok().map(Entry::Interest)
        } else if let Some(p) = k.strip_prefix(EXACT_INTEREST_PREFIX) {
            Pattern::parse(p, true).ok().map(Entry::Interest)
        } else if let Some(rest) = k.strip_prefix(PLUGIN_PREFIX) {
            parse_plugin(rest, v).map(|p| Entry::Plugin(Box::new(p)))
        } else {
            Some(Entry::Unknown)
        }
    }
}

fn parse_plugin(rest: &str, v: &str) -> Option<(String, String, PluginAd)> {
    let (name, version) = split_at_version(rest)?;
    Version::parse(version).ok()?;
    let ad: PluginAd = serde_json::from_str(v).ok()?;
    Some((name.to_owned(), version.to_owned(), ad))
}

/// A function version on another node: a routing candidate.
#[derive(Debug, Clone)]
pub struct RemoteFunction {
    /// The node serving it.
    pub node: Arc<PeerNode>,
    /// What the node advertised.
    pub ad: Arc<FunctionAd>,
}

impl Candidate for RemoteFunction {
    fn function_id(&self) -> &str {
        &self.ad.function_id
    }
    fn version(&self) -> &Version {
        &self.ad.version
    }
    fn has_resource(&self, tag: &str) -> bool {
        self.ad
            .resources
            .iter()
            .chain(&self.node.resources)
            .any(|r| r == tag)
    }
}

/// Every other live node and what it serves: an immutable snapshot, swapped whole when the
/// gossip state changes, so routing reads it without locks.
#[derive(Debug, Default)]
pub struct ClusterView {
    /// Live nodes other than this one, by node id.
    pub nodes: Vec<Arc<PeerNode>>,
    functions: HashMap<String, Vec<RemoteFunction>>,
    /// Every node's subscription patterns; ids are indexes into `nodes`.
    interest: TopicTrie<usize>,
}

impl ClusterView {
    /// Indexes `nodes` by function name. A function of a plugin version that the newest
    /// record anywhere says is retired is left out: a node that still serves it has not
    /// caught up yet, and no call is routed to it meanwhile.
    pub fn new(nodes: Vec<PeerNode>) -> Self {
        Self::from_shared(nodes.into_iter().map(Arc::new).collect())
    }

    /// [`new`](Self::new) from nodes already shared (a view rebuild reuses the nodes that did
    /// not change).
    pub fn from_shared(mut nodes: Vec<Arc<PeerNode>>) -> Self {
        nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        let retired = retired_versions(&nodes);
        let mut functions: HashMap<String, Vec<RemoteFunction>> = HashMap::new();
        for n in &nodes {
            for ad in &n.functions {
                if !retired.is_empty()
                    && retired.contains(&(ad.plugin.as_str(), ad.version.to_string()))
                {
                    continue;
                }
                functions
                    .entry(ad.name.clone())
                    .or_default()
                    .push(RemoteFunction {
                        node: n.clone(),
                        ad: ad.clone(),
                    });
            }
        }
        let mut interest = TopicTrie::new();
        for (i, n) in nodes.iter().enumerate() {
            for p in &n.interest {
                interest.insert(p, i);
            }
        }
        ClusterView {
            nodes,
            functions,
            interest,
        }
    }

    /// The nodes with a subscription matching `topic`, each once.
    pub fn interested(&self, topic: &str) -> Vec<&Arc<PeerNode>> {
        if self.interest.is_empty() {
            return Vec::new();
        }
        let mut hits = Vec::new();
        self.interest
            .matches_into(topic, &mut MatchScratch::default(), &mut hits);
        hits.into_iter().filter_map(|i| self.nodes.get(i)).collect()
    }

    /// Remote versions of function `name` on every live node.
    pub fn functions(&self, name: &str) -> &[RemoteFunction] {
        self.functions.get(name).map_or(&[], Vec::as_slice)
    }

    /// Every remote function, for listings.
    pub fn all_functions(&self) -> impl Iterator<Item = &RemoteFunction> {
        self.functions.values().flatten()
    }

    /// The live node `node_id`.
    pub fn node(&self, node_id: &str) -> Option<&Arc<PeerNode>> {
        self.nodes.iter().find(|n| n.node_id == node_id)
    }
}

/// Plugin versions whose newest record across `nodes` is a retirement.
fn retired_versions(nodes: &[Arc<PeerNode>]) -> std::collections::HashSet<(&str, String)> {
    let mut newest: HashMap<(&str, &str), &PluginAd> = HashMap::new();
    for n in nodes {
        for (name, version, ad) in &n.plugins {
            let slot = newest.entry((name, version)).or_insert(ad);
            if ad.changed_at > slot.changed_at {
                *slot = ad;
            }
        }
    }
    newest
        .into_iter()
        .filter(|(_, ad)| !ad.active)
        .map(|((name, version), _)| (name, version.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(pairs: &[(&str, String)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn parse(id: &str, kvs: &[(String, String)]) -> (Option<PeerNode>, Vec<String>) {
        let mut skipped = Vec::new();
        let n = PeerNode::parse(
            id,
            1,
            kvs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            &mut skipped,
        );
        (n, skipped)
    }

    fn fun(name: &str, version: &str, id: &str, res: &[&str]) -> String {
        serde_json::to_string(&FunctionAd {
            name: name.into(),
            version: Version::parse(version).expect("version"),
            function_id: id.into(),
            resources: res.iter().map(|s| s.to_string()).collect(),
            signature: "func() -> s32".into(),
            description: None,
            plugin: "math".into(),
            sha256: String::new(),
            cache: None,
        })
        .expect("json")
    }

    #[test]
    fn a_leaving_node_is_no_peer() {
        let urls = (KEY_URLS, r#"["ws://127.0.0.1:1"]"#.to_owned());
        assert!(parse("n1", &kv(std::slice::from_ref(&urls))).0.is_some());
        let (n, skipped) = parse("n1", &kv(&[urls, (KEY_LEAVING, "1".into())]));
        assert!(
            n.is_none(),
            "a node that says it leaves is out of the view at once"
        );
        assert!(skipped.is_empty());
    }

    #[test]
    fn a_node_is_read_with_its_functions_and_plugins() {
        let plugin = PluginAd {
            sha256: "ab".into(),
            size: 3,
            active: true,
            changed_at: 5.0,
            placement: vec![],
            sandbox: Sandbox::default(),
        };
        let kvs = kv(&[
            (KEY_URLS, r#"["ws://127.0.0.1:1"]"#.into()),
            (KEY_REGION, "eu".into()),
            (KEY_RESOURCES, r#"["gpu"]"#.into()),
            (KEY_LOAD, r#"{"score":2.0,"clients":1,"requests":1}"#.into()),
            (
                &function_key("add", "1.2.0", "math.add"),
                fun("add", "1.2.0", "math.add", &["cpu"]),
            ),
            (
                &plugin_key("math", "1.2.0"),
                serde_json::to_string(&plugin).expect("json"),
            ),
            ("future-key", "whatever".into()),
        ]);
        let (node, skipped) = parse("n1", &kvs);
        let node = node.expect("complete node");
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(node.url(), "ws://127.0.0.1:1");
        assert_eq!(node.region, "eu");
        assert_eq!(node.load.score, 2.0);
        assert_eq!(node.functions.len(), 1);
        assert_eq!(node.functions[0].name, "add");
        assert_eq!(node.functions[0].version, Version::new(1, 2, 0));
        assert_eq!(node.plugins, vec![("math".into(), "1.2.0".into(), plugin)]);

        let view = ClusterView::new(vec![node]);
        let f = &view.functions("add")[0];
        // The function's tags and the node's both count for `locs`.
        assert!(f.has_resource("cpu") && f.has_resource("gpu") && !f.has_resource("tpu"));
        assert!(view.functions("mul").is_empty());
        assert!(view.node("n1").is_some());
    }

    #[test]
    fn malformed_entries_are_skipped_not_fatal() {
        let kvs = kv(&[
            (KEY_URLS, r#"["ws://x:1"]"#.into()),
            (KEY_LOAD, "not json".into()),
            (
                "f:add@1/add",
                r#"{"name":"add","version":"x","function_id":"add"}"#.into(),
            ),
            ("f:add@1.0.0/other", "[]".into()),
            ("p:noversion", "{}".into()),
            (
                &function_key("mul", "1.0.0", "mul"),
                fun("mul", "1.0.0", "mul", &[]),
            ),
            ("p:x@1.0.0", "{}".into()),
        ]);
        let (node, skipped) = parse("n2", &kvs);
        let node = node.expect("node");
        assert_eq!(node.functions.len(), 1, "only the valid function is kept");
        assert_eq!(skipped.len(), 5, "{skipped:?}");
    }

    #[test]
    fn subscription_interest_routes_topics_to_nodes() {
        let a = kv(&[
            (KEY_URLS, r#"["ws://a:1"]"#.into()),
            ("s:orders.#", String::new()),
            ("e:audit.log", String::new()),
            ("e:audit.*", String::new()),
        ]);
        let b = kv(&[
            (KEY_URLS, r#"["ws://b:1"]"#.into()),
            ("s:*.created", String::new()),
            ("s:bad*pattern", String::new()),
        ]);
        let (na, sa) = parse("a", &a);
        let (nb, sb) = parse("b", &b);
        // An exact pattern cannot hold a wildcard (subscribe refuses it): skipped if seen.
        assert_eq!(sa.len(), 1, "{sa:?}");
        assert_eq!(sb.len(), 1, "the malformed pattern is skipped");
        let view = ClusterView::new(vec![na.expect("a"), nb.expect("b")]);
        let ids = |t: &str| -> Vec<String> {
            let mut v: Vec<String> = view
                .interested(t)
                .iter()
                .map(|n| n.node_id.clone())
                .collect();
            v.sort();
            v
        };
        assert_eq!(ids("orders.created"), ["a", "b"]);
        assert_eq!(ids("orders"), ["a"]);
        assert_eq!(ids("audit.log"), ["a"]);
        assert!(ids("audit.x").is_empty());
        assert!(ids("users.login").is_empty());
    }

    #[test]
    fn a_version_retired_anywhere_later_is_routed_nowhere() {
        let record = |active: bool, at: f64| {
            serde_json::to_string(&PluginAd {
                sha256: "ab".into(),
                size: 3,
                active,
                changed_at: at,
                placement: vec![],
                sandbox: Sandbox::default(),
            })
            .expect("json")
        };
        let node = |id: &str, active: bool, at: f64| {
            let kvs = kv(&[
                (KEY_URLS, format!(r#"["ws://{id}:1"]"#)),
                (
                    &function_key("add", "1.2.0", "math.add"),
                    fun("add", "1.2.0", "math.add", &[]),
                ),
                (&plugin_key("math", "1.2.0"), record(active, at)),
            ]);
            parse(id, &kvs).0.expect("node")
        };
        // Both serve it; b's record is newer and active.
        let view = ClusterView::new(vec![node("a", true, 5.0), node("b", true, 6.0)]);
        assert_eq!(view.functions("add").len(), 2);
        // a retired it after b's publish: b has not caught up, and is not routed to either.
        let view = ClusterView::new(vec![node("a", false, 7.0), node("b", true, 6.0)]);
        assert!(view.functions("add").is_empty());
        // Published again later on b: served again.
        let view = ClusterView::new(vec![node("a", false, 7.0), node("b", true, 8.0)]);
        assert_eq!(
            view.functions("add").len(),
            2,
            "a's ad still lists it until it re-reads"
        );
    }

    #[test]
    fn a_cached_read_parses_only_what_changed_and_reads_the_same() {
        let mut kvs = kv(&[
            (KEY_URLS, r#"["ws://a:1"]"#.into()),
            (
                &function_key("add", "1.2.0", "math.add"),
                fun("add", "1.2.0", "math.add", &[]),
            ),
            ("s:orders.#", String::new()),
            ("q:jobs", String::new()),
        ]);
        let read = |kvs: &[(String, String)], cache: &mut ParseCache| {
            let mut skipped = Vec::new();
            let n = PeerNode::parse_cached(
                "a",
                1,
                kvs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                cache,
                &mut skipped,
            );
            (n.expect("node"), skipped)
        };
        let mut cache = ParseCache::default();
        let (first, _) = read(&kvs, &mut cache);
        assert_eq!(cache.entries.len(), 3);
        assert_eq!(first, parse("a", &kvs).0.expect("node"));
        // One key changes, one goes: the cache follows, the node is as an uncached read.
        kvs[1].1 = fun("add", "1.2.0", "math.add", &["gpu"]);
        kvs.retain(|(k, _)| k != "q:jobs");
        let (second, _) = read(&kvs, &mut cache);
        assert_eq!(second, parse("a", &kvs).0.expect("node"));
        assert_eq!(second.functions[0].resources, ["gpu"]);
        assert!(second.queues.is_empty());
        assert_eq!(cache.entries.len(), 2);
        // A malformed value is reported every time, cached or not.
        kvs.push(("s:bad*x".into(), String::new()));
        assert_eq!(read(&kvs, &mut cache).1.len(), 1);
        assert_eq!(read(&kvs, &mut cache).1.len(), 1);
    }

    #[test]
    fn pushed_keys_are_what_clients_wait_on() {
        for k in ["s:a.#", "e:a.b", "q:jobs", "f:add@1.0.0/x", "p:math@1.0.0"] {
            assert!(is_pushed(k), "{k}");
        }
        for k in [KEY_URLS, KEY_LOAD, KEY_SEQ, KEY_LEAVING, "future"] {
            assert!(!is_pushed(k), "{k}");
        }
    }

    #[test]
    fn a_node_without_urls_is_not_routable_yet() {
        let (node, _) = parse("n3", &kv(&[(KEY_REGION, "eu".into())]));
        assert!(node.is_none());
    }

    #[test]
    fn identity_comes_from_the_value_so_any_name_round_trips() {
        let (name, version, id) = ("scope@fn/x", "2.0.0-rc.1", "id/with/slash@1");
        let key = function_key(name, version, id);
        let (n, skipped) = parse(
            "n4",
            &kv(&[
                (KEY_URLS, r#"["ws://x:1"]"#.into()),
                (&key, fun(name, version, id, &[])),
            ]),
        );
        assert!(skipped.is_empty());
        let n = n.expect("node");
        assert_eq!(n.functions[0].name, name);
        assert_eq!(n.functions[0].function_id, id);
        assert_eq!(n.functions[0].version.to_string(), version);
    }
}
