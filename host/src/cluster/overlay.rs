//! State pushed by peers over their links, laid over what gossip has delivered so far.
//!
//! Gossip converges and repairs, but a change takes a gossip round or more to arrive; a client
//! that subscribed on one node and publishes on another right after the ack cannot wait that
//! long. So a node also pushes each change of its own state ([`StateBatch`]) to every live
//! peer, and each peer keeps the batches here until gossip has caught up with them. The view
//! of a node is its gossip key-values with the batches newer than the node's gossiped
//! sequence number ([`KEY_SEQ`]) applied on top, in sequence order.
//!
//! Pure: no I/O and no clock but the one passed in, so every rule is tested here.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::catalog::{KEY_SEQ, is_pushed};
use super::wire::StateBatch;

/// How long batches from a node that is not (or no longer) in the live set are kept: long
/// enough for gossip to report a node that pushed before it was seen, short enough that a
/// node that left costs nothing for long.
pub const UNSEEN_GRACE: Duration = Duration::from_secs(30);

/// Batches not yet covered by gossip, at most this many per node: beyond it the oldest are
/// dropped (gossip delivers them in time; the overlay only makes the first moment right).
pub const MAX_BATCHES_PER_NODE: usize = 4096;

#[derive(Debug)]
struct NodeOverlay {
    generation: u64,
    batches: BTreeMap<u64, StateBatch>,
    /// When a batch last arrived or the node was last seen live.
    touched: Instant,
    /// Bumped on every batch: the view of the node is unchanged while this and its gossip are.
    revision: u64,
}

/// Every peer's pushed batches that gossip has not caught up with yet.
#[derive(Debug, Default)]
pub struct Overlay {
    nodes: HashMap<String, NodeOverlay>,
    /// Batches inserted so far: revisions never repeat, even across a node's overlay ending
    /// and starting again.
    inserted: u64,
}

/// A node's gossip state as the view builder sees it.
pub struct Gossiped<'a, I> {
    /// Node id.
    pub node_id: &'a str,
    /// Its gossip generation.
    pub generation: u64,
    /// Its key-values.
    pub kvs: I,
}

impl Overlay {
    /// Records a batch from `node_id` (generation `generation`). A batch from an earlier
    /// generation than one already held is ignored; one from a later generation replaces
    /// everything held (the node restarted). A full batch makes every older batch moot.
    pub fn insert(&mut self, node_id: &str, generation: u64, batch: StateBatch, now: Instant) {
        let entry = self
            .nodes
            .entry(node_id.to_owned())
            .or_insert_with(|| NodeOverlay {
                generation,
                batches: BTreeMap::new(),
                touched: now,
                revision: 0,
            });
        if generation < entry.generation {
            return;
        }
        if generation > entry.generation {
            entry.generation = generation;
            entry.batches.clear();
        }
        entry.touched = now;
        self.inserted += 1;
        entry.revision = self.inserted;
        if batch.full {
            entry.batches.retain(|seq, _| *seq > batch.seq);
        }
        entry.batches.insert(batch.seq, batch);
        while entry.batches.len() > MAX_BATCHES_PER_NODE {
            entry.batches.pop_first();
        }
    }

    /// Changes whenever a batch of `node_id` is recorded, never repeating (0: nothing held).
    /// With the node's gossip version it tells whether its view must be built again.
    pub fn revision(&self, node_id: &str) -> u64 {
        self.nodes.get(node_id).map_or(0, |n| n.revision)
    }

    /// Marks `node_id` as seen live now (its held batches are kept).
    pub fn touch(&mut self, node_id: &str, now: Instant) {
        if let Some(n) = self.nodes.get_mut(node_id) {
            n.touched = now;
        }
    }

    /// Whether anything is held for `node_id`.
    pub fn holds(&self, node_id: &str) -> bool {
        self.nodes
            .get(node_id)
            .is_some_and(|n| !n.batches.is_empty())
    }

    /// A node's key-values as the view should see them: its gossip `kvs` with the held batches
    /// that gossip has not caught up with applied in order. Batches gossip now covers are
    /// dropped. `None` when nothing applies (read `kvs` as they are).
    pub fn apply<'a, I>(
        &'a mut self,
        node: Gossiped<'a, I>,
        now: Instant,
    ) -> Option<Vec<(&'a str, &'a str)>>
    where
        I: Iterator<Item = (&'a str, &'a str)>,
    {
        let kvs: Vec<(&str, &str)> = node.kvs.collect();
        let gossiped = kvs
            .iter()
            .find(|(k, _)| *k == KEY_SEQ)
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .unwrap_or(0);
        let held = self.nodes.get_mut(node.node_id)?;
        held.touched = now;
        let drop_all = if held.generation != node.generation {
            // An earlier life's batches are dropped (gossip speaks for the new one); a newer
            // life's are kept until gossip reports it.
            if held.generation > node.generation {
                return None;
            }
            true
        } else {
            held.batches.retain(|seq, _| *seq > gossiped);
            held.batches.is_empty()
        };
        if drop_all {
            self.nodes.remove(node.node_id);
            return None;
        }
        let held: &'a NodeOverlay = self.nodes.get(node.node_id)?;
        let mut merged: BTreeMap<&'a str, &'a str> = kvs.into_iter().collect();
        for batch in held.batches.values() {
            if batch.full {
                merged.retain(|k, _| !is_pushed(k));
            }
            for (k, v) in &batch.changes {
                match v {
                    Some(v) => merged.insert(k, v),
                    None => merged.remove(k.as_str()),
                };
            }
        }
        Some(merged.into_iter().collect())
    }

    /// Drops what is held for nodes not seen live for [`UNSEEN_GRACE`].
    pub fn prune(&mut self, now: Instant) {
        self.nodes
            .retain(|_, n| now.saturating_duration_since(n.touched) < UNSEEN_GRACE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(seq: u64, full: bool, changes: &[(&str, Option<&str>)]) -> StateBatch {
        StateBatch {
            seq,
            full,
            changes: changes
                .iter()
                .map(|(k, v)| (k.to_string(), v.map(str::to_owned)))
                .collect(),
        }
    }

    fn view(
        o: &mut Overlay,
        generation: u64,
        kvs: &[(&str, &str)],
    ) -> Option<Vec<(String, String)>> {
        o.apply(
            Gossiped {
                node_id: "b",
                generation,
                kvs: kvs.iter().copied(),
            },
            Instant::now(),
        )
        .map(|m| {
            m.into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
    }

    fn keys(kvs: &[(String, String)]) -> Vec<&str> {
        kvs.iter().map(|(k, _)| k.as_str()).collect()
    }

    #[test]
    fn batches_apply_on_top_of_gossip_until_gossip_catches_up() {
        let mut o = Overlay::default();
        let now = Instant::now();
        o.insert("b", 1, batch(1, false, &[("s:a.#", Some(""))]), now);
        o.insert(
            "b",
            1,
            batch(2, false, &[("q:jobs", Some("")), ("s:old", None)]),
            now,
        );
        let gossip = [("urls", "[]"), ("s:old", ""), (KEY_SEQ, "0")];
        let merged = view(&mut o, 1, &gossip).expect("applies");
        assert_eq!(keys(&merged), ["q:jobs", "s:a.#", KEY_SEQ, "urls"]);
        // Gossip has batch 1 now: only batch 2 is still laid over.
        let gossip = [("urls", "[]"), ("s:old", ""), ("s:a.#", ""), (KEY_SEQ, "1")];
        let merged = view(&mut o, 1, &gossip).expect("applies");
        assert_eq!(keys(&merged), ["q:jobs", "s:a.#", KEY_SEQ, "urls"]);
        // Gossip has everything: the overlay is gone and gossip is read as it is.
        let gossip = [
            ("urls", "[]"),
            ("q:jobs", ""),
            ("s:a.#", ""),
            (KEY_SEQ, "2"),
        ];
        assert!(view(&mut o, 1, &gossip).is_none());
        assert!(!o.holds("b"));
    }

    #[test]
    fn a_full_batch_replaces_pushed_keys_and_older_batches() {
        let mut o = Overlay::default();
        let now = Instant::now();
        o.insert("b", 1, batch(3, false, &[("s:x", Some(""))]), now);
        o.insert("b", 1, batch(5, false, &[("s:later", Some(""))]), now);
        // A link came up again: the whole pushed state as of seq 4 (it was sent before batch 5
        // but arrived after it).
        o.insert("b", 1, batch(4, true, &[("q:jobs", Some(""))]), now);
        let gossip = [("urls", "[]"), ("s:gone", ""), ("load", "{}")];
        let merged = view(&mut o, 1, &gossip).expect("applies");
        // Gossip's pushed keys are replaced; others (urls, load) stay; batch 5 still applies.
        assert_eq!(keys(&merged), ["load", "q:jobs", "s:later", "urls"]);
    }

    #[test]
    fn generations_keep_a_restarted_node_apart_from_its_earlier_life() {
        let mut o = Overlay::default();
        let now = Instant::now();
        o.insert("b", 2, batch(1, false, &[("s:new", Some(""))]), now);
        // An earlier life's batch is ignored.
        o.insert("b", 1, batch(9, false, &[("s:old", Some(""))]), now);
        // Gossip still reports generation 1: the new life's batch waits for it.
        assert!(view(&mut o, 1, &[("urls", "[]")]).is_none());
        assert!(o.holds("b"));
        let merged = view(&mut o, 2, &[("urls", "[]")]).expect("applies");
        assert_eq!(keys(&merged), ["s:new", "urls"]);
        // Gossip moves past the overlay's generation: it is dropped.
        assert!(view(&mut o, 3, &[("urls", "[]")]).is_none());
        assert!(!o.holds("b"));
    }

    #[test]
    fn batches_of_nodes_never_seen_are_dropped_after_the_grace() {
        let mut o = Overlay::default();
        let now = Instant::now();
        o.insert("b", 1, batch(1, false, &[("s:a", Some(""))]), now);
        o.prune(now + UNSEEN_GRACE / 2);
        assert!(o.holds("b"));
        o.prune(now + UNSEEN_GRACE);
        assert!(!o.holds("b"));
    }

    #[test]
    fn the_batches_held_per_node_are_bounded() {
        let mut o = Overlay::default();
        let now = Instant::now();
        for seq in 1..=(MAX_BATCHES_PER_NODE as u64 + 10) {
            o.insert("b", 1, batch(seq, false, &[("s:a", Some(""))]), now);
        }
        let held = &o.nodes["b"].batches;
        assert_eq!(held.len(), MAX_BATCHES_PER_NODE);
        assert_eq!(held.keys().next(), Some(&11));
    }
}
