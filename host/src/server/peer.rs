//! The listening end of a peer link: runs forwarded calls and serves component bytes to peers.
//!
//! A call is first polled right here: a quick one (most are: a fresh instance, a few µs of guest
//! code) is answered without a hand-off to another task. One that has to wait moves to a task
//! of its own and its reply is queued to this connection, so a slow call never holds up the
//! others on the link. On shutdown, calls already received finish and are answered; new ones
//! are refused (the coordinator routes them elsewhere).

use std::sync::Arc;
use std::task::Poll;

use axum::extract::ws::{Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::task::TaskTracker;

use super::state::ServerState;
use crate::burst::write_burst;
use crate::cluster::wire::{PeerFrame, RemoteFailure};
use crate::protocol::codes;

/// Serves one peer until it hangs up, the node is killed, or shutdown has drained it.
pub async fn run(socket: WebSocket, state: Arc<ServerState>) {
    let (mut sink, mut stream) = socket.split();
    let Some(peer) = hello(&mut sink, &mut stream, &state).await else {
        return;
    };
    tracing::debug!(%peer, "peer link accepted");
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(state.config.outbound_queue);
    let permits = Arc::new(Semaphore::new(state.config.max_in_flight_per_connection));
    let in_flight = TaskTracker::new();
    let mut draining = false;
    let mut unflushed = false;
    loop {
        tokio::select! {
            biased;
            _ = state.killed.cancelled() => return,
            _ = state.shutdown.cancelled(), if !draining => {
                draining = true;
                in_flight.close();
            }
            Some(first) = rx.recv() => {
                let binary = |bytes: Vec<u8>| Message::Binary(bytes.into());
                if write_burst(&mut sink, first, &mut rx, binary).await.is_err() {
                    break;
                }
                unflushed = false;
                // The replies are out: now reset the instances that produced them.
                crate::runtime::teardown::run_deferred();
            }
            _ = in_flight.wait(), if draining => break,
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(b))) => match PeerFrame::decode(&b) {
                    Ok(PeerFrame::Publish { message }) => {
                        // In order, on this task: messages from one node reach subscribers in
                        // the order it published them.
                        match state.exchange.receive(&message) {
                            Ok(routed) => state.exchange.deliver(routed.others),
                            Err(e) => tracing::warn!(%peer, error = %e, "bad publish from a peer"),
                        }
                    }
                    Ok(frame) => {
                        // A state change is applied during this first poll, in the order
                        // received; only retirements it causes may have to wait.
                        let mut work = Box::pin(answer(frame, state.clone(), peer.clone(), draining));
                        match futures_util::poll!(&mut work) {
                            Poll::Ready(reply) => {
                                if let Some(bytes) = reply.and_then(|r| r.encode().ok()) {
                                    if sink.feed(Message::Binary(bytes.into())).await.is_err() {
                                        break;
                                    }
                                    unflushed = true;
                                }
                            }
                            Poll::Pending => {
                                let Ok(permit) = permits.clone().acquire_owned().await else { break };
                                let tx = tx.clone();
                                in_flight.spawn(async move {
                                    let _permit = permit;
                                    if let Some(bytes) = work.await.and_then(|r| r.encode().ok()) {
                                        let _ = tx.send(bytes).await;
                                    }
                                });
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "closing peer link");
                        break;
                    }
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            // Nothing else is ready: send what was answered inline.
            _ = std::future::ready(()), if unflushed => {
                if sink.flush().await.is_err() {
                    break;
                }
                unflushed = false;
                crate::runtime::teardown::run_deferred();
            }
        }
    }
    let _ = sink.close().await;
}

/// Reads the dialer's hello; answers welcome or a refusal. Returns the peer's node id.
async fn hello<S, R>(sink: &mut S, stream: &mut R, state: &ServerState) -> Option<String>
where
    S: futures_util::Sink<Message> + Unpin,
    R: futures_util::Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), stream.next()).await;
    let Ok(Some(Ok(Message::Binary(b)))) = first else {
        return None;
    };
    let (node_id, refused) = match PeerFrame::decode(&b) {
        Ok(PeerFrame::Hello {
            node_id,
            cluster_id,
        }) => {
            let refused = (cluster_id != state.node.cluster_id).then(|| {
                format!(
                    "this node is in cluster '{}', not '{cluster_id}'",
                    state.node.cluster_id
                )
            });
            (node_id, refused)
        }
        _ => (String::new(), Some("expected a hello frame".to_owned())),
    };
    let welcome = PeerFrame::Welcome {
        node_id: state.node.node_id.clone(),
        refused: refused.clone(),
    };
    let bytes = welcome.encode().ok()?;
    sink.send(Message::Binary(bytes.into())).await.ok()?;
    match refused {
        None => Some(node_id),
        Some(why) => {
            tracing::warn!(peer = %node_id, %why, "peer link refused");
            None
        }
    }
}

async fn answer(
    frame: PeerFrame,
    state: Arc<ServerState>,
    peer: String,
    refuse: bool,
) -> Option<PeerFrame> {
    match frame {
        PeerFrame::State { generation, batch } => {
            let seq = batch.seq;
            let cluster = state.dispatcher.cluster()?;
            cluster.receive_state(&peer, generation, batch).await;
            Some(PeerFrame::StateAck { seq })
        }
        PeerFrame::Call { id, call } => {
            let result = if refuse {
                Err(RemoteFailure {
                    code: codes::OVERLOADED,
                    cause: "node is shutting down".into(),
                })
            } else {
                match state.dispatcher.clone().run_forwarded(call).await {
                    Ok(v) => Ok(v.to_string()),
                    Err(f) => Err(RemoteFailure {
                        code: f.code(),
                        cause: f.into_cause(),
                    }),
                }
            };
            Some(PeerFrame::Reply { id, result })
        }
        PeerFrame::Backlog {
            id,
            patterns,
            within_ms,
        } => {
            let messages = state.exchange.retained(
                &patterns,
                std::time::Duration::from_millis(within_ms),
                std::time::Instant::now(),
            );
            Some(PeerFrame::Retained { id, messages })
        }
        PeerFrame::Fetch { id, sha256 } => {
            let manager = state.manager.clone();
            let bytes = tokio::task::spawn_blocking(move || manager.blob(&sha256))
                .await
                .ok()
                .and_then(Result::ok)
                .flatten();
            Some(PeerFrame::Blob { id, bytes })
        }
        other => {
            tracing::warn!(?other, "unexpected frame from a peer");
            None
        }
    }
}
