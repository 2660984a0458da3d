//! Version constraints (protocol.md §2.5): MPREG's syntax (`>=1.2, <2`, `==1.0`, bare = exact,
//! optional `v`, missing parts are 0, parentheses and the word `version` ignored) plus semver's
//! `^`, `~` and `*`.

use semver::{Comparator, Op, Version};

/// Why a constraint could not be read (a 1003 error on the wire).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid version constraint '{constraint}': {reason}")]
pub struct ConstraintError {
    /// The constraint as sent.
    pub constraint: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A parsed constraint: every comparator must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionConstraint {
    comparators: Vec<Comparator>,
}

impl VersionConstraint {
    /// A command's optional constraint: `None` when it has none.
    pub fn parse_optional(text: Option<&str>) -> Result<Option<Self>, ConstraintError> {
        text.map(Self::parse).transpose()
    }

    /// Parses MPREG or semver syntax. An empty constraint (after stripping) matches everything.
    pub fn parse(text: &str) -> Result<Self, ConstraintError> {
        let err = |reason: String| ConstraintError {
            constraint: text.to_owned(),
            reason,
        };
        let cleaned: String = text.replace(['(', ')'], " ").replace("version", " ");
        let mut comparators = Vec::new();
        for part in cleaned.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part.starts_with(['^', '~']) || part.contains(['*', 'x', 'X']) {
                // semver's own syntax; `*` alone is a requirement with no comparators.
                let req = semver::VersionReq::parse(part).map_err(|e| err(e.to_string()))?;
                comparators.extend(req.comparators);
            } else {
                comparators.push(parse_part(part).map_err(err)?);
            }
        }
        Ok(VersionConstraint { comparators })
    }

    /// Whether `v` satisfies every comparator.
    pub fn matches(&self, v: &Version) -> bool {
        self.comparators.iter().all(|c| c.matches(v))
    }
}

fn parse_part(part: &str) -> Result<Comparator, String> {
    let (op, rest) = [
        (">=", Op::GreaterEq),
        ("<=", Op::LessEq),
        ("==", Op::Exact),
        (">", Op::Greater),
        ("<", Op::Less),
        ("=", Op::Exact),
    ]
    .into_iter()
    .find_map(|(prefix, op)| part.strip_prefix(prefix).map(|r| (op, r)))
    .unwrap_or((Op::Exact, part));
    let v = parse_version_lenient(rest.trim())?;
    Ok(Comparator {
        op,
        major: v.major,
        minor: Some(v.minor),
        patch: Some(v.patch),
        pre: v.pre,
    })
}

/// Reads `v1`, `1.2`, `1.2.3-rc.1`: optional `v`, missing numeric parts are 0.
pub fn parse_version_lenient(text: &str) -> Result<Version, String> {
    let t = text.trim();
    let t = t.strip_prefix(['v', 'V']).unwrap_or(t);
    let (core, suffix) = match t.find(['-', '+']) {
        Some(i) => t.split_at(i),
        None => (t, ""),
    };
    let mut parts: Vec<&str> = core.split('.').collect();
    if core.is_empty() || parts.len() > 3 {
        return Err(format!("'{text}' is not a version"));
    }
    while parts.len() < 3 {
        parts.push("0");
    }
    let full = format!("{}{}", parts.join("."), suffix);
    let v = Version::parse(&full).map_err(|e| format!("'{text}' is not a version: {e}"))?;
    Ok(Version {
        build: semver::BuildMetadata::EMPTY,
        pre: v.pre.clone(),
        ..v
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(c: &str, v: &str) -> bool {
        let c = VersionConstraint::parse(c).expect("parses");
        c.matches(&Version::parse(v).expect("version"))
    }

    #[test]
    fn mpreg_syntax() {
        assert!(m(">=1.2, <2", "1.2.0"));
        assert!(m(">=1.2, <2", "1.9.9"));
        assert!(!m(">=1.2, <2", "2.0.0"));
        assert!(m("1.2", "1.2.0"), "bare version is exact");
        assert!(!m("1.2", "1.2.1"));
        assert!(m("==v1.0.0", "1.0.0"));
        assert!(m("=1", "1.0.0"));
        assert!(m(">1.2", "1.2.1"), "missing parts are 0, not a wildcard");
        assert!(m("<=1.2", "1.2.0"));
        assert!(!m("<=1.2", "1.2.1"));
        assert!(m("(version >= 1.0)", "3.0.0"));
        assert!(m("", "0.0.1"));
    }

    #[test]
    fn semver_syntax() {
        assert!(m("^1.2", "1.9.0"));
        assert!(!m("^1.2", "2.0.0"));
        assert!(m("~1.2", "1.2.9"));
        assert!(!m("~1.2", "1.3.0"));
        assert!(m("*", "7.0.0"));
        assert!(m("1.*", "1.4.0"));
        assert!(!m("1.*", "2.0.0"));
    }

    #[test]
    fn bad_constraints_are_errors() {
        for bad in [">=abc", "1.2.3.4", ">=", "^x.y", "1..2"] {
            assert!(VersionConstraint::parse(bad).is_err(), "{bad} should fail");
        }
    }

    proptest! {
        #[test]
        fn exact_and_ranges_agree_with_ordering(a in (0u64..5, 0u64..5, 0u64..5), b in (0u64..5, 0u64..5, 0u64..5)) {
            let va = Version::new(a.0, a.1, a.2);
            let vb = Version::new(b.0, b.1, b.2);
            let s = format!("{}.{}.{}", b.0, b.1, b.2);
            prop_assert_eq!(m(&s, &va.to_string()), va == vb);
            prop_assert_eq!(m(&format!(">={s}"), &va.to_string()), va >= vb);
            prop_assert_eq!(m(&format!(">{s}"), &va.to_string()), va > vb);
            prop_assert_eq!(m(&format!("<{s}"), &va.to_string()), va < vb);
            prop_assert_eq!(m(&format!("<=v{s}"), &va.to_string()), va <= vb);
        }
    }
}
