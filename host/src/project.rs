//! `mpreg.toml`, a plugin project's manifest: the one place its name and version live, with
//! its language, build command, watched files, sandbox, placement and cacheable commands.
//! `mpreg plugin new` writes it; `plugin build` reads it and stamps the built component with
//! its name, version and cache rules ([`crate::runtime::stamp`]); `plugin publish` takes the
//! sandbox and placement from it; `mpreg dev` watches what it lists.
//!
//! A project without one still builds (its language is detected from its files) and its
//! component is served under the version its `describe` returns.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::protocol::CacheRule;
use crate::runtime::stamp::Stamp;
use crate::sandbox::Sandbox;

/// The manifest's file name.
pub const FILE: &str = "mpreg.toml";

/// `mpreg.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Who the plugin is and how it is built.
    pub plugin: PluginSection,
    /// The sandbox `plugin publish` and `mpreg dev` ask for (node defaults for what is absent).
    #[serde(default, skip_serializing_if = "is_default")]
    pub sandbox: Sandbox,
    /// Memoization rules by command name, stamped into the component.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cache: BTreeMap<String, CacheRule>,
}

fn is_default(s: &Sandbox) -> bool {
    *s == Sandbox::default()
}

/// `[plugin]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSection {
    /// The plugin's name; must equal what its `describe` returns.
    pub name: String,
    /// The version the component is served as (overrides `describe`'s).
    pub version: String,
    /// `rust`, `python` or `js`.
    pub language: Language,
    /// A build command of your own, run with `sh -c` in the project folder; it must write
    /// `output`. Absent: the language's own build (cargo, componentize-py, componentize-js).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
    /// Where `build` writes the component (relative to the project folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<PathBuf>,
    /// Files and folders (relative) whose change makes `mpreg dev` rebuild. Absent: the
    /// language's sources (see [`Manifest::watched`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watch: Vec<PathBuf>,
    /// Host it only on cluster nodes with all these resource tags (empty: every node).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement: Vec<String>,
}

/// A plugin language, as `mpreg.toml` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// Rust with the MPREG SDK.
    Rust,
    /// Python with componentize-py.
    Python,
    /// JavaScript with componentize-js.
    Js,
}

/// Why `mpreg.toml` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The file is not a manifest.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line where TOML knows it.
        reason: String,
    },
}

impl Manifest {
    /// A new project's manifest.
    pub fn new(name: &str, language: Language) -> Manifest {
        Manifest {
            plugin: PluginSection {
                name: name.to_owned(),
                version: "0.1.0".into(),
                language,
                build: None,
                output: None,
                watch: Vec::new(),
                placement: Vec::new(),
            },
            sandbox: Sandbox::default(),
            cache: BTreeMap::new(),
        }
    }

    /// The manifest of the project in `dir`, or `None` when it has no `mpreg.toml`.
    pub fn find(dir: &Path) -> Result<Option<Manifest>, ProjectError> {
        let path = dir.join(FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Manifest::parse(&text, &path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ProjectError::Io { path, source }),
        }
    }

    /// Parses and checks the text of `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest, ProjectError> {
        let invalid = |reason: String| ProjectError::Invalid {
            path: path.to_owned(),
            reason,
        };
        let m: Manifest = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        crate::rpc::version::parse_version_lenient(&m.plugin.version).map_err(|e| {
            invalid(format!(
                "[plugin] version '{}' is not a version: {e}",
                m.plugin.version
            ))
        })?;
        if m.plugin.build.is_some() != m.plugin.output.is_some() {
            return Err(invalid(
                "[plugin] `build` and `output` go together: a build command of your own \
                 must say where it writes the component"
                    .into(),
            ));
        }
        Ok(m)
    }

    /// The manifest as `mpreg plugin new` writes it, with the optional keys shown as comments.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).unwrap_or_default();
        format!(
            "# The plugin's manifest (docs/plugins.md, \"mpreg.toml\"): `mpreg plugin build`, \
             `publish`\n# and `dev` read it. The version here is the one served.\n{body}\n\
             # build = \"make wasm\"        # a build command of your own (sh -c), with:\n\
             # output = \"dist/x.wasm\"     # where it writes the component\n\
             # watch = [\"src\", \"wit\"]      # what `mpreg dev` watches (default: the sources)\n\
             # placement = [\"gpu\"]         # only nodes with these resource tags host it\n\
             #\n# [sandbox]                   # node defaults for what is absent\n\
             # memory_limit_mib = 64\n# call_timeout_ms = 5000\n# env = {{ MODE = \"dev\" }}\n\
             # dirs = [{{ host = \"/srv/data\", guest = \"/data\" }}]\n\
             # cache_namespaces = [\"ml*\"]\n# secrets = [\"api-key\"]\n\
             # instance_reuse = \"serial\"    # or \"never\" (docs/plugins.md, \"Instance reuse\")\n#\n\
             # [cache.my_command]          # memoize a command's results\n\
             # ttl_seconds = 60\n"
        )
    }

    /// What the component is stamped with.
    pub fn stamp(&self) -> Stamp {
        Stamp {
            name: self.plugin.name.clone(),
            version: self.plugin.version.clone(),
            cache: self.cache.clone(),
            style: Default::default(),
        }
    }

    /// The files and folders (relative to the project) whose change means a rebuild.
    pub fn watched(&self) -> Vec<PathBuf> {
        if !self.plugin.watch.is_empty() {
            return self.plugin.watch.clone();
        }
        let mut w: Vec<PathBuf> = vec!["wit".into(), FILE.into()];
        match self.plugin.language {
            Language::Rust => w.extend(["src".into(), "Cargo.toml".into()]),
            // The app may import the project's other modules: the whole folder (less what
            // `is_output` leaves out).
            Language::Python | Language::Js => return vec![".".into()],
        }
        w
    }

    /// The sandbox to publish with: `None` when the manifest sets none (the node keeps what it
    /// has, or its defaults).
    pub fn sandbox(&self) -> Option<Sandbox> {
        (!is_default(&self.sandbox)).then(|| self.sandbox.clone())
    }
}

/// Whether a path (relative to the project) is build output or tooling, never a source: a
/// change there must not trigger a rebuild (the build writes these itself).
/// Hidden files and folders (editor swap files, `.git`) are never sources either, nor is
/// `package-lock.json`, which the JavaScript build's `npm install` writes.
pub fn is_output(rel: &Path) -> bool {
    let mut parts = rel.components().filter_map(|c| match c {
        std::path::Component::Normal(c) => c.to_str(),
        _ => None,
    });
    let first = parts.next();
    let top = matches!(first, Some("target" | "node_modules"));
    let anywhere = first
        .into_iter()
        .chain(parts)
        .any(|p| p == "__pycache__" || (p.starts_with('.') && p.len() > 1));
    top || anywhere
        || rel.file_name().is_some_and(|n| n == "package-lock.json")
        || rel.extension().is_some_and(|e| e == "wasm" || e == "pyc")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_manifest_round_trips_and_stamps() -> Result<(), ProjectError> {
        let m = Manifest::new("demo-fn", Language::Python);
        let text = m.to_toml();
        let back = Manifest::parse(&text, Path::new(FILE))?;
        assert_eq!(back, m);
        assert_eq!(back.stamp().version, "0.1.0");
        assert!(back.sandbox().is_none());
        assert_eq!(
            back.watched(),
            [PathBuf::from(".")],
            "a Python project: all of it"
        );
        Ok(())
    }

    #[test]
    fn everything_optional_is_read() -> Result<(), ProjectError> {
        let text = r#"
[plugin]
name = "x"
version = "1.2.3-dev.4"
language = "js"
build = "make"
output = "dist/x.wasm"
watch = ["lib"]
placement = ["gpu"]

[sandbox]
memory_limit_mib = 64
env = { MODE = "dev" }
dirs = [{ host = "/srv", guest = "/data" }]

[cache.x_add]
ttl_seconds = 5
"#;
        let m = Manifest::parse(text, Path::new(FILE))?;
        assert_eq!(m.plugin.language, Language::Js);
        assert_eq!(m.watched(), vec![PathBuf::from("lib")]);
        let sandbox = m.sandbox().ok_or_else(|| ProjectError::Invalid {
            path: FILE.into(),
            reason: "no sandbox".into(),
        })?;
        assert_eq!(sandbox.memory_limit_mib, Some(64));
        assert_eq!(sandbox.dirs.len(), 1);
        assert_eq!(m.stamp().cache["x_add"].ttl_seconds, Some(5.0));
        Ok(())
    }

    #[test]
    fn bad_manifests_say_what_is_wrong() {
        let bad = |text: &str| match Manifest::parse(text, Path::new(FILE)) {
            Err(ProjectError::Invalid { reason, .. }) => reason,
            other => format!("accepted: {other:?}"),
        };
        let head = "[plugin]\nname = \"x\"\nlanguage = \"rust\"\n";
        assert!(bad(head).contains("version"), "{}", bad(head));
        let r = bad(&format!("{head}version = \"one\"\n"));
        assert!(r.contains("not a version"), "{r}");
        let r = bad(&format!("{head}version = \"1.0.0\"\nbuild = \"make\"\n"));
        assert!(r.contains("output"), "{r}");
        let r = bad(&format!("{head}version = \"1.0.0\"\nvesion = \"2\"\n"));
        assert!(r.contains("vesion"), "{r}");
        let r = bad("[plugin]\nname = \"x\"\nversion = \"1.0.0\"\nlanguage = \"cobol\"\n");
        assert!(r.contains("cobol") || r.contains("unknown variant"), "{r}");
    }

    #[test]
    fn build_output_is_not_a_source() {
        for out in [
            "target/x",
            "node_modules/a/b.js",
            "x.wasm",
            "__pycache__/a.pyc",
            "helpers/__pycache__/h.cpython-312.pyc",
            ".app.py.swp",
            "lib/.hidden/x.py",
            "package-lock.json",
        ] {
            assert!(is_output(Path::new(out)), "{out}");
        }
        for src in [
            "src/lib.rs",
            "app.py",
            "helpers/text.py",
            "wit/world.wit",
            "mpreg.toml",
        ] {
            assert!(!is_output(Path::new(src)), "{src}");
        }
    }
}
