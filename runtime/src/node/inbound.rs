//! Peers' requests, each handed to the role that answers it (adverts to
//! discovery, blocks to the upload server, calls to the invoker, load
//! reports to the replication role, feed segments to the feed role, advice
//! to the reputation role) in a task
//! of its own, inside the span of the connection it came on. Every request
//! gets an explicit answer.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};
use tracing::Instrument;

use super::discovery::Discovery;
use super::feed::FeedRole;
use super::invoke::Invoker;
use super::replication::Replication;
use super::reputation::Reputations;
use super::standby::Standby;
use super::upload::Uploads;
use crate::net::{Client, InboundRequest};

/// Peers' requests answered concurrently. Beyond it the network's bounded
/// queue fills and the event loop answers `Busy` itself.
const MAX_ANSWERING: usize = 256;

/// The roles that answer peers.
pub(crate) struct Answerers {
    pub(crate) client: Client,
    pub(crate) discovery: Arc<Discovery>,
    pub(crate) uploads: Arc<Uploads>,
    pub(crate) invoker: Arc<Invoker>,
    pub(crate) standby: Arc<Standby>,
    pub(crate) replication: Arc<Replication>,
    pub(crate) feeds: Arc<FeedRole>,
    pub(crate) reputation: Arc<Reputations>,
}

/// Answers peers' requests until the network stops.
pub(crate) async fn serve(answerers: Answerers, mut inbound: mpsc::Receiver<InboundRequest>) {
    let answerers = Arc::new(answerers);
    let running = Arc::new(Semaphore::new(MAX_ANSWERING));
    while let Some(request) = inbound.recv().await {
        let Ok(permit) = running.clone().acquire_owned().await else {
            break;
        };
        let a = answerers.clone();
        let span = request.span().clone();
        tokio::spawn(
            async move {
                let _permit = permit;
                match request {
                    InboundRequest::Advert {
                        peer,
                        request,
                        channel,
                        ..
                    } => {
                        let response = a.discovery.answer(peer, request);
                        a.client.respond_advert(channel, response).await;
                    }
                    InboundRequest::Transfer {
                        peer,
                        relayed,
                        id,
                        request,
                        channel,
                        ..
                    } => match a.uploads.answer(peer, relayed, request).await {
                        (response, Some(unwritten)) => {
                            let hold = Box::new(unwritten);
                            a.client
                                .respond_transfer_holding(id, channel, response, hold)
                                .await;
                        }
                        (response, None) => a.client.respond_transfer(channel, response).await,
                    },
                    InboundRequest::Invoke {
                        peer,
                        request,
                        channel,
                        ..
                    } => {
                        let response = a.invoker.answer(peer, request).await;
                        a.client.respond_invoke(channel, response).await;
                    }
                    InboundRequest::Solicit {
                        peer,
                        request,
                        channel,
                        ..
                    } => {
                        let response = a.standby.answer(peer, request).await;
                        a.client.respond_solicit(channel, response).await;
                    }
                    InboundRequest::Advice {
                        peer,
                        origin,
                        request,
                        channel,
                        ..
                    } => {
                        let response = a.reputation.answer(peer, origin, request);
                        a.client.respond_advice(channel, response).await;
                    }
                    InboundRequest::Gossip {
                        source,
                        via,
                        id,
                        topic,
                        data,
                        ..
                    } => {
                        let verdict = if FeedRole::handles(&topic) {
                            a.feeds.received(source, &topic, &data)
                        } else {
                            a.replication.received(source, via, &topic, &data).await
                        };
                        a.client.validate(id, via, verdict).await;
                    }
                }
            }
            .instrument(span),
        );
    }
}
