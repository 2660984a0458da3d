//! Test harness: real nodes on `127.0.0.1:0` with the example plugins, and a raw WebSocket that
//! sends exact protocol frames and reads exact replies.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use chitchat::transport::ChannelTransport;
use futures_util::{SinkExt, StreamExt};
use mpreg::config::NodeConfig;
use mpreg::node::{NodeHandle, NodeOptions};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub mod browser;
pub mod pki;

/// `GET {path}` of a node (its `/metrics` or a `/monitor` endpoint), with `accept`.
pub async fn http_get(url: &str, path: &str, accept: Option<&str>) -> Result<String> {
    let (url, path, accept) = (url.to_owned(), path.to_owned(), accept.map(str::to_owned));
    let body =
        tokio::task::spawn_blocking(move || mpreg::observe::get(&url, &path, accept.as_deref()))
            .await??;
    Ok(body)
}

/// `{method} {path}` of a node (`ws://host:port`) with extra `headers`, over a plain HTTP/1.1
/// connection: the status and the body. For tests of refusals, which the other helpers treat
/// as errors.
pub async fn http_request(
    url: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url
        .strip_prefix("ws://")
        .context("a ws:// url")?
        .trim_end_matches('/');
    let mut tcp = TcpStream::connect(addr).await?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Content-Length: 0\r\n\r\n");
    tcp.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut raw)).await??;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    Ok((status, body))
}

/// `GET {path}` of a node as JSON.
pub async fn http_json(url: &str, path: &str) -> Result<Value> {
    Ok(serde_json::from_str(&http_get(url, path, None).await?)?)
}

/// A node's `/metrics`, parsed; every line must be a comment, a sample or empty (the exposition
/// parses), else this fails naming the line.
pub async fn scrape(url: &str) -> Result<prometheus_parse::Scrape> {
    let text = http_get(url, "/metrics", None).await?;
    for line in text.lines() {
        let ignored = matches!(
            prometheus_parse::LineInfo::parse(line),
            prometheus_parse::LineInfo::Ignored
        );
        if ignored && !line.starts_with('#') {
            bail!("unparsable exposition line: {line}");
        }
    }
    Ok(prometheus_parse::Scrape::parse(
        text.lines().map(|l| Ok(l.to_owned())),
    )?)
}

/// The value of sample `name` whose labels include every pair of `labels` (summed over the
/// samples that match); a histogram's value is its count.
pub fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(b) => b.iter().map(|c| c.count).fold(0.0, f64::max),
            prometheus_parse::Value::Summary(_) => 0.0,
        })
        .sum()
}

/// Folder with the example plugins, built by this crate's build script.
pub const PLUGIN_DIR: &str = env!("MPREG_PLUGIN_DIR");

/// Path of example plugin `name` (`math`, `text`, `pipeline`, `chaos`, `greeter`, `greeter2`,
/// `relay`, `badmeta`).
pub fn plugin(name: &str) -> PathBuf {
    PathBuf::from(PLUGIN_DIR).join(format!("mpreg_plugin_{name}.wasm"))
}

/// Every example plugin that loads (not `badmeta`).
pub fn all_plugins() -> Vec<PathBuf> {
    [
        "math", "text", "pipeline", "chaos", "greeter", "greeter2", "relay",
    ]
    .into_iter()
    .map(plugin)
    .collect()
}

/// A config for tests: port 0, all example plugins, short limits so failures show quickly.
pub fn test_config() -> NodeConfig {
    let mut cfg = NodeConfig::default();
    cfg.server.port = 0;
    cfg.server.shutdown_grace_ms = 2_000;
    cfg.runtime.call_timeout_ms = 1_000;
    cfg.plugins = all_plugins().into_iter().map(Into::into).collect();
    cfg.node.id = Some("test-node".into());
    cfg.admin.token = Some(ADMIN_TOKEN.into());
    cfg
}

/// The admin token of [`test_config`] nodes.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// Runs a blocking admin call off the async runtime; its typed reply comes back as the JSON
/// the node sent, so tests check the wire shape.
pub async fn admin<T, F>(
    url: &str,
    token: &str,
    f: F,
) -> Result<Value, mpreg::admin_client::AdminError>
where
    T: serde::Serialize + Send + 'static,
    F: FnOnce(&mpreg::admin_client::AdminClient) -> Result<T, mpreg::admin_client::AdminError>
        + Send
        + 'static,
{
    let client = mpreg::admin_client::AdminClient::new(url, token);
    let reply = tokio::task::spawn_blocking(move || f(&client))
        .await
        .expect("admin call panicked")?;
    Ok(serde_json::to_value(reply).expect("a typed reply serializes"))
}

/// Publishes `bytes` with the test token.
pub async fn publish(url: &str, bytes: Vec<u8>) -> Result<Value, mpreg::admin_client::AdminError> {
    admin(url, ADMIN_TOKEN, move |c| {
        c.publish(&bytes, None, &mut |_| {})
    })
    .await
}

/// A node running in this process.
pub struct TestNode {
    /// The node.
    pub handle: NodeHandle,
    /// `ws://127.0.0.1:port`.
    pub url: String,
}

impl Drop for TestNode {
    /// Stops the node (and frees its wasm instance pool) when a test ends without shutting it down.
    fn drop(&mut self) {
        self.handle.shutdown_token().cancel();
    }
}

impl TestNode {
    /// A node with [`test_config`].
    pub async fn start() -> Result<TestNode> {
        Self::with_config(test_config()).await
    }

    /// A node with `cfg`.
    pub async fn with_config(cfg: NodeConfig) -> Result<TestNode> {
        Self::with_options(cfg, NodeOptions::default()).await
    }

    /// A node with `cfg` and `options` (gossip over an in-memory transport, say).
    pub async fn with_options(cfg: NodeConfig, options: NodeOptions) -> Result<TestNode> {
        let handle = mpreg::node::start_with(cfg, options)
            .await
            .context("node start")?;
        let url = handle.url();
        Ok(TestNode { handle, url })
    }

    /// A raw connection to it.
    pub async fn raw(&self) -> Result<RawWs> {
        RawWs::connect(&self.url).await
    }

    /// Whether a fresh connection gets `echo(1)` answered (the node still serves others while a
    /// test attacks it).
    pub async fn serves_echo(&self) -> Result<()> {
        let mut ws = self.raw().await?;
        let frame = rpc_frame(
            "e",
            serde_json::json!([{"name": "e", "fun": "echo", "args": [1]}]),
        );
        let reply = ws.roundtrip(&frame).await?;
        if reply != ok_reply("e", serde_json::json!({"e": 1})) {
            bail!("echo answered {reply}");
        }
        Ok(())
    }

    /// A client connected to it.
    pub async fn client(&self) -> Result<mpreg::client::Client> {
        Ok(mpreg::client::Client::connect(&self.url).await?)
    }
}

/// A config for one node of a test cluster: [`test_config`] with id `id`, resources `tags`,
/// only the plugins named (e.g. `["math"]`), joining through `peers`, and fast gossip so tests
/// see joins and deaths quickly.
pub fn cluster_config(id: &str, tags: &[&str], plugins: &[&str], peers: &[String]) -> NodeConfig {
    let mut cfg = test_config();
    cfg.node.id = Some(id.into());
    cfg.node.resources = tags.iter().map(|t| t.to_string()).collect();
    cfg.plugins = plugins.iter().map(|p| plugin(p).into()).collect();
    cfg.cluster.peers = peers.to_vec();
    cfg.cluster.gossip_interval_ms = 50;
    cfg.cluster.load_report_ms = 50;
    cfg
}

/// Polls `check` every 10 ms until it holds; fails naming `what` after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    loop {
        if check().await {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            bail!("not within {timeout:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Several nodes of one cluster in this process. Node 0 is the seed the others join through.
///
/// Gossip runs on chitchat's in-memory transport unless the cluster was started with
/// [`TestCluster::start_udp`]: no UDP port per node, and [`TestCluster::partition`] can cut
/// gossip between two nodes. Peer links and clients still use real loopback sockets.
pub struct TestCluster {
    /// The nodes; `None` once crashed.
    pub nodes: Vec<Option<TestNode>>,
    /// The in-memory gossip network (`None`: real UDP).
    net: Option<ChannelTransport>,
}

impl TestCluster {
    /// Starts `configs[0]`, then the rest joining through it, gossiping in memory, and waits
    /// until every node sees every other with a working link.
    pub async fn start(configs: Vec<NodeConfig>) -> Result<TestCluster> {
        Self::start_on(configs, Some(ChannelTransport::default())).await
    }

    /// [`start`](Self::start) with gossip over real UDP sockets, as the binary runs.
    pub async fn start_udp(configs: Vec<NodeConfig>) -> Result<TestCluster> {
        Self::start_on(configs, None).await
    }

    async fn start_on(
        mut configs: Vec<NodeConfig>,
        net: Option<ChannelTransport>,
    ) -> Result<TestCluster> {
        let mut cluster = TestCluster {
            nodes: Vec::new(),
            net,
        };
        let mut seed: Option<String> = None;
        for mut cfg in configs.drain(..) {
            if let Some(s) = &seed {
                cfg.cluster.peers.push(s.clone());
            }
            let node = TestNode::with_options(cfg, cluster.options()).await?;
            seed.get_or_insert_with(|| node.handle.addr().to_string());
            cluster.nodes.push(Some(node));
        }
        cluster.wait_formed(Duration::from_secs(10)).await?;
        Ok(cluster)
    }

    /// A cluster of nodes started elsewhere, gossiping over UDP (benches that start nodes
    /// concurrently).
    pub fn of_udp_nodes(nodes: Vec<Option<TestNode>>) -> TestCluster {
        TestCluster { nodes, net: None }
    }

    fn options(&self) -> NodeOptions {
        NodeOptions {
            gossip_transport: self
                .net
                .clone()
                .map(|n| std::sync::Arc::new(n) as mpreg::cluster::membership::GossipTransport),
        }
    }

    /// Cuts gossip between nodes `a` and `b` (in-memory clusters only); peer links stay up, as
    /// when only the gossip port is blocked.
    pub async fn partition(&self, a: usize, b: usize) -> Result<()> {
        let (net, a, b) = self.gossip_pair(a, b)?;
        net.remove_link(a, b).await;
        Ok(())
    }

    /// Restores gossip between nodes `a` and `b`.
    pub async fn heal(&self, a: usize, b: usize) -> Result<()> {
        let (net, a, b) = self.gossip_pair(a, b)?;
        net.add_link(a, b).await;
        Ok(())
    }

    /// The in-memory network and the gossip addresses of nodes `a` and `b`.
    fn gossip_pair(
        &self,
        a: usize,
        b: usize,
    ) -> Result<(
        &ChannelTransport,
        std::net::SocketAddr,
        std::net::SocketAddr,
    )> {
        let net = self
            .net
            .as_ref()
            .context("partitions need an in-memory cluster")?;
        Ok((net, self.node(a).handle.addr(), self.node(b).handle.addr()))
    }

    /// The seed's address, for nodes joining later.
    pub fn seed(&self) -> Result<String> {
        self.nodes
            .iter()
            .flatten()
            .next()
            .map(|n| n.handle.addr().to_string())
            .ok_or_else(|| anyhow!("no live node"))
    }

    /// Node `i` (panics if it was crashed: a test bug).
    pub fn node(&self, i: usize) -> &TestNode {
        self.nodes[i].as_ref().expect("node is running")
    }

    /// Whether every live node sees every other live node with its link up.
    pub fn formed(&self) -> bool {
        let live: Vec<&TestNode> = self.nodes.iter().flatten().collect();
        live.iter().all(|n| {
            let Some(c) = n.handle.cluster() else {
                return false;
            };
            let view = c.view();
            view.nodes.len() == live.len() - 1
                && view
                    .nodes
                    .iter()
                    .all(|p| c.link(&p.node_id).is_some_and(|l| l.is_connected()))
        })
    }

    /// Waits until [`formed`](Self::formed).
    pub async fn wait_formed(&self, timeout: Duration) -> Result<Duration> {
        eventually(timeout, "cluster formed", || async { self.formed() }).await
    }

    /// Waits until no live node but `node_id` itself has `node_id` in its view.
    pub async fn wait_gone(&self, node_id: &str, timeout: Duration) -> Result<Duration> {
        let what = format!("{node_id} gone from every other view");
        eventually(timeout, &what, || async {
            self.nodes.iter().flatten().all(|n| {
                n.handle
                    .cluster()
                    .is_some_and(|c| c.view().node(node_id).is_none())
            })
        })
        .await
    }

    /// Crashes node `i`: gossip stops and its connections drop at once.
    pub async fn crash(&mut self, i: usize) {
        if let Some(n) = self.nodes[i].take() {
            n.handle.clone().crash().await;
        }
    }

    /// Puts a node (re)started with `cfg` in slot `i`, joining through the seed.
    pub async fn restart(&mut self, i: usize, mut cfg: NodeConfig) -> Result<()> {
        cfg.cluster.peers = vec![self.seed()?];
        self.nodes[i] = Some(TestNode::with_options(cfg, self.options()).await?);
        Ok(())
    }
}

/// A WebSocket speaking exact JSON frames.
pub struct RawWs {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// Longest a test waits for one frame: well above any deadline the tests use.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(15);

impl RawWs {
    /// Connects.
    pub async fn connect(url: &str) -> Result<RawWs> {
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(RawWs { ws })
    }

    /// Sends `v` as a binary frame, as MPREG's Python client does.
    pub async fn send_binary(&mut self, v: &Value) -> Result<()> {
        self.ws
            .send(Message::Binary(serde_json::to_vec(v)?.into()))
            .await?;
        Ok(())
    }

    /// Sends `v` as a text frame.
    pub async fn send_text(&mut self, v: &Value) -> Result<()> {
        self.ws
            .send(Message::Text(serde_json::to_string(v)?.into()))
            .await?;
        Ok(())
    }

    /// Sends raw text (for malformed input).
    pub async fn send_raw(&mut self, text: &str) -> Result<()> {
        self.ws.send(Message::Text(text.to_owned().into())).await?;
        Ok(())
    }

    /// Pipelines `n` one-command requests `fun(args)` without reading a reply; the `u` of
    /// request `i` is `{fun}-{i}` and its command is named `c`.
    pub async fn pipeline(&mut self, fun: &str, args: Value, n: usize) -> Result<()> {
        for i in 0..n {
            let cmds = serde_json::json!([{"name": "c", "fun": fun, "args": args.clone()}]);
            self.send_binary(&rpc_frame(&format!("{fun}-{i}"), cmds))
                .await?;
        }
        Ok(())
    }

    /// Reads frames until the connection ends, and counts the replies among them.
    pub async fn replies_until_closed(&mut self) -> Result<usize> {
        let mut n = 0;
        loop {
            match tokio::time::timeout(RECV_TIMEOUT, self.ws.next()).await {
                Err(_) => bail!("not closed within {RECV_TIMEOUT:?}"),
                Ok(Some(Ok(Message::Text(_) | Message::Binary(_)))) => n += 1,
                Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return Ok(n),
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Sends a ping and waits for the pong.
    pub async fn ping(&mut self) -> Result<()> {
        self.ws.send(Message::Ping(b"hi".to_vec().into())).await?;
        loop {
            match self.next().await? {
                Message::Pong(p) if &p[..] == b"hi" => return Ok(()),
                Message::Pong(_) => {}
                other => bail!("expected pong, got {other:?}"),
            }
        }
    }

    async fn next(&mut self) -> Result<Message> {
        match tokio::time::timeout(RECV_TIMEOUT, self.ws.next()).await {
            Err(_) => bail!("no frame within {RECV_TIMEOUT:?}"),
            Ok(None) => bail!("connection closed"),
            Ok(Some(m)) => Ok(m?),
        }
    }

    /// The next data frame as text, exactly as the node wrote it.
    pub async fn recv_text(&mut self) -> Result<String> {
        loop {
            match self.next().await? {
                Message::Text(t) => return Ok(t.as_str().to_owned()),
                Message::Binary(b) => return Ok(String::from_utf8(b.to_vec())?),
                Message::Close(c) => return Err(anyhow!("closed: {c:?}")),
                _ => {}
            }
        }
    }

    /// The next JSON frame (text or binary).
    pub async fn recv(&mut self) -> Result<Value> {
        loop {
            match self.next().await? {
                Message::Text(t) => return Ok(serde_json::from_str(&t)?),
                Message::Binary(b) => return Ok(serde_json::from_slice(&b)?),
                Message::Ping(_) | Message::Pong(_) => {}
                Message::Close(c) => return Err(anyhow!("closed: {c:?}")),
                Message::Frame(_) => {}
            }
        }
    }

    /// Sends `v` (binary) and returns the next frame.
    pub async fn roundtrip(&mut self, v: &Value) -> Result<Value> {
        self.send_binary(v).await?;
        self.recv().await
    }

    /// Waits for the server to close and returns its close frame.
    pub async fn closed(&mut self) -> Result<Option<CloseFrame>> {
        loop {
            match tokio::time::timeout(RECV_TIMEOUT, self.ws.next()).await {
                Err(_) => bail!("not closed within {RECV_TIMEOUT:?}"),
                Ok(None) => return Ok(None),
                Ok(Some(Ok(Message::Close(c)))) => return Ok(c),
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_))) => return Ok(None),
            }
        }
    }

    /// Asserts nothing arrives within `d`.
    pub async fn silent_for(&mut self, d: Duration) -> Result<()> {
        match tokio::time::timeout(d, self.ws.next()).await {
            Err(_) => Ok(()),
            Ok(m) => bail!("expected silence, got {m:?}"),
        }
    }
}

/// The exact request frame MPREG's Python client sends for `cmds` (protocol.md §2.1).
pub fn rpc_frame(u: &str, cmds: Value) -> Value {
    let Value::Array(cmds) = cmds else {
        panic!("cmds must be an array")
    };
    let cmds: Vec<Value> = cmds
        .into_iter()
        .map(|c| {
            let mut full = serde_json::json!({
                "name": null, "fun": null, "args": [], "kwargs": {}, "locs": [],
                "function_id": null, "version_constraint": null,
                "target_cluster": null, "routing_topic": null,
            });
            if let (Value::Object(full), Value::Object(c)) = (&mut full, c) {
                full.extend(c);
            }
            full
        })
        .collect();
    serde_json::json!({
        "role": "rpc", "cmds": cmds, "u": u,
        "return_intermediate_results": false,
        "intermediate_result_callback_topic": null,
        "include_execution_summary": false,
        "debug_mode": false,
    })
}

/// The exact success reply for `r`.
pub fn ok_reply(u: &str, r: Value) -> Value {
    serde_json::json!({"role": "rpc-response", "u": u, "r": r, "error": null})
}

/// The code and details of a failed client call; panics (fails the test) on success.
pub fn rpc_error(r: Result<Value, mpreg::client::ClientError>) -> (i64, String) {
    match r {
        Err(mpreg::client::ClientError::Rpc { code, details, .. }) => (code, details.to_string()),
        other => panic!("expected an rpc error, got {other:?}"),
    }
}

/// The `error` object of a reply, or a test failure.
pub fn error_of(reply: &Value) -> Result<(i64, String)> {
    let e = &reply["error"];
    let code = e["code"]
        .as_i64()
        .ok_or_else(|| anyhow!("no error code in {reply}"))?;
    Ok((code, e["details"].as_str().unwrap_or_default().to_owned()))
}
