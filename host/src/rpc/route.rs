//! Which target serves a command (protocol.md §2.5): name, `function_id`, version constraint,
//! `locs` ⊆ resources, `target_cluster`; the highest matching version wins.

use semver::Version;

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
}
