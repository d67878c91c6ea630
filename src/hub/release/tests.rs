use std::sync::Arc;

use serde_json::json;

use super::release;
use crate::fanout::cut_channel;
use crate::hub::handoff::Handoff;
use crate::hub::testkit::{invoke, kit_with_handoff_and_cuts, user, MemoryStore, NoReplay, CHAT};
use crate::sync::Unpoisoned;
use crate::transport::Session;

/// Another instance asks for a stateful session still served here, and its
/// old socket's end is read while the session is being taken out of fan-out
/// (the pipeline has not run the cut yet): the transport, not kicked yet,
/// parks the session. It must still be handed off (the asker was told it is
/// coming), and nothing may stay behind: it stayed parked out of fan-out
/// (its end then left no room: with Redis, presence refreshed its user for
/// the life of the process) and its cut stayed in `handing_off` for good.
#[tokio::test]
async fn a_served_session_parked_while_it_was_being_released_is_handed_off_all_the_same() {
    let store = Arc::new(MemoryStore::default());
    let handoff = Handoff { store: store.clone(), catch_up: Arc::new(NoReplay::default()) };
    let (cuts, mut pipeline) = cut_channel();
    let k = kit_with_handoff_and_cuts(&[], handoff, cuts);
    let (token, mut s) = k.negotiated(true, user("u1", "Ann")).await;
    s.receive(&invoke("1", "JoinRoom", json!(["r"]))).await;
    let ticket = k.hubs.parked.serving(&token, CHAT, s.conn(), s.outbox());

    let asked = {
        let (hubs, token) = (k.hubs.clone(), token.clone());
        tokio::spawn(async move { release(&hubs, &token).await })
    };
    let cut = pipeline.recv().await.expect("the release asks the pipeline for a cut");
    // The old socket's end, read now: not kicked yet, so the transport parks it.
    assert_eq!(s.outbox().kicked(), None);
    let conn = s.conn();
    k.hubs.parked.park(token.clone(), s);
    k.hubs.parked.served(&token, ticket);
    (cut.then)();
    tokio::time::timeout(std::time::Duration::from_secs(5), asked)
        .await
        .expect("the release ends")
        .expect("the release does not panic");

    assert_eq!(*store.saved.locked(), std::slice::from_ref(&token), "handed off: the asker gets its snapshot");
    assert!(k.hubs.parked.take_any(&token).is_none(), "not left parked out of fan-out");
    assert!(k.hubs.take_handing_off(conn).is_none(), "no cut left behind");
    assert!(k.hubs.registry.is_empty());
    assert!(!k.hubs.tokens.knows(&token), "its token released here");
}
