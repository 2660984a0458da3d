//! A real headless Chromium for the dashboard test, driven over the Chrome DevTools Protocol
//! (JSON messages on the WebSocket the browser opens with `--remote-debugging-port`): open a
//! page, evaluate JavaScript in it, take a screenshot. Only what the tests use.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Where a Chromium binary is, if the machine has one (`MPREG_CHROMIUM` wins).
pub fn chromium() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("MPREG_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// A running headless browser with one page attached.
pub struct Browser {
    child: tokio::process::Child,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    session: String,
    next: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts `binary` headless and opens `url` in a page of `width`×`height`.
    pub async fn open(
        binary: &std::path::Path,
        url: &str,
        width: u32,
        height: u32,
    ) -> Result<Browser> {
        let profile = tempfile::tempdir()?;
        let mut child = tokio::process::Command::new(binary)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                &format!("--window-size={width},{height}"),
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stderr = child.stderr.take().context("browser stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let endpoint = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(at) = line.find("ws://") {
                    return Ok(line[at..].trim().to_owned());
                }
            }
            bail!("the browser exited before it listened for DevTools")
        })
        .await
        .context("waiting for the browser's DevTools endpoint")??;
        // Keep draining its log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let (ws, _) = tokio_tungstenite::connect_async(&endpoint).await?;
        let mut b = Browser {
            child,
            ws,
            session: String::new(),
            next: 0,
            _profile: profile,
        };
        let target = b
            .send(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await?;
        let target_id = target["targetId"].as_str().context("targetId")?.to_owned();
        let attached = b
            .send(
                None,
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await?;
        b.session = attached["sessionId"]
            .as_str()
            .context("sessionId")?
            .to_owned();
        let s = Some(b.session.clone());
        b.send(s.as_deref(), "Page.enable", json!({})).await?;
        b.send(
            s.as_deref(),
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await?;
        b.send(s.as_deref(), "Page.navigate", json!({"url": url}))
            .await?;
        Ok(b)
    }

    async fn send(&mut self, session: Option<&str>, method: &str, params: Value) -> Result<Value> {
        self.next += 1;
        let id = self.next;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws.send(Message::text(msg.to_string())).await?;
        let reply = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(frame) = self.ws.next().await {
                let Message::Text(text) = frame? else {
                    continue;
                };
                let v: Value = serde_json::from_str(&text)?;
                if v["id"] == json!(id) {
                    return Ok(v);
                }
            }
            bail!("the browser closed the DevTools connection")
        })
        .await
        .with_context(|| format!("waiting for {method}"))??;
        if let Some(e) = reply.get("error") {
            bail!("{method} failed: {e}");
        }
        Ok(reply["result"].clone())
    }

    /// The value of JavaScript `expression` in the page (awaited if it is a promise).
    pub async fn eval(&mut self, expression: &str) -> Result<Value> {
        let s = self.session.clone();
        let r = self
            .send(
                Some(&s),
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await?;
        if let Some(e) = r.get("exceptionDetails") {
            bail!("{expression} threw: {e}");
        }
        Ok(r["result"]["value"].clone())
    }

    /// A PNG of the page as it is now.
    pub async fn screenshot(&mut self) -> Result<Vec<u8>> {
        let s = self.session.clone();
        let r = self
            .send(
                Some(&s),
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )
            .await?;
        let data = r["data"].as_str().context("screenshot data")?;
        use base64::Engine as _;
        Ok(base64::engine::general_purpose::STANDARD.decode(data)?)
    }

    /// Closes the browser.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        let _ = self.child.kill().await;
    }
}
