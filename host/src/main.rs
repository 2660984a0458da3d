//! The `mpreg` command: run a node, call functions, send requests, load-test a node.
//! Parses arguments and calls into the library; no logic of its own.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use mpreg::client::{Client, ClientError};
use mpreg::config::{NodeConfig, Overrides, split_list};
use mpreg::protocol::{RpcCommand, RpcRequest};
use serde_json::Value;

#[derive(Parser)]
#[command(
    name = "mpreg",
    version,
    about = "MPREG: WebAssembly functions called over WebSocket, results everywhere"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as `text` (colours only on a terminal) or `json` (one object per line).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Least severe level logged (`error`, `warn`, `info`, `debug`, `trace`), or a filter
    /// such as `info,mpreg::cluster=debug`. `RUST_LOG`, when set, wins.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    /// Export traces to this OpenTelemetry collector (OTLP over HTTP, e.g.
    /// http://127.0.0.1:4318). Off when absent.
    #[arg(long, global = true, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node.
    Server {
        #[command(subcommand)]
        action: ServerAction,
    },
    /// Call one function and print its result as JSON.
    Call(CallArgs),
    /// Send a request from a JSON file (a full request object or an array of commands) and print
    /// the reply.
    Request {
        /// Node URL, e.g. ws://127.0.0.1:6666.
        url: String,
        /// JSON file with the request.
        file: PathBuf,
    },
    /// Load-test a running node and print latency and throughput tables.
    Bench(BenchArgs),
    /// Create, build, publish and manage plugins.
    Plugin {
        #[command(subcommand)]
        action: PluginAction,
    },
    /// Inspect a cluster.
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
    /// Inspect the cluster's cache.
    Cache {
        #[command(subcommand)]
        action: CacheAction,
    },
    /// Print a node's Prometheus metrics (`GET /metrics`).
    Metrics {
        /// The node: ws://host:port, http://host:port, host:port or :port.
        url: String,
        /// Ask for OpenMetrics instead of Prometheus text.
        #[arg(long)]
        openmetrics: bool,
        /// Only the lines containing this text (HELP and TYPE lines of matching families kept).
        #[arg(long)]
        grep: Option<String>,
    },
    /// A live view of a node: rates, latency percentiles, the cluster, functions, queues.
    Top {
        /// The node: ws://host:port, http://host:port, host:port or :port.
        url: String,
        /// Seconds between frames.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Print one frame and exit (for scripts).
        #[arg(long)]
        once: bool,
    },
    /// Run one command of a component here, without a node (the node's runtime and JSON
    /// conversion; `call`, `publish`, `queue` and `cache` imports have no node to reach).
    Run {
        /// The component (`.wasm`).
        file: PathBuf,
        /// Command name.
        fun: String,
        /// Positional arguments, each a JSON value (a bare word that is not JSON is a string).
        args: Vec<String>,
        /// Keyword argument `name=json` (repeatable).
        #[arg(long = "kw", value_name = "NAME=JSON")]
        kwargs: Vec<String>,
    },
    /// Watch a plugin project: rebuild on every change, publish to a dev node (started here
    /// unless --node names one), print `mpreg call` lines and the plugin's log lines.
    Dev(DevArgs),
    /// Check the plugin toolchains (Rust's wasm32-wasip2 target, componentize-py,
    /// componentize-js, node) and say how to install what is missing. Exits 1 when a check for
    /// the language asked (every language without --lang) fails.
    Doctor {
        /// The project folder whose node_modules/.bin is searched too.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Only this language's checks decide the exit status.
        #[arg(long, value_enum)]
        lang: Option<mpreg::scaffold::Lang>,
        /// Print the checks as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Manage API keys and mint test tokens (docs/security.md).
    Auth {
        #[command(subcommand)]
        action: AuthAction,
    },
    /// Print one of a node's JSON monitoring endpoints (`/monitor/<endpoint>`).
    Monitor {
        /// varz, connz, funcz, clusterz, subsz, queuez, cachez, live, health, or metrics/<system>.
        endpoint: String,
        /// The node: ws://host:port, http://host:port, host:port or :port.
        url: String,
        /// Items to skip (paged lists).
        #[arg(long)]
        offset: Option<usize>,
        /// Items to return (paged lists; at most 1000).
        #[arg(long)]
        limit: Option<usize>,
    },
}

#[derive(Subcommand)]
enum AuthAction {
    /// API keys in a keys file (`[auth] keys_file`); a running node picks up changes itself.
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// Mint a JWT signed with a shared secret (HS256/384/512) or a private key, for tests and
    /// scripts; nodes verify it with the matching `[[auth.jwt]]` key.
    Token(TokenArgs),
}

#[derive(Subcommand)]
enum KeyAction {
    /// Make a key: prints it once; only its sha256 goes into the file.
    New {
        /// The keys file (created with mode 0600 if missing).
        #[arg(long)]
        keys_file: PathBuf,
        /// The identity the key stands for (names it in logs and denials).
        #[arg(long)]
        name: String,
        /// A role of `[auth.roles]` (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
    },
    /// List the keys (ids, names, roles; never the keys).
    List {
        /// The keys file.
        #[arg(long)]
        keys_file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke every key with this id or name.
    Revoke {
        /// The keys file.
        #[arg(long)]
        keys_file: PathBuf,
        /// Key id (from `list`) or name.
        which: String,
    },
}

#[derive(Args)]
struct TokenArgs {
    /// The identity (`sub`).
    #[arg(long)]
    sub: String,
    /// A role of `[auth.roles]` (repeatable).
    #[arg(long = "role")]
    roles: Vec<String>,
    /// Seconds until it expires.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
    /// `HS256`, `HS384`, `HS512`, `RS256`, `ES256`, `EdDSA`, ...
    #[arg(long, default_value = "HS256")]
    algorithm: String,
    /// The HMAC secret, or the private key (PEM) for the others, from this file.
    #[arg(long, value_name = "FILE", conflicts_with = "secret_env")]
    key_file: Option<PathBuf>,
    /// The HMAC secret from this environment variable.
    #[arg(long, value_name = "VAR")]
    secret_env: Option<String>,
    /// `iss`.
    #[arg(long)]
    issuer: Option<String>,
    /// `aud`.
    #[arg(long)]
    audience: Option<String>,
    /// Permissions of its own (a JSON policy: `{"functions": ["echo"]}`), merged with its
    /// roles'.
    #[arg(long, value_name = "JSON")]
    policy: Option<String>,
}

#[derive(Subcommand)]
enum CacheAction {
    /// Print each node's cache (entries, bytes, L2) and each namespace summed over the nodes
    /// (entries, hit ratio, evictions).
    Stats {
        /// Any node's URL, e.g. ws://127.0.0.1:6666.
        url: String,
        /// Print every node's raw `cache.stats` as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ClusterAction {
    /// Print every node of the cluster with its functions and load (asks one node's
    /// `cluster_map`).
    Status {
        /// Any node's URL, e.g. ws://127.0.0.1:6666.
        url: String,
        /// Print the raw cluster map as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a new cluster key: a line for the `cluster.gossip_keyring` file.
    Keygen,
}

#[derive(Subcommand)]
enum PluginAction {
    /// Create a plugin project that builds as it is.
    New {
        /// Plugin name (lowercase letters, digits and '-').
        name: String,
        /// Language of the project.
        #[arg(long, value_enum, default_value = "rust")]
        lang: mpreg::scaffold::Lang,
        /// Folder to create (default: ./<name>).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The Rust SDK folder (default: the SDK this binary carries, written once into
        /// ~/.local/share/mpreg/sdk).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Run a test file of calls and expected results against a component, without a node:
    /// `[[case]]` tables (TOML) or a JSON array, each with `call`, `args`, `kwargs` and
    /// `expect` (the result) or `expect_error` (text of the failure).
    Test {
        /// The component (`.wasm`).
        file: PathBuf,
        /// The test file.
        cases: PathBuf,
        /// Print the outcome of every case as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Build the project in a folder into a component, then load it and show its metadata.
    Build {
        /// Project folder.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Print the component and its commands as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Upload a component to a node (it is validated, stored and callable at once).
    Publish {
        /// The component, or a project folder (built first; its mpreg.toml gives the sandbox
        /// and placement the flags do not).
        file: PathBuf,
        /// Host it only on cluster nodes with all these resource tags, comma-separated
        /// (default: every node).
        #[arg(long, value_name = "TAG,...")]
        placement: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
    /// List every plugin version on a node.
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show one plugin: metadata, WIT signatures, sha256, size, load time, call counts.
    Describe {
        /// Plugin name.
        name: String,
        /// Version (default: the newest loaded one).
        version: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Stop serving one version (running calls finish first).
    Retire {
        /// Plugin name.
        name: String,
        /// Version.
        version: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Args)]
struct DevArgs {
    /// The project folder (with its mpreg.toml).
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Address the embedded dev node listens on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:6666")]
    listen: String,
    /// Publish to this running node instead (each rebuild as `<version>-dev.<N>`); needs --token.
    #[arg(long)]
    node: Option<String>,
    /// Admin token of --node.
    #[arg(long, env = "MPREG_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Quiet time after a change before rebuilding, in ms.
    #[arg(long, default_value = "100")]
    settle_ms: u64,
}

#[derive(Args)]
struct AdminArgs {
    /// The node: ws://host:port, http://host:port, host:port or :port.
    #[arg(long, default_value = "ws://127.0.0.1:6666")]
    node: String,
    /// Admin token of the node.
    #[arg(long, env = "MPREG_ADMIN_TOKEN", hide_env_values = true)]
    token: String,
    /// Print the node's reply as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct SandboxArgs {
    /// Memory limit of the plugin in MiB (node default when absent).
    #[arg(long)]
    memory_mib: Option<u64>,
    /// Deadline of one call in ms (node default when absent).
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Fuel budget per call (the node must run with runtime.fuel_metering).
    #[arg(long)]
    fuel: Option<u64>,
    /// Environment variable the plugin may read, NAME=VALUE (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// Directory the plugin may open, HOST:GUEST or HOST:GUEST:rw (repeatable; read-only unless :rw).
    #[arg(long = "dir", value_name = "HOST:GUEST[:rw]")]
    dirs: Vec<String>,
    /// Cache namespace the plugin may use through the `cache` import (repeatable; `ml*` for a
    /// prefix, `*` for all).
    #[arg(long = "cache-namespace", value_name = "NAMESPACE")]
    cache_namespaces: Vec<String>,
    /// Secret of the node's `[secrets]` the plugin may read through the `secrets` import
    /// (repeatable; the name only, values stay on the nodes).
    #[arg(long = "secret", value_name = "NAME")]
    secrets: Vec<String>,
    /// Whether calls may reuse a finished call's instance: `never` or `serial` (default:
    /// serial for Python and JavaScript components, never for the rest; docs/plugins.md).
    #[arg(long, value_name = "never|serial")]
    instance_reuse: Option<String>,
}

impl SandboxArgs {
    /// `None` when no flag was given (the node keeps the stored or default sandbox).
    fn to_sandbox(&self) -> Result<Option<mpreg::sandbox::Sandbox>> {
        let limits = (self.memory_mib, self.timeout_ms, self.fuel);
        let sandbox = mpreg::sandbox::Sandbox::from_flags(
            limits,
            &self.env,
            &self.dirs,
            self.instance_reuse.as_deref(),
        )?;
        if self.cache_namespaces.is_empty() && self.secrets.is_empty() {
            return Ok(sandbox);
        }
        let mut sandbox = sandbox.unwrap_or_default();
        sandbox.cache_namespaces = self.cache_namespaces.clone();
        sandbox.secrets = self.secrets.clone();
        Ok(Some(sandbox))
    }
}

#[derive(Subcommand)]
enum ServerAction {
    /// Start a node and serve until Ctrl-C or SIGTERM.
    Start(StartArgs),
}

#[derive(Args)]
struct StartArgs {
    /// TOML config file (flags override it; MPREG_* variables override the file).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to bind.
    #[arg(long)]
    host: Option<String>,
    /// Port to bind; 0 picks a free port (printed on start).
    #[arg(long)]
    port: Option<u16>,
    /// Port of MPREG's TCP transport (`tcp://`, `tcps://` with TLS); 0 picks a free port.
    #[arg(long)]
    tcp_port: Option<u16>,
    /// TLS certificate chain (PEM): client ports speak TLS (`wss://`, `tcps://`).
    #[arg(long, value_name = "CERT.pem", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) of `--tls-cert`.
    #[arg(long, value_name = "KEY.pem", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA (PEM) that client certificates are checked against (mTLS).
    #[arg(long, value_name = "CA.pem")]
    tls_client_ca: Option<PathBuf>,
    /// Serve clients without credentials on a non-loopback address. Without it a node refuses
    /// to bind anything but loopback unless `[auth]` is configured.
    #[arg(long)]
    insecure: bool,
    /// API keys file (`[auth] keys_file`): clients must present one of its keys.
    #[arg(long, value_name = "KEYS.toml")]
    auth_keys: Option<PathBuf>,
    /// Resource tags of this node, comma-separated (matched against `locs`).
    #[arg(long)]
    resources: Option<String>,
    /// Plugin component to load (repeatable).
    #[arg(long = "plugin", value_name = "FILE.wasm")]
    plugins: Vec<PathBuf>,
    /// Cluster id.
    #[arg(long)]
    cluster_id: Option<String>,
    /// Nodes to join, comma-separated `host:port` or `ws://host:port` (repeatable).
    #[arg(long, value_name = "HOST:PORT,...")]
    peers: Vec<String>,
    /// Region label shown in the cluster map.
    #[arg(long)]
    region: Option<String>,
    /// Node id (generated when absent).
    #[arg(long)]
    node_id: Option<String>,
    /// Folder for published plugins and compiled code (kept across restarts). Without it the
    /// node keeps them in memory only.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Admin API token (at least 16 characters). Without one, a token is generated on the
    /// first start with this data directory and printed once.
    #[arg(long, env = "MPREG_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Log one line per request answered (target `mpreg::access`; `[logs] access`).
    #[arg(long)]
    access_log: bool,
    /// Record no call-path metrics (`[metrics] enabled = false`); `/metrics` still answers.
    #[arg(long)]
    no_metrics: bool,
}

#[derive(Args)]
struct CallArgs {
    /// Node URL, e.g. ws://127.0.0.1:6666.
    url: String,
    /// Function name.
    fun: String,
    /// Positional arguments, each a JSON value (a bare word that is not JSON is taken as a string).
    args: Vec<String>,
    /// Keyword argument `name=json` (repeatable).
    #[arg(long = "kw", value_name = "NAME=JSON")]
    kwargs: Vec<String>,
    /// Required resource tags, comma-separated.
    #[arg(long)]
    locs: Option<String>,
    /// Exact function id.
    #[arg(long)]
    function_id: Option<String>,
    /// Version constraint, e.g. ">=1.2, <2" or "^1".
    #[arg(long)]
    version: Option<String>,
    /// Request deadline in milliseconds.
    #[arg(long)]
    timeout_ms: Option<u64>,
}

#[derive(Args)]
struct BenchArgs {
    /// Node URL to load (start one with the example plugins first).
    #[arg(long, default_value = "ws://127.0.0.1:6666")]
    url: String,
    /// Seconds per throughput run.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Calls per latency run.
    #[arg(long, default_value_t = 5000)]
    latency_calls: usize,
    /// Plugin function that returns its input.
    #[arg(long, default_value = "identity")]
    function: String,
    /// Aggregate function of the fan-out scenario.
    #[arg(long, default_value = "join")]
    join: String,
    /// Print JSON instead of Markdown tables.
    #[arg(long)]
    json: bool,
    /// Run only scenarios whose name contains this text.
    #[arg(long, default_value = "")]
    only: String,
    /// Instead of the scenarios: a soak of this many seconds of mixed traffic (RPC, pub/sub,
    /// queues, hostile clients) with the node's memory sampled (600 for the documented run).
    #[arg(long, value_name = "SECONDS")]
    soak: Option<f64>,
    /// How often the soak samples the node's memory.
    #[arg(long, default_value_t = 10.0)]
    sample_seconds: f64,
}

fn parse_json_arg(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_owned()))
}

/// Logs to stderr as `--log-format` says, at `RUST_LOG` or `--log-level`, and exports traces
/// when an OTLP endpoint is given (docs/observability.md). Returns the tracer provider to flush
/// at exit.
fn init_tracing(
    format: LogFormat,
    level: &str,
    otlp: Option<&str>,
    dev: bool,
) -> Result<Option<opentelemetry_sdk::trace::SdkTracerProvider>> {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = match EnvFilter::try_from_default_env() {
        Ok(f) => f,
        Err(_) => EnvFilter::try_new(level)
            .with_context(|| format!("--log-level '{level}' is not a level or filter"))?,
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    let provider = otlp.map(mpreg::trace::otlp_provider).transpose()?;
    let traces = provider.as_ref().map(mpreg::trace::layer);
    // `mpreg dev`: the node's own lines only when they matter, the plugin's all, tagged.
    let (filter, plugin_log) = if dev {
        let quiet = EnvFilter::try_from_default_env()
            .or_else(|_| EnvFilter::try_new("warn,mpreg::plugin=off"))?;
        let plugin = EnvFilter::try_new("mpreg::plugin=trace")?;
        (quiet, Some(mpreg::dev::PluginLog.with_filter(plugin)))
    } else {
        (filter, None)
    };
    // Records of crates that use `log` (Cranelift logs each function it compiles) are cut at
    // the level the printed output asks for. Without this the plugin layer or the OTLP layer
    // raise the bar to TRACE and every compiled function pays for a record nobody prints
    // (a Python image compiled 4× slower in `mpreg dev`).
    let log_level = match filter.max_level_hint() {
        Some(tracing::level_filters::LevelFilter::OFF) => log::LevelFilter::Off,
        Some(tracing::level_filters::LevelFilter::ERROR) => log::LevelFilter::Error,
        Some(tracing::level_filters::LevelFilter::WARN) => log::LevelFilter::Warn,
        Some(tracing::level_filters::LevelFilter::INFO) => log::LevelFilter::Info,
        Some(tracing::level_filters::LevelFilter::DEBUG) => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    tracing_subscriber::registry()
        .with(plugin_log)
        .with(logs.with_filter(filter))
        .with(traces)
        .init();
    log::set_max_level(log_level);
    Ok(provider)
}

/// `mpreg doctor`: the toolchain checks, as text or JSON; exits 1 when one for `lang` fails.
fn doctor(dir: &std::path::Path, lang: Option<mpreg::scaffold::Lang>, json: bool) -> Result<()> {
    let search: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let checks = mpreg::doctor::checks(dir, &search);
    if json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        print!("{}", mpreg::doctor::render(&checks));
    }
    if !mpreg::doctor::healthy(&checks, lang) {
        std::process::exit(1);
    }
    Ok(())
}

async fn start(args: StartArgs) -> Result<()> {
    let flags = Overrides {
        host: args.host,
        port: args.port,
        tcp_port: args.tcp_port,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        tls_client_ca: args.tls_client_ca,
        resources: args.resources,
        cluster_id: args.cluster_id,
        peers: args.peers,
        region: args.region,
        node_id: args.node_id,
        data_dir: args.data_dir,
        admin_token: args.admin_token,
        plugins: args.plugins,
        access_log: args.access_log,
        no_metrics: args.no_metrics,
        insecure: args.insecure,
        auth_keys: args.auth_keys,
    };
    let cfg = NodeConfig::load(args.config.as_deref(), |k| std::env::var(k).ok(), flags)?;
    let node = mpreg::node::start(cfg).await?;
    // The first stdout line tells scripts (and `--port 0` users) where the node is.
    println!(
        "mpreg node {} listening on {}",
        node.info().node_id,
        node.url()
    );
    if let Some(token) = node.generated_admin_token() {
        // Not println!: a script that read only the first line may have closed stdout.
        use std::io::Write;
        let _ = writeln!(
            std::io::stdout(),
            "admin token (shown once, only its hash is kept): {token}"
        );
    }
    tokio::select! {
        _ = wait_for_signal() => {
            tracing::info!("shutting down: leaving the cluster, finishing in-flight requests");
            node.shutdown().await;
        }
        _ = node.clone().wait() => {}
    }
    tracing::info!("node stopped");
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Connects with the credential of `MPREG_API_KEY` or `MPREG_TOKEN`, when set.
async fn connect(url: &str) -> Result<Client> {
    let opts = mpreg::client::ConnectOptions {
        api_key: std::env::var("MPREG_API_KEY")
            .ok()
            .filter(|k| !k.is_empty()),
        auth_token: std::env::var("MPREG_TOKEN").ok().filter(|t| !t.is_empty()),
        ..Default::default()
    };
    Ok(Client::connect_with(url, &opts).await?)
}

/// `mpreg run`: prints the result as JSON, or fails with the call's error.
async fn run_local(
    file: &std::path::Path,
    fun: &str,
    args: &[String],
    kw: &[String],
) -> Result<()> {
    let args: Vec<Value> = args.iter().map(|a| parse_json_arg(a)).collect();
    let mut kwargs = serde_json::Map::new();
    for kv in kw {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--kw takes NAME=JSON, got '{kv}'")
        };
        kwargs.insert(k.to_owned(), parse_json_arg(v));
    }
    let local = mpreg::local::Local::load(file).await?;
    match local.call(fun, &args, &kwargs).await? {
        mpreg::local::Outcome::Returned(v) => {
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
        mpreg::local::Outcome::Failed { kind, message } => {
            bail!("{fun} failed ({kind}): {message}")
        }
    }
}

fn auth(action: AuthAction) -> Result<()> {
    use mpreg::auth::keys::KeysFile;
    let load = |path: &PathBuf| -> Result<KeysFile> {
        if path.exists() {
            Ok(KeysFile::load(path)?)
        } else {
            Ok(KeysFile::default())
        }
    };
    match action {
        AuthAction::Key {
            action:
                KeyAction::New {
                    keys_file,
                    name,
                    roles,
                },
        } => {
            let mut file = load(&keys_file)?;
            let (key, entry) = file.add(&name, roles)?;
            file.save(&keys_file)?;
            eprintln!(
                "key {} for '{}' added to {} (shown once; only its sha256 is kept):",
                entry.id,
                entry.name,
                keys_file.display()
            );
            println!("{key}");
        }
        AuthAction::Key {
            action: KeyAction::List { keys_file, json },
        } => {
            let file = KeysFile::load(&keys_file)?;
            if json {
                let rows: Vec<Value> = file
                    .key
                    .iter()
                    .map(|k| serde_json::json!({"id": k.id, "name": k.name, "roles": k.roles, "created": k.created}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("{:<10} {:<24} roles", "id", "name");
                for k in &file.key {
                    println!("{:<10} {:<24} {}", k.id, k.name, k.roles.join(","));
                }
            }
        }
        AuthAction::Key {
            action: KeyAction::Revoke { keys_file, which },
        } => {
            let mut file = KeysFile::load(&keys_file)?;
            let n = file.revoke(&which)?;
            file.save(&keys_file)?;
            println!("revoked {n} key(s) matching '{which}'");
        }
        AuthAction::Token(t) => println!("{}", token(t)?),
    }
    Ok(())
}

fn token(t: TokenArgs) -> Result<String> {
    let key = match (&t.key_file, &t.secret_env) {
        (Some(f), None) => {
            let mut bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
            if t.algorithm.starts_with("HS") {
                while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    bytes.pop();
                }
            }
            bytes
        }
        (None, Some(var)) => std::env::var(var)
            .with_context(|| format!("${var} is not set"))?
            .into_bytes(),
        _ => bail!("give the signing key: --key-file FILE or --secret-env VAR"),
    };
    let now = mpreg::clock::unix_now() as u64;
    let policy = t
        .policy
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .context("--policy is not a policy (docs/security.md)")?;
    let claims = mpreg::auth::jwt::Claims {
        sub: t.sub,
        exp: now + t.ttl,
        nbf: None,
        iat: Some(now),
        iss: t.issuer,
        aud: t.audience,
        roles: t.roles,
        mpreg: policy,
    };
    Ok(mpreg::auth::jwt::mint(&claims, &t.algorithm, &key)?)
}

async fn call(args: CallArgs) -> Result<()> {
    let client = connect(&args.url).await?;
    let mut cmd = RpcCommand::new(
        &args.fun,
        &args.fun,
        args.args.iter().map(|a| parse_json_arg(a)).collect(),
    );
    for kv in &args.kwargs {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--kw takes NAME=JSON, got '{kv}'")
        };
        cmd.kwargs.insert(k.to_owned(), parse_json_arg(v));
    }
    cmd.locs = args.locs.as_deref().map(split_list).unwrap_or_default();
    cmd.function_id = args.function_id;
    cmd.version_constraint = args.version;
    let mut req = RpcRequest::new(client.next_id(), vec![cmd]);
    req.timeout_ms = args.timeout_ms;
    print_reply(client.send(req).await?, Some(&args.fun))
}

fn print_reply(reply: mpreg::protocol::RpcResponse, unwrap: Option<&str>) -> Result<()> {
    if let Some(e) = reply.error {
        return Err(ClientError::from(e).into());
    }
    let mut r = reply.r.unwrap_or_default();
    let out = match unwrap.and_then(|name| r.remove(name)) {
        Some(v) => v,
        None => Value::Object(r),
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

async fn request(url: &str, file: &PathBuf) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let value: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
    let mut req: RpcRequest = match value {
        Value::Array(_) => RpcRequest::new("", serde_json::from_value(value).context("commands")?),
        Value::Object(mut obj) => {
            obj.entry("role").or_insert_with(|| "rpc".into());
            obj.entry("u").or_insert_with(|| "".into());
            serde_json::from_value(Value::Object(obj)).context("request")?
        }
        _ => bail!(
            "{} must hold a request object or an array of commands",
            file.display()
        ),
    };
    let client = connect(url).await?;
    if req.u.is_empty() {
        req.u = client.next_id();
    }
    let reply = client.send(req).await?;
    println!("{}", serde_json::to_string_pretty(&reply)?);
    if reply.error.is_some() {
        bail!("request failed");
    }
    Ok(())
}

async fn bench(args: BenchArgs) -> Result<()> {
    if let Some(seconds) = args.soak {
        if !(seconds > 0.0 && args.sample_seconds > 0.0) {
            bail!("--soak and --sample-seconds must be positive");
        }
        let cfg = mpreg::soak::SoakConfig {
            url: args.url,
            duration: Duration::from_secs_f64(seconds),
            sample_every: Duration::from_secs_f64(args.sample_seconds),
            plugin_function: args.function,
        };
        let report = mpreg::soak::run(&cfg).await?;
        return print_report(args.json, &report, mpreg::soak::render);
    }
    let cfg = mpreg::bench::BenchConfig {
        url: args.url,
        duration: Duration::from_secs_f64(args.seconds),
        latency_calls: args.latency_calls,
        plugin_function: args.function,
        join_function: args.join,
        only: args.only,
    };
    let report = mpreg::bench::run(&cfg).await?;
    print_report(args.json, &report, mpreg::bench::render)
}

/// Turns `bar` into a spinner saying `what` (drawn only on a terminal, on stderr), for a step
/// that gives no progress of its own.
fn spin(bar: &indicatif::ProgressBar, what: &str) {
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.set_message(what.to_owned());
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
}

/// Prints a report as JSON, or as the Markdown `render` makes of it.
fn print_report<T: serde::Serialize>(
    json: bool,
    report: &T,
    render: fn(&T) -> String,
) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        println!("{}", render(report));
    }
    Ok(())
}

async fn plugin(action: PluginAction) -> Result<()> {
    use mpreg::admin_client::AdminClient;
    match action {
        PluginAction::New {
            name,
            lang,
            dir,
            sdk,
        } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let sdk = match sdk {
                Some(sdk) => sdk,
                None if lang == mpreg::scaffold::Lang::Rust => mpreg::scaffold::installed_sdk()?,
                None => PathBuf::new(),
            };
            let files = mpreg::scaffold::new_project(&dir, &name, lang, &sdk)?;
            println!("created {} ({} files)", dir.display(), files.len());
            println!(
                "next: mpreg dev {0}   (or: mpreg plugin build {0})",
                dir.display()
            );
            Ok(())
        }
        PluginAction::Test { file, cases, json } => {
            let cases = mpreg::local::read_cases(&cases)?;
            let local = mpreg::local::Local::load(&file).await?;
            let mut failed = 0;
            let mut outcomes = Vec::new();
            for case in &cases {
                let name = case.name.clone().unwrap_or_else(|| case.call.clone());
                let why = mpreg::local::check(&local, case).await?;
                if why.is_some() {
                    failed += 1;
                }
                if !json {
                    match &why {
                        None => println!("ok     {name}"),
                        Some(why) => println!("FAILED {name}: {why}"),
                    }
                }
                outcomes.push(serde_json::json!({"name": name, "ok": why.is_none(), "why": why}));
            }
            if json {
                let report = serde_json::json!({
                    "passed": cases.len() - failed, "failed": failed, "cases": outcomes,
                });
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{} passed, {failed} failed", cases.len() - failed);
            }
            if failed > 0 {
                bail!("{failed} of {} cases failed", cases.len());
            }
            Ok(())
        }
        PluginAction::Build { dir, json } => {
            let built = tokio::task::spawn_blocking(move || mpreg::scaffold::build(&dir)).await??;
            let (out, bytes) = (built.path, built.bytes);
            let size = bytes.len();
            // Load it exactly as a node would: proves it targets our world and shows the
            // metadata it carries.
            let bar = indicatif::ProgressBar::hidden();
            if !json {
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            }
            spin(
                &bar,
                "loading it as a node would (baseline compile; cached by sha256)",
            );
            let loaded = mpreg::local::describe(bytes, &out.display().to_string()).await;
            bar.finish_and_clear();
            let plugin = loaded?;
            if json {
                let functions: Vec<serde_json::Value> = plugin
                    .functions
                    .iter()
                    .map(|f| {
                        serde_json::json!({"name": f.name, "function_id": f.function_id,
                            "signature": f.signature, "description": f.description})
                    })
                    .collect();
                let report = serde_json::json!({
                    "path": out, "bytes": size, "sha256": plugin.sha256,
                    "name": plugin.manifest.name, "version": plugin.manifest.version.to_string(),
                    "functions": functions,
                });
                println!("{}", serde_json::to_string_pretty(&report)?);
                return Ok(());
            }
            println!(
                "built {} ({} bytes, sha256 {})",
                out.display(),
                size,
                plugin.sha256
            );
            println!(
                "plugin {} {}",
                plugin.manifest.name, plugin.manifest.version
            );
            for f in &plugin.functions {
                println!("  {} [{}] {}", f.name, f.function_id, f.signature);
            }
            Ok(())
        }
        PluginAction::Publish {
            file,
            placement,
            admin,
            sandbox,
        } => {
            // A project folder is built first; its mpreg.toml gives the sandbox and placement
            // that flags do not.
            let json = admin.json;
            let (bytes, manifest) = if file.is_dir() {
                let built =
                    tokio::task::spawn_blocking(move || mpreg::scaffold::build(&file)).await??;
                (built.bytes, built.manifest)
            } else {
                let bytes =
                    std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                (bytes, None)
            };
            let sandbox = sandbox
                .to_sandbox()?
                .or_else(|| manifest.as_ref().and_then(|m| m.sandbox()));
            let placement = match placement {
                Some(p) => split_list(&p),
                None => manifest.map(|m| m.plugin.placement).unwrap_or_default(),
            };
            let reply = tokio::task::spawn_blocking(move || {
                let bar = indicatif::ProgressBar::new(bytes.len() as u64);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "uploading {bar:40} {bytes}/{total_bytes} ({bytes_per_sec})",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                let client = AdminClient::new(&admin.node, &admin.token);
                let total = bytes.len() as u64;
                let mut spinning = false;
                let reply =
                    client.publish_placed(&bytes, sandbox.as_ref(), &placement, &mut |sent| {
                        bar.set_position(sent);
                        if sent >= total && !spinning {
                            spinning = true;
                            // Everything is sent: the node validates and compiles it now.
                            spin(&bar, "the node is compiling it");
                        }
                    });
                bar.finish_and_clear();
                reply
            })
            .await??;
            print_report(json, &reply, mpreg::render::published)
        }
        PluginAction::List { admin } => {
            let json = admin.json;
            let reply = tokio::task::spawn_blocking(move || {
                AdminClient::new(&admin.node, &admin.token).list()
            })
            .await??;
            print_report(json, &reply, |r| {
                mpreg::render::plugin_table(r).trim_end().to_owned()
            })
        }
        PluginAction::Describe {
            name,
            version,
            admin,
        } => {
            let reply = tokio::task::spawn_blocking(move || {
                AdminClient::new(&admin.node, &admin.token).describe(&name, version.as_deref())
            })
            .await??;
            println!("{}", serde_json::to_string_pretty(&reply)?);
            Ok(())
        }
        PluginAction::Retire {
            name,
            version,
            admin,
        } => {
            let json = admin.json;
            let reply = tokio::task::spawn_blocking(move || {
                AdminClient::new(&admin.node, &admin.token).retire(&name, &version)
            })
            .await??;
            print_report(json, &reply, mpreg::render::retired)
        }
    }
}

async fn dev(args: DevArgs) -> Result<()> {
    let target = match (args.node, args.token) {
        (Some(url), Some(token)) => mpreg::dev::Target::Remote { url, token },
        (Some(_), None) => {
            bail!("--node needs the node's admin token: --token or MPREG_ADMIN_TOKEN")
        }
        (None, _) => {
            let (host, port) = args
                .listen
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
                .with_context(|| format!("--listen takes HOST:PORT, got '{}'", args.listen))?;
            mpreg::dev::Target::Embedded { host, port }
        }
    };
    let dev = mpreg::dev::Dev::start(mpreg::dev::DevOptions {
        dir: args.dir,
        target,
        tool_dirs: Vec::new(),
        settle: Duration::from_millis(args.settle_ms),
    })
    .await?;
    let mut out = std::io::stdout();
    dev.run(&mut out, wait_for_signal()).await?;
    Ok(())
}

/// Runs a blocking HTTP read off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, mpreg::observe::ObserveError> + Send + 'static,
) -> Result<T> {
    Ok(tokio::task::spawn_blocking(f).await??)
}

async fn metrics(url: String, openmetrics: bool, grep: Option<String>) -> Result<()> {
    let accept = openmetrics.then_some("application/openmetrics-text; version=1.0.0");
    let text = blocking(move || mpreg::observe::get(&url, "/metrics", accept)).await?;
    match grep {
        None => print!("{text}"),
        Some(pat) => {
            for line in text.lines().filter(|l| l.contains(&pat)) {
                println!("{line}");
            }
        }
    }
    Ok(())
}

async fn top(url: String, interval: f64, once: bool) -> Result<()> {
    if !(interval.is_finite() && interval >= 0.1) {
        anyhow::bail!("--interval must be at least 0.1 seconds, got {interval}");
    }
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    loop {
        let u = url.clone();
        let live = blocking(move || mpreg::observe::get_json(&u, "/monitor/live")).await?;
        let frame = mpreg::render::top(&live);
        if tty && !once {
            // Home the cursor and clear the screen, then draw.
            print!("\x1b[H\x1b[2J{frame}");
        } else {
            println!("{frame}");
        }
        if once {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs_f64(interval)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

async fn monitor(
    url: String,
    endpoint: String,
    offset: Option<usize>,
    limit: Option<usize>,
) -> Result<()> {
    let endpoint = endpoint
        .trim_start_matches('/')
        .trim_start_matches("monitor/");
    let mut path = format!("/monitor/{endpoint}");
    let query: Vec<String> = [("offset", offset), ("limit", limit)]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={v}")))
        .collect();
    if !query.is_empty() {
        path = format!("{path}?{}", query.join("&"));
    }
    let v = blocking(move || mpreg::observe::get_json(&url, &path)).await?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

async fn cluster_status(url: &str, json: bool) -> Result<()> {
    let client = mpreg::client::Client::connect(url).await?;
    let map = client.call("cluster_map", Vec::new()).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&map)?);
        return Ok(());
    }
    let map: mpreg::protocol::discovery::ClusterMap =
        serde_json::from_value(map).context("cluster_map reply")?;
    print!("{}", mpreg::render::cluster_table(&map));
    Ok(())
}

/// Asks every node of the cluster for its cache stats (through `cache.local`, so one
/// connection reaches them all) and prints them.
async fn cache_stats(url: &str, json: bool) -> Result<()> {
    let client = mpreg::client::Client::connect(url).await?;
    // The map always holds the node asked, then its live peers.
    let map = client.call("cluster_map", Vec::new()).await?;
    let nodes: Vec<String> = serde_json::from_value::<mpreg::protocol::discovery::ClusterMap>(map)
        .context("cluster_map reply")?
        .nodes
        .into_iter()
        .map(|n| n.node_id)
        .collect();
    let mut rows = Vec::new();
    for node in nodes {
        let frame = serde_json::json!({"operation": "stats"});
        let stats = match client
            .call("cache.local", vec![node.clone().into(), frame])
            .await
        {
            Ok(reply) if reply["status"] == "error" => Err(reply["error_message"].to_string()),
            Ok(reply) => Ok(reply["result"].clone()),
            Err(e) => Err(e.to_string()),
        };
        rows.push((node, stats));
    }
    if json {
        let out: serde_json::Map<String, serde_json::Value> = rows
            .into_iter()
            .map(|(n, s)| (n, s.unwrap_or_else(|e| serde_json::json!({"error": e}))))
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    print!("{}", mpreg::render::cache_table(&rows));
    Ok(())
}

/// Requests allocate on one worker thread and free on another; glibc's malloc spent ~12% of a
/// loaded node's CPU doing that (see docs/benchmarks.md). mimalloc's per-thread free lists
/// handle it far more cheaply.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let dev = matches!(cli.command, Command::Dev(_));
    let traces = match init_tracing(
        cli.log_format,
        &cli.log_level,
        cli.otlp_endpoint.as_deref(),
        dev,
    ) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    // A worker about to idle first tears down the plugin instances whose replies it has sent.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(mpreg::runtime::teardown::run_deferred)
        .build();
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(cli));
    if let Some(provider) = traces {
        // Spans still batched go out before the process ends.
        if let Err(e) = provider.shutdown() {
            eprintln!("warning: traces not all exported: {e}");
        }
    }
    code
}

async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Server {
            action: ServerAction::Start(args),
        } => start(args).await,
        Command::Call(args) => call(args).await,
        Command::Request { url, file } => request(&url, &file).await,
        Command::Bench(args) => bench(args).await,
        Command::Plugin { action } => plugin(action).await,
        Command::Cluster {
            action: ClusterAction::Status { url, json },
        } => cluster_status(&url, json).await,
        Command::Cluster {
            action: ClusterAction::Keygen,
        } => mpreg::cluster::keyring::Keyring::generate()
            .map(|k| println!("{k}"))
            .map_err(Into::into),
        Command::Cache {
            action: CacheAction::Stats { url, json },
        } => cache_stats(&url, json).await,
        Command::Metrics {
            url,
            openmetrics,
            grep,
        } => metrics(url, openmetrics, grep).await,
        Command::Top {
            url,
            interval,
            once,
        } => top(url, interval, once).await,
        Command::Monitor {
            endpoint,
            url,
            offset,
            limit,
        } => monitor(url, endpoint, offset, limit).await,
        Command::Auth { action } => auth(action),
        Command::Dev(args) => dev(args).await,
        Command::Doctor { dir, lang, json } => doctor(&dir, lang, json),
        Command::Run {
            file,
            fun,
            args,
            kwargs,
        } => run_local(&file, &fun, &args, &kwargs).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
