//! Plugin distribution: every node converges on the newest state of each published plugin
//! version anywhere in the cluster.
//!
//! Each node advertises its own records (`p:name@version` → sha256, active, changed_at,
//! placement). For each version the record with the newest `changed_at` is the desired state
//! (a retire wins a tie): a node that should host it and does not fetches the bytes by sha256
//! from a peer, verifies them and publishes them locally with that same `changed_at`; a node
//! that hosts a version retired elsewhere retires it. [`decide`] is that rule, pure.

use std::collections::HashMap;

use super::catalog::{ClusterView, PluginAd};

/// What this node should do to follow the cluster.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Fetch (unless held), verify and publish `name@version` as advertised.
    Install {
        /// Plugin name.
        name: String,
        /// Its version.
        version: String,
        /// The desired state (boxed: it is most of the action's size).
        ad: Box<PluginAd>,
        /// Nodes holding these bytes, the advertiser of the desired state first.
        sources: Vec<String>,
    },
    /// Retire `name@version`, recording `changed_at` as the retire time.
    Retire {
        /// Plugin name.
        name: String,
        /// Its version.
        version: String,
        /// When it was retired where it was retired.
        changed_at: f64,
    },
}

/// Orders states: newer first; on equal times a retire wins.
fn rank(ad: &PluginAd) -> (f64, bool) {
    (ad.changed_at, !ad.active)
}

fn newer(a: &PluginAd, b: &PluginAd) -> bool {
    rank(a).partial_cmp(&rank(b)) == Some(std::cmp::Ordering::Greater)
}

/// The actions that bring `local` (this node's records by (name, version)) in line with the
/// newest records of the live peers in `view`. `resources` are this node's tags, matched
/// against each version's placement.
pub fn decide(
    resources: &[String],
    local: &HashMap<(String, String), PluginAd>,
    view: &ClusterView,
) -> Vec<Action> {
    // The newest remote state of each version, and who advertises it.
    let mut best: HashMap<(&str, &str), (&PluginAd, &str)> = HashMap::new();
    for node in &view.nodes {
        for (name, version, ad) in &node.plugins {
            let slot = best
                .entry((name.as_str(), version.as_str()))
                .or_insert((ad, &node.node_id));
            if newer(ad, slot.0) {
                *slot = (ad, &node.node_id);
            }
        }
    }
    let mut actions = Vec::new();
    let mut keys: Vec<_> = best.keys().copied().collect();
    keys.sort();
    for (name, version) in keys {
        let (ad, origin) = best[&(name, version)];
        let mine = local.get(&(name.to_owned(), version.to_owned()));
        if mine.is_some_and(|m| !newer(ad, m)) {
            continue;
        }
        if mine.is_some_and(|m| m.sha256 != ad.sha256) {
            tracing::warn!(plugin = %name, %version, "conflicting bytes for one version in the cluster; keeping ours");
            continue;
        }
        if ad.active {
            if !ad.placement.iter().all(|t| resources.contains(t)) {
                continue;
            }
            let mut sources = vec![origin.to_owned()];
            for node in &view.nodes {
                let holds = node
                    .plugins
                    .iter()
                    .any(|(n, v, a)| n == name && v == version && a.sha256 == ad.sha256);
                if holds && node.node_id != origin {
                    sources.push(node.node_id.clone());
                }
            }
            actions.push(Action::Install {
                name: name.to_owned(),
                version: version.to_owned(),
                ad: Box::new(ad.clone()),
                sources,
            });
        } else if mine.is_some_and(|m| m.active) {
            actions.push(Action::Retire {
                name: name.to_owned(),
                version: version.to_owned(),
                changed_at: ad.changed_at,
            });
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::catalog::PeerNode;
    use crate::sandbox::Sandbox;

    fn ad(sha: &str, active: bool, at: f64, placement: &[&str]) -> PluginAd {
        PluginAd {
            sha256: sha.into(),
            size: 1,
            active,
            changed_at: at,
            placement: placement.iter().map(|s| s.to_string()).collect(),
            sandbox: Sandbox::default(),
        }
    }

    fn node(id: &str, plugins: &[(&str, &str, PluginAd)]) -> PeerNode {
        PeerNode {
            node_id: id.into(),
            generation: 1,
            urls: vec![format!("ws://{id}")],
            region: String::new(),
            resources: vec![],
            load: Default::default(),
            started: 0.0,
            functions: vec![],
            plugins: plugins
                .iter()
                .map(|(n, v, a)| (n.to_string(), v.to_string(), a.clone()))
                .collect(),
            interest: vec![],
            queues: vec![],
        }
    }

    fn local(entries: &[(&str, &str, PluginAd)]) -> HashMap<(String, String), PluginAd> {
        entries
            .iter()
            .map(|(n, v, a)| ((n.to_string(), v.to_string()), a.clone()))
            .collect()
    }

    #[test]
    fn a_new_version_anywhere_is_installed_from_every_holder() {
        let view = ClusterView::new(vec![
            node("a", &[("math", "1.0.0", ad("s1", true, 10.0, &[]))]),
            node("b", &[("math", "1.0.0", ad("s1", true, 9.0, &[]))]),
        ]);
        let acts = decide(&[], &local(&[]), &view);
        assert_eq!(acts.len(), 1);
        let Action::Install { sources, ad, .. } = &acts[0] else {
            panic!("{acts:?}")
        };
        assert_eq!(sources, &["a", "b"], "the newest advertiser first");
        assert_eq!(ad.changed_at, 10.0);
    }

    #[test]
    fn the_newest_state_wins_and_a_retire_wins_a_tie() {
        let view = ClusterView::new(vec![
            node("a", &[("m", "1.0.0", ad("s", false, 20.0, &[]))]),
            node("b", &[("m", "1.0.0", ad("s", true, 10.0, &[]))]),
        ]);
        let mine = local(&[("m", "1.0.0", ad("s", true, 10.0, &[]))]);
        assert_eq!(
            decide(&[], &mine, &view),
            vec![Action::Retire {
                name: "m".into(),
                version: "1.0.0".into(),
                changed_at: 20.0
            }]
        );
        let tie = ClusterView::new(vec![node(
            "a",
            &[("m", "1.0.0", ad("s", false, 10.0, &[]))],
        )]);
        assert!(matches!(decide(&[], &mine, &tie)[0], Action::Retire { .. }));
        // Our newer state is not overridden by an older one elsewhere.
        let newer_here = local(&[("m", "1.0.0", ad("s", true, 30.0, &[]))]);
        assert!(decide(&[], &newer_here, &view).is_empty());
        // A retire of something we never had needs nothing.
        assert!(decide(&[], &local(&[]), &tie).is_empty());
    }

    #[test]
    fn a_reactivation_elsewhere_is_followed() {
        let view = ClusterView::new(vec![node("a", &[("m", "1.0.0", ad("s", true, 30.0, &[]))])]);
        let mine = local(&[("m", "1.0.0", ad("s", false, 20.0, &[]))]);
        assert!(matches!(
            decide(&[], &mine, &view)[0],
            Action::Install { .. }
        ));
    }

    #[test]
    fn placement_limits_who_installs_and_conflicts_are_left_alone() {
        let view = ClusterView::new(vec![node(
            "a",
            &[("gpu-fn", "1.0.0", ad("s", true, 1.0, &["gpu"]))],
        )]);
        assert!(decide(&["cpu".into()], &local(&[]), &view).is_empty());
        assert_eq!(
            decide(&["gpu".into(), "cpu".into()], &local(&[]), &view).len(),
            1
        );
        let other_bytes = local(&[("gpu-fn", "1.0.0", ad("t", true, 0.5, &[]))]);
        assert!(decide(&["gpu".into()], &other_bytes, &view).is_empty());
    }
}
