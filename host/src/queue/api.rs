//! The `queue.*` built-in functions (docs/queues.md): arguments from a command, positional or by
//! keyword, to a [`QueueManager`] operation, and its outcome as JSON.
//!
//! Every function takes the queue name first. Options are one object, given as the last
//! positional argument or as keyword arguments (both may be mixed; keywords win).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::manager::{ManagerError, QueueManager};
use super::state::{QueueError, QueueSpec, SendOptions};
use crate::auth::policy::Need;
use crate::auth::{Denied, Principal};
use crate::cluster::catalog::PeerNode;
use crate::cluster::{Part, StateSync};
use crate::protocol::RpcCommand;
use crate::rpc::builtins::{
    Access, BuiltinSpec, Builtins, CatalogSource, DuplicateBuiltin, Handler, Ownership, Placement,
};
use crate::rpc::port::CallError;

/// Name prefix of every queue built-in.
pub const PREFIX: &str = "queue.";

/// The queue built-ins with their signature and what they do, for docs and listings.
pub const FUNCTIONS: [(&str, &str); 13] = [
    (
        "queue.create",
        "func(name: string, options?: queue-spec) -> {name, created}",
    ),
    ("queue.delete", "func(name: string) -> {deleted}"),
    ("queue.list", "func() -> list<queue-info>"),
    (
        "queue.send",
        "func(name: string, body: any, options?: {priority, delay_ms, dedup_id}) -> {message_id, duplicate}",
    ),
    (
        "queue.send_batch",
        "func(name: string, messages: list<{body, priority?, delay_ms?, dedup_id?}>) -> list<{message_id, duplicate} | {error}>",
    ),
    (
        "queue.receive",
        "func(name: string, options?: {max, visibility_timeout_ms, consumer, wait_ms}) -> list<delivery>",
    ),
    (
        "queue.ack",
        "func(name: string, receipt: string | list<string>) -> {acked, failed}",
    ),
    (
        "queue.nack",
        "func(name: string, receipt: string, options?: {delay_ms}) -> {outcome}",
    ),
    ("queue.stats", "func(name: string) -> stats"),
    ("queue.purge", "func(name: string) -> {purged}"),
    (
        "queue.peek",
        "func(name: string, options?: {max}) -> list<delivery>",
    ),
    (
        "queue.redrive",
        "func(name: string, options?: {max}) -> {moved}",
    ),
    (
        "queue.release",
        "func(name: string, options: {consumer}) -> {released}",
    ),
];

/// Registers the queue built-ins, served from `queues` on the node that owns each queue.
/// `queue.create` and `queue.delete` answer once the live peers know (through `sync`), so a
/// queue created here is usable from any node as soon as the call returns.
pub fn register(
    b: &mut Builtins,
    queues: Arc<QueueManager>,
    sync: Arc<StateSync>,
) -> Result<(), DuplicateBuiltin> {
    let owner: Arc<dyn Ownership> = Arc::new(QueueOwners(queues.clone()));
    b.add_source(Arc::new(QueueOwners(queues.clone())));
    for (name, signature) in FUNCTIONS {
        let (q, sync) = (queues.clone(), sync.clone());
        b.register(BuiltinSpec {
            name,
            signature,
            description: "queue operation (docs/queues.md)",
            handler: Handler::Later(Arc::new(move |cmd: RpcCommand| {
                let (q, sync) = (q.clone(), sync.clone());
                Box::pin(async move {
                    let out = call(&q, &cmd).await?;
                    if matches!(cmd.fun.as_str(), "queue.create" | "queue.delete") {
                        sync.settle(Part::Queues).await;
                    }
                    Ok(out)
                })
            })),
            placement: Placement::Owner(owner.clone()),
            access: Access::Check(Arc::new(access)),
        })?;
    }
    Ok(())
}

/// What a queue built-in asks of its caller's policy: `queue_send` to send, `queue_receive`
/// to receive, peek, acknowledge or release, `queue_admin` for the rest. A call without a queue
/// name is not refused here: it fails on its arguments when it runs.
fn access(principal: &Principal, cmd: &RpcCommand) -> Result<(), Denied> {
    let Some(name) = queue_name(cmd) else {
        return Ok(());
    };
    principal.check(&match cmd.fun.as_str() {
        "queue.list" => return Ok(()),
        "queue.send" | "queue.send_batch" => Need::QueueSend(name),
        "queue.receive" | "queue.ack" | "queue.nack" | "queue.peek" | "queue.release" => {
            Need::QueueReceive(name)
        }
        _ => Need::QueueAdmin(name),
    })
}

/// Each queue lives on one node, which gossips its name (`q:<name>`); `queue.create` runs
/// here when no node has the queue yet.
struct QueueOwners(Arc<QueueManager>);

impl Ownership for QueueOwners {
    fn resource<'c>(&self, cmd: &'c RpcCommand) -> Option<Cow<'c, str>> {
        if cmd.fun == "queue.list" {
            None
        } else {
            queue_name(cmd).map(Cow::Borrowed)
        }
    }
    fn owned_here(&self, name: &str) -> bool {
        self.0.has(name)
    }
    fn owned_by(&self, node: &PeerNode, name: &str) -> bool {
        node.queues.iter().any(|q| q == name)
    }
    fn creates(&self, fun: &str) -> bool {
        fun == "queue.create"
    }
    fn missing(&self, fun: &str, name: &str) -> CallError {
        CallError::NotFound(format!("{fun}: no queue '{name}' in the cluster"))
    }
}

/// The queues each node owns, as `catalog_query` entries of type `queues`.
impl CatalogSource for QueueOwners {
    fn entry_type(&self) -> &'static str {
        "queues"
    }
    fn local(&self) -> Vec<String> {
        let mut names = self.0.names();
        names.sort();
        names
    }
    fn remote(&self, node: &PeerNode) -> Vec<String> {
        let mut names = node.queues.clone();
        names.sort();
        names
    }
}

/// The queue a call addresses (`None` for `queue.list`, or when the name is missing).
pub fn queue_name(cmd: &RpcCommand) -> Option<&str> {
    cmd.args
        .first()
        .and_then(Value::as_str)
        .or_else(|| cmd.kwargs.get("name").and_then(Value::as_str))
}

fn bad(fun: &str, msg: impl std::fmt::Display) -> CallError {
    CallError::Failed(format!("{fun}: {msg}"))
}

impl From<ManagerError> for CallError {
    fn from(e: ManagerError) -> Self {
        match e {
            ManagerError::Unknown(_) => CallError::NotFound(e.to_string()),
            ManagerError::Queue(QueueError::Full(_)) => CallError::Overloaded(e.to_string()),
            ManagerError::Queue(QueueError::TooLarge { .. } | QueueError::Limit(_)) => {
                CallError::ResourceLimit(e.to_string())
            }
            ManagerError::Queue(_) => CallError::Failed(e.to_string()),
            ManagerError::Store(_) => CallError::Failed(e.to_string()),
        }
    }
}

/// The options object: positional argument `at` (if an object) merged with the keywords.
fn options<T: DeserializeOwned + Default>(
    fun: &str,
    cmd: &RpcCommand,
    at: usize,
) -> Result<T, CallError> {
    let mut merged = match cmd.args.get(at) {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(other) => return Err(bad(fun, format!("options must be an object, got {other}"))),
    };
    for (k, v) in &cmd.kwargs {
        if k != "name" {
            merged.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(Value::Object(merged)).map_err(|e| bad(fun, format!("options: {e}")))
}

fn name<'a>(fun: &str, cmd: &'a RpcCommand) -> Result<&'a str, CallError> {
    queue_name(cmd).ok_or_else(|| bad(fun, "the first argument must be the queue name (a string)"))
}

#[derive(Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ReceiveOptions {
    max: Option<usize>,
    visibility_timeout_ms: Option<u64>,
    consumer: Option<String>,
    wait_ms: Option<u64>,
    /// Push consumers: hold at most this many unacknowledged deliveries.
    max_held: Option<usize>,
}

#[derive(Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ReleaseOptions {
    consumer: String,
}

#[derive(Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct MaxOptions {
    max: Option<usize>,
}

#[derive(Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct NackOptions {
    delay_ms: u64,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchItem {
    body: Value,
    #[serde(default)]
    priority: i64,
    #[serde(default)]
    delay_ms: u64,
    #[serde(default)]
    dedup_id: Option<String>,
}

/// Most messages one receive returns.
const MAX_RECEIVE: usize = 1000;

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Runs queue built-in `cmd.fun` on this node's queues.
pub async fn call(queues: &QueueManager, cmd: &RpcCommand) -> Result<Value, CallError> {
    let fun = cmd.fun.as_str();
    match fun {
        "queue.list" => Ok(to_json(&queues.list())),
        "queue.create" => {
            let n = name(fun, cmd)?;
            let spec: QueueSpec = options(fun, cmd, 1)?;
            let created = queues.create(n, spec).await?;
            Ok(json!({"name": n, "created": created}))
        }
        "queue.delete" => {
            let n = name(fun, cmd)?;
            Ok(json!({"deleted": queues.delete(n).await?}))
        }
        "queue.send" => {
            let n = name(fun, cmd)?;
            let Some(body) = cmd.args.get(1).or_else(|| cmd.kwargs.get("body")) else {
                return Err(bad(fun, "the second argument must be the message body"));
            };
            let mut opts_cmd = cmd.clone();
            opts_cmd.kwargs.remove("body");
            let opts: SendOptions = options(fun, &opts_cmd, 2)?;
            let sent = queues.send(n, body.to_string(), &opts).await?;
            Ok(to_json(&sent))
        }
        "queue.send_batch" => {
            let n = name(fun, cmd)?;
            let Some(Value::Array(items)) = cmd.args.get(1).or_else(|| cmd.kwargs.get("messages"))
            else {
                return Err(bad(fun, "the second argument must be a list of messages"));
            };
            let mut batch = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let it = BatchItem::deserialize(item)
                    .map_err(|e| bad(fun, format!("message {i}: {e}")))?;
                batch.push((
                    it.body.to_string(),
                    SendOptions {
                        priority: it.priority,
                        delay_ms: it.delay_ms,
                        dedup_id: it.dedup_id,
                    },
                ));
            }
            let out = queues.send_batch(n, batch).await?;
            Ok(Value::Array(
                out.into_iter()
                    .map(|r| match r {
                        Ok(s) => to_json(&s),
                        Err(e) => json!({"error": e.to_string()}),
                    })
                    .collect(),
            ))
        }
        "queue.receive" => {
            let n = name(fun, cmd)?;
            let o: ReceiveOptions = options(fun, cmd, 1)?;
            let max = o.max.unwrap_or(1);
            if max == 0 || max > MAX_RECEIVE {
                return Err(bad(fun, format!("max must be between 1 and {MAX_RECEIVE}")));
            }
            let wait = Duration::from_millis(o.wait_ms.unwrap_or(0));
            let got = queues
                .receive_held(
                    n,
                    o.consumer.as_deref().unwrap_or(""),
                    max,
                    o.max_held.unwrap_or(usize::MAX),
                    o.visibility_timeout_ms,
                    wait,
                )
                .await?;
            Ok(to_json(&got))
        }
        "queue.ack" => {
            let n = name(fun, cmd)?;
            let receipts: Vec<String> = match cmd.args.get(1).or_else(|| cmd.kwargs.get("receipt"))
            {
                Some(Value::String(r)) => vec![r.clone()],
                Some(Value::Array(rs)) => rs
                    .iter()
                    .map(|r| r.as_str().map(str::to_owned))
                    .collect::<Option<_>>()
                    .ok_or_else(|| bad(fun, "receipts must be strings"))?,
                _ => {
                    return Err(bad(
                        fun,
                        "the second argument must be a receipt or a list of receipts",
                    ));
                }
            };
            let out = queues.ack(n, &receipts).await?;
            let failed: Vec<Value> = receipts
                .iter()
                .zip(&out)
                .filter_map(|(r, o)| {
                    o.as_ref()
                        .err()
                        .map(|e| json!({"receipt": r, "error": e.to_string()}))
                })
                .collect();
            // A single receipt that failed is an error, so `call()` raises it.
            if receipts.len() == 1 && !failed.is_empty() {
                return Err(bad(fun, failed[0]["error"].as_str().unwrap_or_default()));
            }
            Ok(json!({"acked": receipts.len() - failed.len(), "failed": failed}))
        }
        "queue.nack" => {
            let n = name(fun, cmd)?;
            let Some(Value::String(receipt)) =
                cmd.args.get(1).or_else(|| cmd.kwargs.get("receipt"))
            else {
                return Err(bad(fun, "the second argument must be a receipt"));
            };
            let mut opts_cmd = cmd.clone();
            opts_cmd.kwargs.remove("receipt");
            let o: NackOptions = options(fun, &opts_cmd, 2)?;
            let outcome = queues.nack(n, receipt, o.delay_ms).await?;
            Ok(json!({"outcome": outcome}))
        }
        "queue.stats" => Ok(to_json(&queues.stats(name(fun, cmd)?)?)),
        "queue.purge" => {
            let n = name(fun, cmd)?;
            Ok(json!({"purged": queues.purge(n).await?}))
        }
        "queue.peek" => {
            let n = name(fun, cmd)?;
            let o: MaxOptions = options(fun, cmd, 1)?;
            Ok(to_json(
                &queues.peek(n, o.max.unwrap_or(10).min(MAX_RECEIVE))?,
            ))
        }
        "queue.redrive" => {
            let n = name(fun, cmd)?;
            let o: MaxOptions = options(fun, cmd, 1)?;
            Ok(json!({"moved": queues.redrive(n, o.max.unwrap_or(usize::MAX)).await?}))
        }
        "queue.release" => {
            let n = name(fun, cmd)?;
            let o: ReleaseOptions = options(fun, cmd, 1)?;
            Ok(json!({"released": queues.release(n, &o.consumer).await?}))
        }
        other => Err(CallError::NotFound(format!("Command not found: {other}"))),
    }
}
