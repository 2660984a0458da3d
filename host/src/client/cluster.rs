//! A client for a whole cluster: connects through any seed, learns every node's URL from
//! `cluster_map` (again every `refresh`), and when its node goes away reconnects to another one.
//!
//! A request whose connection closed before its reply arrived is sent again on the next node, at
//! most once per known node (so it may run twice if its node died right after running it). A
//! request the node answered, even with an error, is never repeated.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mpreg::client::ClientError> {
//! use mpreg::client::ClusterClient;
//! use serde_json::json;
//!
//! let cluster = ClusterClient::connect(&["ws://10.0.0.1:6666", "ws://10.0.0.2:6666"]).await?;
//! let sum = cluster.call("add", vec![json!(2), json!(3)]).await?;
//! println!("{sum} via {}", cluster.current_url());
//! # Ok(()) }
//! ```

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};

use super::{Client, ClientError, result_named, results};
use crate::protocol::discovery::ClusterMap;
use crate::protocol::{RpcCommand, RpcRequest, RpcResponse};

struct State {
    /// Known node URLs, the current one first.
    urls: Vec<String>,
    current: Option<(String, Client)>,
}

/// A cluster-aware client. Cheap to clone; clones share the connection and node list.
#[derive(Clone)]
pub struct ClusterClient {
    state: Arc<Mutex<State>>,
    /// Serializes reconnects so a burst of failures dials once.
    dialing: Arc<tokio::sync::Mutex<()>>,
    timeout: Duration,
}

/// How often the node list is refreshed from `cluster_map` (MPREG's client uses 5 s).
const REFRESH: Duration = Duration::from_secs(5);

impl ClusterClient {
    /// Connects to the first reachable seed, learns the cluster's nodes, and keeps the list
    /// fresh in the background while any clone is alive.
    pub async fn connect<S: AsRef<str>>(seeds: &[S]) -> Result<ClusterClient, ClientError> {
        let urls: Vec<String> = seeds.iter().map(|s| s.as_ref().to_owned()).collect();
        if urls.is_empty() {
            return Err(ClientError::Connect {
                url: String::new(),
                reason: "no seed URLs given".into(),
            });
        }
        let client = ClusterClient {
            state: Arc::new(Mutex::new(State {
                urls,
                current: None,
            })),
            dialing: Arc::default(),
            timeout: Duration::from_secs(60),
        };
        client.reconnect(None).await?;
        client.refresh().await?;
        let weak = Arc::downgrade(&client.state);
        let refresher = client.clone_with(weak.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH).await;
                if weak.strong_count() == 0 {
                    // Every clone of the client is gone.
                    break;
                }
                let _ = refresher.refresh().await;
            }
        });
        Ok(client)
    }

    /// A refresher that does not keep the client alive.
    fn clone_with(&self, weak: std::sync::Weak<Mutex<State>>) -> Refresher {
        Refresher {
            state: weak,
            dialing: self.dialing.clone(),
            timeout: self.timeout,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The node URL in use.
    pub fn current_url(&self) -> String {
        self.lock()
            .current
            .as_ref()
            .map(|(u, _)| u.clone())
            .unwrap_or_default()
    }

    /// Every node URL known.
    pub fn known_urls(&self) -> Vec<String> {
        self.lock().urls.clone()
    }

    /// Asks the current node for the cluster map and keeps its URLs.
    pub async fn refresh(&self) -> Result<(), ClientError> {
        let map = self.call("cluster_map", Vec::new()).await?;
        let map: ClusterMap = serde_json::from_value(map)
            .map_err(|e| ClientError::Protocol(format!("cluster_map: {e}")))?;
        let found: Vec<String> = map
            .nodes
            .into_iter()
            .filter_map(|n| n.advertised_urls.into_iter().next())
            .collect();
        let mut s = self.lock();
        let current = s.current.as_ref().map(|(u, _)| u.clone());
        for u in found {
            if !s.urls.contains(&u) {
                s.urls.push(u);
            }
        }
        if let Some(c) = current {
            s.urls.retain(|u| u != &c);
            s.urls.insert(0, c);
        }
        Ok(())
    }

    /// Drops connection `failed` (if still current) and connects to the next reachable node.
    async fn reconnect(&self, failed: Option<&str>) -> Result<Client, ClientError> {
        let _one = self.dialing.lock().await;
        let urls = {
            let mut s = self.lock();
            match (&s.current, failed) {
                (Some((u, c)), Some(f)) if u != f => return Ok(c.clone()),
                (Some((_, c)), None) => return Ok(c.clone()),
                _ => {}
            }
            if let Some((u, _)) = s.current.take() {
                // The failed node goes to the back of the list.
                s.urls.retain(|x| x != &u);
                s.urls.push(u);
            }
            s.urls.clone()
        };
        let mut last = None;
        for url in urls {
            match Client::connect(&url).await {
                Ok(c) => {
                    let c = c.with_timeout(self.timeout);
                    self.lock().current = Some((url, c.clone()));
                    return Ok(c);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(ClientError::Closed))
    }

    fn current(&self) -> Option<(String, Client)> {
        self.lock().current.clone()
    }

    /// Sends a full request, failing over to another node when the connection is gone.
    pub async fn send(&self, req: RpcRequest) -> Result<RpcResponse, ClientError> {
        let attempts = self.lock().urls.len().max(1) + 1;
        let mut last = ClientError::Closed;
        for _ in 0..attempts {
            let (url, client) = match self.current() {
                Some(c) => c,
                None => {
                    let c = self.reconnect(None).await?;
                    (self.current_url(), c)
                }
            };
            match client.send(req.clone()).await {
                Err(ClientError::Closed) => {
                    last = ClientError::Closed;
                    self.reconnect(Some(&url)).await?;
                }
                other => return other,
            }
        }
        Err(last)
    }

    /// Runs a multi-command request and returns `r`.
    pub async fn request(&self, cmds: Vec<RpcCommand>) -> Result<Map<String, Value>, ClientError> {
        results(self.send(RpcRequest::new("", cmds)).await?)
    }

    /// Calls one function anywhere in the cluster.
    pub async fn call(&self, fun: &str, args: Vec<Value>) -> Result<Value, ClientError> {
        self.call_command(RpcCommand::new(fun, fun, args)).await
    }

    /// Calls one command (with `locs`, `function_id`, `version_constraint` or kwargs set).
    pub async fn call_command(&self, cmd: RpcCommand) -> Result<Value, ClientError> {
        let name = cmd.name.clone();
        result_named(self.request(vec![cmd]).await?, &name)
    }
}

/// The background refresher's view of a client: it must not keep the client alive.
struct Refresher {
    state: std::sync::Weak<Mutex<State>>,
    dialing: Arc<tokio::sync::Mutex<()>>,
    timeout: Duration,
}

impl Refresher {
    async fn refresh(&self) -> Result<(), ClientError> {
        let Some(state) = self.state.upgrade() else {
            return Ok(());
        };
        let client = ClusterClient {
            state,
            dialing: self.dialing.clone(),
            timeout: self.timeout,
        };
        client.refresh().await
    }
}
