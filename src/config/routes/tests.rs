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
    for ev in ["typing_started", "typing_stopped", "user_joined", "user_left"] {
        let args: Vec<String> =
            discussion.route(ev).expect(ev).arguments.sources().iter().map(ToString::to_string).collect();
        assert_eq!(args, ["room_id", "payload"], "{ev}");
    }
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
