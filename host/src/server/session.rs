//! One WebSocket connection: reads frames, runs requests concurrently (bounded), and writes
//! replies through a bounded queue drained by a writer task that batches frames.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::pubsub;
use super::state::ServerState;
use crate::identity::Counted;
use crate::protocol::{FrameHead, RpcErrorBody, RpcIntermediate, RpcRequest, RpcResponse, codes};
use crate::rpc::execute::{self, ExecOptions};
use crate::throttle::Throttle;

/// Close code for "message too big" (RFC 6455).
const CLOSE_TOO_BIG: u16 = 1009;
/// Replies written before a flush even when more requests are waiting: lets the client start on
/// the first replies while the rest of a burst is still being processed.
const FLUSH_EVERY: usize = 32;
/// Close code for "going away" (node shutting down).
const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code for "policy violation": a subscriber that stopped reading its notifications.
const CLOSE_SLOW_CONSUMER: u16 = 1008;

/// What a frame produced for this connection, written in order before the next frame is read.
enum Answer {
    None,
    One(Message),
    Many(Vec<Message>),
}

impl From<Option<Message>> for Answer {
    fn from(m: Option<Message>) -> Self {
        m.map_or(Answer::None, Answer::One)
    }
}

/// Serves one connection until the client leaves or the node has drained it.
///
/// This task owns both halves of the socket: it reads frames, answers quick ones inline, writes
/// the replies that request tasks queue, and flushes only when nothing else is ready, so replies
/// go out in batches without a hop to a separate writer task.
pub async fn run(socket: WebSocket, state: Arc<ServerState>) {
    let _client = Counted::enter(&state.node.active_clients);
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Message>(state.config.outbound_queue);
    // Subscriptions of this connection end when this is dropped.
    let conn = state.exchange.connect(tx.clone());
    let permits = Arc::new(Semaphore::new(state.config.max_in_flight_per_connection));
    let in_flight = TaskTracker::new();
    let gone = CancellationToken::new();
    let mut draining = false;
    let mut unflushed = 0usize;
    let mut yielded = false;
    let mut reading = true;
    // A frame read from the socket, handled before anything else. After each data frame the
    // socket is polled once more: a frame already waiting means a pipelining client, so the
    // current request runs on a task of its own and its work can go to another core while this
    // task reads on.
    let mut pending: Option<Option<Result<Message, axum::Error>>> = None;
    let give_up = GiveUp {
        kick: conn.kicked(),
        hard_stop: &state.hard_stop,
        killed: &state.killed,
    };
    loop {
        if let Some(msg) = pending.take() {
            if is_request(&msg)
                && let std::task::Poll::Ready(next) = futures_util::poll!(stream.next())
            {
                pending = Some(next);
            }
            let ctx = Ctx {
                state: &state,
                tx: &tx,
                permits: &permits,
                in_flight: &in_flight,
                gone: &gone,
                conn: &conn,
                draining,
                pipelined: pending.is_some(),
            };
            if on_frame(msg, &ctx, &mut sink, &mut unflushed)
                .await
                .is_break()
            {
                break;
            }
            continue;
        }
        tokio::select! {
            biased;
            // Guarded, so the `else` below can still fire once reading stops.
            _ = state.killed.cancelled(), if reading => {
                gone.cancel();
                break;
            }
            _ = conn.kicked().cancelled(), if reading => {
                let frame = CloseFrame { code: CLOSE_SLOW_CONSUMER, reason: "slow consumer: notifications not read in time".into() };
                // Not guarded by the kick itself: it has fired.
                let close = sink.send(Message::Close(Some(frame)));
                let _ = tokio::time::timeout(CLOSE_WAIT, close).await;
                gone.cancel();
                break;
            }
            _ = state.shutdown.cancelled(), if !draining => {
                draining = true;
                in_flight.close();
            }
            Some(reply) = rx.recv() => {
                if write(&mut sink, reply, &mut unflushed, give_up).await.is_err() {
                    break;
                }
            }
            msg = stream.next(), if reading => pending = Some(msg),
            _ = in_flight.wait(), if draining && reading => {
                // Everything in flight has finished; its replies are queued. Stop reading, send
                // them, then say goodbye.
                reading = false;
                rx.close();
            }
            _ = std::future::ready(()), if unflushed > 0 => {
                // Requests still running here may be about to reply: let them, once, so one
                // flush carries their replies too. Each flush wakes the client, and on this VM a
                // wake-up costs tens of µs of CPU (docs/benchmarks.md). A caller waiting for
                // each reply has nothing in flight and never waits here.
                if !yielded && !in_flight.is_empty() {
                    yielded = true;
                    tokio::task::yield_now().await;
                    continue;
                }
                yielded = false;
                if flush(&mut sink, give_up).await.is_err() {
                    break;
                }
                unflushed = 0;
                // The replies are out: now reset the instances that produced them.
                crate::runtime::teardown::run_deferred();
            }
            else => {
                // Not reading and the reply queue is drained and flushed.
                let frame = CloseFrame { code: CLOSE_GOING_AWAY, reason: "node shutting down".into() };
                let _ = give_up.guard(sink.send(Message::Close(Some(frame)))).await;
                break;
            }
        }
    }
    in_flight.close();
    let _ = give_up.guard(sink.flush()).await;
    // Whatever is still running or queued for this connection has nobody to go to: cancel it,
    // and close the reply queue so a request task waiting for room in it returns at once.
    gone.cancel();
    rx.close();
    while rx.try_recv().is_ok() {}
    in_flight.wait().await;
}

/// Handles one frame (or the end of the stream) and writes what it answers at once. `Break`
/// ends the session.
async fn on_frame<S>(
    msg: Option<Result<Message, axum::Error>>,
    ctx: &Ctx<'_>,
    sink: &mut S,
    unflushed: &mut usize,
) -> std::ops::ControlFlow<()>
where
    S: futures_util::Sink<Message> + Unpin,
{
    use std::ops::ControlFlow::{Break, Continue};
    let give_up = GiveUp {
        kick: ctx.conn.kicked(),
        hard_stop: &ctx.state.hard_stop,
        killed: &ctx.state.killed,
    };
    let answer = match msg {
        Some(Ok(Message::Text(t))) => handle(t.as_bytes(), Some(t.as_str()), ctx).await,
        Some(Ok(Message::Binary(b))) => handle(&b, None, ctx).await,
        // Pings are answered by the WebSocket layer; pongs need nothing.
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Answer::None,
        Some(Err(e)) => {
            if is_too_big(e) {
                if let Some(suppressed) = TOO_BIG.admit() {
                    tracing::warn!(
                        limit = ctx.state.config.max_message_bytes,
                        suppressed,
                        "message over the size limit; closing with 1009"
                    );
                }
                let frame = CloseFrame {
                    code: CLOSE_TOO_BIG,
                    reason: "message too big".into(),
                };
                let _ = give_up.guard(sink.send(Message::Close(Some(frame)))).await;
            }
            ctx.gone.cancel();
            return Break(());
        }
        None | Some(Ok(Message::Close(_))) => {
            ctx.gone.cancel();
            return Break(());
        }
    };
    let written = match answer {
        Answer::None => Ok(()),
        Answer::One(reply) => write(sink, reply, unflushed, give_up).await,
        Answer::Many(replies) => {
            let mut r = Ok(());
            for reply in replies {
                r = write(sink, reply, unflushed, give_up).await;
                if r.is_err() {
                    break;
                }
            }
            r
        }
    };
    if written.is_err() {
        Break(())
    } else {
        Continue(())
    }
}

/// Queues a reply on the socket, flushing once every [`FLUSH_EVERY`] unflushed replies (the
/// session loop flushes the remainder when nothing else is ready). Gives up when `kick` fires:
/// a client that stopped reading must not hold its session in a write forever.
/// What makes the session give up on a write the client is not taking: a slow-consumer kick,
/// the end of a shutdown's grace period, or the node being killed. (A write that watched only
/// the kick held a shutdown forever behind a client that stopped reading.)
#[derive(Clone, Copy)]
struct GiveUp<'a> {
    kick: &'a CancellationToken,
    hard_stop: &'a CancellationToken,
    killed: &'a CancellationToken,
}

impl GiveUp<'_> {
    /// Runs `io` unless, or until, one of the reasons to give up fires (then `None`).
    async fn guard<F: std::future::Future>(self, io: F) -> Option<F::Output> {
        // Biased: no random branch order per reply; the session loop checks the kick between
        // frames.
        tokio::select! {
            biased;
            out = io => Some(out),
            _ = self.kick.cancelled() => None,
            _ = self.hard_stop.cancelled() => None,
            _ = self.killed.cancelled() => None,
        }
    }
}

/// How long a slow consumer gets to take its close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

async fn write<S>(
    sink: &mut S,
    reply: Message,
    unflushed: &mut usize,
    give_up: GiveUp<'_>,
) -> Result<(), ()>
where
    S: futures_util::Sink<Message> + Unpin,
{
    match give_up.guard(sink.feed(reply)).await {
        Some(Ok(())) => {}
        _ => return Err(()),
    }
    *unflushed += 1;
    if *unflushed >= FLUSH_EVERY {
        flush(sink, give_up).await?;
        *unflushed = 0;
    }
    Ok(())
}

async fn flush<S>(sink: &mut S, give_up: GiveUp<'_>) -> Result<(), ()>
where
    S: futures_util::Sink<Message> + Unpin,
{
    match give_up.guard(sink.flush()).await {
        Some(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// A data frame: only after one may the stream be read ahead (not after its end or an error).
fn is_request(msg: &Option<Result<Message, axum::Error>>) -> bool {
    matches!(msg, Some(Ok(Message::Text(_) | Message::Binary(_))))
}

fn is_too_big(e: axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error as WsError;
    match e.into_inner().downcast::<WsError>() {
        Ok(inner) => matches!(*inner, WsError::Capacity(_)),
        Err(_) => false,
    }
}

/// Serializes a reply, replacing one too large to send with a 1008 error.
fn encode(reply: &RpcResponse, max: usize) -> Message {
    let text = serde_json::to_string(reply).unwrap_or_default();
    if text.len() <= max {
        return Message::Text(Utf8Bytes::from(text));
    }
    let err = RpcResponse::err(
        reply.u.clone(),
        RpcErrorBody::new(
            codes::RESOURCE_LIMIT,
            format!(
                "reply of {} bytes exceeds the limit of {max} bytes",
                text.len()
            ),
        ),
    );
    Message::Text(Utf8Bytes::from(
        serde_json::to_string(&err).unwrap_or_default(),
    ))
}

fn error_message(u: String, code: i64, message: &str, details: String) -> Message {
    let body = RpcErrorBody {
        code,
        message: message.to_owned(),
        details: Value::String(details),
    };
    encode(&RpcResponse::err(u, body), usize::MAX)
}

/// What handling a frame needs of its connection.
struct Ctx<'a> {
    state: &'a Arc<ServerState>,
    tx: &'a mpsc::Sender<Message>,
    permits: &'a Arc<Semaphore>,
    in_flight: &'a TaskTracker,
    gone: &'a CancellationToken,
    conn: &'a crate::pubsub::exchange::Connection,
    draining: bool,
    /// More frames are already waiting: run this request on its own task, not inline.
    pipelined: bool,
}

/// Reads one frame and starts its request (or answers it with an error).
///
/// `text` is the frame as a string when it came as a text frame: the WebSocket layer has checked
/// its UTF-8 already, so the parser need not check every string again.
async fn handle(bytes: &[u8], text: Option<&str>, ctx: &Ctx<'_>) -> Answer {
    let parsed = match text {
        Some(text) => serde_json::from_str::<RpcRequest>(text),
        None => serde_json::from_slice::<RpcRequest>(bytes),
    };
    let req = match parsed {
        Ok(req) if req.role == "rpc" => req,
        parsed => {
            if let Ok(FrameHead {
                role: Some(role),
                u: Some(Value::String(u)),
            }) = serde_json::from_slice::<FrameHead>(bytes)
                && pubsub::is_pubsub(&role)
            {
                return Answer::Many(pubsub::handle(bytes, &role, &u, ctx.state, ctx.conn).await);
            }
            return reject(bytes, parsed.err()).into();
        }
    };
    rpc(req, ctx).await.into()
}

/// Starts an RPC request: answered inline when it completes at once, else on a task.
async fn rpc(req: RpcRequest, ctx: &Ctx<'_>) -> Option<Message> {
    let Ctx {
        state,
        tx,
        permits,
        in_flight,
        gone,
        draining,
        pipelined,
        ..
    } = *ctx;
    if draining {
        let details = "node is shutting down; retry on another node".to_owned();
        return Some(error_message(
            req.u,
            codes::OVERLOADED,
            "Overloaded",
            details,
        ));
    }
    if let Some(reply) = execute::execute_immediate(&req, &*state.dispatcher) {
        // Answered inline, in order: no task, no timer.
        return Some(encode(&reply, state.config.max_reply_bytes));
    }
    let default = state.config.request_timeout_ms;
    let timeout_ms = req
        .timeout_ms
        .unwrap_or(default)
        .clamp(1, state.config.max_request_timeout_ms);

    if let Some(topic) = &req.intermediate_result_callback_topic
        && let Err(e) = crate::pubsub::topic::check_topic(topic)
    {
        let details = format!("intermediate_result_callback_topic: {e}");
        return Some(error_message(
            req.u,
            codes::MALFORMED_REQUEST,
            "Malformed request",
            details,
        ));
    }
    let stream = req.stream_intermediate_results.then(|| {
        let tx = tx.clone();
        let u = req.u.clone();
        move |ir: &crate::protocol::IntermediateResult| {
            let msg = RpcIntermediate {
                role: "rpc-intermediate".into(),
                u: u.clone(),
                result: ir.clone(),
            };
            if let Ok(text) = serde_json::to_string(&msg) {
                // Streaming is best effort: a full queue drops the update, never blocks the request.
                let _ = tx.try_send(Message::Text(Utf8Bytes::from(text)));
            }
        }
    });
    let callback = req.intermediate_result_callback_topic.clone().map(|topic| {
        let exchange = state.exchange.clone();
        let publisher = format!("mpreg-node:{}", state.node.node_id);
        move |ir: &crate::protocol::IntermediateResult| {
            let message = crate::protocol::pubsub::level_message(&topic, &publisher, ir);
            if let Err(e) = exchange.publish_detached(&message, &topic) {
                tracing::warn!(error = %e, "intermediate result not published");
            }
        }
    });
    let on_level: Option<execute::LevelHook> = match (stream, callback) {
        (None, None) => None,
        (Some(s), None) => Some(Box::new(s)),
        (None, Some(c)) => Some(Box::new(c)),
        (Some(s), Some(c)) => Some(Box::new(move |ir: &crate::protocol::IntermediateResult| {
            s(ir);
            c(ir);
        })),
    };
    let opts = ExecOptions {
        deadline: Duration::from_millis(timeout_ms),
        on_level,
        max_bytes: state.config.max_request_bytes,
    };
    let Ok(permit) = permits.clone().acquire_owned().await else {
        return None;
    };
    let (task_state, gone) = (state.clone(), gone.clone());
    let mut work = Box::pin(async move {
        let state = task_state;
        let _permit = permit;
        let _active = Counted::enter(&state.node.active_requests);
        let u = req.u.clone();
        if req.debug_mode {
            tracing::debug!(u = %u, cmds = req.cmds.len(), "rpc request");
        }
        let dispatcher = state.dispatcher.clone() as Arc<dyn execute::Dispatcher>;
        let reply = tokio::select! {
            reply = execute::execute(req, dispatcher, opts) => reply,
            _ = state.hard_stop.cancelled() => RpcResponse::err(u, RpcErrorBody::new(
                codes::OVERLOADED, "node shut down before the request finished; retry on another node")),
            _ = gone.cancelled() => return None,
        };
        Some(encode(&reply, state.config.max_reply_bytes))
    });
    // Polled here first when the client waits for it: a request that completes without waiting
    // (a plugin call that does not yield) is answered by this task, with no hand-off to another
    // task and back. With more frames waiting, it goes to a task of its own at once, so a
    // pipelining client's calls spread over every core instead of queueing behind each other.
    let first = if pipelined {
        std::task::Poll::Pending
    } else {
        futures_util::poll!(&mut work)
    };
    match first {
        std::task::Poll::Ready(reply) => reply,
        std::task::Poll::Pending => {
            let tx = tx.clone();
            in_flight.spawn(async move {
                if let Some(reply) = work.await {
                    let _ = tx.send(reply).await;
                }
            });
            None
        }
    }
}

/// Frames dropped for want of anyone to answer: logged at most once a second.
static DROPPED: Throttle = Throttle::new(Duration::from_secs(1));
/// Connections closed for an oversized message: likewise.
static TOO_BIG: Throttle = Throttle::new(Duration::from_secs(1));

/// Answers a frame that is not a valid RPC request: with an error when it has a string `u`,
/// otherwise only a log line (there is nobody to address a reply to).
fn reject(bytes: &[u8], typed: Option<serde_json::Error>) -> Option<Message> {
    let head = match serde_json::from_slice::<FrameHead>(bytes) {
        Ok(h) => h,
        Err(e) => {
            // Still a JSON object with a string `u` (a key given twice, say): it gets an answer.
            if let Ok(Value::Object(mut m)) = serde_json::from_slice::<Value>(bytes)
                && let Some(Value::String(u)) = m.remove("u")
            {
                let details = format!("invalid frame: {e}");
                return Some(error_message(
                    u,
                    codes::MALFORMED_REQUEST,
                    "Malformed request",
                    details,
                ));
            }
            if let Some(suppressed) = DROPPED.admit() {
                tracing::warn!(error = %e, suppressed, "dropping frame that is not a JSON object");
            }
            return None;
        }
    };
    let Some(Value::String(u)) = head.u else {
        if let Some(suppressed) = DROPPED.admit() {
            tracing::warn!(suppressed, "dropping frame without a string `u`");
        }
        return None;
    };
    Some(match head.role.as_deref() {
        None => error_message(
            u,
            codes::UNKNOWN_ROLE,
            "Unknown role",
            "message has no `role`".into(),
        ),
        Some("rpc") => {
            let why = typed.map_or_else(|| "invalid request".to_owned(), |e| e.to_string());
            error_message(
                u,
                codes::MALFORMED_REQUEST,
                "Malformed request",
                format!("invalid rpc request: {why}"),
            )
        }
        Some(other) => {
            let details = format!("role '{other}' is not supported by this node");
            error_message(u, codes::UNKNOWN_ROLE, "Unknown role", details)
        }
    })
}
