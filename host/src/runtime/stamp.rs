//! The `mpreg-manifest` custom section: what `mpreg plugin build` writes into a component from
//! the project's `mpreg.toml` (name, version, cacheable commands), so that
//!
//! - a node can refuse a version it already holds *before* compiling the bytes (reading a
//!   custom section takes microseconds; compiling a Python image takes seconds), and
//! - the version lives in one place, the manifest, rather than in the code's `describe` too.
//!
//! When a component carries the section, its name must match what `describe` returns, its
//! version replaces the one `describe` returns, and its cache rules are added to the
//! `caching` export's. A component without it (built by hand with cargo or componentize-py)
//! loads exactly as before. Pure: no I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::protocol::CacheRule;

/// The custom section's name.
pub const SECTION: &str = "mpreg-manifest";

/// What the section holds (JSON).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stamp {
    /// The plugin's name (must equal `describe`'s).
    pub name: String,
    /// The version the node serves the component as.
    pub version: String,
    /// Memoization rules by command name (added to the `caching` export's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cache: BTreeMap<String, CacheRule>,
    /// How the plugin's values look in JSON (set by typed Python/JavaScript builds).
    #[serde(default, skip_serializing_if = "JsonStyle::is_wit")]
    pub style: JsonStyle,
}

/// How a plugin's values look in JSON (from its build stamp).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JsonStyle {
    /// WIT's own names (`kebab-case` fields); pair lists stay arrays.
    #[default]
    Wit,
    /// `snake_case` fields; string-keyed pair lists are objects (typed Python plugins).
    Python,
    /// `camelCase` fields; string-keyed pair lists are objects (typed JavaScript plugins).
    Js,
}

impl JsonStyle {
    /// Whether this is the default (left out of stamps).
    pub fn is_wit(&self) -> bool {
        *self == JsonStyle::Wit
    }
}

/// Why the section could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StampError {
    /// The bytes are not a well-formed component.
    #[error("not a well-formed component: {0}")]
    Parse(String),
    /// The section is there but is not a manifest.
    #[error("the {SECTION} section is not a manifest: {0}")]
    Json(String),
}

/// The top-level `mpreg-manifest` section of a component (the last one, if several), or
/// `None` when it has none. Sections of nested modules and components are not looked at.
pub fn read(bytes: &[u8]) -> Result<Option<Stamp>, StampError> {
    top_level_section(bytes, SECTION)?
        .map(|data| serde_json::from_slice(data).map_err(|e| StampError::Json(e.to_string())))
        .transpose()
}

/// The data of the component's last top-level custom section called `name` (the sections of
/// nested modules and components are theirs, not the component's).
pub(super) fn top_level_section<'a>(
    bytes: &'a [u8],
    name: &str,
) -> Result<Option<&'a [u8]>, StampError> {
    use wasmparser::{Parser, Payload};
    let mut depth = 0usize;
    let mut found = None;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| StampError::Parse(e.to_string()))? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::CustomSection(c) if depth == 0 && c.name() == name => {
                found = Some(c.data());
            }
            _ => {}
        }
    }
    Ok(found)
}

/// `bytes` with `stamp` appended as a top-level custom section (a later section wins over an
/// earlier one, so stamping a stamped component again is fine).
pub fn write(bytes: &[u8], stamp: &Stamp) -> Vec<u8> {
    use wasm_encoder::Section;
    let data = serde_json::to_vec(stamp).unwrap_or_default();
    let mut out = Vec::with_capacity(bytes.len() + data.len() + 32);
    out.extend_from_slice(bytes);
    wasm_encoder::CustomSection {
        name: SECTION.into(),
        data: data.into(),
    }
    .append_to(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest component: the preamble alone.
    const EMPTY: &[u8] = b"\0asm\x0d\0\x01\0";

    #[test]
    fn a_stamp_round_trips_and_the_last_one_wins() -> Result<(), StampError> {
        assert_eq!(read(EMPTY)?, None);
        let mut stamp = Stamp {
            name: "demo".into(),
            version: "1.2.3".into(),
            ..Stamp::default()
        };
        stamp.cache.insert(
            "demo_add".into(),
            CacheRule {
                ttl_seconds: Some(5.0),
                dependencies: vec![],
            },
        );
        let once = write(EMPTY, &stamp);
        assert_eq!(read(&once)?, Some(stamp.clone()));
        stamp.version = "1.2.4".into();
        let twice = write(&once, &stamp);
        assert_eq!(read(&twice)?.map(|s| s.version), Some("1.2.4".into()));
        Ok(())
    }

    #[test]
    fn bad_bytes_and_bad_sections_are_errors() {
        assert!(matches!(
            read(b"\0asm\x0d\0\x01\0\x99"),
            Err(StampError::Parse(_))
        ));
        let mut bad = EMPTY.to_vec();
        wasm_encoder::Section::append_to(
            &wasm_encoder::CustomSection {
                name: SECTION.into(),
                data: b"{\"name\": 1}".as_slice().into(),
            },
            &mut bad,
        );
        assert!(matches!(read(&bad), Err(StampError::Json(_))));
    }
}
