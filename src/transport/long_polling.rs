//! Long Polling: each GET waits until frames are queued (or the poll times
//! out) and carries them all; client messages come up in POSTs. One poll
//! is outstanding at a time: a newer poll answers the older one with 204.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::time::Instant;

use super::{End, Ended, Outbox, PollReply, PollRequest, PollingEnds, Session};

/// Frames per poll response.
const BATCH_FRAMES: usize = 1024;

/// Runs one Long Polling connection until DELETE, a session end, or a kick.
pub async fn serve_long_polling<S: Session>(
    session: &mut S,
    outbox: &Outbox,
    mut ends: PollingEnds,
    poll_timeout: Duration,
) -> Ended {
    let mut waiting: Option<(PollRequest, Instant)> = None;
    loop {
        let deadline = waiting.as_ref().map(|(_, d)| *d);
        tokio::select! {
            biased;
            _ = ends.stop.cancelled() => {
                if let Some((poll, _)) = waiting.take() {
                    let _ = poll.reply.send(PollReply::Gone);
                }
                return Ended::ByClient;
            }
            poll = ends.polls.recv() => {
                let Some(poll) = poll else { return Ended::ByClient };
                session.touch();
                if let Some((old, _)) = waiting.replace((poll, Instant::now() + poll_timeout)) {
                    let _ = old.reply.send(PollReply::Gone);
                }
                outbox.wake();
            }
            data = ends.inbound.recv() => match data {
                Some(data) => super::receive(session, outbox, &data).await,
                None => return Ended::ByClient,
            },
            _ = outbox.ready() => {
                let Some((poll, _)) = waiting.take() else {
                    if outbox.is_closed() && outbox.is_empty() {
                        // Nobody polls; the client is gone or will see 404.
                        return match outbox.take(0).end {
                            Some(End::Kicked(k)) => Ended::Kicked(k),
                            _ => Ended::BySession,
                        };
                    }
                    continue;
                };
                let batch = outbox.take(BATCH_FRAMES);
                let (frames, end) = super::closing_frames(session, batch);
                if frames.is_empty() {
                    match end {
                        Some(end) => {
                            let _ = poll.reply.send(PollReply::Gone);
                            return end;
                        }
                        None => {
                            waiting = Some((poll, deadline.unwrap_or_else(Instant::now)));
                            continue;
                        }
                    }
                }
                session.touch();
                let mut body = BytesMut::with_capacity(frames.iter().map(|f| f.len()).sum());
                for f in &frames {
                    body.put_slice(f.as_bytes());
                }
                let _ = poll.reply.send(PollReply::Data(body.freeze()));
                // The Close went out in this reply: the connection is over (a
                // later poll finds no connection, as in ASP.NET Core).
                if let Some(end) = end {
                    return end;
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
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
