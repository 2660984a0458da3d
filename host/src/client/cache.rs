//! MPREG's `cache-request` envelope for the Rust client (docs/cache.md). The `cache.*`
//! built-ins need nothing beyond [`Client::call`]; this sends the envelope itself, as MPREG's
//! clients in other languages do.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mpreg::client::ClientError> {
//! use mpreg::client::Client;
//! use serde_json::json;
//!
//! let client = Client::connect("ws://127.0.0.1:6666").await?;
//! let reply = client
//!     .cache_request(json!({"operation": "get",
//!         "key": {"namespace": "ml", "identifier": "model", "version": "v1.0.0", "tags": []}}))
//!     .await?;
//! println!("{} from {}", reply["status"], reply["cache_level"]);
//! # Ok(()) }
//! ```

use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

use super::routes::lock;
use super::{Client, ClientError};

impl Client {
    /// Sends a `cache-request`: `body` holds `operation`, `key` and the rest; `role` and `u`
    /// are set here. Returns the `cache-response`, errors as data (`status: "error"`).
    pub async fn cache_request(&self, body: Value) -> Result<Value, ClientError> {
        let u = self.next_id();
        let mut frame = match body {
            Value::Object(m) => m,
            other => {
                return Err(ClientError::Protocol(format!(
                    "a cache-request body is an object, not {other}"
                )));
            }
        };
        frame.insert("role".into(), json!("cache-request"));
        frame.insert("u".into(), json!(u));
        let (done, wait) = oneshot::channel();
        {
            let mut routes = lock(&self.routes);
            if self.is_closed() {
                return Err(ClientError::Closed);
            }
            routes.envelopes.insert(u.clone(), done);
        }
        let text = Value::Object(frame).to_string();
        if self.tx.send(Message::Text(text.into())).await.is_err() {
            lock(&self.routes).envelopes.remove(&u);
            return Err(ClientError::Closed);
        }
        match tokio::time::timeout(self.timeout, wait).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => {
                lock(&self.routes).envelopes.remove(&u);
                Err(ClientError::Timeout(self.timeout))
            }
        }
    }
}
