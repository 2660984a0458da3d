//! One client connection, WebSocket or TCP: reads frames, runs requests concurrently (bounded),
//! and writes replies through a bounded queue drained by a writer task that batches frames.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{Sink, Stream};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tracing::Instrument;

use crate::protocol::RpcCommand;
use crate::rpc::builtins::Envelope;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::metrics::Outcome;
use super::pubsub;
use super::state::ServerState;
use super::window::{Unwritten, Window};
use crate::auth::Principal;
use crate::identity::Counted;
use crate::protocol::numbers;
use crate::protocol::{FrameHead, RpcErrorBody, RpcIntermediate, RpcRequest, RpcResponse, codes};
use crate::rpc::execute::{self, ExecOptions};
use crate::throttle::Throttle;

/// Close code for "message too big" (RFC 6455).
const CLOSE_TOO_BIG: u16 = 1009;
/// Close code for "protocol error".
const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// Close code for "invalid frame payload data" (text that is not UTF-8).
const CLOSE_INVALID_DATA: u16 = 1007;
/// Replies written before a flush even when more requests are waiting: lets the client start on
/// the first replies while the rest of a burst is still being processed.
const FLUSH_EVERY: usize = 32;
/// How long a fed reply may wait for others to share its flush while the session keeps reading.
const FLUSH_AFTER: Duration = Duration::from_millis(1);
/// Close code for "going away" (node shutting down).
const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code for "policy violation": a subscriber that stopped reading its notifications.
const CLOSE_SLOW_CONSUMER: u16 = 1008;

/// A client connection as a stream of messages in and a sink of messages out: a WebSocket, or a
/// TCP connection whose length-prefixed frames are read as messages (`server::tcp`). One session
/// implementation serves both.
pub trait Socket:
    Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Send + 'static
{
    /// Whether the transport answers pings itself (WebSocket) or the session must (TCP).
    const ANSWERS_PINGS: bool;
}

impl Socket for WebSocket {
    const ANSWERS_PINGS: bool = true;
}

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

/// A reply built by a request task, waiting for the session to write it. It holds the
/// request's in-flight slot: a connection never has more requests running *or replies
/// unwritten* than its window allows (`server::window`).
struct Reply {
    msg: Message,
    len: usize,
    _slot: OwnedSemaphorePermit,
}

/// Serves one connection until the client leaves or the node has drained it.
///
/// This task owns both halves of the socket: it reads frames, answers quick ones inline, writes
/// the replies that request tasks queue, and flushes only when nothing else is ready, so replies
/// go out in batches without a hop to a separate writer task. Replies that are ready are written
/// before each further frame is read, so a pipelining client gets its answers as they finish;
/// a new request is read only while the connection's window admits one, so a client that does
/// not read its replies stops being read, and after `server.stalled_client_ms` without progress
/// it is disconnected.
pub async fn run<S: Socket>(
    socket: S,
    state: Arc<ServerState>,
    remote: Option<std::net::SocketAddr>,
    principal: Principal,
) {
    let _client = Counted::enter(&state.node.active_clients);
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Message>(state.config.outbound_queue);
    let max_in_flight = state.config.max_in_flight_per_connection;
    // Every queued reply holds a slot, so sending into this never waits.
    let (replies_tx, mut replies) = mpsc::channel::<Reply>(max_in_flight);
    // Subscriptions of this connection end when this is dropped.
    let conn = state.exchange.connect(tx.clone());
    let listed = state.connections.add(conn.id(), remote);
    let slots = Arc::new(Semaphore::new(max_in_flight));
    let mut window = Window::new(state.config.max_buffered_reply_bytes, max_in_flight);
    let in_flight = TaskTracker::new();
    let gone = CancellationToken::new();
    let mut draining = false;
    let mut out = Unflushed::default();
    let mut yielded = false;
    let mut reading = true;
    let mut stalled = false;
    // A frame read from the socket, handled before anything else. After each data frame the
    // socket is polled once more: a frame already waiting means a pipelining client, so the
    // current request runs on a task of its own and its work can go to another core while this
    // task reads on.
    let mut pending: Option<Option<Result<Message, axum::Error>>> = None;
    // Over its rate, the connection is not read until this instant (`server::rate`).
    let mut rate = {
        let c = &state.config;
        let rates = super::rate::Rates {
            requests: c.max_requests_per_second,
            bytes: c.max_bytes_per_second,
            identity_requests: c.max_requests_per_second_per_identity,
        };
        let identity: Option<Arc<str>> = principal.policy().map(|_| principal.name().into());
        super::rate::ConnectionRate::new(
            rates,
            identity.as_ref(),
            &state.identities,
            c.max_message_bytes,
            Instant::now(),
        )
    };
    let mut paused: Option<tokio::time::Instant> = None;
    let give_up = GiveUp {
        kick: conn.kicked(),
        hard_stop: &state.hard_stop,
        killed: &state.killed,
        stall: Duration::from_millis(state.config.stalled_client_ms),
    };
    'session: loop {
        let admits = window.admits(max_in_flight - slots.available_permits());
        if admits && let Some(msg) = pending.take() {
            if rate.enabled()
                && let Some(Ok(m)) = &msg
                && let Some((wait, limit)) = rate.charge(message_len(m), Instant::now())
            {
                paused = Some(tokio::time::Instant::now() + wait);
                state.counts.throttled(limit);
            }
            // What finished goes out before the next request is read.
            while let Ok(reply) = replies.try_recv() {
                if let Err(stop) =
                    write_reply(&mut sink, reply, &mut window, &mut out, give_up).await
                {
                    stalled = stop == Stop::Stalled;
                    break 'session;
                }
            }
            if out.is_stale()
                && let Err(stop) = flush(&mut sink, &mut out, give_up).await
            {
                stalled = stop == Stop::Stalled;
                break;
            }
            if is_request(&msg)
                && paused.is_none()
                && let std::task::Poll::Ready(next) = futures_util::poll!(stream.next())
            {
                pending = Some(next);
            }
            let ctx = Ctx {
                state: &state,
                tx: &tx,
                replies: &replies_tx,
                slots: &slots,
                unwritten: &window.unwritten(),
                in_flight: &in_flight,
                gone: &gone,
                conn: &conn,
                info: &listed.info,
                draining,
                pipelined: pending.is_some(),
                answer_pings: !S::ANSWERS_PINGS,
                principal: &principal,
            };
            match on_frame(msg, &ctx, &mut sink, &mut window, &mut out).await {
                Ok(true) => continue,
                Ok(false) => break,
                Err(stop) => {
                    stalled = stop == Stop::Stalled;
                    break;
                }
            }
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
            Some(note) = rx.recv() => {
                conn.mailbox().written(message_len(&note));
                if let Err(stop) = write(&mut sink, note, &mut out, give_up).await {
                    stalled = stop == Stop::Stalled;
                    break;
                }
            }
            Some(reply) = replies.recv() => {
                if let Err(stop) = write_reply(&mut sink, reply, &mut window, &mut out, give_up).await {
                    stalled = stop == Stop::Stalled;
                    break;
                }
            }
            msg = stream.next(), if reading && pending.is_none() && admits && paused.is_none() => pending = Some(msg),
            _ = sleep_until(paused), if paused.is_some() => paused = None,
            _ = in_flight.wait(), if draining && reading && pending.is_none() => {
                // Everything in flight has finished; its replies are queued. Stop reading, send
                // them, then say goodbye.
                reading = false;
                rx.close();
                replies.close();
            }
            _ = std::future::ready(()), if out.count > 0 => {
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
                if let Err(stop) = flush(&mut sink, &mut out, give_up).await {
                    stalled = stop == Stop::Stalled;
                    break;
                }
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
    if stalled {
        if let Some(suppressed) = STALLED.admit() {
            tracing::warn!(
                stall_ms = state.config.stalled_client_ms,
                suppressed,
                "client stopped reading its replies; disconnecting it"
            );
        }
        let frame = CloseFrame {
            code: CLOSE_SLOW_CONSUMER,
            reason: "client not reading its replies".into(),
        };
        let _ = tokio::time::timeout(CLOSE_WAIT, sink.send(Message::Close(Some(frame)))).await;
    }
    in_flight.close();
    if !stalled {
        let _ = give_up.guard(sink.flush()).await;
    }
    // Whatever is still running or queued for this connection has nobody to go to: cancel it,
    // and close the reply queues so a task waiting for room in one returns at once.
    gone.cancel();
    rx.close();
    replies.close();
    while rx.try_recv().is_ok() {}
    while replies.try_recv().is_ok() {}
    in_flight.wait().await;
}

/// Replies fed to the socket and not yet flushed.
#[derive(Default)]
struct Unflushed {
    count: usize,
    /// When the first of them was fed.
    since: Option<Instant>,
}

impl Unflushed {
    fn fed(&mut self) {
        self.count += 1;
        if self.since.is_none() {
            self.since = Some(Instant::now());
        }
    }

    /// Replies have waited long enough for company while the client keeps sending: the
    /// session reads a steady pipeline without going idle, so it must flush on its own.
    fn is_stale(&self) -> bool {
        self.since.is_some_and(|t| t.elapsed() >= FLUSH_AFTER)
    }
}

/// Handles one frame (or the end of the stream) and writes what it answers at once. `Ok(false)`
/// ends the session.
async fn on_frame<S>(
    msg: Option<Result<Message, axum::Error>>,
    ctx: &Ctx<'_>,
    sink: &mut S,
    window: &mut Window,
    out: &mut Unflushed,
) -> Result<bool, Stop>
where
    S: futures_util::Sink<Message> + Unpin,
{
    let give_up = GiveUp {
        kick: ctx.conn.kicked(),
        hard_stop: &ctx.state.hard_stop,
        killed: &ctx.state.killed,
        stall: Duration::from_millis(ctx.state.config.stalled_client_ms),
    };
    let answer = match msg {
        Some(Ok(Message::Text(t))) => handle(t.as_bytes(), Some(t.as_str()), ctx).await,
        Some(Ok(Message::Binary(b))) => handle(&b, None, ctx).await,
        // WebSocket pings are answered by the WebSocket layer, TCP's here; pongs need nothing.
        Some(Ok(Message::Ping(p))) if ctx.answer_pings => Answer::One(Message::Pong(p)),
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Answer::None,
        Some(Err(e)) => {
            let (code, reason) = close_for(e);
            if code == CLOSE_TOO_BIG {
                if let Some(suppressed) = TOO_BIG.admit() {
                    tracing::warn!(
                        limit = ctx.state.config.max_message_bytes,
                        suppressed,
                        "message over the size limit; closing with 1009"
                    );
                }
            } else if let Some(suppressed) = VIOLATIONS.admit() {
                tracing::warn!(
                    code,
                    reason,
                    suppressed,
                    "WebSocket protocol violation; closing"
                );
            }
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            let close = sink.send(Message::Close(Some(frame)));
            let _ = tokio::time::timeout(CLOSE_WAIT, give_up.guard(close)).await;
            ctx.gone.cancel();
            return Ok(false);
        }
        None | Some(Ok(Message::Close(_))) => {
            ctx.gone.cancel();
            return Ok(false);
        }
    };
    match answer {
        Answer::None => {}
        Answer::One(reply) => {
            window.written(message_len(&reply), false);
            write(sink, reply, out, give_up).await?;
        }
        Answer::Many(replies) => {
            for reply in replies {
                write(sink, reply, out, give_up).await?;
            }
        }
    }
    Ok(true)
}

/// Why the session stopped writing to its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// A slow-consumer kick, the end of the grace period, the node killed, or a socket error.
    GaveUp,
    /// One write made no progress for `server.stalled_client_ms`.
    Stalled,
}

/// What makes the session give up on a write the client is not taking: a slow-consumer kick,
/// the end of a shutdown's grace period, the node being killed, or the write stalling for
/// longer than the client is allowed. (A write that watched only the kick held a shutdown
/// forever behind a client that stopped reading.)
#[derive(Clone, Copy)]
struct GiveUp<'a> {
    kick: &'a CancellationToken,
    hard_stop: &'a CancellationToken,
    killed: &'a CancellationToken,
    stall: Duration,
}

impl GiveUp<'_> {
    /// Runs `io` unless, or until, one of the reasons to give up fires.
    async fn guard<F: std::future::Future>(self, io: F) -> Result<F::Output, Stop> {
        let mut io = std::pin::pin!(io);
        // Most writes complete at once: no timer for them.
        if let std::task::Poll::Ready(out) = futures_util::poll!(&mut io) {
            return Ok(out);
        }
        // Biased: no random branch order per reply; the session loop checks the kick between
        // frames.
        tokio::select! {
            biased;
            out = &mut io => Ok(out),
            _ = self.kick.cancelled() => Err(Stop::GaveUp),
            _ = self.hard_stop.cancelled() => Err(Stop::GaveUp),
            _ = self.killed.cancelled() => Err(Stop::GaveUp),
            _ = tokio::time::sleep(self.stall) => Err(Stop::Stalled),
        }
    }
}

/// How long a slow consumer gets to take its close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Writes a request task's reply; its slot is free once the socket has it.
async fn write_reply<S>(
    sink: &mut S,
    reply: Reply,
    window: &mut Window,
    out: &mut Unflushed,
    give_up: GiveUp<'_>,
) -> Result<(), Stop>
where
    S: futures_util::Sink<Message> + Unpin,
{
    let Reply { msg, len, _slot } = reply;
    let written = write(sink, msg, out, give_up).await;
    window.written(len, true);
    written
}

/// Queues a frame on the socket, flushing once every [`FLUSH_EVERY`] unflushed frames (the
/// session loop flushes the remainder when nothing else is ready).
async fn write<S>(
    sink: &mut S,
    reply: Message,
    out: &mut Unflushed,
    give_up: GiveUp<'_>,
) -> Result<(), Stop>
where
    S: futures_util::Sink<Message> + Unpin,
{
    give_up
        .guard(sink.feed(reply))
        .await?
        .map_err(|_| Stop::GaveUp)?;
    out.fed();
    if out.count >= FLUSH_EVERY {
        flush(sink, out, give_up).await?;
    }
    Ok(())
}

async fn flush<S>(sink: &mut S, out: &mut Unflushed, give_up: GiveUp<'_>) -> Result<(), Stop>
where
    S: futures_util::Sink<Message> + Unpin,
{
    give_up
        .guard(sink.flush())
        .await?
        .map_err(|_| Stop::GaveUp)?;
    *out = Unflushed::default();
    Ok(())
}

fn message_len(m: &Message) -> usize {
    match m {
        Message::Text(t) => t.len(),
        Message::Binary(b) => b.len(),
        _ => 0,
    }
}

/// Waits until `at` (never, without one).
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// A data frame: only after one may the stream be read ahead (not after its end or an error).
fn is_request(msg: &Option<Result<Message, axum::Error>>) -> bool {
    matches!(msg, Some(Ok(Message::Text(_) | Message::Binary(_))))
}

/// The close code and reason for a frame the WebSocket layer could not read (RFC 6455 §7.4.1):
/// too big (1009), text that is not UTF-8 (1007), anything else against the protocol (1002).
fn close_for(e: axum::Error) -> (u16, &'static str) {
    use tokio_tungstenite::tungstenite::Error as WsError;
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    match e.into_inner().downcast::<WsError>().map(|b| *b) {
        Ok(WsError::Capacity(_)) => (CLOSE_TOO_BIG, "message too big"),
        Ok(WsError::Utf8(_)) => (CLOSE_INVALID_DATA, "text frame is not valid UTF-8"),
        Ok(WsError::Protocol(ProtocolError::InvalidOpcode(_))) => {
            (CLOSE_PROTOCOL_ERROR, "invalid opcode")
        }
        Ok(WsError::Protocol(ProtocolError::UnmaskedFrameFromClient)) => {
            (CLOSE_PROTOCOL_ERROR, "client frames must be masked")
        }
        Ok(WsError::Protocol(_)) => (CLOSE_PROTOCOL_ERROR, "WebSocket protocol error"),
        _ => (CLOSE_PROTOCOL_ERROR, "unreadable frame"),
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

/// Refused requests logged: at most one line a second (a flood of bad frames is hostile input),
/// with how many were left out.
static REFUSED: Throttle = Throttle::new(Duration::from_secs(1));

/// The reply to a request refused before any command ran (malformed, overloaded, shutting
/// down), and its log line (docs/observability.md, "Logs").
/// The access-log line of a request answered inline.
fn answered(ctx: &Ctx<'_>, reply: &RpcResponse, commands: usize, took: Option<Duration>) {
    let bytes = ctx
        .info
        .last_frame
        .load(std::sync::atomic::Ordering::Relaxed);
    let code = reply.error.as_ref().map(|e| e.code);
    let remote = ctx.info.remote;
    super::access::log(
        &reply.u,
        remote,
        commands,
        outcome(reply),
        code,
        took,
        bytes,
    );
}

/// Counts a request refused before it ran, and writes its access-log line (when that is on).
fn refused(ctx: &Ctx<'_>, u: &str, commands: usize, code: i64) {
    ctx.state.counts.rpc(Outcome::Refused, None);
    if ctx.state.access_log {
        let bytes = ctx
            .info
            .last_frame
            .load(std::sync::atomic::Ordering::Relaxed);
        let remote = ctx.info.remote;
        super::access::log(
            u,
            remote,
            commands,
            Outcome::Refused,
            Some(code),
            None,
            bytes,
        );
    }
}

/// How a reply counts in `mpreg_requests_total`.
fn outcome(reply: &RpcResponse) -> Outcome {
    if reply.error.is_none() {
        Outcome::Ok
    } else {
        Outcome::Error
    }
}

fn error_message(u: String, code: i64, message: &str, details: String) -> Message {
    if let Some(suppressed) = REFUSED.admit() {
        tracing::warn!(request_id = %u, code, reason = message, details = %details, suppressed, "request refused");
    }
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
    replies: &'a mpsc::Sender<Reply>,
    slots: &'a Arc<Semaphore>,
    unwritten: &'a Unwritten,
    in_flight: &'a TaskTracker,
    gone: &'a CancellationToken,
    conn: &'a crate::pubsub::exchange::Connection,
    /// What `/monitor/connz` shows of this connection.
    info: &'a super::connz::ConnInfo,
    draining: bool,
    /// More frames are already waiting: run this request on its own task, not inline.
    pipelined: bool,
    /// The transport leaves pings to the session (TCP's `PING` frames).
    answer_pings: bool,
    /// Who the client authenticated as: every command it sends runs as it.
    principal: &'a Principal,
}

/// Reads one frame and starts its request (or answers it with an error).
///
/// `text` is the frame as a string when it came as a text frame: the WebSocket layer has checked
/// its UTF-8 already, so the parser need not check every string again.
async fn handle(bytes: &[u8], text: Option<&str>, ctx: &Ctx<'_>) -> Answer {
    ctx.state.counts.frame(bytes.len());
    ctx.info.read(bytes.len());
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
            {
                if pubsub::is_pubsub(&role) {
                    return Answer::Many(
                        pubsub::handle(bytes, &role, &u, ctx.state, ctx.conn, ctx.principal).await,
                    );
                }
                if let Some(env) = ctx.state.dispatcher.builtins().envelope(&role) {
                    return envelope(bytes, env, u, ctx).await.into();
                }
            }
            ctx.state.counts.rpc(Outcome::Refused, None);
            return reject(bytes, parsed.err()).into();
        }
    };
    let suspect = req.cmds.iter().any(|c| {
        c.args.iter().any(numbers::may_hold_oversized)
            || c.kwargs.values().any(numbers::may_hold_oversized)
    });
    if let Some(n) = suspect.then(|| numbers::oversized_integer(bytes)).flatten() {
        let details = format!(
            "integer {n} does not fit in 64 bits and would lose precision; send it as a string"
        );
        refused(ctx, &req.u, req.cmds.len(), codes::MALFORMED_REQUEST);
        return Some(error_message(
            req.u,
            codes::MALFORMED_REQUEST,
            "Malformed request",
            details,
        ))
        .into();
    }
    rpc(req, ctx).await.into()
}

/// Answers a frame of a role a service serves with a built-in (`cache-request`): the built-in
/// runs with `[frame, node id]` wherever the dispatcher routes it, and its result object is the
/// reply, with `role` and `u` added. Failures are replies of the same role with `status:
/// "error"` (or `"timeout"`) and an `error_message`.
async fn envelope(bytes: &[u8], env: Envelope, u: String, ctx: &Ctx<'_>) -> Option<Message> {
    let reply = move |u: String, status: &str, why: String| -> Message {
        let obj = serde_json::json!({
            "role": env.reply_role, "u": u, "status": status, "error_message": why,
        });
        Message::Text(Utf8Bytes::from(obj.to_string()))
    };
    if ctx.draining {
        let why = "node is shutting down; retry on another node".to_owned();
        return Some(reply(u, "error", why));
    }
    let frame: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => return Some(reply(u, "error", format!("invalid {}: {e}", env.role))),
    };
    let state = ctx.state;
    let timeout_ms = frame
        .get("options")
        .and_then(|o| o.get("timeout_ms"))
        .and_then(Value::as_u64)
        .unwrap_or(state.config.request_timeout_ms)
        .clamp(1, state.config.max_request_timeout_ms);
    let Ok(slot) = ctx.slots.clone().try_acquire_owned() else {
        let why = format!(
            "more than {} requests in flight on this connection",
            state.config.max_in_flight_per_connection
        );
        return Some(reply(u, "error", why));
    };
    let timeout = Duration::from_millis(timeout_ms);
    let node_id = Value::String(state.node.node_id.clone());
    let call = crate::rpc::port::Call {
        command: RpcCommand::new(env.role, env.builtin, vec![frame, node_id]),
        constraint: None,
        request_id: u.as_str().into(),
        depth: 0,
        deadline: Some(std::time::Instant::now() + timeout),
        principal: ctx.principal.clone(),
    };
    let (state, gone) = (state.clone(), ctx.gone.clone());
    let work = async move {
        let _active = Counted::enter(&state.node.active_requests);
        let run = tokio::time::timeout(
            timeout,
            crate::rpc::port::Dispatcher::dispatch(&*state.dispatcher, call),
        );
        let out = tokio::select! {
            out = run => out,
            _ = state.hard_stop.cancelled() => {
                let why = "node shut down before the request finished; retry on another node";
                return Some(reply(u, "error", why.to_owned()));
            }
            _ = gone.cancelled() => return None,
        };
        let counted = match &out {
            Ok(Ok(Value::Object(m)))
                if m.get("status").and_then(Value::as_str) != Some("error") =>
            {
                Outcome::Ok
            }
            _ => Outcome::Error,
        };
        state.counts.other(env.role, counted);
        Some(match out {
            Ok(Ok(Value::Object(mut m))) => {
                m.insert("role".into(), Value::String(env.reply_role.to_owned()));
                m.insert("u".into(), Value::String(u));
                Message::Text(Utf8Bytes::from(Value::Object(m).to_string()))
            }
            Ok(Ok(other)) => reply(u, "error", format!("unexpected result {other}")),
            Ok(Err(e)) => reply(u, "error", e.to_string()),
            Err(_) => reply(u, "timeout", format!("no answer within {timeout_ms} ms")),
        })
    };
    // Cache operations are short (a memory read for a hit): polled here even behind other
    // frames, so a pipelining client's GETs cost no task each. One that waits (a disk write,
    // another node) moves to a task of its own.
    launch(ctx, slot, work, true).await
}

/// Starts an RPC request: answered inline when it completes at once, else on a task.
async fn rpc(req: RpcRequest, ctx: &Ctx<'_>) -> Option<Message> {
    let Ctx {
        state,
        tx,
        slots,
        gone,
        draining,
        ..
    } = *ctx;
    if draining {
        let details = "node is shutting down; retry on another node".to_owned();
        refused(ctx, &req.u, req.cmds.len(), codes::OVERLOADED);
        return Some(error_message(
            req.u,
            codes::OVERLOADED,
            "Overloaded",
            details,
        ));
    }
    let max_commands = state.config.max_commands_per_request;
    if req.cmds.len() > max_commands {
        let details = format!(
            "the request holds {} commands; this node takes at most {max_commands} per request \
             (server.max_commands_per_request)",
            req.cmds.len()
        );
        refused(ctx, &req.u, req.cmds.len(), codes::RESOURCE_LIMIT);
        return Some(error_message(
            req.u,
            codes::RESOURCE_LIMIT,
            codes::message(codes::RESOURCE_LIMIT),
            details,
        ));
    }
    let span = tracing::debug_span!(
        target: "mpreg::request",
        "request",
        request_id = %req.u,
        commands = req.cmds.len(),
        node = %state.node.node_id,
    );
    crate::trace::continue_from(&span, req.traceparent.as_deref());
    let immediate =
        span.in_scope(|| execute::execute_immediate(&req, &*state.dispatcher, ctx.principal));
    if let Some(reply) = immediate {
        // Answered inline, in order: no task, no timer.
        state.counts.rpc(outcome(&reply), None);
        if state.access_log {
            answered(ctx, &reply, req.cmds.len(), None);
        }
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
        refused(ctx, &req.u, req.cmds.len(), codes::MALFORMED_REQUEST);
        return Some(error_message(
            req.u,
            codes::MALFORMED_REQUEST,
            "Malformed request",
            details,
        ));
    }
    let stream = req.stream_intermediate_results.then(|| {
        let tx = tx.clone();
        let mailbox = ctx.conn.mailbox_handle();
        let u = req.u.clone();
        move |ir: &crate::protocol::IntermediateResult| {
            let msg = RpcIntermediate {
                role: "rpc-intermediate".into(),
                u: u.clone(),
                result: ir.clone(),
            };
            if let Ok(text) = serde_json::to_string(&msg) {
                // Streaming is best effort: a full queue drops the update, never blocks the request.
                let len = text.len();
                if tx.try_send(Message::Text(Utf8Bytes::from(text))).is_ok() {
                    mailbox.counted(len);
                }
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
        levels: state
            .counts
            .levels()
            .map(|h| -> execute::LevelsHook { Box::new(move |n| h.observe(n as u64)) }),
        principal: ctx.principal.clone(),
    };
    // The session reads a request only when its window has a slot free, and only the session
    // takes slots.
    let Ok(slot) = slots.clone().try_acquire_owned() else {
        let details = format!(
            "more than {} requests in flight on this connection",
            state.config.max_in_flight_per_connection
        );
        refused(ctx, &req.u, req.cmds.len(), codes::OVERLOADED);
        return Some(error_message(
            req.u,
            codes::OVERLOADED,
            "Overloaded",
            details,
        ));
    };
    let (task_state, gone) = (state.clone(), gone.clone());
    let commands = req.cmds.len();
    let log_as = state.access_log.then(|| {
        let bytes = ctx
            .info
            .last_frame
            .load(std::sync::atomic::Ordering::Relaxed);
        (ctx.info.remote, bytes)
    });
    let work = async move {
        let state = task_state;
        let _active = Counted::enter(&state.node.active_requests);
        let u = req.u.clone();
        if req.debug_mode {
            tracing::debug!(u = %u, cmds = req.cmds.len(), "rpc request");
        }
        let dispatcher = state.dispatcher.clone() as Arc<dyn execute::Dispatcher>;
        let started = state.counts.enabled().then(std::time::Instant::now);
        let reply = tokio::select! {
            reply = execute::execute(req, dispatcher, opts) => reply,
            _ = state.hard_stop.cancelled() => RpcResponse::err(u, RpcErrorBody::new(
                codes::OVERLOADED, "node shut down before the request finished; retry on another node")),
            _ = gone.cancelled() => return None,
        };
        let took = started.map(|t| t.elapsed());
        state.counts.rpc(outcome(&reply), took);
        if let Some((remote, bytes)) = log_as {
            let code = reply.error.as_ref().map(|e| e.code);
            super::access::log(
                &reply.u,
                remote,
                commands,
                outcome(&reply),
                code,
                took,
                bytes,
            );
        }
        Some(encode(&reply, state.config.max_reply_bytes))
    };
    launch(ctx, slot, work.instrument(span), false).await
}

/// Runs a request's `work` in its window `slot`: answered here when it completes without
/// waiting, else on a task of its own that sends the reply. Behind other frames only `short`
/// work is tried here first (a plugin call that does not yield would hold up the frames after it).
async fn launch<F>(
    ctx: &Ctx<'_>,
    slot: OwnedSemaphorePermit,
    work: F,
    short: bool,
) -> Option<Message>
where
    F: Future<Output = Option<Message>> + Send + 'static,
{
    let Ctx {
        replies,
        unwritten,
        in_flight,
        pipelined,
        ..
    } = *ctx;
    let mut work = Box::pin(work);
    // Polled here first when the client waits for it: a request that completes without waiting
    // (a plugin call that does not yield) is answered by this task, with no hand-off to another
    // task and back. With more frames waiting, it goes to a task of its own at once, so a
    // pipelining client's calls spread over every core instead of queueing behind each other.
    let first = if pipelined && !short {
        std::task::Poll::Pending
    } else {
        futures_util::poll!(&mut work)
    };
    match first {
        // Written by the caller at once; the slot is free when it returns.
        std::task::Poll::Ready(reply) => reply,
        std::task::Poll::Pending => {
            let (replies, unwritten) = (replies.clone(), unwritten.clone());
            in_flight.spawn(async move {
                if let Some(msg) = work.await {
                    let len = message_len(&msg);
                    unwritten.add(len);
                    // Never waits: the queue has room for every slot.
                    let _ = replies
                        .send(Reply {
                            msg,
                            len,
                            _slot: slot,
                        })
                        .await;
                }
            });
            None
        }
    }
}

/// Frames dropped for want of anyone to answer: logged at most once a second.
static DROPPED: Throttle = Throttle::new(Duration::from_secs(1));
/// Clients disconnected for not reading their replies: likewise.
static STALLED: Throttle = Throttle::new(Duration::from_secs(1));
/// Connections closed for a protocol violation: likewise.
static VIOLATIONS: Throttle = Throttle::new(Duration::from_secs(1));
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
