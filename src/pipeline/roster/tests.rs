use super::*;

const WINDOW: Duration = Duration::from_millis(500);
const TIMEOUT: Duration = Duration::from_secs(5);

fn key() -> RoomKey {
    (0, "d-1".into())
}

fn ms(t0: Instant, n: u64) -> Instant {
    t0 + Duration::from_millis(n)
}

/// The user ids a roster lists, and its count.
fn listed(e: &Envelope) -> (Vec<String>, u64) {
    let users = e.payload.object()["users"].as_array().expect("users");
    let ids = users.iter().map(|u| u["user_id"].as_str().expect("user_id").to_string()).collect();
    (ids, e.payload.object()["count"].as_u64().expect("count"))
}

fn start(r: &mut Rosters, user: &str, at: Instant) -> Option<Envelope> {
    r.observe(key(), user, &user.to_uppercase(), true, at)
}

fn stop(r: &mut Rosters, user: &str, at: Instant) -> Option<Envelope> {
    r.observe(key(), user, &user.to_uppercase(), false, at)
}

#[test]
fn the_first_change_goes_at_once_later_ones_collapse_into_the_windows_end() {
    let t0 = Instant::now();
    let mut r = Rosters::new(WINDOW, TIMEOUT);
    let first = start(&mut r, "ann", t0).expect("the first change is sent at once");
    assert_eq!(listed(&first), (vec!["ann".to_string()], 1));
    assert_eq!(first.payload.object()["room_id"], "d-1");
    assert_eq!(first.payload.object()["users"][0]["username"], "ANN");
    assert_eq!(first.event_type, ROSTER_EVENT_TYPE);
    assert!(start(&mut r, "bob", ms(t0, 100)).is_none(), "inside the window");
    assert!(start(&mut r, "cid", ms(t0, 200)).is_none());
    assert!(stop(&mut r, "cid", ms(t0, 300)).is_none());
    assert!(r.due(ms(t0, 499)).is_empty());
    assert_eq!(r.next_deadline(), Some(ms(t0, 500)));
    let end = r.due(ms(t0, 500));
    assert_eq!(end.len(), 1, "one roster at the window's end");
    assert_eq!(end[0].0, 0, "the hub");
    assert_eq!(listed(&end[0].1), (vec!["ann".to_string(), "bob".to_string()], 2), "the state at the end");
    // That send opened a window too: the next change waits for it.
    assert!(stop(&mut r, "ann", ms(t0, 600)).is_none());
    let next = r.due(ms(t0, 1000));
    assert_eq!(listed(&next[0].1), (vec!["bob".to_string()], 1));
}

#[test]
fn keystrokes_and_other_tabs_of_a_typist_change_nothing() {
    let t0 = Instant::now();
    let mut r = Rosters::new(WINDOW, TIMEOUT);
    assert!(start(&mut r, "ann", t0).is_some());
    // The same user from a second tab, and more keystrokes, after the window.
    for n in [600, 700, 1500, 1999] {
        assert!(start(&mut r, "ann", ms(t0, n)).is_none(), "{n} ms");
    }
    assert!(r.due(ms(t0, 1999)).is_empty(), "nothing changed: nothing sent");
    // A change that is undone inside a window sends nothing either.
    assert!(start(&mut r, "bob", ms(t0, 1000)).is_some());
    assert!(stop(&mut r, "bob", ms(t0, 1100)).is_none());
    assert!(start(&mut r, "bob", ms(t0, 1200)).is_none());
    assert!(r.due(ms(t0, 1500)).is_empty(), "the state at the end is what was sent");
}

#[test]
fn an_unchanged_roster_goes_out_again_after_repeat_after_for_clients_that_joined_since() {
    let t0 = Instant::now();
    let mut r = Rosters::new(WINDOW, TIMEOUT);
    assert!(start(&mut r, "ann", t0).is_some());
    assert!(start(&mut r, "ann", ms(t0, 1999)).is_none(), "sent 2 s ago at most: not again");
    let again = start(&mut r, "ann", ms(t0, 2000)).expect("a keystroke 2 s after the last roster repeats it");
    assert_eq!(listed(&again), (vec!["ann".to_string()], 1));
    // Once per REPEAT_AFTER, counted from the repeat.
    assert!(start(&mut r, "ann", ms(t0, 2100)).is_none());
    assert!(start(&mut r, "ann", ms(t0, 3999)).is_none());
    assert!(start(&mut r, "ann", ms(t0, 4000)).is_some());
    // A repeat opens a window like any roster: a change right after waits for its end.
    assert!(start(&mut r, "bob", ms(t0, 4100)).is_none());
    let end = r.due(ms(t0, 4500));
    assert_eq!(listed(&end[0].1), (vec!["ann".to_string(), "bob".to_string()], 2));
    // No typist left: nothing to repeat.
    assert!(stop(&mut r, "ann", ms(t0, 7000)).is_some());
    assert!(stop(&mut r, "bob", ms(t0, 7000)).is_none());
    assert_eq!(listed(&r.due(ms(t0, 7500))[0].1), (vec![], 0));
    assert!(r.due(ms(t0, 20_000)).is_empty());
    assert!(stop(&mut r, "ann", ms(t0, 20_000)).is_none());
    assert_eq!(r.rooms(), 0);
}

#[test]
fn a_quiet_typist_leaves_after_the_timeout_from_their_last_start() {
    let t0 = Instant::now();
    let mut r = Rosters::new(WINDOW, TIMEOUT);
    start(&mut r, "ann", t0);
    start(&mut r, "ann", ms(t0, 4000));
    assert!(r.due(ms(t0, 5000)).is_empty(), "the keystroke at 4 s moved the timeout");
    assert!(r.due(ms(t0, 8999)).is_empty());
    let gone = r.due(ms(t0, 9000));
    assert_eq!(gone.len(), 1);
    assert_eq!(listed(&gone[0].1), (vec![], 0));
    assert!(r.due(ms(t0, 20_000)).is_empty());
    assert_eq!(r.rooms(), 0, "a quiet room is forgotten");
    assert_eq!(r.next_deadline(), None);
}

#[test]
fn a_stop_or_a_response_removes_at_once() {
    let t0 = Instant::now();
    let mut r = Rosters::new(WINDOW, TIMEOUT);
    start(&mut r, "ann", t0);
    let stopped = stop(&mut r, "ann", ms(t0, 700)).expect("outside the window: at once");
    assert_eq!(listed(&stopped), (vec![], 0));
    assert!(stop(&mut r, "ann", ms(t0, 800)).is_none(), "a second stop changes nothing");
    assert!(stop(&mut r, "nobody", ms(t0, 800)).is_none());
    assert!(r.due(ms(t0, 10_000)).is_empty(), "no timeout is left behind");
}

#[test]
fn rooms_are_separate_and_each_has_its_own_window() {
    let t0 = Instant::now();
    let mut r = Rosters::new(WINDOW, TIMEOUT);
    assert!(r.observe((0, "a".into()), "ann", "Ann", true, t0).is_some());
    assert!(r.observe((0, "b".into()), "ann", "Ann", true, t0).is_some(), "another room");
    assert!(r.observe((1, "a".into()), "ann", "Ann", true, t0).is_some(), "another hub");
}

#[test]
fn a_room_sends_at_most_one_roster_per_window_under_any_load() {
    let t0 = Instant::now();
    let mut r = Rosters::new(WINDOW, TIMEOUT);
    let mut frames = 0;
    // Twenty users flickering every 7 ms for 10 s.
    for i in 0..1430u64 {
        let now = ms(t0, 7 * i);
        frames += r.due(now).len();
        let user = format!("u{}", i % 20);
        frames += usize::from(r.observe(key(), &user, &user, i % 3 != 0, now).is_some());
    }
    frames += r.due(ms(t0, 30_000)).len();
    // 10 s of windows, the first at once, and the last state after the flood.
    assert!(frames <= 10_000 / 500 + 2, "{frames} rosters");
    assert!(frames >= 10, "{frames} rosters: the load changed the roster all along");
}

#[test]
fn a_roster_lists_at_most_max_listed_users_and_counts_them_all() {
    let t0 = Instant::now();
    let mut r = Rosters::new(WINDOW, TIMEOUT);
    for i in 0..MAX_LISTED + 10 {
        start(&mut r, &format!("u{i}"), t0);
    }
    let sent = r.due(ms(t0, 500));
    let (ids, count) = listed(&sent[0].1);
    assert_eq!((ids.len(), count), (MAX_LISTED, (MAX_LISTED + 10) as u64));
    assert_eq!(ids[0], "u0", "the first to start come first");
}

#[test]
fn a_new_name_for_a_typist_is_a_change() {
    let t0 = Instant::now();
    let mut r = Rosters::new(WINDOW, TIMEOUT);
    r.observe(key(), "ann", "Ann", true, t0);
    let renamed = r.observe(key(), "ann", "Ann B.", true, ms(t0, 600)).expect("a change");
    assert_eq!(renamed.payload.object()["users"][0]["username"], "Ann B.");
}
