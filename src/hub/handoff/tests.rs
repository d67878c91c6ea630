use tokio::sync::Notify;
use tokio_util::task::TaskTracker;

use super::*;
use crate::hub::testkit::{kit_with_handoff, Kit, MemoryStore, NoReplay, CHAT};

fn snapshot() -> SessionSnapshot {
    SessionSnapshot {
        hub: "chat".into(),
        connection_id: "c-resumed".into(),
        protocol: "json".into(),
        user_id: None,
        groups: vec!["r".into()],
        next_seq: 1,
        frames: Vec::new(),
        incoming: (1, 0, 0),
        positions: Vec::new(),
    }
}

/// A kit whose store holds `snapshot()` for any token, and whose replay
/// of the missed events waits until the returned `Notify` is told.
fn holding_a_snapshot() -> (Kit, Arc<Notify>) {
    let release = Arc::new(Notify::new());
    let handoff = Handoff {
        store: Arc::new(MemoryStore { snapshot: Some(snapshot()).into(), ..MemoryStore::default() }),
        catch_up: Arc::new(NoReplay { held: Some(release.clone()) }),
    };
    (kit_with_handoff(&[], handoff), release)
}

/// The session of token `tok` is parked for its client's next resume, and
/// ends (out of the registry) when that never comes.
async fn parked_then_ended(kit: &Kit) {
    assert!(kit.hubs.parked.holds_resumable("tok"), "parked for the client's next resume");
    for session in kit.hubs.parked.expired(Duration::ZERO) {
        session.finish(crate::transport::Ended::ByClient).await;
    }
    assert!(kit.hubs.registry.is_empty(), "ended when its client never came back");
}

/// The resume's request goes away (hyper drops it: its client gave up)
/// while the takeover, the session already in fan-out, waits on Redis for
/// the missed events. The session must end up owned: parked for the
/// client's next resume, and ended when that never comes. It stayed in the
/// registry, in its groups, with nobody to end it.
#[tokio::test]
async fn a_session_whose_resume_went_away_mid_takeover_is_parked_not_left_registered() {
    let (kit, release) = holding_a_snapshot();
    let tasks = TaskTracker::new();
    let resume = {
        let (hubs, tasks) = (kit.hubs.clone(), tasks.clone());
        tokio::spawn(async move { take_over(&hubs, &tasks, "tok", CHAT, &Identity::default()).await.is_some() })
    };
    while kit.hubs.registry.is_empty() {
        tokio::task::yield_now().await;
    }
    resume.abort();
    assert!(resume.await.is_err_and(|e| e.is_cancelled()), "the request went away mid-takeover");
    release.notify_one();
    tasks.close();
    tasks.wait().await;
    parked_then_ended(&kit).await;
}

/// The takeover's task sends the session in the instant hyper drops the
/// resume's request (its client's EOF read in the same wake-up): the send
/// succeeded, so the task does not keep the session, and the request is
/// never polled again to receive it. The session must still end up owned
/// (parked, then ended), not dropped with the channel, registered.
#[tokio::test]
async fn a_session_sent_to_a_resume_dropped_before_it_took_it_is_parked_not_left_registered() {
    let (kit, release) = holding_a_snapshot();
    let tasks = TaskTracker::new();
    let identity = Identity::default();
    let mut resume = Box::pin(take_over(&kit.hubs, &tasks, "tok", CHAT, &identity));
    // Polled once, as hyper polls the request: the takeover's task starts.
    std::future::poll_fn(|cx| {
        assert!(resume.as_mut().poll(cx).is_pending(), "the takeover waits on its task");
        std::task::Poll::Ready(())
    })
    .await;
    while kit.hubs.registry.is_empty() {
        tokio::task::yield_now().await;
    }
    release.notify_one();
    tasks.close();
    tasks.wait().await;
    assert_eq!(kit.hubs.registry.len(), 1, "sent to the request, which has not taken it yet");
    drop(resume);
    tasks.wait().await;
    parked_then_ended(&kit).await;
}
