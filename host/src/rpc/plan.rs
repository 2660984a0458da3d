//! Pure planning of a multi-command request (protocol.md §2.3): which command waits for which,
//! the levels that shape the reply, and rejection of duplicates and cycles before anything runs.

use std::collections::HashMap;

use serde_json::Value;

use crate::protocol::RpcCommand;

/// Why a request cannot be planned. All of these are 1003 errors on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// `cmds` is empty.
    #[error("request has no commands")]
    Empty,
    /// Two commands share a name (MPREG silently keeps the last; we refuse).
    #[error("duplicate command name '{0}'")]
    DuplicateName(String),
    /// The dependency graph has a cycle; the names are one cycle, first name repeated at the end.
    #[error("dependency cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
}

/// The dependency structure of one request, by command index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// For each command, the commands its positional args reference (deduplicated, sorted).
    pub deps: Vec<Vec<usize>>,
    /// For each command, the commands its kwargs reference that are in an earlier level: it
    /// waits for them too and gets their results substituted.
    pub kwarg_deps: Vec<Vec<usize>>,
    /// Level of each command.
    pub level_of: Vec<usize>,
    /// Commands of each level, in request order.
    pub levels: Vec<Vec<usize>>,
}

impl Plan {
    /// Everything command `i` waits for before it starts.
    pub fn waits_for(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        self.deps[i]
            .iter()
            .chain(self.kwarg_deps[i].iter())
            .copied()
    }

    /// The commands whose results form the reply.
    pub fn last_level(&self) -> &[usize] {
        self.levels.last().map(Vec::as_slice).unwrap_or(&[])
    }
}

/// The command a string refers to, if any: the whole string is a name, or the part before its
/// first `.` is (a field path).
pub fn referenced(s: &str, names: &HashMap<&str, usize>) -> Option<usize> {
    if let Some(&i) = names.get(s) {
        return Some(i);
    }
    let (base, _) = s.split_once('.')?;
    names.get(base).copied()
}

/// Collects every command referenced anywhere inside `v` (array elements and object values,
/// never object keys).
fn collect_refs(v: &Value, names: &HashMap<&str, usize>, out: &mut Vec<usize>) {
    match v {
        Value::String(s) => out.extend(referenced(s, names)),
        Value::Array(items) => items.iter().for_each(|i| collect_refs(i, names, out)),
        Value::Object(map) => map.values().for_each(|i| collect_refs(i, names, out)),
        _ => {}
    }
}

fn sorted_unique(mut v: Vec<usize>) -> Vec<usize> {
    v.sort_unstable();
    v.dedup();
    v
}

/// Plans a request: dependencies from positional args, levels, then kwarg dependencies on
/// earlier levels.
pub fn plan(cmds: &[RpcCommand]) -> Result<Plan, PlanError> {
    if cmds.is_empty() {
        return Err(PlanError::Empty);
    }
    let mut names: HashMap<&str, usize> = HashMap::with_capacity(cmds.len());
    for (i, c) in cmds.iter().enumerate() {
        if names.insert(c.name.as_str(), i).is_some() {
            return Err(PlanError::DuplicateName(c.name.clone()));
        }
    }
    let deps: Vec<Vec<usize>> = cmds
        .iter()
        .map(|c| {
            let mut out = Vec::new();
            c.args
                .iter()
                .for_each(|a| collect_refs(a, &names, &mut out));
            sorted_unique(out)
        })
        .collect();
    let level_of = levels_of(&deps)
        .map_err(|cycle| PlanError::Cycle(cycle.iter().map(|&i| cmds[i].name.clone()).collect()))?;
    let depth = level_of.iter().max().map_or(0, |m| m + 1);
    let mut levels = vec![Vec::new(); depth];
    for (i, &l) in level_of.iter().enumerate() {
        levels[l].push(i);
    }
    let kwarg_deps = cmds
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut out = Vec::new();
            c.kwargs
                .values()
                .for_each(|v| collect_refs(v, &names, &mut out));
            out.retain(|&d| level_of[d] < level_of[i]);
            sorted_unique(out)
        })
        .collect();
    Ok(Plan {
        deps,
        kwarg_deps,
        level_of,
        levels,
    })
}

/// Level of every node (0 without deps, else one more than its deepest dep), or one cycle.
fn levels_of(deps: &[Vec<usize>]) -> Result<Vec<usize>, Vec<usize>> {
    let n = deps.len();
    let mut dependents = vec![Vec::new(); n];
    let mut pending: Vec<usize> = deps.iter().map(Vec::len).collect();
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            dependents[d].push(i);
        }
    }
    let mut level = vec![0usize; n];
    let mut ready: Vec<usize> = (0..n).filter(|&i| pending[i] == 0).collect();
    let mut done = 0;
    while let Some(i) = ready.pop() {
        done += 1;
        for &j in &dependents[i] {
            level[j] = level[j].max(level[i] + 1);
            pending[j] -= 1;
            if pending[j] == 0 {
                ready.push(j);
            }
        }
    }
    if done == n {
        return Ok(level);
    }
    Err(find_cycle(deps, &pending))
}

/// Walks dependencies among the nodes Kahn's algorithm could not finish; every such node lies on
/// or leads to a cycle, so following unfinished deps must revisit a node.
fn find_cycle(deps: &[Vec<usize>], pending: &[usize]) -> Vec<usize> {
    let Some(start) = (0..deps.len()).find(|&i| pending[i] > 0) else {
        return Vec::new();
    };
    let mut path = vec![start];
    let mut seen_at = HashMap::from([(start, 0usize)]);
    let mut cur = start;
    loop {
        let Some(&next) = deps[cur].iter().find(|&&d| pending[d] > 0) else {
            return path;
        };
        if let Some(&pos) = seen_at.get(&next) {
            let mut cycle = path[pos..].to_vec();
            cycle.push(next);
            return cycle;
        }
        seen_at.insert(next, path.len());
        path.push(next);
        cur = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn cmd(name: &str, args: Value) -> RpcCommand {
        let Value::Array(args) = args else {
            panic!("args must be an array")
        };
        RpcCommand::new(name, "echo", args)
    }

    fn names_of(cmds: &[RpcCommand], idx: &[usize]) -> Vec<String> {
        idx.iter().map(|&i| cmds[i].name.clone()).collect()
    }

    #[test]
    fn worked_example_levels() {
        let cmds = vec![
            cmd("third", json!(["second", {"k": "first"}])),
            cmd("first", json!(["hello"])),
            cmd("second", json!(["first", "lit"])),
        ];
        let p = plan(&cmds).expect("plans");
        assert_eq!(p.levels.len(), 3);
        assert_eq!(names_of(&cmds, p.last_level()), ["third"]);
        assert_eq!(p.deps[0], vec![1, 2]);
    }

    #[test]
    fn field_paths_and_nesting_are_references_substrings_are_not() {
        let cmds = vec![
            cmd("d", json!([5])),
            cmd(
                "e",
                json!(["d.inner.value", [["d"]], {"x": {"y": "d.list"}}]),
            ),
            cmd("f", json!(["xd", "d_", "|d", {"d": 1}])),
        ];
        let p = plan(&cmds).expect("plans");
        assert_eq!(p.deps[1], vec![0]);
        assert!(
            p.deps[2].is_empty(),
            "substrings, prefixes and keys never count"
        );
        assert_eq!(names_of(&cmds, p.last_level()), ["e"]);
        assert_eq!(names_of(&cmds, &p.levels[0]), ["d", "f"]);
    }

    #[test]
    fn rejects_empty_duplicates_and_cycles() {
        assert_eq!(plan(&[]), Err(PlanError::Empty));
        let dup = vec![cmd("a", json!([])), cmd("a", json!([1]))];
        assert_eq!(plan(&dup), Err(PlanError::DuplicateName("a".into())));
        let cyc = vec![
            cmd("a", json!(["b"])),
            cmd("b", json!(["c"])),
            cmd("c", json!(["a"])),
        ];
        let Err(PlanError::Cycle(c)) = plan(&cyc) else {
            panic!("cycle expected")
        };
        assert_eq!(c.first(), c.last());
        assert_eq!(c.len(), 4);
        let deep_self = vec![cmd("a", json!([{"x": [[{"y": "a.z"}]]}]))];
        assert_eq!(
            plan(&deep_self),
            Err(PlanError::Cycle(vec!["a".into(), "a".into()]))
        );
    }

    #[test]
    fn kwargs_wait_only_for_earlier_levels() {
        let mut b = cmd("b", json!(["a"]));
        b.kwargs.insert("k".into(), json!("a"));
        let mut c = cmd("c", json!([]));
        c.kwargs.insert("k".into(), json!("b"));
        let cmds = vec![cmd("a", json!([1])), b, c];
        let p = plan(&cmds).expect("plans");
        assert_eq!(p.kwarg_deps[1], vec![0]);
        assert!(
            p.kwarg_deps[2].is_empty(),
            "c is level 0; b is later, so it stays literal"
        );
        assert_eq!(p.level_of, vec![0, 1, 0]);
    }

    /// A random DAG: each node may depend only on lower-numbered nodes, so it is acyclic.
    fn dag() -> impl Strategy<Value = Vec<Vec<usize>>> {
        (1usize..40).prop_flat_map(|n| {
            (0..n)
                .map(|i| {
                    proptest::collection::vec(0..i.max(1), 0..4.min(i + 1))
                        .prop_map(move |d| if i == 0 { Vec::new() } else { d })
                })
                .collect::<Vec<_>>()
        })
    }

    fn to_cmds(deps: &[Vec<usize>], shuffle: &[usize]) -> Vec<RpcCommand> {
        // shuffle[k] = original index placed at position k, so order in the request is random.
        shuffle
            .iter()
            .map(|&i| {
                let args = deps[i].iter().map(|d| json!(format!("n{d}"))).collect();
                RpcCommand::new(format!("n{i}"), "echo", args)
            })
            .collect()
    }

    proptest! {
        #[test]
        fn random_dags_get_a_valid_level_order(deps in dag(), seed in any::<u64>()) {
            let n = deps.len();
            let mut order: Vec<usize> = (0..n).collect();
            let mut s = seed;
            for i in (1..n).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                order.swap(i, (s >> 33) as usize % (i + 1));
            }
            let cmds = to_cmds(&deps, &order);
            let p = plan(&cmds).expect("a DAG always plans");
            for (i, ds) in p.deps.iter().enumerate() {
                for &d in ds {
                    prop_assert!(p.level_of[d] < p.level_of[i]);
                }
                // The level is the tightest one: one more than the deepest dependency.
                let expect = ds.iter().map(|&d| p.level_of[d] + 1).max().unwrap_or(0);
                prop_assert_eq!(p.level_of[i], expect);
            }
            prop_assert_eq!(p.levels.iter().map(Vec::len).sum::<usize>(), n);
            prop_assert!(p.levels.iter().all(|l| !l.is_empty()));
        }

        #[test]
        fn a_cycle_is_reported_exactly_when_one_exists(
            deps in dag(), a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>()
        ) {
            // Make `x` depend on `y`: that closes a cycle exactly when `y` already reaches `x`
            // (or x == y).
            let n = deps.len();
            let (x, y) = (a.index(n), b.index(n));
            let reaches = |from: usize, to: usize| {
                let mut stack = vec![from];
                let mut seen = vec![false; n];
                while let Some(v) = stack.pop() {
                    if v == to { return true; }
                    if !std::mem::replace(&mut seen[v], true) { stack.extend(&deps[v]); }
                }
                false
            };
            let cyclic = reaches(y, x);
            let mut deps = deps.clone();
            deps[x].push(y);
            let order: Vec<usize> = (0..n).collect();
            let result = plan(&to_cmds(&deps, &order));
            match result {
                Err(PlanError::Cycle(c)) => {
                    prop_assert!(cyclic, "false cycle {:?}", c);
                    prop_assert_eq!(c.first(), c.last());
                    // Every consecutive pair in the reported cycle is a real dependency edge.
                    for w in c.windows(2) {
                        let from: usize = w[0][1..].parse().expect("name");
                        let to: usize = w[1][1..].parse().expect("name");
                        prop_assert!(deps[from].contains(&to));
                    }
                }
                Ok(_) => prop_assert!(!cyclic, "missed a cycle"),
                Err(e) => prop_assert!(false, "unexpected {:?}", e),
            }
        }
    }
}
