//! The node-to-node link's frames: one binary WebSocket message each, encoded with postcard.
//!
//! Not bound by MPREG compatibility (protocol.md §6), so it is compact: varints, no field names.
//! Arguments and results stay JSON text inside the frame, since JSON is what both ends hold
//! them as and what substitution already produced.

use serde::{Deserialize, Serialize};

/// The path peers dial on a node's HTTP port.
pub const PEER_PATH: &str = "/_mpreg/peer/v1";

/// A call forwarded by a coordinator: arguments already substituted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForwardedCall {
    /// The client request's `u`, for logs.
    pub request_id: String,
    /// The command as JSON (`RpcCommand`), args substituted.
    pub command: String,
    /// Further forwards allowed after this one.
    pub hops_left: u8,
    /// Node ids the call went through, coordinator first: never routed back to them.
    pub path: Vec<String>,
    /// Milliseconds left of the request's deadline when sent.
    pub timeout_ms: u64,
    /// Nesting depth (a plugin's `call` made at depth n − 1).
    pub depth: u32,
    /// W3C `traceparent` of the sending span, when traces are exported (crate::trace).
    pub traceparent: Option<String>,
    /// Who the call runs for; the receiver holds it to the same policy.
    pub principal: ForwardedPrincipal,
}

/// A call's identity as it crosses a peer link.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ForwardedPrincipal {
    /// Its name.
    pub name: String,
    /// Its policy (`PolicySpec` as JSON, since postcard cannot skip absent fields); `None`:
    /// unrestricted.
    pub policy: Option<String>,
}

/// Why a forwarded call failed on the peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteFailure {
    /// RPC error code.
    pub code: i64,
    /// What went wrong.
    pub cause: String,
}

/// A change to the sender's own cluster state (its subscription patterns, queues, functions
/// and plugin records: the gossip keys `cluster::catalog::is_pushed` names), pushed over the
/// link as it happens so the receiver knows it before gossip would tell it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateBatch {
    /// The sender's state sequence after this change; gossip carries the same number
    /// (`catalog::KEY_SEQ`) with the same keys, so a receiver knows when gossip has caught up.
    pub seq: u64,
    /// `true`: `changes` is the sender's whole pushed state (a link's first batch), not a diff.
    pub full: bool,
    /// `(key, Some(value))` sets a key, `(key, None)` deletes it.
    pub changes: Vec<(String, Option<String>)>,
}

/// One frame on a peer link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PeerFrame {
    /// Dialer → listener, first frame: who is calling.
    Hello {
        /// Dialer's node id.
        node_id: String,
        /// Dialer's cluster id (must match).
        cluster_id: String,
    },
    /// Listener → dialer: accepted (or why not).
    Welcome {
        /// Listener's node id.
        node_id: String,
        /// Refusal reason; `None` when accepted.
        refused: Option<String>,
    },
    /// Run a call.
    Call {
        /// Correlates the reply.
        id: u64,
        /// The call.
        call: ForwardedCall,
    },
    /// A call's outcome: the result as JSON text, or why it failed.
    Reply {
        /// The call's id.
        id: u64,
        /// Outcome.
        result: Result<String, RemoteFailure>,
    },
    /// Send me the component with this sha256.
    Fetch {
        /// Correlates the reply.
        id: u64,
        /// Lowercase hex sha256.
        sha256: String,
    },
    /// A message published on the sender's node that matches a subscription on the receiver:
    /// delivered to the receiver's local subscribers only (never forwarded again, so no loops).
    /// One-way: no reply.
    Publish {
        /// The message, verbatim JSON.
        message: String,
    },
    /// Send me your retained messages matching these patterns (`(pattern, exact_match)`) from
    /// the last `within_ms`: a new subscription's backlog is cluster-wide.
    Backlog {
        /// Correlates the reply.
        id: u64,
        /// The subscription's patterns.
        patterns: Vec<(String, bool)>,
        /// How far back.
        within_ms: u64,
    },
    /// Retained messages, oldest first: `(age in ms, message id, message JSON)`.
    Retained {
        /// The request's id.
        id: u64,
        /// The messages.
        messages: Vec<(u64, String, String)>,
    },
    /// Dialer → listener, one-way: a change to the dialer's cluster state (see [`StateBatch`]).
    State {
        /// The sender's gossip generation (its start time in ms): a batch of an earlier life of
        /// the node is ignored.
        generation: u64,
        /// The change.
        batch: StateBatch,
    },
    /// Listener → dialer, one-way: the receiver applied the dialer's state up to `seq`; what
    /// its clients see now includes it.
    StateAck {
        /// The batch's `seq`.
        seq: u64,
    },
    /// The component bytes, or `None` when this node does not have them.
    Blob {
        /// The fetch's id.
        id: u64,
        /// The bytes.
        #[serde(with = "serde_bytes")]
        bytes: Option<Vec<u8>>,
    },
}

/// A frame that could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("undecodable peer frame: {0}")]
pub struct FrameError(#[from] postcard::Error);

impl PeerFrame {
    /// Encodes the frame.
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        Ok(postcard::to_stdvec(self)?)
    }

    /// Decodes one frame.
    pub fn decode(bytes: &[u8]) -> Result<PeerFrame, FrameError> {
        Ok(postcard::from_bytes(bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_garbage_is_an_error() {
        let frames = [
            PeerFrame::Hello {
                node_id: "a".into(),
                cluster_id: "c".into(),
            },
            PeerFrame::Call {
                id: 7,
                call: ForwardedCall {
                    request_id: "u1".into(),
                    command: r#"{"name":"x","fun":"add","args":[1,2]}"#.into(),
                    hops_left: 3,
                    path: vec!["a".into()],
                    timeout_ms: 30_000,
                    depth: 0,
                    traceparent: Some(
                        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
                    ),
                    principal: ForwardedPrincipal {
                        name: "alice".into(),
                        policy: Some(r#"{"functions":["add"]}"#.into()),
                    },
                },
            },
            PeerFrame::Reply {
                id: 7,
                result: Err(RemoteFailure {
                    code: 1001,
                    cause: "gone".into(),
                }),
            },
            PeerFrame::Publish {
                message: r#"{"topic":"a.b"}"#.into(),
            },
            PeerFrame::Backlog {
                id: 3,
                patterns: vec![("a.#".into(), false)],
                within_ms: 1000,
            },
            PeerFrame::Retained {
                id: 3,
                messages: vec![(5, "m".into(), "{}".into())],
            },
            PeerFrame::State {
                generation: 17,
                batch: StateBatch {
                    seq: 4,
                    full: false,
                    changes: vec![
                        ("s:a.#".into(), Some(String::new())),
                        ("q:jobs".into(), None),
                    ],
                },
            },
            PeerFrame::StateAck { seq: 4 },
            PeerFrame::Blob {
                id: 9,
                bytes: Some(vec![0, 97, 115, 109]),
            },
        ];
        for f in frames {
            let bytes = f.encode().expect("encode");
            assert_eq!(PeerFrame::decode(&bytes).expect("decode"), f);
        }
        assert!(PeerFrame::decode(&[250, 1, 2]).is_err());
        assert!(PeerFrame::decode(&[]).is_err());
    }

    #[test]
    fn a_small_call_is_compact() {
        let f = PeerFrame::Reply {
            id: 1,
            result: Ok("42".into()),
        };
        assert!(f.encode().expect("encode").len() < 8);
    }
}
