//! Blocking client of a node's admin API (`mpreg plugin publish|list|describe|retire`, tests).
//! Blocking on purpose: the CLI does one thing at a time, and a reader body lets a progress bar
//! follow a large upload. Call it from `spawn_blocking` inside async code.

use std::io::Read;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::protocol::admin::{
    AdminErrorReply, PLACEMENT_HEADER, PluginList, Published, Retired, SANDBOX_HEADER,
};
use crate::sandbox::Sandbox;

/// An admin call that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The node answered with an error.
    #[error("{message} (HTTP {status}, {kind})")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Machine-readable kind (`unauthorized`, `conflict`, `wrong_world`, …).
        kind: String,
        /// The node's explanation.
        message: String,
    },
    /// The node could not be reached or answered nonsense.
    #[error("admin API at {url}: {message}")]
    Transport {
        /// What was called.
        url: String,
        /// What went wrong.
        message: String,
    },
}

impl AdminError {
    /// The HTTP status, when the node answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            AdminError::Refused { status, .. } => Some(*status),
            AdminError::Transport { .. } => None,
        }
    }
}

/// Admin API of one node.
pub struct AdminClient {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl AdminClient {
    /// `node` in any form the client takes ([`crate::client::transport::normalize`]):
    /// `ws://host:port`, `http://host:port`, `host:port`, `:port`.
    pub fn new(node: &str, token: &str) -> Self {
        let base = crate::client::transport::normalize(node)
            .trim_end_matches('/')
            .replacen("ws://", "http://", 1)
            .replacen("wss://", "https://", 1);
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(600)))
            .build()
            .new_agent();
        AdminClient {
            base,
            token: token.to_owned(),
            agent,
        }
    }

    fn finish<T: DeserializeOwned>(
        url: &str,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T, AdminError> {
        let transport = |message: String| AdminError::Transport {
            url: url.to_owned(),
            message,
        };
        let mut response = response.map_err(|e| transport(e.to_string()))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| transport(e.to_string()))?;
        let unreadable =
            |e: serde_json::Error| transport(format!("HTTP {status}: {e}: {}", text.trim()));
        if (200..300).contains(&status) {
            return serde_json::from_str(&text).map_err(unreadable);
        }
        let AdminErrorReply { error } = serde_json::from_str(&text).map_err(unreadable)?;
        Err(AdminError::Refused {
            status,
            kind: error.kind,
            message: error.message,
        })
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// Adds the token, unless there is none (then the node answers 401).
    fn authorized<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        if self.token.is_empty() {
            request
        } else {
            request.header("authorization", self.auth())
        }
    }

    /// Uploads a component. `progress` is told how many bytes have been sent so far.
    pub fn publish(
        &self,
        bytes: &[u8],
        sandbox: Option<&Sandbox>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Published, AdminError> {
        self.publish_placed(bytes, sandbox, &[], progress)
    }

    /// Like [`publish`](Self::publish), hosting the version in the cluster only on nodes with
    /// every tag of `placement` (empty: every node).
    pub fn publish_placed(
        &self,
        bytes: &[u8],
        sandbox: Option<&Sandbox>,
        placement: &[String],
        progress: &mut dyn FnMut(u64),
    ) -> Result<Published, AdminError> {
        let url = format!("{}/admin/plugins", self.base);
        let mut request = self
            .authorized(self.agent.post(&url))
            .header("content-type", "application/wasm")
            .header("content-length", bytes.len().to_string());
        if let Some(s) = sandbox {
            let json = serde_json::to_string(s).map_err(|e| AdminError::Transport {
                url: url.clone(),
                message: e.to_string(),
            })?;
            request = request.header(SANDBOX_HEADER, json);
        }
        if !placement.is_empty() {
            request = request.header(PLACEMENT_HEADER, placement.join(","));
        }
        let mut reader = Progress {
            inner: bytes,
            sent: 0,
            report: progress,
        };
        let response = request.send(ureq::SendBody::from_reader(&mut reader));
        Self::finish(&url, response)
    }

    /// Every plugin version on the node.
    pub fn list(&self) -> Result<PluginList, AdminError> {
        let url = format!("{}/admin/plugins", self.base);
        let response = self.authorized(self.agent.get(&url)).call();
        Self::finish(&url, response)
    }

    /// One plugin (newest loaded version when `version` is `None`): every detail the node has,
    /// as JSON (it carries the node's sandbox and limits, which vary by node version).
    pub fn describe(&self, name: &str, version: Option<&str>) -> Result<Value, AdminError> {
        let url = match version {
            Some(v) => format!("{}/admin/plugins/{name}/{v}", self.base),
            None => format!("{}/admin/plugins/{name}", self.base),
        };
        let response = self.authorized(self.agent.get(&url)).call();
        Self::finish(&url, response)
    }

    /// Retires `name@version` (returns once calls running on it have finished).
    pub fn retire(&self, name: &str, version: &str) -> Result<Retired, AdminError> {
        let url = format!("{}/admin/plugins/{name}/{version}", self.base);
        let response = self.authorized(self.agent.delete(&url)).call();
        Self::finish(&url, response)
    }
}

/// A reader that reports how much has been read.
struct Progress<'a> {
    inner: &'a [u8],
    sent: u64,
    report: &'a mut dyn FnMut(u64),
}

impl Read for Progress<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sent += n as u64;
        (self.report)(self.sent);
        Ok(n)
    }
}
