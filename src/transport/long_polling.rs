//! Long Polling: each GET waits until frames are queued (or the poll times
//! out) and carries them all; client messages come up in POSTs. One poll
//! is outstanding at a time: a newer poll answers the older one with 204.
//!
//! A connection that ended is not forgotten at once, as in ASP.NET Core
//! (`HttpConnectionDispatcher` marks it inactive; `HttpConnectionManager`
//! removes it after its disconnect timeout): the next poll gets what was
//! left to send (the Close) or 204, a DELETE 202, for [`ENDED_KEPT`].
//!
//! A poll whose client went away takes nothing, as in ASP.NET Core's
//! `LongPollingServerTransport` (a request aborted before its answer
//! consumes nothing): hyper drops a request's future when its client closes
//! the socket (an HTTP/1 connection without half-close ends at the EOF), and
//! with it the poll's receiver, so a waiting poll whose receiver is gone is
//! forgotten and frames stay queued for the next poll. Should the client go
//! in the instant between that check and the answer, the frames go back to
//! the front of the queue. Once an answer is handed to hyper it is as good
//! as written (so it is in ASP.NET Core, which consumes what it wrote even
//! when the write fails): no server can tell bytes that reach a socket the
//! client is closing from bytes it reads.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::time::Instant;

use super::{Ended, Kick, Outbox, Payload, PollReply, PollRequest, PollingEnds, Session};

/// Frames per poll response.
const BATCH_FRAMES: usize = 1024;

/// How long an ended connection still answers its client: ASP.NET Core's
/// default `DisconnectTimeout`.
pub(crate) const ENDED_KEPT: Duration = Duration::from_secs(15);

/// What is left of a Long Polling connection once its session ended: the
/// client's next poll learns that it is over. Run it with [`Ending::run`]
/// before the token is forgotten.
#[derive(Debug)]
pub(crate) struct Ending {
    /// The connection's ends, while the client may still ask.
    ends: Option<PollingEnds>,
    /// The last frames (the Close) when no poll was waiting for them.
    undelivered: Option<Bytes>,
}

impl Ending {
    /// Nothing left to answer: DELETE, or a 204 already told the client.
    fn over() -> Ending {
        Ending { ends: None, undelivered: None }
    }

    /// Answers the client until it has learnt the end, DELETEs, or `window`
    /// passes: a poll gets what was left to send (200), then 204; a POST
    /// gets 404 (nobody reads it any more).
    pub(crate) async fn run(self, window: Duration) {
        let Some(mut ends) = self.ends else { return };
        ends.inbound.close();
        let mut undelivered = self.undelivered;
        let deadline = tokio::time::sleep(window);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                biased;
                _ = ends.stop.cancelled() => return,
                poll = ends.polls.recv() => {
                    let Some(poll) = poll else { return };
                    match undelivered.take() {
                        // A client that went away before the answer did not
                        // get it: the next poll does.
                        Some(body) => undelivered = answer(poll, body).err(),
                        None => {
                            if poll.reply.send(PollReply::Gone).is_ok() {
                                return;
                            }
                        }
                    }
                }
                _ = &mut deadline => return,
            }
        }
    }
}

/// Runs one Long Polling connection until DELETE, a session end, or a kick
/// (a handshake that does not arrive within `handshake_timeout` is one);
/// returns how it ended and what its client still has to learn.
pub(crate) async fn serve_long_polling<S: Session>(
    session: &mut S,
    outbox: &Outbox,
    mut ends: PollingEnds,
    poll_timeout: Duration,
    handshake_timeout: Duration,
) -> (Ended, Ending) {
    let handshake = tokio::time::sleep(handshake_timeout);
    tokio::pin!(handshake);
    let mut awaiting_handshake = true;
    let mut waiting: Option<(PollRequest, Instant)> = None;
    // (how it ended, what no poll took, whether the client may still ask)
    let (ended, undelivered, kept) = loop {
        let deadline = waiting.as_ref().map(|(_, d)| *d);
        tokio::select! {
            biased;
            _ = ends.stop.cancelled() => {
                if let Some((poll, _)) = waiting.take() {
                    let _ = poll.reply.send(PollReply::Gone);
                }
                break (Ended::ByClient, None, false);
            }
            _ = &mut handshake, if awaiting_handshake => {
                awaiting_handshake = false;
                if !session.is_open() {
                    outbox.kick(Kick::HandshakeTimeout);
                }
            }
            poll = ends.polls.recv() => {
                let Some(poll) = poll else { break (Ended::ByClient, None, false) };
                session.touch();
                if let Some((old, _)) = waiting.replace((poll, Instant::now() + poll_timeout)) {
                    let _ = old.reply.send(PollReply::Gone);
                }
                outbox.wake();
            }
            data = ends.inbound.recv() => match data {
                Some(data) => super::receive(session, outbox, &data).await,
                None => break (Ended::ByClient, None, false),
            },
            // The waiting poll's client went away (hyper dropped its request):
            // it takes nothing, and what comes goes to the next poll.
            _ = abandoned(&mut waiting) => waiting = None,
            _ = outbox.ready() => {
                if waiting.as_ref().is_some_and(|(poll, _)| poll.reply.is_closed()) {
                    waiting = None;
                }
                let Some((poll, _)) = waiting.take() else {
                    if outbox.is_closed() {
                        // Nobody polls: what is left, the Close last, waits
                        // for the next poll.
                        let (frames, end) = super::closing_frames(session, outbox.take(usize::MAX));
                        let body = (!frames.is_empty()).then(|| join(&frames));
                        break (end.unwrap_or(Ended::BySession), body, true);
                    }
                    continue;
                };
                let batch = outbox.take(BATCH_FRAMES);
                let (frames, end) = super::closing_frames(session, batch);
                if frames.is_empty() {
                    match end {
                        // Ended with nothing to say: the 204 tells the client.
                        Some(end) => {
                            let _ = poll.reply.send(PollReply::Gone);
                            break (end, None, false);
                        }
                        None => {
                            waiting = Some((poll, deadline.unwrap_or_else(Instant::now)));
                            continue;
                        }
                    }
                }
                let body = join(&frames);
                match (answer(poll, body), end) {
                    // The Close went out in this reply; the next poll learns the end.
                    (Ok(()), Some(end)) => break (end, None, true),
                    (Ok(()), None) => session.touch(),
                    // The client went away in the instant since the check:
                    // the next poll gets the last frames (the Close among them)...
                    (Err(body), Some(end)) => break (end, Some(body), true),
                    // ...or everything, in order, from the queue's front.
                    (Err(_), None) => outbox.put_back(frames),
                }
                if !outbox.is_empty() {
                    outbox.wake();
                }
            }
            _ = sleep_until_opt(deadline) => {
                if let Some((poll, _)) = waiting.take() {
                    session.touch();
                    let _ = poll.reply.send(PollReply::Data(Bytes::new()));
                }
            }
        }
    };
    // A server that is shutting down has closed its listener: no poll can
    // come for what is left, so it is not kept (nor is the shutdown held up).
    let kept = kept && ended != Ended::Kicked(Kick::ServerShutdown);
    let ending = if kept { Ending { ends: Some(ends), undelivered } } else { Ending::over() };
    (ended, ending)
}

/// Answers `poll` with `body`; gives the body back when the poll's client
/// is gone (hyper dropped its request), so that nothing is lost.
fn answer(poll: PollRequest, body: Bytes) -> Result<(), Bytes> {
    match poll.reply.send(PollReply::Data(body)) {
        Ok(()) => Ok(()),
        Err(PollReply::Data(body)) => Err(body),
        Err(PollReply::Gone) => Ok(()),
    }
}

/// Resolves when the waiting poll's client has gone away (never without a
/// waiting poll). Cancel-safe: it only watches the reply channel.
async fn abandoned(waiting: &mut Option<(PollRequest, Instant)>) {
    match waiting {
        Some((poll, _)) => poll.reply.closed().await,
        None => std::future::pending().await,
    }
}

/// One poll response body: the frames back to back.
fn join(frames: &[Payload]) -> Bytes {
    let mut body = BytesMut::with_capacity(frames.iter().map(|f| f.len()).sum());
    for f in frames {
        body.put_slice(f.as_bytes());
    }
    body.freeze()
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
