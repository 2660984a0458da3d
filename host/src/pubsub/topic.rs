//! Topic patterns and the trie that matches a topic against every subscription at once
//! (protocol.md §3). Pure code: no I/O, no clocks.
//!
//! Topics and patterns split on `.`. In a pattern, `*` is exactly one segment (which may be
//! empty), `#` is zero or more segments, and anything else is literal. `exact_match` patterns are
//! all literal. Matching walks the trie once per topic: literal children by hash lookup, `*` and
//! `#` children in place, with `#` trying every split of the remaining segments; a visited set
//! keeps patterns with several `#` from going exponential.

use std::collections::HashMap;
use std::hash::Hash;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Longest topic or pattern accepted, in bytes.
pub const MAX_LEN: usize = 1024;
/// Most segments in a topic or pattern.
pub const MAX_SEGMENTS: usize = 64;

/// Why a topic or pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Empty string.
    #[error("{what} is empty")]
    Empty {
        /// `topic` or `pattern`.
        what: &'static str,
    },
    /// Too long or too many segments.
    #[error("{what} '{text}' is too long (at most {MAX_LEN} bytes and {MAX_SEGMENTS} segments)")]
    TooLong {
        /// `topic` or `pattern`.
        what: &'static str,
        /// The start of it.
        text: String,
    },
    /// A wildcard where it cannot be.
    #[error("{what} '{text}': {why}")]
    Wildcard {
        /// `topic` or `pattern`.
        what: &'static str,
        /// The text.
        text: String,
        /// What is wrong.
        why: &'static str,
    },
}

fn check_len(what: &'static str, text: &str) -> Result<(), TopicError> {
    if text.is_empty() {
        return Err(TopicError::Empty { what });
    }
    if text.len() > MAX_LEN || text.split('.').count() > MAX_SEGMENTS {
        let cut: String = text.chars().take(40).collect();
        return Err(TopicError::TooLong { what, text: cut });
    }
    Ok(())
}

/// Checks a topic a message is published on: no wildcards in it.
pub fn check_topic(topic: &str) -> Result<(), TopicError> {
    check_len("topic", topic)?;
    if topic.contains(['*', '#']) {
        return Err(TopicError::Wildcard {
            what: "topic",
            text: topic.to_owned(),
            why: "a published topic cannot contain '*' or '#'",
        });
    }
    Ok(())
}

/// One segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// Matches this text only.
    Literal(Box<str>),
    /// `*`: exactly one segment.
    One,
    /// `#`: zero or more segments.
    Any,
}

/// A parsed subscription pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    segments: Vec<Segment>,
}

impl std::fmt::Display for Pattern {
    /// The pattern as written (`a.*.c`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, seg) in self.segments.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            match seg {
                Segment::Literal(s) => f.write_str(s)?,
                Segment::One => f.write_str("*")?,
                Segment::Any => f.write_str("#")?,
            }
        }
        Ok(())
    }
}

impl Pattern {
    /// Parses `text`; with `exact`, every segment is literal (and may not hold wildcards).
    pub fn parse(text: &str, exact: bool) -> Result<Pattern, TopicError> {
        check_len("pattern", text)?;
        if exact {
            check_topic(text).map_err(|_| TopicError::Wildcard {
                what: "pattern",
                text: text.to_owned(),
                why: "an exact_match pattern cannot contain '*' or '#'",
            })?;
        }
        let mut segments = Vec::new();
        for seg in text.split('.') {
            segments.push(match seg {
                "*" => Segment::One,
                "#" => Segment::Any,
                s if s.contains(['*', '#']) => {
                    return Err(TopicError::Wildcard {
                        what: "pattern",
                        text: text.to_owned(),
                        why: "'*' and '#' must be whole segments (e.g. 'a.*.c', not 'a*.c')",
                    });
                }
                s => Segment::Literal(s.into()),
            });
        }
        Ok(Pattern { segments })
    }

    /// The segments.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Whether `topic` matches, by direct recursion: the reference the trie is tested against.
    pub fn matches(&self, topic: &str) -> bool {
        let t: Vec<&str> = topic.split('.').collect();
        fn go(p: &[Segment], t: &[&str]) -> bool {
            match p.split_first() {
                None => t.is_empty(),
                Some((Segment::Any, rest)) => (0..=t.len()).any(|i| go(rest, &t[i..])),
                Some((Segment::One, rest)) => !t.is_empty() && go(rest, &t[1..]),
                Some((Segment::Literal(l), rest)) => {
                    t.first().is_some_and(|s| **s == **l) && go(rest, &t[1..])
                }
            }
        }
        go(&self.segments, &t)
    }
}

#[derive(Debug)]
struct Node<T> {
    /// Literal children. foldhash: several times faster than SipHash on short segments, and
    /// still seeded per process, so subscribers cannot precompute colliding patterns.
    literal: FastMap<Box<str>, usize>,
    one: Option<usize>,
    any: Option<usize>,
    /// Subscriptions whose pattern ends here.
    ends: Vec<T>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node {
            literal: FastMap::default(),
            one: None,
            any: None,
            ends: Vec::new(),
        }
    }
}

/// Every subscription's patterns in one trie. `T` identifies a subscription; a subscription
/// with several patterns is inserted once per pattern, and [`TopicTrie::matches`] reports it once.
#[derive(Debug)]
pub struct TopicTrie<T> {
    nodes: Vec<Node<T>>,
    len: usize,
}

impl<T> Default for TopicTrie<T> {
    fn default() -> Self {
        TopicTrie {
            nodes: vec![Node::default()],
            len: 0,
        }
    }
}

/// Reusable buffers for [`TopicTrie::matches_into`], so matching allocates nothing once warm.
#[derive(Debug, Default)]
pub struct MatchScratch {
    stack: Vec<(usize, usize)>,
    seen: Vec<(usize, usize)>,
    /// Byte ranges of the topic's segments.
    segments: Vec<(usize, usize)>,
}

impl<T: Clone + Eq + Hash> TopicTrie<T> {
    /// An empty trie.
    pub fn new() -> Self {
        Self::default()
    }

    /// Pattern entries held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no pattern is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The child of node `at` for `seg`, if there is one.
    fn child(&self, at: usize, seg: &Segment) -> Option<usize> {
        let n = &self.nodes[at];
        match seg {
            Segment::Literal(l) => n.literal.get(l).copied(),
            Segment::One => n.one,
            Segment::Any => n.any,
        }
    }

    /// Adds `id` under `pattern`.
    pub fn insert(&mut self, pattern: &Pattern, id: T) {
        let mut at = 0;
        for seg in pattern.segments() {
            at = match self.child(at, seg) {
                Some(n) => n,
                None => {
                    let n = self.nodes.len();
                    self.nodes.push(Node::default());
                    match seg {
                        Segment::Literal(l) => {
                            self.nodes[at].literal.insert(l.clone(), n);
                        }
                        Segment::One => self.nodes[at].one = Some(n),
                        Segment::Any => self.nodes[at].any = Some(n),
                    }
                    n
                }
            };
        }
        self.nodes[at].ends.push(id);
        self.len += 1;
    }

    /// Removes one entry of `id` under `pattern`; returns whether there was one. Emptied nodes
    /// stay (a later subscription reuses them); the trie's size is bounded by the patterns ever
    /// held at once plus those since.
    pub fn remove(&mut self, pattern: &Pattern, id: &T) -> bool {
        let mut at = 0;
        for seg in pattern.segments() {
            match self.child(at, seg) {
                Some(n) => at = n,
                None => return false,
            }
        }
        let ends = &mut self.nodes[at].ends;
        match ends.iter().position(|x| x == id) {
            Some(i) => {
                ends.swap_remove(i);
                self.len -= 1;
                true
            }
            None => false,
        }
    }

    /// Every subscription with a pattern matching `topic`, each once.
    pub fn matches(&self, topic: &str) -> Vec<T> {
        let mut out = Vec::new();
        self.matches_into(topic, &mut MatchScratch::default(), &mut out);
        out
    }

    /// Like [`matches`](Self::matches), appending to `out` and reusing `scratch`.
    pub fn matches_into(&self, topic: &str, scratch: &mut MatchScratch, out: &mut Vec<T>) {
        let start = out.len();
        scratch.segments.clear();
        let mut from = 0;
        for (i, _) in topic.match_indices('.') {
            scratch.segments.push((from, i));
            from = i + 1;
        }
        scratch.segments.push((from, topic.len()));
        let t = &scratch.segments;
        scratch.stack.clear();
        scratch.seen.clear();
        scratch.stack.push((0, 0));
        while let Some((node, pos)) = scratch.stack.pop() {
            let n = &self.nodes[node];
            if let Some(any) = n.any {
                // `#` takes zero or more segments: every split, each state once.
                for p in pos..=t.len() {
                    if !scratch.seen.contains(&(any, p)) {
                        scratch.seen.push((any, p));
                        scratch.stack.push((any, p));
                    }
                }
            }
            if pos == t.len() {
                for id in &n.ends {
                    if !out[start..].contains(id) {
                        out.push(id.clone());
                    }
                }
                continue;
            }
            if let Some(one) = n.one {
                scratch.stack.push((one, pos + 1));
            }
            let (a, b) = t[pos];
            if let Some(&lit) = n.literal.get(&topic[a..b]) {
                scratch.stack.push((lit, pos + 1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s, false).expect("pattern")
    }

    fn trie_of(patterns: &[&str]) -> TopicTrie<usize> {
        let mut t = TopicTrie::new();
        for (i, s) in patterns.iter().enumerate() {
            t.insert(&p(s), i);
        }
        t
    }

    fn sorted(mut v: Vec<usize>) -> Vec<usize> {
        v.sort();
        v
    }

    #[test]
    fn the_examples_of_the_protocol() {
        assert!(p("user.*.login").matches("user.2.login"));
        assert!(!p("user.*.login").matches("user.2.x.login"));
        assert!(p("metrics.#").matches("metrics"));
        assert!(p("metrics.#").matches("metrics.cpu.load"));
        assert!(p("a.#.b").matches("a.b"));
        assert!(p("a.#.b").matches("a.x.y.b"));
        let t = trie_of(&["user.*.login", "metrics.#", "a.#.b"]);
        assert_eq!(t.matches("user.2.login"), vec![0]);
        assert!(t.matches("user.2.x.login").is_empty());
        assert_eq!(t.matches("metrics"), vec![1]);
        assert_eq!(t.matches("metrics.cpu.load"), vec![1]);
        assert_eq!(t.matches("a.b"), vec![2]);
        assert_eq!(t.matches("a.x.y.b"), vec![2]);
    }

    #[test]
    fn edge_cases() {
        // `*` may match an empty segment, but not a missing one.
        assert!(p("a.*").matches("a."));
        assert!(!p("a.*").matches("a"));
        assert!(p("*").matches(""));
        // `#` alone matches everything, including a single empty segment.
        assert!(p("#").matches("x.y.z") && p("#").matches(""));
        // Several `#`, `#` next to `*`, literal empty segments.
        assert!(p("#.#").matches("a"));
        assert!(p("#.*").matches("a") && !p("*.*").matches("a"));
        assert!(p("a..b").matches("a..b") && !p("a..b").matches("a.b"));
        assert!(p("a.#").matches("a") && !p("a.#").matches("ab"));
        let t = trie_of(&["#", "#.#", "a.#", "*.#.*"]);
        assert_eq!(sorted(t.matches("a")), vec![0, 1, 2]);
        assert_eq!(sorted(t.matches("a.b")), vec![0, 1, 2, 3]);
    }

    #[test]
    fn one_notification_per_subscription_and_removal() {
        let mut t = TopicTrie::new();
        t.insert(&p("user.#"), "s1");
        t.insert(&p("user.*.login"), "s1");
        t.insert(&p("user.*.login"), "s2");
        assert_eq!(t.matches("user.2.login").len(), 2, "s1 once, s2 once");
        assert!(t.remove(&p("user.*.login"), &"s1"));
        assert!(!t.remove(&p("user.*.login"), &"s1"), "already gone");
        assert!(!t.remove(&p("nope.*"), &"s1"));
        assert_eq!(t.len(), 2);
        let mut m = t.matches("user.2.login");
        m.sort();
        assert_eq!(m, vec!["s1", "s2"]);
        assert!(t.remove(&p("user.#"), &"s1"));
        assert_eq!(t.matches("user.2.login"), vec!["s2"]);
    }

    #[test]
    fn bad_patterns_and_topics_are_refused_with_a_reason() {
        assert!(matches!(
            Pattern::parse("", false),
            Err(TopicError::Empty { .. })
        ));
        assert!(matches!(
            Pattern::parse("a*.b", false),
            Err(TopicError::Wildcard { .. })
        ));
        assert!(matches!(
            Pattern::parse("a.#x", false),
            Err(TopicError::Wildcard { .. })
        ));
        assert!(matches!(
            Pattern::parse("a.*", true),
            Err(TopicError::Wildcard { .. })
        ));
        assert!(Pattern::parse("a.b", true).is_ok());
        let long = "a.".repeat(MAX_SEGMENTS);
        assert!(matches!(
            Pattern::parse(&long, false),
            Err(TopicError::TooLong { .. })
        ));
        assert!(matches!(
            check_topic("x".repeat(MAX_LEN + 1).as_str()),
            Err(TopicError::TooLong { .. })
        ));
        assert!(matches!(
            check_topic("a.*"),
            Err(TopicError::Wildcard { .. })
        ));
        assert!(matches!(check_topic(""), Err(TopicError::Empty { .. })));
        let err = Pattern::parse("a*.b", false).expect_err("bad").to_string();
        assert!(err.contains("whole segments"), "{err}");
    }

    #[test]
    fn long_topics_match_like_short_ones() {
        let topic = (0..40).map(|i| i.to_string()).collect::<Vec<_>>().join(".");
        let t = trie_of(&["0.#.39", "#.20.#", "*.#"]);
        assert_eq!(sorted(t.matches(&topic)), vec![0, 1, 2]);
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_owned()),
            Just("b".to_owned()),
            Just(String::new())
        ]
    }

    fn pattern_segment() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => segment(),
            1 => Just("*".to_owned()),
            1 => Just("#".to_owned()),
        ]
    }

    proptest! {
        #[test]
        fn the_trie_agrees_with_the_reference(
            patterns in prop::collection::vec(prop::collection::vec(pattern_segment(), 1..6), 1..25),
            topics in prop::collection::vec(prop::collection::vec(segment(), 1..7), 1..25),
        ) {
            // A pattern of one empty segment is the empty string, which is refused.
            let patterns: Vec<Pattern> = patterns
                .iter()
                .map(|s| s.join("."))
                .filter(|s| !s.is_empty())
                .map(|s| p(&s))
                .collect();
            let mut trie = TopicTrie::new();
            for (i, pat) in patterns.iter().enumerate() {
                trie.insert(pat, i);
            }
            for topic in topics.iter().map(|t| t.join(".")) {
                let want: Vec<usize> = (0..patterns.len()).filter(|&i| patterns[i].matches(&topic)).collect();
                prop_assert_eq!(sorted(trie.matches(&topic)), want, "topic {:?}", topic);
            }
            // After removing every third subscription, only the others match.
            for (i, pat) in patterns.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
                prop_assert!(trie.remove(pat, &i));
            }
            for topic in topics.iter().map(|t| t.join(".")) {
                let want: Vec<usize> = (0..patterns.len())
                    .filter(|&i| i % 3 != 0 && patterns[i].matches(&topic))
                    .collect();
                prop_assert_eq!(sorted(trie.matches(&topic)), want, "topic {:?}", topic);
            }
        }
    }
}
