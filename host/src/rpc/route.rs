//! Where a command runs, as pure functions over a snapshot (protocol.md §2.5): which targets
//! serve it (name, `function_id`, version constraint, `locs` ⊆ resources, `target_cluster`),
//! which one wins (the highest matching version; among nodes with that version the least
//! loaded, ties taking turns), and what happens after a peer did not run it (the re-route
//! rule). The dispatcher gathers the snapshot (registry, cluster view, reachable links, loads)
//! and acts on the answer; every rule is unit-tested here without a node or a socket.

use semver::Version;

use super::port::CallError;
use super::version::VersionConstraint;
use crate::protocol::RpcCommand;

/// What a candidate offers, as routing sees it.
pub trait Candidate {
    /// Its function id.
    fn function_id(&self) -> &str;
    /// Its version.
    fn version(&self) -> &Version;
    /// Whether it has resource tag `tag`.
    fn has_resource(&self, tag: &str) -> bool;
}

/// Whether `c` serves `cmd` in cluster `cluster_id`.
pub fn matches<C: Candidate + ?Sized>(
    c: &C,
    cmd: &RpcCommand,
    constraint: Option<&VersionConstraint>,
    cluster_id: &str,
) -> bool {
    cmd.function_id
        .as_deref()
        .is_none_or(|id| id == c.function_id())
        && constraint.is_none_or(|vc| vc.matches(c.version()))
        && cmd.locs.iter().all(|l| c.has_resource(l))
        && cmd
            .target_cluster
            .as_deref()
            .is_none_or(|t| t == cluster_id)
}

/// The highest-versioned candidate that serves `cmd`.
pub fn best<C: Candidate>(
    candidates: impl IntoIterator<Item = C>,
    cmd: &RpcCommand,
    constraint: Option<&VersionConstraint>,
    cluster_id: &str,
) -> Option<C> {
    candidates
        .into_iter()
        .filter(|c| matches(c, cmd, constraint, cluster_id))
        .max_by(|a, b| a.version().cmp(b.version()))
}

/// Where a command runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Route<L> {
    /// On this node, on this candidate.
    Local(L),
    /// On a peer: the index into the remote candidates given.
    Remote(usize),
    /// Nothing that serves it is here or reachable.
    NotFound,
}

/// What the routing of one command looks at: the command and the cluster this node is in.
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    /// The command (name already matched by whoever gathered the candidates).
    pub cmd: &'a RpcCommand,
    /// Its parsed version constraint.
    pub constraint: Option<&'a VersionConstraint>,
    /// This node's cluster id (`target_cluster` is checked against it).
    pub cluster_id: &'a str,
}

/// Chooses where `wanted` runs among this node's candidates `local` and the reachable peers'
/// candidates `remote` (peers whose link is down or that already declined it left out):
///
/// 1. the highest matching version anywhere wins;
/// 2. when this node has it in a version higher than every reachable peer's, it runs here;
/// 3. otherwise the nodes with that version compete on load (`remote_load` of each, and
///    `local_load` when this node has the same version): the least loaded wins;
/// 4. ties between equally loaded nodes go by `turn` (a counter the caller advances), so
///    sequential calls spread.
pub fn choose<L: Candidate, R: Candidate>(
    local: impl IntoIterator<Item = L>,
    remote: &[R],
    remote_load: impl Fn(&R) -> f64,
    local_load: f64,
    wanted: Wanted<'_>,
    turn: usize,
) -> Route<L> {
    let Wanted {
        cmd,
        constraint,
        cluster_id,
    } = wanted;
    let local = best(local, cmd, constraint, cluster_id);
    let top = remote
        .iter()
        .filter(|r| matches(*r, cmd, constraint, cluster_id))
        .map(|r| r.version())
        .max();
    let Some(top) = top else {
        return local.map_or(Route::NotFound, Route::Local);
    };
    if let Some(l) = &local
        && l.version() > top
    {
        return local.map_or(Route::NotFound, Route::Local);
    }
    let peers: Vec<usize> = (0..remote.len())
        .filter(|&i| remote[i].version() == top && matches(&remote[i], cmd, constraint, cluster_id))
        .collect();
    let mut loads: Vec<f64> = peers.iter().map(|&i| remote_load(&remote[i])).collect();
    let local = local.filter(|l| l.version() == top);
    if local.is_some() {
        loads.push(local_load);
    }
    match least_loaded(&loads, turn) {
        Some(k) if k < peers.len() => Route::Remote(peers[k]),
        Some(_) => local.map_or(Route::NotFound, Route::Local),
        None => Route::NotFound,
    }
}

/// The index of the lowest load; among equal ones the `turn`-th (modulo their number).
pub fn least_loaded(loads: &[f64], turn: usize) -> Option<usize> {
    let least = loads.iter().copied().fold(f64::INFINITY, f64::min);
    let tied: Vec<usize> = (0..loads.len()).filter(|&i| loads[i] <= least).collect();
    tied.get(turn % tied.len().max(1)).copied()
}

/// How many other nodes a call that was not run (link down, peer overloaded or stopping) is
/// offered to before it fails.
pub const MAX_REROUTES: usize = 3;

/// How an attempt to run a call on a peer ended, as the re-route rule sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Miss {
    /// The peer did not run it: the link was down, the frame could not be sent, or the peer
    /// refused it unrun (overloaded, shutting down). The text says why.
    NotRun(String),
    /// It was sent and then failed, or the peer was lost after it was sent (it may have run):
    /// final, never retried.
    Failed(CallError),
}

impl From<CallError> for Miss {
    fn from(e: CallError) -> Self {
        if e.not_run() {
            Miss::NotRun(e.into_cause())
        } else {
            Miss::Failed(e)
        }
    }
}

/// What to do after a miss.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Offer it to the next matching node (the one that missed is excluded from now on).
    Reroute,
    /// Fail with this error.
    Fail(CallError),
}

/// The re-route rule: a call that was not run goes to the next matching node, at most
/// [`MAX_REROUTES`] times; anything that may have run is final. `not_run` lists the misses
/// so far, this one included, for the error that ends the attempts.
pub fn after_miss(fun: &str, miss: Miss, not_run: &mut Vec<String>) -> Next {
    match miss {
        Miss::Failed(e) => Next::Fail(e),
        Miss::NotRun(why) => {
            not_run.push(why);
            if not_run.len() > MAX_REROUTES {
                Next::Fail(unreachable(fun, not_run))
            } else {
                Next::Reroute
            }
        }
    }
}

/// The error of a call whose every candidate node declined it.
pub fn unreachable(fun: &str, not_run: &[String]) -> CallError {
    CallError::NotFound(format!(
        "Command not found: {fun} (every node that has it is unreachable: {})",
        not_run.join("; ")
    ))
}

impl<C: Candidate + ?Sized> Candidate for &C {
    fn function_id(&self) -> &str {
        (**self).function_id()
    }
    fn version(&self) -> &Version {
        (**self).version()
    }
    fn has_resource(&self, tag: &str) -> bool {
        (**self).has_resource(tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct F(&'static str, Version, Vec<&'static str>);
    impl Candidate for F {
        fn function_id(&self) -> &str {
            self.0
        }
        fn version(&self) -> &Version {
            &self.1
        }
        fn has_resource(&self, tag: &str) -> bool {
            self.2.contains(&tag)
        }
    }

    fn cands() -> Vec<F> {
        vec![
            F("greet", Version::new(1, 0, 0), vec!["cpu"]),
            F("greet", Version::new(2, 0, 0), vec!["cpu", "gpu"]),
            F("other", Version::new(3, 0, 0), vec![]),
        ]
    }

    fn pick(cmd: &RpcCommand, vc: Option<&str>) -> Option<String> {
        let vc = vc.map(|v| VersionConstraint::parse(v).expect("constraint"));
        let c = cands();
        best(&c, cmd, vc.as_ref(), "main").map(|f| format!("{}@{}", f.0, f.1))
    }

    #[test]
    fn highest_matching_version_wins() {
        let mut cmd = RpcCommand::new("g", "greet", vec![]);
        assert_eq!(pick(&cmd, None).as_deref(), Some("other@3.0.0"));
        cmd.function_id = Some("greet".into());
        assert_eq!(pick(&cmd, None).as_deref(), Some("greet@2.0.0"));
        assert_eq!(pick(&cmd, Some("<2")).as_deref(), Some("greet@1.0.0"));
        assert_eq!(pick(&cmd, Some("^1")).as_deref(), Some("greet@1.0.0"));
        assert_eq!(pick(&cmd, Some(">=3")), None);
    }

    #[test]
    fn locs_are_a_subset_and_cluster_must_match() {
        let mut cmd = RpcCommand::new("g", "greet", vec![]);
        cmd.locs = vec!["gpu".into()];
        assert_eq!(pick(&cmd, None).as_deref(), Some("greet@2.0.0"));
        cmd.locs = vec!["gpu".into(), "tpu".into()];
        assert_eq!(pick(&cmd, None), None);
        cmd.locs.clear();
        cmd.target_cluster = Some("elsewhere".into());
        assert_eq!(pick(&cmd, None), None);
        cmd.target_cluster = Some("main".into());
        assert!(pick(&cmd, None).is_some());
    }

    /// A candidate with a load, standing for a node.
    fn at(v: (u64, u64, u64), tags: Vec<&'static str>) -> F {
        F("greet", Version::new(v.0, v.1, v.2), tags)
    }

    fn want(cmd: &RpcCommand) -> Wanted<'_> {
        Wanted {
            cmd,
            constraint: None,
            cluster_id: "main",
        }
    }

    fn load(loads: &'static [f64]) -> impl Fn(&F) -> f64 {
        move |f: &F| {
            loads[f
                .2
                .first()
                .and_then(|t| t.parse::<usize>().ok())
                .unwrap_or(0)]
        }
    }

    #[test]
    fn no_candidate_anywhere_is_not_found() {
        let cmd = RpcCommand::new("g", "greet", vec![]);
        let none: Vec<F> = vec![];
        assert_eq!(
            choose(Vec::<F>::new(), &none, |_| 0.0, 0.0, want(&cmd), 0),
            Route::NotFound
        );
        // A remote that does not match (wrong locs) is no candidate either.
        let mut cmd = cmd;
        cmd.locs = vec!["gpu".into()];
        let remote = vec![at((1, 0, 0), vec!["cpu"])];
        assert_eq!(
            choose(Vec::<F>::new(), &remote, |_| 0.0, 0.0, want(&cmd), 0),
            Route::NotFound
        );
    }

    #[test]
    fn a_higher_version_here_beats_every_peer() {
        let cmd = RpcCommand::new("g", "greet", vec![]);
        let remote = vec![at((1, 0, 0), vec![])];
        let r = choose(
            vec![at((2, 0, 0), vec![])],
            &remote,
            |_| 0.0,
            99.0,
            want(&cmd),
            0,
        );
        assert!(matches!(r, Route::Local(F(_, v, _)) if v == Version::new(2, 0, 0)));
    }

    #[test]
    fn a_higher_version_on_a_peer_beats_this_node_however_loaded() {
        let cmd = RpcCommand::new("g", "greet", vec![]);
        let remote = vec![at((1, 0, 0), vec![]), at((3, 0, 0), vec![])];
        let r = choose(
            vec![at((2, 0, 0), vec![])],
            &remote,
            |_| 1000.0,
            0.0,
            want(&cmd),
            0,
        );
        assert_eq!(r, Route::Remote(1));
    }

    #[test]
    fn among_nodes_with_the_top_version_the_least_loaded_wins() {
        let cmd = RpcCommand::new("g", "greet", vec![]);
        // Tags carry each peer's index into the load table.
        let remote = vec![
            at((1, 0, 0), vec!["0"]),
            at((1, 0, 0), vec!["1"]),
            at((0, 9, 0), vec!["2"]),
        ];
        let loads: &'static [f64] = &[5.0, 2.0, 0.0];
        assert_eq!(
            choose(
                vec![at((1, 0, 0), vec![])],
                &remote,
                load(loads),
                3.0,
                want(&cmd),
                0
            ),
            Route::Remote(1)
        );
        // This node less loaded than every peer with the version: here.
        let r = choose(
            vec![at((1, 0, 0), vec![])],
            &remote,
            load(loads),
            1.0,
            want(&cmd),
            0,
        );
        assert!(matches!(r, Route::Local(_)));
    }

    #[test]
    fn ties_take_turns_so_sequential_calls_spread() {
        let cmd = RpcCommand::new("g", "greet", vec![]);
        let remote = vec![at((1, 0, 0), vec![]), at((1, 0, 0), vec![])];
        let picks: Vec<_> = (0..3)
            .map(|turn| {
                choose(
                    vec![at((1, 0, 0), vec![])],
                    &remote,
                    |_| 0.0,
                    0.0,
                    want(&cmd),
                    turn,
                )
            })
            .map(|r| match r {
                Route::Remote(i) => i as i32,
                Route::Local(_) => -1,
                Route::NotFound => -2,
            })
            .collect();
        assert_eq!(picks, vec![0, 1, -1]);
        assert_eq!(least_loaded(&[], 4), None);
        assert_eq!(least_loaded(&[2.0, 1.0, 1.0], 1), Some(2));
    }

    #[test]
    fn constraints_locs_and_cluster_apply_to_peers_too() {
        let mut cmd = RpcCommand::new("g", "greet", vec![]);
        cmd.locs = vec!["gpu".into()];
        let remote = vec![at((3, 0, 0), vec!["cpu"]), at((2, 0, 0), vec!["gpu"])];
        assert_eq!(
            choose(Vec::<F>::new(), &remote, |_| 0.0, 0.0, want(&cmd), 0),
            Route::Remote(1)
        );
        let vc = VersionConstraint::parse("<2").expect("constraint");
        cmd.locs.clear();
        let w = Wanted {
            cmd: &cmd,
            constraint: Some(&vc),
            cluster_id: "main",
        };
        let r = choose(vec![at((1, 5, 0), vec![])], &remote, |_| 0.0, 0.0, w, 0);
        assert!(
            matches!(r, Route::Local(_)),
            "only the local 1.5 satisfies <2"
        );
        cmd.target_cluster = Some("other".into());
        assert_eq!(
            choose(
                vec![at((1, 0, 0), vec![])],
                &remote,
                |_| 0.0,
                0.0,
                want(&cmd),
                0
            ),
            Route::NotFound
        );
    }

    #[test]
    fn a_call_not_run_is_rerouted_a_bounded_number_of_times() {
        let mut not_run = Vec::new();
        for k in 0..MAX_REROUTES {
            let next = after_miss(
                "f",
                Miss::NotRun(format!("node {k}: link down")),
                &mut not_run,
            );
            assert_eq!(next, Next::Reroute);
        }
        let Next::Fail(e) = after_miss("f", Miss::NotRun("last".into()), &mut not_run) else {
            panic!("must give up");
        };
        assert!(matches!(e, CallError::NotFound(_)));
        assert!(
            e.cause().contains("node 0: link down") && e.cause().contains("last"),
            "{e}"
        );
    }

    #[test]
    fn an_overloaded_peer_did_not_run_it_but_a_lost_one_may_have() {
        assert_eq!(
            Miss::from(CallError::Overloaded("busy".into())),
            Miss::NotRun("busy".into())
        );
        let lost = CallError::NodeLost("link broke".into());
        let mut not_run = Vec::new();
        assert_eq!(
            after_miss("f", Miss::from(lost.clone()), &mut not_run),
            Next::Fail(lost)
        );
        let failed = CallError::Failed("on n2: boom".into());
        assert_eq!(
            after_miss("f", Miss::from(failed.clone()), &mut not_run),
            Next::Fail(failed)
        );
        assert!(not_run.is_empty());
    }
}
