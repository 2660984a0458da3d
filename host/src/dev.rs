//! `mpreg dev [DIR]`: the plugin author's loop. Watches what the project's `mpreg.toml` lists,
//! rebuilds on a change, publishes to a node, and prints a ready-to-run `mpreg call` line per
//! function; the plugin's log lines are printed as they happen, prefixed with the function and
//! request id ([`PluginLog`]).
//!
//! The node is started in this process (an embedded default: no data directory, no cluster,
//! `[admin] replace_versions` on, so every rebuild replaces the manifest's version in place as
//! a hot swap) unless `--node` names one. A named node keeps its versions immutable, so each
//! rebuild is published as `<version>-dev.<unix ms>` there.
//!
//! A failed build or publish is printed and the loop keeps watching: fixing the file is the
//! next step, not restarting the command.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::admin_client::AdminClient;
use crate::project::Manifest;

/// Why the loop could not start (a failed build inside the loop is only printed).
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// The folder has no usable `mpreg.toml`.
    #[error("{0}")]
    Project(String),
    /// The embedded node did not start.
    #[error("the dev node did not start: {0}")]
    Node(String),
    /// Files cannot be watched.
    #[error("cannot watch {path}: {reason}")]
    Watch {
        /// What was to be watched.
        path: PathBuf,
        /// Why not.
        reason: String,
    },
}

/// Where the loop publishes.
#[derive(Debug, Clone)]
pub enum Target {
    /// A node started in this process, listening on `host:port` (port 0 picks one).
    Embedded {
        /// Bind address.
        host: String,
        /// Bind port.
        port: u16,
    },
    /// A running node and its admin token.
    Remote {
        /// Its URL.
        url: String,
        /// Its admin token.
        token: String,
    },
}

/// How to run the loop.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// The project folder.
    pub dir: PathBuf,
    /// Where to publish.
    pub target: Target,
    /// Folders searched for componentize-py / componentize-js before `PATH`.
    pub tool_dirs: Vec<PathBuf>,
    /// Quiet time after a change before rebuilding (editors write a file in several steps).
    pub settle: Duration,
}

/// One build and publish that served.
#[derive(Debug, Clone)]
pub struct Served {
    /// Plugin name.
    pub name: String,
    /// The version serving.
    pub version: String,
    /// Time spent building.
    pub build: Duration,
    /// Time from the end of the build to callable.
    pub publish: Duration,
    /// `mpreg call` lines, one per function, with its signature as a comment.
    pub calls: Vec<String>,
}

/// The loop's state: the project, the node, and how many builds have run.
pub struct Dev {
    dir: PathBuf,
    manifest: Manifest,
    url: String,
    token: String,
    /// The embedded node, when this process runs it.
    node: Option<crate::node::NodeHandle>,
    /// Whether versions are replaced in place (else suffixed `-dev.N`).
    replaces: bool,
    tool_dirs: Vec<PathBuf>,
    settle: Duration,
}

impl Dev {
    /// Reads the project and starts (or names) the node.
    pub async fn start(opts: DevOptions) -> Result<Dev, DevError> {
        let dir = opts
            .dir
            .canonicalize()
            .map_err(|e| DevError::Project(format!("{}: {e}", opts.dir.display())))?;
        let manifest = Manifest::find(&dir)
            .map_err(|e| DevError::Project(e.to_string()))?
            .ok_or_else(|| {
                DevError::Project(format!(
                    "{} has no {}: create a project with `mpreg plugin new NAME`, or write one \
                     with [plugin] name, version and language (docs/plugins.md)",
                    dir.display(),
                    crate::project::FILE
                ))
            })?;
        let (url, token, node, replaces) = match opts.target {
            Target::Remote { url, token } => (url, token, None, false),
            Target::Embedded { host, port } => {
                let mut raw = [0u8; 16];
                getrandom::fill(&mut raw).map_err(|e| DevError::Node(e.to_string()))?;
                let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
                let mut config = crate::config::NodeConfig::default();
                config.server.host = host;
                config.server.port = port;
                config.cluster.enabled = false;
                config.plugins.clear();
                config.admin.token = Some(token.clone());
                config.admin.replace_versions = true;
                // Rebuilds compile only the functions that changed.
                config.runtime.compile_cache_mib = 512;
                let node = crate::node::start(config)
                    .await
                    .map_err(|e| DevError::Node(e.to_string()))?;
                (node.url(), token, Some(node), true)
            }
        };
        Ok(Dev {
            dir,
            manifest,
            url,
            token,
            node,
            replaces,
            tool_dirs: opts.tool_dirs,
            settle: opts.settle,
        })
    }

    /// The URL calls go to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The admin token of the node (generated for an embedded one).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Builds the project and publishes it; the error says what failed, in words to act on.
    pub async fn cycle(&mut self) -> Result<Served, String> {
        let started = Instant::now();
        let (dir, tools) = (self.dir.clone(), self.tool_dirs.clone());
        let built = tokio::task::spawn_blocking(move || crate::scaffold::build_with(&dir, &tools))
            .await
            .map_err(|e| format!("build task: {e}"))?
            .map_err(|e| format!("build failed: {e}"))?;
        let build = started.elapsed();
        // The manifest may have changed with the sources.
        let manifest = built
            .manifest
            .clone()
            .unwrap_or_else(|| self.manifest.clone());
        self.manifest = manifest.clone();
        let mut bytes = built.bytes;
        if !self.replaces {
            // The build's own stamp (it knows the JSON style), else the manifest's.
            let mut stamp = crate::runtime::stamp::read(&bytes)
                .ok()
                .flatten()
                .unwrap_or_else(|| manifest.stamp());
            let ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            stamp.version = format!("{}-dev.{ms}", stamp.version);
            bytes = crate::runtime::stamp::write(&bytes, &stamp);
        }
        let publishing = Instant::now();
        let (url, token) = (self.url.clone(), self.token.clone());
        let (sandbox, placement) = (manifest.sandbox(), manifest.plugin.placement.clone());
        let (published, detail) = tokio::task::spawn_blocking(move || {
            let client = AdminClient::new(&url, &token);
            let published =
                client.publish_placed(&bytes, sandbox.as_ref(), &placement, &mut |_| {})?;
            let detail = client.describe(&published.name, Some(&published.version))?;
            Ok::<_, crate::admin_client::AdminError>((published, detail))
        })
        .await
        .map_err(|e| format!("publish task: {e}"))?
        .map_err(|e| format!("publish failed: {e}"))?;
        let calls = detail["functions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| {
                format!(
                    "mpreg call {} {}   # {}",
                    self.url,
                    f["name"].as_str().unwrap_or_default(),
                    f["signature"].as_str().unwrap_or_default()
                )
            })
            .collect();
        Ok(Served {
            name: published.name,
            version: published.version,
            build,
            publish: publishing.elapsed(),
            calls,
        })
    }

    /// Builds, publishes, then rebuilds on every change until Ctrl-C (or `stop` resolves),
    /// writing what happens to `out`.
    pub async fn run(
        mut self,
        out: &mut (dyn std::io::Write + Send),
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), DevError> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
        let _watcher = watch(&self.dir, &self.manifest.watched(), tx)?;
        let _ = writeln!(
            out,
            "mpreg dev: {} ({}), node {}{}",
            self.manifest.plugin.name,
            self.dir.display(),
            self.url,
            if self.node.is_some() {
                format!(" (embedded; admin token {})", self.token)
            } else {
                String::new()
            }
        );
        self.report(out).await;
        tokio::pin!(stop);
        loop {
            let changed = tokio::select! {
                () = &mut stop => break,
                changed = rx.recv() => match changed {
                    Some(path) => path,
                    None => break,
                },
            };
            // Let the editor finish writing, and take every change of that burst at once.
            let mut changes = vec![changed];
            while let Ok(Some(p)) = tokio::time::timeout(self.settle, rx.recv()).await {
                changes.push(p);
            }
            changes.sort();
            changes.dedup();
            // Editors' temporary files come and go within the burst: name what is still there.
            let shown: Vec<String> = changes
                .iter()
                .filter(|p| self.dir.join(p).exists())
                .map(|p| p.display().to_string())
                .collect();
            let shown = if shown.is_empty() {
                "files removed".to_owned()
            } else {
                shown.join(", ")
            };
            let _ = writeln!(out, "changed: {shown}; rebuilding");
            self.report(out).await;
        }
        if let Some(node) = self.node.take() {
            node.shutdown().await;
        }
        Ok(())
    }

    /// One cycle, printed.
    async fn report(&mut self, out: &mut (dyn std::io::Write + Send)) {
        match self.cycle().await {
            Ok(s) => {
                let _ = writeln!(
                    out,
                    "serving {} {} (build {:.1} s, publish {} ms)",
                    s.name,
                    s.version,
                    s.build.as_secs_f64(),
                    s.publish.as_millis()
                );
                for c in &s.calls {
                    let _ = writeln!(out, "  {c}");
                }
            }
            Err(e) => {
                let _ = writeln!(out, "{e}\nwaiting for a change…");
            }
        }
        let _ = out.flush();
    }
}

/// Watches `paths` (relative to `dir`; folders recursively), sending each changed source's
/// path relative to `dir`. Build output and tooling folders are not sources ([`is_output`]).
/// A file is watched through its folder: editors that save by writing a new file and renaming
/// it over the old one would otherwise leave the watch on the replaced file after one save.
///
/// [`is_output`]: crate::project::is_output
fn watch(
    dir: &Path,
    paths: &[PathBuf],
    tx: tokio::sync::mpsc::UnboundedSender<PathBuf>,
) -> Result<notify::RecommendedWatcher, DevError> {
    use notify::{EventKind, RecursiveMode, Watcher};
    let mut files = std::collections::BTreeSet::new();
    let mut folders = std::collections::BTreeSet::new();
    let mut parents = std::collections::BTreeSet::new();
    // Filters events only; `folders` are also watched recursively.
    let mut accepted = std::collections::BTreeSet::new();
    for rel in paths {
        let path = dir.join(rel);
        if rel.as_os_str() == "." {
            // The whole project: its top level directly, each source folder recursively
            // (never `node_modules/` or `target/`, which can hold thousands of folders).
            parents.insert(dir.to_owned());
            accepted.insert(dir.to_owned());
            let entries = std::fs::read_dir(dir).map_err(|e| DevError::Watch {
                path: dir.to_owned(),
                reason: e.to_string(),
            })?;
            for entry in entries.flatten() {
                let p = entry.path();
                let rel = p.strip_prefix(dir).unwrap_or(&p).to_owned();
                if p.is_dir() && !crate::project::is_output(&rel) {
                    folders.insert(p);
                }
            }
        } else if path.is_dir() {
            folders.insert(path);
        } else if path.exists() {
            if let Some(parent) = path.parent() {
                parents.insert(parent.to_owned());
            }
            files.insert(path);
        }
    }
    if files.is_empty() && folders.is_empty() && accepted.is_empty() {
        return Err(DevError::Watch {
            path: dir.to_owned(),
            reason: format!(
                "none of {paths:?} exists; list the sources in [plugin] watch of {}",
                crate::project::FILE
            ),
        });
    }
    let root = dir.to_owned();
    let wanted_files = files.clone();
    let wanted_folders: Vec<PathBuf> = folders.iter().chain(&accepted).cloned().collect();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        for path in event.paths {
            let source =
                wanted_files.contains(&path) || wanted_folders.iter().any(|f| path.starts_with(f));
            let rel = path.strip_prefix(&root).unwrap_or(&path).to_owned();
            if source && !crate::project::is_output(&rel) {
                let _ = tx.send(rel);
            }
        }
    })
    .map_err(|e| DevError::Watch {
        path: dir.to_owned(),
        reason: e.to_string(),
    })?;
    let watches = folders
        .iter()
        .map(|f| (f, RecursiveMode::Recursive))
        .chain(parents.iter().map(|p| (p, RecursiveMode::NonRecursive)));
    for (path, mode) in watches {
        watcher.watch(path, mode).map_err(|e| DevError::Watch {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    }
    Ok(watcher)
}

/// A tracing layer for `mpreg dev`: prints each plugin log line as
/// `[<function> <request id>] LEVEL message`, taking the function and request from the
/// `plugin_call` span the dispatcher opens around a call.
pub struct PluginLog;

/// The function and request of a `plugin_call` span.
struct CallTag {
    function: String,
    request: String,
}

#[derive(Default)]
struct Fields {
    function: String,
    request: String,
    message: String,
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        match field.name() {
            "function" => self.function = text,
            "request_id" | "request" => self.request = text,
            "message" => self.message = text,
            _ => {}
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "function" => self.function = value.to_owned(),
            "request_id" | "request" => self.request = value.to_owned(),
            "message" => self.message = value.to_owned(),
            _ => {}
        }
    }
}

impl<S> tracing_subscriber::Layer<S> for PluginLog
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if attrs.metadata().name() != "plugin_call" {
            return;
        }
        let mut f = Fields::default();
        attrs.record(&mut f);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(CallTag {
                function: f.function,
                request: f.request,
            });
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let meta = event.metadata();
        if meta.target() != "mpreg::plugin" {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        let tag = ctx.event_scope(event).and_then(|scope| {
            scope.from_root().find_map(|span| {
                span.extensions()
                    .get::<CallTag>()
                    .map(|t| format!("{} {}", t.function, t.request))
            })
        });
        let tag = tag.unwrap_or_else(|| f.request.clone());
        eprintln!("[{tag}] {} {}", meta.level(), f.message);
    }
}
