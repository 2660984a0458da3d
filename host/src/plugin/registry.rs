//! The node's table of callable plugin functions: name → every loaded version.
//!
//! Readers take a snapshot (`ArcSwap`), so a lookup never blocks and a later change (publish,
//! retire) swaps the whole table atomically: a call that already picked its entry finishes on it.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::runtime::{LoadedPlugin, PluginFunction};

/// One version of one function: the plugin that holds it and which of its functions it is.
#[derive(Debug, Clone)]
pub struct FunctionEntry {
    /// The plugin version.
    pub plugin: Arc<LoadedPlugin>,
    index: usize,
}

impl FunctionEntry {
    /// The function's description.
    pub fn function(&self) -> &PluginFunction {
        &self.plugin.functions[self.index]
    }

    /// Its version (the plugin's).
    pub fn version(&self) -> &semver::Version {
        &self.plugin.manifest.version
    }
}

/// A plugin that cannot be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Another loaded plugin already provides this name, function id and version.
    #[error(
        "'{name}' (function_id '{function_id}') version {version} is already provided by {existing}"
    )]
    Duplicate {
        /// Function name.
        name: String,
        /// Its function id.
        function_id: String,
        /// The clashing version.
        version: String,
        /// Where the first one came from.
        existing: String,
    },
}

type Table = HashMap<String, Vec<FunctionEntry>>;

/// Name → versions, newest first.
#[derive(Default)]
pub struct Registry {
    table: ArcSwap<Table>,
    /// Serializes writers (read, modify, swap); readers never take it.
    writer: std::sync::Mutex<()>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds every function of `plugin`, or none if any clashes with a loaded one.
    pub fn add(&self, plugin: Arc<LoadedPlugin>) -> Result<(), RegistryError> {
        self.replace(None, Some(plugin)).map(|_| ())
    }

    /// In one atomic swap: removes plugin `remove` (name, version) if loaded, and adds `add`.
    /// Returns the removed plugin. Calls that already picked an entry keep it (they hold an
    /// `Arc`); calls routed after the swap see only the new set.
    pub fn replace(
        &self,
        remove: Option<(&str, &semver::Version)>,
        add: Option<Arc<LoadedPlugin>>,
    ) -> Result<Option<Arc<LoadedPlugin>>, RegistryError> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut table: Table = (**self.table.load()).clone();
        let mut removed = None;
        if let Some((name, version)) = remove {
            for versions in table.values_mut() {
                versions.retain(|e| {
                    let hit = e.plugin.manifest.name == name && e.version() == version;
                    if hit {
                        removed = Some(e.plugin.clone());
                    }
                    !hit
                });
            }
            table.retain(|_, v| !v.is_empty());
        }
        if let Some(plugin) = add {
            for (index, f) in plugin.functions.iter().enumerate() {
                let versions = table.entry(f.name.clone()).or_default();
                if let Some(clash) = versions.iter().find(|e| {
                    e.function().function_id == f.function_id
                        && e.version() == &plugin.manifest.version
                }) {
                    return Err(RegistryError::Duplicate {
                        name: f.name.clone(),
                        function_id: f.function_id.clone(),
                        version: plugin.manifest.version.to_string(),
                        existing: clash.plugin.origin.clone(),
                    });
                }
                versions.push(FunctionEntry {
                    plugin: plugin.clone(),
                    index,
                });
                versions.sort_by(|a, b| b.version().cmp(a.version()));
            }
        }
        self.table.store(Arc::new(table));
        Ok(removed)
    }

    /// Every loaded plugin version once, by name then version (newest first).
    pub fn plugins(&self) -> Vec<Arc<LoadedPlugin>> {
        let table = self.table.load();
        let mut out: Vec<Arc<LoadedPlugin>> = Vec::new();
        for versions in table.values() {
            for e in versions {
                if !out.iter().any(|p| Arc::ptr_eq(p, &e.plugin)) {
                    out.push(e.plugin.clone());
                }
            }
        }
        out.sort_by(|a, b| {
            (a.manifest.name.as_str(), &b.manifest.version)
                .cmp(&(b.manifest.name.as_str(), &a.manifest.version))
        });
        out
    }

    /// The loaded plugin `name` at `version`.
    pub fn plugin(&self, name: &str, version: &semver::Version) -> Option<Arc<LoadedPlugin>> {
        self.plugins()
            .into_iter()
            .find(|p| p.manifest.name == name && &p.manifest.version == version)
    }

    /// Every loaded function, sorted by name then version (newest first).
    pub fn all(&self) -> Vec<FunctionEntry> {
        let table = self.table.load();
        let mut names: Vec<&String> = table.keys().collect();
        names.sort();
        names
            .into_iter()
            .flat_map(|n| table[n].iter().cloned())
            .collect()
    }

    /// A consistent view for routing many commands against the same table.
    pub fn snapshot(&self) -> Arc<Table> {
        self.table.load_full()
    }
}
