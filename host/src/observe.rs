//! Reads a node's observability endpoints over HTTP (`/metrics`, `/monitor/...`): what
//! `mpreg metrics`, `mpreg monitor` and `mpreg top` show, and what tests scrape.

use std::time::Duration;

use serde_json::Value;

/// Why an endpoint could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// The node URL is not one of the accepted forms.
    #[error("'{0}' is not a node URL: use ws://host:port, http://host:port, host:port or :port")]
    BadUrl(String),
    /// The request did not complete.
    #[error("{url}: {message}")]
    Transport {
        /// What was asked for.
        url: String,
        /// Why it failed.
        message: String,
    },
    /// The node answered with an error status.
    #[error("{url}: HTTP {status}: {body}")]
    Status {
        /// What was asked for.
        url: String,
        /// The status.
        status: u16,
        /// What it said.
        body: String,
    },
    /// The reply was not the JSON expected.
    #[error("{url}: not JSON: {message}")]
    NotJson {
        /// What was asked for.
        url: String,
        /// The parser's message.
        message: String,
    },
}

/// The HTTP base (`http://host:port`) of a node given as `ws://host:port`, `wss://…`,
/// `http(s)://host:port`, `host:port` or `:port` (loopback).
pub fn http_base(node: &str) -> Result<String, ObserveError> {
    let node = node.trim().trim_end_matches('/');
    let (scheme, rest) = if let Some(r) = node.strip_prefix("ws://") {
        ("http", r)
    } else if let Some(r) = node.strip_prefix("wss://") {
        ("https", r)
    } else if let Some(r) = node.strip_prefix("http://") {
        ("http", r)
    } else if let Some(r) = node.strip_prefix("https://") {
        ("https", r)
    } else if node.contains("://") {
        return Err(ObserveError::BadUrl(node.to_owned()));
    } else {
        ("http", node)
    };
    let rest = rest.split('/').next().unwrap_or(rest);
    let rest = match rest.strip_prefix(':') {
        Some(port) => format!("127.0.0.1:{port}"),
        None => rest.to_owned(),
    };
    let port_ok = rest
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !port_ok {
        return Err(ObserveError::BadUrl(node.to_owned()));
    }
    Ok(format!("{scheme}://{rest}"))
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .new_agent()
}

/// The body of `GET {node}{path}`, with `accept` as the `Accept` header when given. A node
/// that requires credentials for monitoring (docs/security.md) gets `MPREG_API_KEY` or
/// `MPREG_TOKEN` from the environment, as the CLI's other commands send them.
pub fn get(node: &str, path: &str, accept: Option<&str>) -> Result<String, ObserveError> {
    let url = format!("{}{path}", http_base(node)?);
    let mut req = agent().get(&url);
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let set = |var: &str| std::env::var(var).ok().filter(|v| !v.is_empty());
    if let Some(key) = set("MPREG_API_KEY") {
        req = req.header("x-api-key", key);
    } else if let Some(token) = set("MPREG_TOKEN") {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let transport = |message: String| ObserveError::Transport {
        url: url.clone(),
        message,
    };
    let mut resp = req.call().map_err(|e| transport(e.to_string()))?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .map_err(|e| transport(e.to_string()))?;
    if status >= 400 {
        return Err(ObserveError::Status { url, status, body });
    }
    Ok(body)
}

/// `GET {node}{path}` read as JSON.
pub fn get_json(node: &str, path: &str) -> Result<Value, ObserveError> {
    let body = get(node, path, Some("application/json"))?;
    serde_json::from_str(&body).map_err(|e| ObserveError::NotJson {
        url: format!("{node}{path}"),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_url_form_names_the_same_http_base() {
        for (given, base) in [
            ("ws://127.0.0.1:6666", "http://127.0.0.1:6666"),
            ("ws://127.0.0.1:6666/", "http://127.0.0.1:6666"),
            ("wss://n.example:443", "https://n.example:443"),
            ("http://h:1", "http://h:1"),
            ("h:1", "http://h:1"),
            (":7000", "http://127.0.0.1:7000"),
        ] {
            assert_eq!(http_base(given).expect(given), base);
        }
        for bad in ["", "h", "ftp://h:1", "h:notaport", ":"] {
            assert!(
                matches!(http_base(bad), Err(ObserveError::BadUrl(_))),
                "{bad}"
            );
        }
    }
}
