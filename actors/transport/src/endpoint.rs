//! The node's one remotable actor. Every remotable actor is proxied on every peer (about 10 KB each,
//! measured), so a node has exactly one: it answers the failure detector's pings and hands each call to
//! the [`CallHandler`] on a task of its own, so that a slow call never holds up the next one or a ping.
//!
//! Peers find it through the pg group [`group_of`]`(node id)`, which ractor_cluster mirrors to every
//! session once it is ready.
//!
//! Wire format (the variant names of [`EndpointMsg`] are wire tags: append variants, never rename):
//! a `Call` request is the caller's payload followed by one version byte; the reply is the handler's
//! answer followed by one status byte and one version byte. Trailing bytes rather than a header, so that
//! framing a large payload is a push and a pop instead of a copy.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::CallHandler;

/// Calls a node runs at once; beyond this a call is answered `Overloaded` at once instead of queueing.
pub(crate) const MAX_IN_FLIGHT_CALLS: usize = 4096;

/// The version byte of the `Call` framing.
pub(crate) const WIRE_VERSION: u8 = 1;

const GROUP_PREFIX: &str = "playground.endpoint.";

/// The pg group holding node `node`'s endpoint (locally on that node, as a proxy on its peers).
pub(crate) fn group_of(node: &str) -> String {
    format!("{GROUP_PREFIX}{node}")
}

#[derive(RactorClusterMessage)]
pub(crate) enum EndpointMsg {
    /// One request from a peer: framed payload in, framed answer out.
    #[rpc]
    Call(Vec<u8>, RpcReplyPort<Vec<u8>>),
    /// The failure detector's probe; the nonce comes back unchanged.
    #[rpc]
    Ping(u64, RpcReplyPort<u64>),
}

/// How a call ended on the answering node; carried in the reply's status byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Ok = 0,
    /// [`MAX_IN_FLIGHT_CALLS`] were running.
    Overloaded = 1,
    /// The handler panicked or ran past the caller's timeout.
    HandlerFailed = 2,
    /// The request's version byte is not one this node speaks.
    UnsupportedVersion = 3,
    /// The node runs no handler.
    NoHandler = 4,
}

impl Status {
    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => Self::Ok,
            1 => Self::Overloaded,
            2 => Self::HandlerFailed,
            3 => Self::UnsupportedVersion,
            4 => Self::NoHandler,
            _ => return None,
        })
    }
}

pub(crate) fn frame_request(mut payload: Vec<u8>) -> Vec<u8> {
    payload.push(WIRE_VERSION);
    payload
}

fn unframe_request(mut framed: Vec<u8>) -> Option<Vec<u8>> {
    (framed.pop()? == WIRE_VERSION).then_some(framed)
}

fn frame_reply(mut answer: Vec<u8>, status: Status) -> Vec<u8> {
    answer.push(status as u8);
    answer.push(WIRE_VERSION);
    answer
}

/// Splits a reply into its status and the handler's answer; `None` for a reply this node cannot read.
pub(crate) fn unframe_reply(mut framed: Vec<u8>) -> Option<(Status, Vec<u8>)> {
    if framed.pop()? != WIRE_VERSION {
        return None;
    }
    let status = Status::from_byte(framed.pop()?)?;
    Some((status, framed))
}

pub(crate) struct Endpoint;

pub(crate) struct EndpointArgs {
    pub group: String,
    pub handler: Option<Arc<dyn CallHandler>>,
}

pub(crate) struct EndpointState {
    handler: Option<Arc<dyn CallHandler>>,
    permits: Arc<Semaphore>,
}

impl Actor for Endpoint {
    type Msg = EndpointMsg;
    type State = EndpointState;
    type Arguments = EndpointArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<EndpointMsg>,
        args: EndpointArgs,
    ) -> Result<EndpointState, ActorProcessingErr> {
        ractor::pg::join(args.group, vec![myself.get_cell()]);
        Ok(EndpointState { handler: args.handler, permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT_CALLS)) })
    }

    // Never returns `Err`: that would stop the endpoint and make this node look dead to every peer.
    async fn handle(
        &self,
        _myself: ActorRef<EndpointMsg>,
        msg: EndpointMsg,
        st: &mut EndpointState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            EndpointMsg::Ping(nonce, reply) => {
                let _ = reply.send(nonce);
            }
            EndpointMsg::Call(framed, reply) => {
                let Some(payload) = unframe_request(framed) else {
                    let _ = reply.send(frame_reply(Vec::new(), Status::UnsupportedVersion));
                    return Ok(());
                };
                let Some(handler) = st.handler.clone() else {
                    let _ = reply.send(frame_reply(Vec::new(), Status::NoHandler));
                    return Ok(());
                };
                let Ok(permit) = st.permits.clone().try_acquire_owned() else {
                    debug!("endpoint at its in-flight limit, call refused");
                    let _ = reply.send(frame_reply(Vec::new(), Status::Overloaded));
                    return Ok(());
                };
                // The caller stops waiting after its timeout; the handler may not run longer than that
                // either, or its permit would be held for an answer nobody reads.
                let deadline = reply.get_timeout();
                tokio::spawn(async move {
                    let _permit = permit;
                    let work = AssertUnwindSafe(async move { handler.handle(payload).await }).catch_unwind();
                    let outcome = match deadline {
                        Some(d) => tokio::time::timeout(d, work).await.ok(),
                        None => Some(work.await),
                    };
                    let framed = match outcome {
                        Some(Ok(answer)) => frame_reply(answer, Status::Ok),
                        Some(Err(_)) => {
                            warn!("call handler panicked");
                            frame_reply(Vec::new(), Status::HandlerFailed)
                        }
                        None => frame_reply(Vec::new(), Status::HandlerFailed),
                    };
                    let _ = reply.send(framed);
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use ractor::Message;

    use super::*;

    #[test]
    fn request_framing_round_trips() {
        let framed = frame_request(b"abc".to_vec());
        assert_eq!(framed, vec![b'a', b'b', b'c', WIRE_VERSION]);
        assert_eq!(unframe_request(framed), Some(b"abc".to_vec()));
        assert_eq!(unframe_request(vec![]), None);
        assert_eq!(unframe_request(vec![1, 2, 99]), None);
    }

    #[test]
    fn reply_framing_round_trips() {
        for status in [Status::Ok, Status::Overloaded, Status::HandlerFailed, Status::UnsupportedVersion] {
            let framed = frame_reply(vec![7, 8], status);
            assert_eq!(unframe_reply(framed), Some((status, vec![7, 8])));
        }
        assert_eq!(unframe_reply(frame_reply(vec![], Status::NoHandler)), Some((Status::NoHandler, vec![])));
        assert_eq!(unframe_reply(vec![]), None);
        assert_eq!(unframe_reply(vec![WIRE_VERSION]), None);
        assert_eq!(unframe_reply(vec![200, WIRE_VERSION]), None);
        assert_eq!(unframe_reply(vec![0, 2]), None);
    }

    // Serializing an rpc variant spawns the reply bridge, so this needs a runtime.
    #[tokio::test]
    async fn endpoint_messages_are_remotable_and_round_trip() {
        assert!(EndpointMsg::serializable());
        let (tx, _rx) = ractor::concurrency::oneshot::<Vec<u8>>();
        let msg = EndpointMsg::Call(vec![1, 2, 3], tx.into());
        let wire = msg.serialize().expect("serializable");
        match EndpointMsg::deserialize(wire).expect("decodes") {
            EndpointMsg::Call(payload, _) => assert_eq!(payload, vec![1, 2, 3]),
            EndpointMsg::Ping(..) => panic!("wrong variant"),
        }
        let (tx, _rx) = ractor::concurrency::oneshot::<u64>();
        let wire = EndpointMsg::Ping(42, tx.into()).serialize().expect("serializable");
        match EndpointMsg::deserialize(wire).expect("decodes") {
            EndpointMsg::Ping(n, _) => assert_eq!(n, 42),
            EndpointMsg::Call(..) => panic!("wrong variant"),
        }
    }

    #[test]
    fn group_names_the_node() {
        assert_eq!(group_of("node-2"), "playground.endpoint.node-2");
    }
}
