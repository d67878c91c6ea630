use super::super::hub_options::DEFAULT_HISTORY;
use super::*;

#[test]
fn the_shipped_files_load() {
    for file in ["protocol/routes.toml", "protocol/routes-discussion.toml"] {
        let table = RouteTable::load(Path::new(file)).expect(file);
        assert!(!table.hubs.is_empty());
    }
    let table = RouteTable::load(Path::new("protocol/routes.toml")).expect("default");
    let chat = table.hub_by_path("/hubs/chat").expect("chat hub");
    assert_eq!(chat.method("joinroom").map(|m| m.action), Some(Action::Join));
    let r = table.route("typing_start").expect("typing route");
    assert_eq!((r.method.as_str(), r.delivery), ("UserTyping", Delivery::Coalesce));
    assert_eq!(table.route("notification").map(|r| r.stream.as_str()), Some("events:notification"));
    assert!(table.routes().all(|r| r.arguments == Arguments::default()), "the Support-Center keeps [payload]");
    let discussion = RouteTable::load(Path::new("protocol/routes-discussion.toml")).expect("discussion");
    let args = |ev: &str| -> Vec<String> {
        discussion.route(ev).expect(ev).arguments.sources().iter().map(ToString::to_string).collect()
    };
    // Every event a discussion client receives carries its position
    // (CONTRACT section 15); the typing roster is a state, not an event.
    for ev in ["response_posted", "response_edited", "response_deleted", "analysis_updated"] {
        assert_eq!(args(ev), ["room_id", "payload", "position"], "{ev}: missed updates");
    }
    for ev in ["user_joined", "user_left", "participant_count"] {
        assert_eq!(args(ev), ["room_id", "payload", "position"], "{ev}: missed updates");
    }
    let posted = discussion.route("response_posted").expect("response_posted");
    assert_eq!(posted.delivery, Delivery::Batch);
    assert_eq!(posted.ends_typing.as_ref().map(|p| p.as_str()), Some("author_id"));
    for ev in ["typing_started", "typing_stopped"] {
        let r = discussion.route(ev).expect(ev);
        assert_eq!((r.method.as_str(), r.delivery), ("TypingRoster", Delivery::Roster), "{ev}");
    }
    let notification = discussion.hub_by_path("/hubs/notification").expect("notification hub").id;
    for ev in ["reply_notification", "mention_notification", "activity_notification", "announcement"] {
        assert_eq!(discussion.route(ev).map(|r| r.hub), Some(notification), "{ev}");
    }
}

#[test]
fn every_routed_discussion_event_has_a_payload_schema() {
    let discussion = RouteTable::load(Path::new("protocol/routes-discussion.toml")).expect("discussion");
    for r in discussion.routes() {
        let schema = format!("protocol/schemas/{}.json", r.event_type);
        assert!(Path::new(&schema).exists(), "{schema} is missing");
    }
}

fn roster_route(event_type: &str, extra: &str) -> String {
    format!(
        "[[route]]\nevent_type = \"{event_type}\"\nhub = \"chat\"\nmethod = \"TypingRoster\"\nstream = \"s\"\ndelivery = \"roster\"\n{extra}\n"
    )
}

#[test]
fn the_roster_routes_of_a_hub_share_one_method_and_name_only_roster_fields() {
    let typing =
        "[[hub.method]]\nname = \"SendTyping\"\naction = \"typing\"\nstart_event = \"ts\"\nstop_event = \"tp\"\n\n";
    let fits = format!(
        "{ONE_HUB}{typing}{}{}",
        roster_route("ts", "arguments = [\"room_id\", \"payload.count\", \"payload.users\"]"),
        roster_route("tp", "arguments = [\"room_id\", \"payload.count\", \"payload.users\"]"),
    );
    let t = RouteTable::parse("r.toml", &fits).expect("the roster has these fields, not the typing payload's");
    assert_eq!(t.route("tp").map(|r| r.delivery), Some(Delivery::Roster));
    // Lines: ONE_HUB 5, typing method 6, each route 7 (6 keys, the arguments, a blank line).
    let other_method = format!(
        "{ONE_HUB}{typing}{}{}",
        roster_route("ts", "arguments = [\"room_id\", \"payload.count\", \"payload.users\"]"),
        roster_route("tp", "arguments = [\"room_id\", \"payload.count\", \"payload.users\"]")
            .replace("TypingRoster", "Typing"),
    );
    let err = RouteTable::parse("r.toml", &other_method).unwrap_err().to_string();
    assert_eq!(
        err,
        "r.toml:19: route 'tp': the roster routes of a hub share one method and arguments (route 'ts' sends TypingRoster with arguments [\"room_id\", \"payload.count\", \"payload.users\"])"
    );
    let typing_field = fits.replace("\"payload.count\"", "\"payload.is_typing\"");
    let err = RouteTable::parse("r.toml", &typing_field).unwrap_err().to_string();
    assert!(
        err.starts_with(
            "r.toml:12: route 'ts': delivery \"roster\" sends the roster: argument payload.is_typing names"
        ),
        "{err}"
    );
}

#[test]
fn ends_typing_names_a_payload_field_and_batch_parses() {
    let text = format!("{ONE_HUB}{}", route("posted", "ends_typing = \"payload.author.id\""));
    let text = text.replace("\"immediate\"", "\"batch\"");
    let t = RouteTable::parse("r.toml", &text).expect("valid");
    let r = t.route("posted").expect("route");
    assert_eq!((r.delivery, r.ends_typing.as_ref().map(|p| p.as_str())), (Delivery::Batch, Some("author.id")));
    let err = RouteTable::parse("r.toml", &text.replace("payload.author.id", "room_id")).unwrap_err().to_string();
    assert_eq!(
        err,
        "r.toml:12: route 'posted': ends_typing 'room_id' must name a payload field, e.g. \"payload.author_id\""
    );
    let err = RouteTable::parse("r.toml", &text.replace("payload.author.id", "author_id")).unwrap_err().to_string();
    assert!(err.starts_with("r.toml:12: route 'posted': ends_typing: 'author_id' is not an argument source"), "{err}");
    let roster = format!("{ONE_HUB}{}", roster_route("ts", "ends_typing = \"payload.user_id\""));
    let err = RouteTable::parse("r.toml", &roster).unwrap_err().to_string();
    assert_eq!(err, "r.toml:6: route 'ts': ends_typing belongs to a route that is not a roster");
}

#[test]
fn an_unknown_hub_names_the_line() {
    let text = "[[hub]]\nname = \"a\"\npath = \"/a\"\n\n[[route]]\nevent_type = \"x\"\nhub = \"b\"\nmethod = \"X\"\nstream = \"s\"\ndelivery = \"immediate\"\n";
    let err = RouteTable::parse("r.toml", text).unwrap_err().to_string();
    assert_eq!(err, "r.toml:5: route 'x': no hub named 'b'");
}

#[test]
fn authorize_policies() {
    let text = "[[hub]]\nname = \"a\"\npath = \"/a\"\n[[hub.method]]\nname = \"J\"\naction = \"join\"\nauthorize = { policy = \"claim\", roles = [\"admin\"] }\n[[hub.method]]\nname = \"K\"\naction = \"join\"\nauthorize = { policy = \"webhook\", url = \"http://127.0.0.1:9/ok\" }\n";
    let t = RouteTable::parse("r.toml", text).expect("valid");
    let hub = &t.hubs[0];
    assert_eq!(
        hub.method("j").map(|m| m.authorize.clone()),
        Some(Authorize::Claim { claim: "rooms".into(), roles_claim: "roles".into(), roles: vec!["admin".into()] })
    );
    assert!(matches!(hub.method("k").map(|m| &m.authorize), Some(Authorize::Webhook { .. })));
    let bad = text.replace("http://127.0.0.1:9/ok", "ftp://x");
    let err = RouteTable::parse("r.toml", &bad).unwrap_err().to_string();
    assert!(err.starts_with("r.toml:8: method 'K': authorize webhook url"), "{err}");
}

#[test]
fn a_bad_value_names_the_line() {
    let text = "[[hub]]\nname = \"a\"\npath = \"/a\"\n[[hub.method]]\nname = \"J\"\naction = \"dance\"\n";
    let err = RouteTable::parse("r.toml", text).unwrap_err().to_string();
    assert!(err.starts_with("r.toml:6: unknown variant `dance`"), "{err}");
}

const ONE_HUB: &str = "[[hub]]\nname = \"chat\"\npath = \"/chat\"\npresence = true\n\n";

fn route(event_type: &str, arguments: &str) -> String {
    format!(
        "[[route]]\nevent_type = \"{event_type}\"\nhub = \"chat\"\nmethod = \"M\"\nstream = \"s\"\ndelivery = \"immediate\"\n{arguments}\n"
    )
}

#[test]
fn arguments_default_to_the_payload_and_parse_in_order() {
    let text = format!(
        "{ONE_HUB}{}{}",
        route("a", ""),
        route("b", "arguments = [\"room_id\", \"payload.sender.name\", \"metadata.trace_id\"]")
    );
    let t = RouteTable::parse("r.toml", &text).expect("valid");
    assert_eq!(t.route("a").map(|r| r.arguments.clone()), Some(Arguments::default()));
    let b: Vec<String> = t.route("b").expect("b").arguments.sources().iter().map(ToString::to_string).collect();
    assert_eq!(b, ["room_id", "payload.sender.name", "metadata.trace_id"]);
    let none = RouteTable::parse("r.toml", &format!("{ONE_HUB}{}", route("c", "arguments = []"))).expect("valid");
    assert!(none.route("c").expect("c").arguments.sources().is_empty(), "a method may take no arguments");
}

#[test]
fn a_bad_argument_names_its_own_line_and_the_reason() {
    // ONE_HUB is 5 lines, the route's fields 6: `arguments = [` is line 12.
    let text = format!("{ONE_HUB}{}", route("a", "arguments = [\n  \"room_id\",\n  \"roomId\",\n]"));
    let err = RouteTable::parse("r.toml", &text).unwrap_err().to_string();
    assert!(err.starts_with("r.toml:14: route 'a': argument 2: 'roomId' is not an argument source (payload,"), "{err}");
    let text = format!("{ONE_HUB}{}", route("a", "arguments = [\"payload.sender..name\"]"));
    let err = RouteTable::parse("r.toml", &text).unwrap_err().to_string();
    assert!(err.starts_with("r.toml:12: route 'a': argument 1: 'payload.sender..name': a field path is"), "{err}");
    let text = format!("{ONE_HUB}{}", route("a", "arguments = \"payload\""));
    let err = RouteTable::parse("r.toml", &text).unwrap_err().to_string();
    assert!(err.starts_with("r.toml:12: invalid type"), "{err}");
}

#[test]
fn the_sidecars_own_events_must_fit_their_routes_arguments() {
    let typing = "[[hub.method]]\nname = \"SendTyping\"\naction = \"typing\"\n\n";
    let fits = format!(
        "{ONE_HUB}{typing}{}{}{}",
        route("typing_start", "arguments = [\"room_id\", \"payload\"]"),
        route("typing_stop", "arguments = [\"payload.user_id\", \"payload.is_typing\"]"),
        route("user_joined", "arguments = [\"payload.room_id\", \"payload.username\"]"),
    );
    RouteTable::parse("r.toml", &fits).expect("the typing and presence payloads have these fields");
    let typing_lacks = fits.replace("\"payload.is_typing\"", "\"payload.request_id\"");
    let err = RouteTable::parse("r.toml", &typing_lacks).unwrap_err().to_string();
    assert!(err.starts_with("r.toml:17: route 'typing_stop': argument payload.request_id names a field the sidecar's own events of this type lack (their payload is user_id, username, is_typing)"), "{err}");
    let presence_lacks = fits.replace("\"payload.room_id\"", "\"payload.room_id.name\"");
    let err = RouteTable::parse("r.toml", &presence_lacks).unwrap_err().to_string();
    assert!(err.starts_with("r.toml:24: route 'user_joined': argument payload.room_id.name names"), "{err}");
    // On a hub without presence the sidecar makes no user_joined: the publisher's payload rules.
    let no_presence = presence_lacks.replace("presence = true", "presence = false");
    RouteTable::parse("r.toml", &no_presence).expect("valid");
}

#[test]
fn a_route_opts_into_browser_push_and_hubs_offer_the_push_methods() {
    let methods = "[[hub.method]]\nname = \"RegisterPush\"\naction = \"register_push\"\n\n[[hub.method]]\nname = \"UnregisterPush\"\naction = \"unregister_push\"\n\n[[hub.method]]\nname = \"PushPublicKey\"\naction = \"push_public_key\"\n\n";
    let text = format!("{ONE_HUB}{methods}{}{}", route("reply", "push = true"), route("typing", ""));
    let t = RouteTable::parse("r.toml", &text).expect("valid");
    assert!(t.route("reply").expect("reply").push);
    assert!(!t.route("typing").expect("typing").push, "push is off unless asked for");
    let hub = &t.hubs[0];
    assert_eq!(hub.method("registerpush").map(|m| m.action), Some(Action::RegisterPush));
    assert_eq!(hub.method("UnregisterPush").map(|m| m.action), Some(Action::UnregisterPush));
    assert_eq!(hub.method("pushpublickey").map(|m| m.action), Some(Action::PushPublicKey));
    let err = RouteTable::parse("r.toml", &format!("{ONE_HUB}{}", route("reply", "push = \"yes\""))).unwrap_err();
    assert!(err.to_string().starts_with("r.toml:12: invalid type"), "{err}");
}

#[test]
fn the_discussion_keys_are_off_by_default_and_set_by_the_shipped_discussion_file() {
    let default = RouteTable::load(Path::new("protocol/routes.toml")).expect("default");
    assert!(default.hubs.iter().all(|h| h.options == HubOptions::default()), "the Support-Center is unchanged");
    let t = RouteTable::load(Path::new("protocol/routes-discussion.toml")).expect("discussion");
    let hub = t.hub_by_path("/hubs/discussion").expect("hub");
    let secs = std::time::Duration::from_secs;
    assert_eq!(
        hub.options,
        HubOptions { history: Some(secs(86400)), inactivity_timeout: Some(secs(1800)), away_after: Some(secs(300)) }
    );
    assert!(hub.method("JoinDiscussion").is_some_and(|m| m.history));
    let posted: Vec<String> =
        t.route("response_posted").expect("route").arguments.sources().iter().map(ToString::to_string).collect();
    assert_eq!(posted, ["room_id", "payload", "position"]);
}

#[test]
fn the_discussion_keys_are_checked_against_the_routes() {
    let join = "[[hub.method]]\nname = \"Join\"\naction = \"join\"\nhistory = true\n\n";
    let history = route("posted", "arguments = [\"payload\", \"position\"]");
    let ok = format!("{ONE_HUB}{join}{history}");
    let t = RouteTable::parse("r.toml", &ok).expect("valid");
    assert_eq!(t.hubs[0].options.history, Some(DEFAULT_HISTORY), "24 h unless history_seconds says otherwise");
    let fails = |text: String, expected: &str| {
        let err = RouteTable::parse("r.toml", &text).unwrap_err().to_string();
        assert!(err.contains(expected), "{err}");
    };
    fails(
        format!("{ONE_HUB}{join}"),
        "method 'Join': history = true needs a route of this hub whose arguments carry position",
    );
    fails(
        ok.replace("presence = true", "presence = true\nhistory_seconds = 0"),
        "r.toml:1: hub 'chat': history_seconds must be at least 1",
    );
    fails(
        ok.replace("presence = true", "presence = false\naway_after_seconds = 60"),
        "hub 'chat': away_after_seconds needs presence = true",
    );
    fails(
        format!("{ONE_HUB}{}", route("typing", "arguments = [\"position\"]").replace("immediate", "coalesce")),
        "route 'typing': position belongs to routes with delivery = \"immediate\"",
    );
    fails(
        format!("{ok}{}", route("edited", "arguments = [\"position\"]").replace("stream = \"s\"", "stream = \"t\"")),
        "the routes carrying position come from one stream",
    );
    fails(
        format!("{ONE_HUB}history_seconds = 60\n{}", route("a", ""))
            .replace("presence = true\n\nhistory", "presence = true\nhistory"),
        "history_seconds needs a route of this hub whose arguments carry position",
    );
    fails(ok.replace("action = \"join\"", "action = \"leave\""), "method 'Join': history belongs to action \"join\"");
}
