//! Publishing, retiring and restoring plugins: the only writer of the registry after start-up.
//!
//! Publish validates everything before anything is stored (component header, compilation, our
//! world, the manifest, the sandbox, version immutability, clashes with loaded functions), then
//! swaps the registry and persists. Retire swaps the version out at once and then waits for the
//! calls still running on it. Both are serialized by one lock; calls never take it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

use super::registry::{Registry, RegistryError};
use super::store::{PluginRecord, PluginStore, StoreError};
use crate::digest::sha256_hex;
pub use crate::protocol::admin::{
    CodeSource, PluginList, PluginSummary, PublishOutcome, Published, Retired,
};
use crate::runtime::{Compiled, LoadError, LoadedPlugin, Runtime, Sandbox, check_component_header};

/// Why a publish or retire was refused. Nothing was stored or changed when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The bytes are not a WebAssembly component.
    #[error("{0}")]
    NotComponent(String),
    /// Compilation, the world check, the manifest or the sandbox failed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The version exists with other bytes, or another plugin provides the same function version.
    #[error("{0}")]
    Conflict(String),
    /// No such plugin version.
    #[error("{0}")]
    NotFound(String),
    /// The version named is not a version.
    #[error("{0}")]
    InvalidVersion(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PublishError {
    /// The HTTP status that says this best.
    pub fn status(&self) -> u16 {
        match self {
            PublishError::NotComponent(_) => 400,
            PublishError::Load(LoadError::Compile { .. } | LoadError::Sandbox { .. }) => 400,
            PublishError::Load(LoadError::World { .. } | LoadError::Manifest { .. }) => 422,
            PublishError::Load(LoadError::Engine(_)) | PublishError::Store(_) => 500,
            PublishError::Conflict(_) => 409,
            PublishError::NotFound(_) => 404,
            PublishError::InvalidVersion(_) => 400,
        }
    }

    /// A short machine-readable kind, next to the human message in admin replies.
    pub fn kind(&self) -> &'static str {
        match self {
            PublishError::NotComponent(_) => "not_a_component",
            PublishError::Load(LoadError::Compile { .. }) => "not_loadable",
            PublishError::Load(LoadError::Sandbox { .. }) => "invalid_sandbox",
            PublishError::Load(LoadError::World { .. }) => "wrong_world",
            PublishError::Load(LoadError::Manifest { .. }) => "invalid_metadata",
            PublishError::Load(LoadError::Engine(_)) => "engine",
            PublishError::Store(_) => "storage",
            PublishError::Conflict(_) => "conflict",
            PublishError::NotFound(_) => "not_found",
            PublishError::InvalidVersion(_) => "invalid_version",
        }
    }
}

/// The refusal of other bytes under a version that exists.
fn immutable(name: &str, version: &str, sha256: &str) -> PublishError {
    PublishError::Conflict(format!(
        "'{name}' version {version} is already published with different bytes (sha256 {}); \
         versions are immutable: bump `version` in mpreg.toml (or the version your describe \
         returns) and publish again, or develop against a dev node (`mpreg dev`), which \
         replaces a version in place",
        &sha256[..sha256.len().min(12)]
    ))
}

/// How to publish: everything optional.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// Replaces the sandbox stored with the version.
    pub sandbox: Option<Sandbox>,
    /// Resource tags a node must have to host the version (default: every node).
    pub placement: Option<Vec<String>>,
    /// The state's time when it comes from another node (default: now).
    pub changed_at: Option<f64>,
}

/// Publishes, retires and restores plugins.
pub struct PluginManager {
    runtime: Arc<Runtime>,
    registry: Arc<Registry>,
    store: PluginStore,
    engine: String,
    lock: tokio::sync::Mutex<()>,
    /// This node's resource tags, matched against placements.
    resources: Vec<String>,
    changed: tokio::sync::Notify,
    /// `(plugin, version)` of every version taken out of service here.
    retired: tokio::sync::broadcast::Sender<(String, String)>,
    /// Publishes by outcome, retirements, hot swaps.
    metrics: PluginMetrics,
    /// A dev node's rule: publishing other bytes under a version it holds replaces them
    /// (`[admin] replace_versions`). Off, versions are immutable.
    replace_versions: bool,
}

/// What the manager counts (docs/observability.md, "Metrics").
#[derive(Debug, Clone, Default)]
struct PluginMetrics {
    publishes: crate::metrics::Family<Vec<(&'static str, String)>, crate::metrics::Counter>,
    retirements: crate::metrics::Counter,
    hot_swaps: crate::metrics::Counter,
}

impl PluginManager {
    /// A manager over the node's runtime, registry and store.
    pub fn new(
        runtime: Arc<Runtime>,
        registry: Arc<Registry>,
        store: PluginStore,
        resources: Vec<String>,
    ) -> Self {
        let engine = runtime.engine_fingerprint();
        PluginManager {
            runtime,
            registry,
            store,
            engine,
            lock: tokio::sync::Mutex::new(()),
            resources,
            changed: tokio::sync::Notify::new(),
            retired: tokio::sync::broadcast::channel(256).0,
            metrics: PluginMetrics::default(),
            replace_versions: false,
        }
    }

    /// Lets a publish replace the bytes of a version this node holds (a dev node, where nobody
    /// should bump a version per edit). Production nodes keep versions immutable.
    pub fn with_replace_versions(mut self, replace: bool) -> Self {
        self.replace_versions = replace;
        self
    }

    /// Registers what the manager counts, and a collector of the versions loaded now.
    pub fn register_metrics(&self, r: &mut crate::metrics::Registry) {
        let m = &self.metrics;
        use crate::protocol::admin::PublishOutcome as O;
        // Every outcome from the start, so the family is there before the first publish.
        for o in [
            O::Published,
            O::Updated,
            O::Reactivated,
            O::Stored,
            O::Unchanged,
        ] {
            let _ = m.publishes.get_or_create(&vec![("outcome", o.to_string())]);
        }
        r.register(
            "plugin_publishes",
            "Plugin publishes, by outcome (published, updated, reactivated, stored, unchanged)",
            m.publishes.clone(),
        );
        r.register(
            "plugin_retirements",
            "Plugin versions retired (or unlisted) here",
            m.retirements.clone(),
        );
        r.register(
            "plugin_hot_swaps",
            "Publishes that swapped code under a plugin already serving here",
            m.hot_swaps.clone(),
        );
        let registry = Arc::downgrade(&self.registry);
        crate::metrics::collect(r, move |s| {
            let Some(registry) = registry.upgrade() else {
                return Ok(());
            };
            let plugins = registry.plugins();
            let mut versions: std::collections::BTreeMap<&str, usize> = Default::default();
            for p in &plugins {
                *versions.entry(p.manifest.name.as_str()).or_default() += 1;
            }
            s.gauges(
                "plugin_versions_active",
                "Versions of each plugin loaded and serving here",
                versions
                    .into_iter()
                    .map(|(name, n)| (vec![("plugin", name.to_owned())], n as f64)),
            )?;
            s.gauge(
                "functions_loaded",
                "Plugin functions (all versions) loaded here",
                plugins.iter().map(|p| p.functions.len()).sum::<usize>() as f64,
            )
        });
    }

    /// Tells of every version retired (or unlisted) here, as `(plugin, version)`: services
    /// that keep something per version (memoized results) drop it.
    pub fn retirements(&self) -> tokio::sync::broadcast::Receiver<(String, String)> {
        self.retired.subscribe()
    }

    /// Woken after every publish, retire and restore (the cluster advertiser waits on it).
    pub fn changed(&self) -> &tokio::sync::Notify {
        &self.changed
    }

    /// The loaded functions.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The stored bytes with this sha256.
    pub fn blob(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.store.blob(sha256)
    }

    /// Every stored version record (published ones, active or retired): what the cluster
    /// advertises and distributes.
    pub fn records(&self) -> Result<Vec<PluginRecord>, StoreError> {
        self.store.records()
    }

    /// Whether this node should host a version with this placement.
    fn hosts(&self, placement: &[String]) -> bool {
        placement.iter().all(|t| self.resources.contains(t))
    }

    /// The store (for the admin token).
    pub fn store(&self) -> &PluginStore {
        &self.store
    }

    /// Compiled code for `bytes`: from the cache when this engine compiled them before,
    /// otherwise compiled now and cached. Returns where it came from.
    async fn code(
        &self,
        bytes: Bytes,
        sha256: &str,
        origin: &str,
    ) -> Result<(Compiled, CodeSource), PublishError> {
        if let Some(code) = self.store.compiled(sha256, &self.engine)? {
            match self.runtime.deserialize(&code, &bytes, origin) {
                Ok(compiled) => return Ok((compiled, CodeSource::Cache)),
                Err(e) => {
                    tracing::warn!(error = %e, sha256, "cached code unusable; compiling again");
                    self.store.drop_compiled(sha256, &self.engine)?;
                }
            }
        }
        let compiled = self.runtime.compile(bytes, origin).await?;
        match compiled.serialize() {
            Ok(code) => self.store.put_compiled(sha256, &self.engine, &code)?,
            Err(e) => tracing::warn!(error = %e, "compiled code not cached"),
        }
        Ok((compiled, CodeSource::Compiled))
    }

    /// Loads a plugin from a file named in the config (not stored, but its compiled code is
    /// cached like a published one's).
    pub async fn load_static(
        &self,
        bytes: Vec<u8>,
        origin: &str,
        sandbox: Sandbox,
    ) -> Result<Arc<LoadedPlugin>, PublishError> {
        let started = Instant::now();
        let (sha256, size) = (sha256_hex(&bytes), bytes.len());
        let (compiled, _) = self.code(bytes.into(), &sha256, origin).await?;
        let plugin = self
            .runtime
            .instantiate(&compiled, origin, sandbox, sha256, size, started)
            .await?;
        Ok(Arc::new(plugin))
    }

    /// Brings back every active published version (at start-up). A version that no longer
    /// loads is logged and skipped, so one bad record cannot keep the node down.
    pub async fn restore(&self) -> Result<usize, StoreError> {
        let mut restored = 0;
        for record in self.store.records()? {
            if !record.active || !self.hosts(&record.placement) {
                continue;
            }
            let key = PluginRecord::key_of(&record.name, &record.version);
            let Some(bytes) = self.store.blob(&record.sha256)? else {
                tracing::error!(plugin = %key, "stored bytes missing; not restored");
                continue;
            };
            let started = Instant::now();
            let origin = format!("published {key}");
            let loaded = async {
                let (compiled, _) = self.code(bytes.into(), &record.sha256, &origin).await?;
                let plugin = self
                    .runtime
                    .instantiate(
                        &compiled,
                        &origin,
                        record.sandbox.clone(),
                        record.sha256.clone(),
                        record.size as usize,
                        started,
                    )
                    .await?;
                self.registry
                    .add(Arc::new(plugin))
                    .map_err(|e| PublishError::Conflict(e.to_string()))
            }
            .await;
            match loaded {
                Ok(()) => restored += 1,
                Err(e) => tracing::error!(plugin = %key, error = %e, "not restored"),
            }
        }
        self.changed.notify_one();
        Ok(restored)
    }

    /// Validates, stores and activates a component. `sandbox` replaces the one stored with
    /// the version when given.
    pub async fn publish(
        &self,
        bytes: Bytes,
        sandbox: Option<Sandbox>,
    ) -> Result<Published, PublishError> {
        let options = PublishOptions {
            sandbox,
            ..PublishOptions::default()
        };
        self.publish_with(bytes, options).await
    }

    /// Validates, stores and activates a component (on this node when its placement allows:
    /// otherwise it is only stored, for the nodes that should host it to fetch).
    pub async fn publish_with(
        &self,
        bytes: Bytes,
        options: PublishOptions,
    ) -> Result<Published, PublishError> {
        let out = self.publish_locked(bytes, options).await;
        if out.is_ok() {
            self.changed.notify_one();
        }
        out
    }

    async fn publish_locked(
        &self,
        bytes: Bytes,
        options: PublishOptions,
    ) -> Result<Published, PublishError> {
        let PublishOptions {
            sandbox,
            placement,
            changed_at,
        } = options;
        let started = Instant::now();
        check_component_header(&bytes).map_err(PublishError::NotComponent)?;
        let sha256 = sha256_hex(&bytes);
        let size = bytes.len();
        let _guard = self.lock.lock().await;

        let running = self
            .registry
            .plugins()
            .into_iter()
            .find(|p| p.sha256 == sha256);
        if let Some(p) = &running
            && sandbox.as_ref().is_none_or(|s| s == &p.sandbox)
        {
            // A state from another node still moves the record's time, so the cluster
            // converges on it.
            let version = p.manifest.version.to_string();
            if let Some(at) = changed_at
                && let Some(mut r) = self.store.record(&p.manifest.name, &version)?
                && r.changed() < at
            {
                r.changed_at = at;
                self.store.put_record(&r)?;
                self.store.flush().await?;
            }
            self.metrics
                .publishes
                .get_or_create(&vec![("outcome", PublishOutcome::Unchanged.to_string())])
                .inc();
            return Ok(Published {
                name: p.manifest.name.clone(),
                version: p.manifest.version.to_string(),
                sha256,
                outcome: PublishOutcome::Unchanged,
                code: CodeSource::Loaded,
                ready_ms: started.elapsed().as_secs_f64() * 1000.0,
                functions: p.functions.iter().map(|f| f.name.clone()).collect(),
            });
        }

        // A build stamp names the version: a duplicate is refused before seconds of compiling.
        if !self.replace_versions
            && let Ok(Some(stamp)) = crate::runtime::stamp::read(&bytes)
            && let Ok(version) = crate::rpc::version::parse_version_lenient(&stamp.version)
            && let Some(r) = self.store.record(&stamp.name, &version.to_string())?
            && r.sha256 != sha256
        {
            return Err(immutable(&stamp.name, &version.to_string(), &r.sha256));
        }

        let origin = format!("published sha256:{}", &sha256[..12]);
        let (compiled, code) = self.code(bytes.clone(), &sha256, &origin).await?;
        // The sandbox comes from the request, else from an earlier publish of these bytes.
        let previous = self
            .store
            .records()?
            .into_iter()
            .find(|r| r.sha256 == sha256);
        let sandbox = sandbox
            .or_else(|| previous.as_ref().map(|r| r.sandbox.clone()))
            .unwrap_or_default();
        let plugin = self
            .runtime
            .instantiate(&compiled, &origin, sandbox, sha256.clone(), size, started)
            .await?;
        let name = plugin.manifest.name.clone();
        let version = plugin.manifest.version.to_string();
        let existing = self.store.record(&name, &version)?;
        let mut running = running;
        if let Some(r) = &existing
            && r.sha256 != sha256
        {
            if !self.replace_versions {
                return Err(immutable(&name, &version, &r.sha256));
            }
            // A dev node: the new bytes take the version's place like a hot swap.
            running = running.or_else(|| self.registry.plugin(&name, &plugin.manifest.version));
        }
        let placement = placement
            .or_else(|| existing.as_ref().map(|r| r.placement.clone()))
            .unwrap_or_default();
        let hosted = self.hosts(&placement);
        let outcome = match (&existing, &running, hosted) {
            (_, _, false) => PublishOutcome::Stored,
            (_, Some(_), true) => PublishOutcome::Updated,
            (Some(_), None, true) => PublishOutcome::Reactivated,
            (None, None, true) => PublishOutcome::Published,
        };
        let functions = plugin.functions.iter().map(|f| f.name.clone()).collect();
        let plugin = Arc::new(plugin);
        let replaced = running
            .as_ref()
            .map(|p| (p.manifest.name.as_str(), &p.manifest.version));
        let swapped_live = hosted
            && self
                .registry
                .plugins()
                .iter()
                .any(|p| p.manifest.name == name);
        // Swap first: a clash with another plugin's function is found before anything is
        // stored. If storing then fails, the swap is undone. A version this node does not
        // host only leaves the registry (if a previous placement had it here).
        let old = self
            .registry
            .replace(replaced, hosted.then(|| plugin.clone()))
            .map_err(|e: RegistryError| PublishError::Conflict(e.to_string()))?;
        let now = crate::clock::unix_now();
        let record = PluginRecord {
            name: name.clone(),
            version: version.clone(),
            sha256: sha256.clone(),
            size: size as u64,
            sandbox: plugin.sandbox.clone(),
            active: true,
            published_at: now,
            changed_at: changed_at.unwrap_or(now),
            placement,
        };
        let stored = async {
            self.store.put_blob(&sha256, &bytes)?;
            self.store.put_record(&record)?;
            self.store.flush().await
        }
        .await;
        if let Err(e) = stored {
            let undo = self
                .registry
                .replace(Some((&name, &plugin.manifest.version)), old);
            if let Err(undo) = undo {
                tracing::error!(error = %undo, "could not restore the previous registry entry");
            }
            return Err(e.into());
        }
        tracing::info!(plugin = %name, %version, sha256 = %&sha256[..12], %outcome, %code,
            "plugin published");
        self.metrics
            .publishes
            .get_or_create(&vec![("outcome", outcome.to_string())])
            .inc();
        if swapped_live {
            self.metrics.hot_swaps.inc();
        }
        Ok(Published {
            name,
            version,
            sha256,
            outcome,
            code,
            ready_ms: started.elapsed().as_secs_f64() * 1000.0,
            functions,
        })
    }

    /// Stops serving `name@version`: new calls stop seeing it at once; the reply waits until
    /// calls already running on it have finished (bounded by its call deadline).
    pub async fn retire(&self, name: &str, version: &str) -> Result<Retired, PublishError> {
        self.retire_at(name, version, None).await
    }

    /// Like [`retire`](Self::retire), recording `changed_at` (when it was retired elsewhere in
    /// the cluster) instead of now.
    pub async fn retire_at(
        &self,
        name: &str,
        version: &str,
        changed_at: Option<f64>,
    ) -> Result<Retired, PublishError> {
        self.retire_locked(name, version, changed_at).await
    }

    /// Takes a version out of the registry and records it retired (at `changed_at`, or now),
    /// without waiting for its running calls: what a node does when another retired it, so
    /// that it stops serving before it answers. Returns the plugin that was loaded, if any.
    pub async fn unlist_at(
        &self,
        name: &str,
        version: &str,
        changed_at: Option<f64>,
    ) -> Result<Option<Arc<LoadedPlugin>>, PublishError> {
        let parsed = crate::rpc::version::parse_version_lenient(version).map_err(|e| {
            PublishError::InvalidVersion(format!("invalid version '{version}': {e}"))
        })?;
        let removed = {
            let _guard = self.lock.lock().await;
            let removed = self
                .registry
                .replace(Some((name, &parsed)), None)
                .map_err(|e| PublishError::Conflict(e.to_string()))?;
            let record = self.store.record(name, &parsed.to_string())?;
            if let Some(mut r) = record.filter(|r| r.active) {
                r.active = false;
                r.changed_at = changed_at.unwrap_or_else(crate::clock::unix_now);
                self.store.put_record(&r)?;
                self.store.flush().await?;
            } else if removed.is_none() {
                return Err(PublishError::NotFound(format!(
                    "no active plugin '{name}' version {parsed}"
                )));
            }
            removed
        };
        if let Some(p) = &removed {
            // Its series go with it: label sets stay bounded by what is loaded.
            for f in &p.functions {
                self.runtime
                    .metrics()
                    .calls
                    .forget(&f.name, &parsed.to_string());
            }
        }
        self.metrics.retirements.inc();
        // Tell the cluster now, not after the drain.
        self.changed.notify_one();
        let _ = self.retired.send((name.to_owned(), parsed.to_string()));
        Ok(removed)
    }

    async fn retire_locked(
        &self,
        name: &str,
        version: &str,
        changed_at: Option<f64>,
    ) -> Result<Retired, PublishError> {
        let parsed = crate::rpc::version::parse_version_lenient(version).map_err(|e| {
            PublishError::InvalidVersion(format!("invalid version '{version}': {e}"))
        })?;
        let removed = self.unlist_at(name, version, changed_at).await?;
        let (mut drained, mut still_running) = (true, 0);
        if let Some(plugin) = removed {
            let limit = Duration::from_millis(plugin.limits.call_timeout_ms + 1_000);
            let until = Instant::now() + limit;
            // Everything that can still run on it holds an `Arc` (calls that routed to it before
            // the swap); when only ours is left, nothing can.
            while Arc::strong_count(&plugin) > 1 && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            still_running = plugin
                .stats
                .in_flight
                .load(std::sync::atomic::Ordering::Relaxed);
            drained = Arc::strong_count(&plugin) == 1;
            // Its idle instances give their memory and slots back now, whoever still holds it.
            plugin.warm.clear();
        }
        tracing::info!(plugin = %name, version = %parsed, drained, "plugin retired");
        Ok(Retired {
            name: name.to_owned(),
            version: parsed.to_string(),
            drained,
            still_running,
        })
    }

    /// Every plugin version: loaded ones (published or from the config) and retired ones.
    pub fn list(&self) -> Result<PluginList, StoreError> {
        let loaded = self.registry.plugins();
        let mut out: Vec<PluginSummary> = loaded.iter().map(|p| summary(p)).collect();
        for r in self.store.records()? {
            let live = loaded
                .iter()
                .any(|p| p.manifest.name == r.name && p.manifest.version.to_string() == r.version);
            if !live {
                out.push(PluginSummary {
                    name: r.name,
                    version: r.version,
                    sha256: r.sha256,
                    size: r.size,
                    active: false,
                    source: "published".into(),
                    functions: None,
                    calls: None,
                });
            }
        }
        Ok(PluginList { plugins: out })
    }

    /// Everything about one version (the newest loaded one when `version` is `None`).
    pub fn describe(&self, name: &str, version: Option<&str>) -> Result<Value, PublishError> {
        let wanted = version
            .map(crate::rpc::version::parse_version_lenient)
            .transpose()
            .map_err(|e| PublishError::InvalidVersion(format!("invalid version: {e}")))?;
        let plugin = self.registry.plugins().into_iter().find(|p| {
            p.manifest.name == name && wanted.as_ref().is_none_or(|v| v == &p.manifest.version)
        });
        if let Some(p) = plugin {
            return Ok(details(
                &p,
                self.store.record(name, &p.manifest.version.to_string())?,
            ));
        }
        if let Some(v) = &wanted
            && let Some(r) = self.store.record(name, &v.to_string())?
        {
            return Ok(json!({
                "name": r.name, "version": r.version, "sha256": r.sha256, "size": r.size,
                "active": false, "source": "published", "published_at": r.published_at,
                "sandbox": r.sandbox,
            }));
        }
        Err(PublishError::NotFound(match version {
            Some(v) => format!("no plugin '{name}' version {v}"),
            None => format!("no loaded plugin '{name}'"),
        }))
    }
}

fn source(p: &LoadedPlugin) -> &'static str {
    if p.origin.starts_with("published") {
        "published"
    } else {
        "config"
    }
}

fn summary(p: &LoadedPlugin) -> PluginSummary {
    use std::sync::atomic::Ordering::Relaxed;
    PluginSummary {
        name: p.manifest.name.clone(),
        version: p.manifest.version.to_string(),
        sha256: p.sha256.clone(),
        size: p.size as u64,
        active: true,
        source: source(p).into(),
        functions: Some(p.functions.iter().map(|f| f.name.clone()).collect()),
        calls: Some(p.stats.calls.load(Relaxed)),
    }
}

fn details(p: &LoadedPlugin, record: Option<PluginRecord>) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    json!({
        "name": p.manifest.name,
        "version": p.manifest.version.to_string(),
        "active": true,
        "source": source(p),
        "origin": p.origin,
        "sha256": p.sha256,
        "size": p.size,
        "resources": p.manifest.resources,
        "load_ms": p.load_ms,
        "loaded_at": p.loaded_at,
        "published_at": record.map(|r| r.published_at),
        "sandbox": p.sandbox,
        "limits": p.limits,
        "calls": p.stats.calls.load(Relaxed),
        "failures": p.stats.failures.load(Relaxed),
        "in_flight": p.stats.in_flight.load(Relaxed),
        "instance_reuse": p.reuse,
        "warm_instances": p.warm.idle(),
        "reused_calls": p.warm.reused(),
        "functions": p.functions.iter().map(|f| json!({
            "name": f.name,
            "function_id": f.function_id,
            "signature": f.signature,
            "resources": f.resources,
            "description": f.description,
        })).collect::<Vec<_>>(),
    })
}
