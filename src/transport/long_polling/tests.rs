//! Long Polling with a fake session and tokio's clock paused: polls wait,
//! time out, replace each other; POSTs, DELETE, kicks and the ending.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::*;
use crate::transport::fake::{FakeSession, Seen};
use crate::transport::{polling_channel, PollingHandle};

const POLL_TIMEOUT: Duration = Duration::from_secs(20);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

struct Conn {
    handle: PollingHandle,
    outbox: Arc<Outbox>,
    seen: Seen,
    task: JoinHandle<(Ended, Ending)>,
}

fn start(open: bool) -> Conn {
    let (handle, ends) = polling_channel(true);
    let mut session = FakeSession::new(open);
    let (outbox, seen) = (session.outbox.clone(), session.seen.clone());
    let task = tokio::spawn(async move {
        let outbox = session.outbox.clone();
        serve_long_polling(&mut session, &outbox, ends, POLL_TIMEOUT, HANDSHAKE_TIMEOUT).await
    });
    Conn { handle, outbox, seen, task }
}

impl Conn {
    async fn poll(&self) -> oneshot::Receiver<PollReply> {
        let (reply, answer) = oneshot::channel();
        self.handle.polls.as_ref().expect("long polling").send(PollRequest { reply }).await.expect("running");
        settle().await;
        answer
    }

    async fn post(&self, body: &'static [u8]) {
        self.handle.inbound.send(Bytes::from_static(body)).await.expect("running");
        settle().await;
    }

    fn push(&self, text: &str) {
        self.outbox.push_critical(Payload::text(text.into())).expect("room");
    }
}

/// Lets the connection task run (the clock does not move).
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

async fn sleep_s(s: u64) {
    tokio::time::sleep(Duration::from_secs(s)).await;
}

fn data(reply: Result<PollReply, oneshot::error::TryRecvError>) -> String {
    match reply {
        Ok(PollReply::Data(b)) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("expected 200 with data, got {other:?}"),
    }
}

fn gone(reply: Result<PollReply, oneshot::error::TryRecvError>) -> bool {
    matches!(reply, Ok(PollReply::Gone))
}

#[tokio::test(start_paused = true)]
async fn a_poll_waits_until_frames_are_queued_and_carries_them_all() {
    let c = start(true);
    let mut answer = c.poll().await;
    sleep_s(5).await;
    assert!(matches!(answer.try_recv(), Err(oneshot::error::TryRecvError::Empty)), "nothing to send yet");
    c.push("a");
    c.push("b");
    settle().await;
    assert_eq!(data(answer.try_recv()), "ab");
}

#[tokio::test(start_paused = true)]
async fn frames_queued_before_the_poll_are_answered_at_once() {
    let c = start(true);
    c.push("early");
    settle().await;
    let mut answer = c.poll().await;
    assert_eq!(data(answer.try_recv()), "early");
    assert!(c.seen.touched() >= 1, "a poll shows the client is there");
}

#[tokio::test(start_paused = true)]
async fn a_poll_with_nothing_to_send_is_answered_empty_after_the_timeout() {
    let c = start(true);
    let mut answer = c.poll().await;
    sleep_s(19).await;
    assert!(answer.try_recv().is_err(), "still waiting at 19 s");
    sleep_s(2).await;
    assert_eq!(data(answer.try_recv()), "");
    // The next poll waits afresh.
    let mut next = c.poll().await;
    c.push("x");
    settle().await;
    assert_eq!(data(next.try_recv()), "x");
}

#[tokio::test(start_paused = true)]
async fn a_newer_poll_answers_the_older_one_with_204() {
    let c = start(true);
    let mut first = c.poll().await;
    let mut second = c.poll().await;
    assert!(gone(first.try_recv()));
    c.push("x");
    settle().await;
    assert_eq!(data(second.try_recv()), "x");
    assert!(!c.task.is_finished(), "the connection goes on");
}

/// ASP.NET Core: a poll whose request was aborted consumes nothing.
#[tokio::test(start_paused = true)]
async fn a_poll_whose_client_went_away_takes_nothing() {
    let c = start(true);
    let answer = c.poll().await;
    drop(answer); // hyper drops the request when its client closes the socket
    settle().await;
    c.push("a");
    c.push("b");
    settle().await;
    let mut next = c.poll().await;
    assert_eq!(data(next.try_recv()), "ab", "queued for the next poll, in order");
    assert!(!c.task.is_finished());
}

#[tokio::test(start_paused = true)]
async fn a_poll_that_goes_away_as_frames_come_takes_nothing() {
    let c = start(true);
    let answer = c.poll().await;
    // No turn for the task between the two: both are ready at once.
    drop(answer);
    c.push("a");
    settle().await;
    c.push("b");
    let mut next = c.poll().await;
    assert_eq!(data(next.try_recv()), "ab");
}

#[tokio::test(start_paused = true)]
async fn a_close_whose_poll_went_away_waits_for_the_next_poll() {
    let mut c = start(true);
    let answer = c.poll().await;
    drop(answer);
    c.outbox.kick(Kick::ClientTimeout);
    let (ended, ending) = (&mut c.task).await.expect("ends");
    assert_eq!(ended, Ended::Kicked(Kick::ClientTimeout));
    assert_eq!(ending.undelivered.as_deref(), Some(&b"kicked:ClientTimeout"[..]));
    let kept = tokio::spawn(ending.run(ENDED_KEPT));
    // A poll that is gone before its answer does not take the Close either.
    let (reply, dead) = oneshot::channel();
    drop(dead);
    c.handle.polls.as_ref().expect("long polling").send(PollRequest { reply }).await.expect("kept");
    settle().await;
    let mut next = c.poll().await;
    assert_eq!(data(next.try_recv()), "kicked:ClientTimeout");
    let mut last = c.poll().await;
    assert!(gone(last.try_recv()));
    kept.await.expect("done");
}

#[tokio::test(start_paused = true)]
async fn delete_ends_the_connection_and_answers_the_waiting_poll() {
    let c = start(true);
    let mut answer = c.poll().await;
    c.handle.stop.cancel();
    settle().await;
    assert!(gone(answer.try_recv()));
    let (ended, ending) = c.task.await.expect("ends");
    assert_eq!(ended, Ended::ByClient);
    assert!(ending.ends.is_none(), "nothing left for a client that said goodbye");
}

#[tokio::test(start_paused = true)]
async fn posts_reach_the_session_in_order() {
    let c = start(false);
    c.post(b"open").await;
    c.post(b"one").await;
    c.post(b"two").await;
    assert_eq!(c.seen.received(), ["open", "one", "two"]);
}

#[tokio::test(start_paused = true)]
async fn a_session_that_stops_sends_its_last_frames_then_the_next_poll_learns_the_end() {
    let mut c = start(true);
    let mut answer = c.poll().await;
    c.post(b"bye").await;
    assert_eq!(data(answer.try_recv()), "close");
    let (ended, ending) = (&mut c.task).await.expect("ends");
    assert_eq!(ended, Ended::BySession);
    let kept = tokio::spawn(ending.run(ENDED_KEPT));
    settle().await;
    assert!(c.handle.inbound.send(Bytes::from_static(b"late")).await.is_err(), "POSTs are refused now");
    let mut next = c.poll().await;
    assert!(gone(next.try_recv()), "204: it is over");
    kept.await.expect("the ending is done once the client knows");
}

#[tokio::test(start_paused = true)]
async fn a_close_nobody_polled_for_waits_for_the_next_poll() {
    let mut c = start(true);
    c.push("last");
    c.outbox.kick(Kick::SlowConsumer);
    let (ended, ending) = (&mut c.task).await.expect("ends");
    assert_eq!(ended, Ended::Kicked(Kick::SlowConsumer));
    let kept = tokio::spawn(ending.run(ENDED_KEPT));
    let mut first = c.poll().await;
    assert_eq!(data(first.try_recv()), "kicked:SlowConsumer", "a slow consumer's queue is dropped; the Close stays");
    let mut second = c.poll().await;
    assert!(gone(second.try_recv()));
    kept.await.expect("done");
}

#[tokio::test(start_paused = true)]
async fn an_ending_is_forgotten_after_its_window() {
    let c = start(true);
    c.post(b"bye").await; // nobody polls for the Close
    let (_, ending) = c.task.await.expect("ends");
    assert_eq!(ending.undelivered.as_deref(), Some(&b"close"[..]));
    let kept = tokio::spawn(ending.run(ENDED_KEPT));
    sleep_s(14).await;
    assert!(!kept.is_finished());
    sleep_s(2).await;
    assert!(kept.is_finished(), "forgotten after {ENDED_KEPT:?}");
}

#[tokio::test(start_paused = true)]
async fn a_handshake_that_does_not_come_in_time_ends_the_connection() {
    let c = start(false);
    sleep_s(16).await;
    assert!(c.task.is_finished());
    let (ended, ending) = c.task.await.expect("ends");
    assert_eq!(ended, Ended::Kicked(Kick::HandshakeTimeout));
    assert_eq!(ending.undelivered.as_deref(), Some(&b"kicked:HandshakeTimeout"[..]));
}

#[tokio::test(start_paused = true)]
async fn an_opened_session_has_no_handshake_deadline() {
    let c = start(false);
    c.post(b"open").await;
    let mut answer = c.poll().await;
    sleep_s(16).await;
    assert!(answer.try_recv().is_err(), "the poll still waits");
    assert_eq!(c.outbox.kicked(), None);
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_keeps_nothing_for_a_later_poll() {
    let c = start(true);
    let mut answer = c.poll().await;
    c.outbox.kick(Kick::ServerShutdown);
    settle().await;
    assert_eq!(data(answer.try_recv()), "kicked:ServerShutdown");
    let (ended, ending) = c.task.await.expect("ends");
    assert_eq!(ended, Ended::Kicked(Kick::ServerShutdown));
    assert!(ending.ends.is_none(), "the listener is closed: no poll can come");
}

#[tokio::test(start_paused = true)]
async fn the_connection_ends_when_its_handle_is_dropped() {
    let c = start(true);
    drop(c.handle);
    let (ended, _) = tokio::time::timeout(Duration::from_secs(1), c.task).await.expect("ends").expect("no panic");
    assert_eq!(ended, Ended::ByClient);
}
