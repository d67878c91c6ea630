use super::*;

fn config(file: &str, env: &[(&str, &str)]) -> Result<Config, Vec<String>> {
    let mut raw = RawSettings::from_toml(file).expect("valid toml");
    raw.overlay_env(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Config::from_raw(&raw)
}

#[test]
fn defaults_need_no_settings() {
    let c = config("", &[("SIDECAR_INSTANCE_ID", "a")]).expect("defaults are valid");
    assert_eq!(c.server.listen.port(), 8080);
    assert_eq!(c.server.admin_listen.port(), 9090);
    assert!(c.redis.is_none(), "no URL means the in-process bus");
    assert_eq!(c.streams, DEFAULT_STREAMS);
    assert_eq!(c.server.max_message_bytes, 32 * 1024);
}

#[test]
fn env_overrides_the_file() {
    let c = config(
        "redis_url = \"redis://a:1\"\nread_count = 5",
        &[("SIDECAR_READ_COUNT", "7"), ("SIDECAR_INSTANCE_ID", "x")],
    )
    .expect("valid");
    let redis = c.redis.expect("redis configured");
    assert_eq!(redis.read_count, 7);
    assert_eq!(redis.group_name("x"), "signalr-sidecar:x");
    assert_eq!(redis.read_window, Duration::ZERO, "no read window unless asked for");
}

#[test]
fn the_read_window_is_bounded_to_a_second() {
    let c = config("redis_url = \"redis://a:1\"", &[("SIDECAR_READ_WINDOW_MS", "5"), ("SIDECAR_INSTANCE_ID", "x")]);
    assert_eq!(c.expect("valid").redis.expect("redis").read_window, Duration::from_millis(5));
    let errors = config("", &[("SIDECAR_READ_WINDOW_MS", "1001")]).expect_err("too long");
    assert_eq!(errors, vec!["SIDECAR_READ_WINDOW_MS: must be between 0 and 1000, got 1001".to_string()]);
}

#[test]
fn every_error_is_reported_by_name() {
    let errors = config(
        "listen = \"nope\"\ntypo_setting = 1",
        &[("SIDECAR_READ_COUNT", "0"), ("SIDECAR_REDIS_URL", "http://x")],
    )
    .expect_err("invalid");
    let all = errors.join("\n");
    assert!(all.contains("SIDECAR_LISTEN: 'nope' is not valid"), "{all}");
    assert!(all.contains("SIDECAR_READ_COUNT: must be between 1 and 10000"), "{all}");
    assert!(all.contains("SIDECAR_REDIS_URL: 'http://x' must start with"), "{all}");
    assert!(all.contains("typo_setting: unknown setting"), "{all}");
    assert_eq!(errors.len(), 4, "{all}");
}

#[test]
fn unknown_env_is_a_warning_not_an_error() {
    let c = config("", &[("SIDECAR_SERVICE_HOST", "10.0.0.1"), ("SIDECAR_INSTANCE_ID", "a")]).expect("valid");
    assert_eq!(c.warnings, vec!["SIDECAR_SERVICE_HOST: unknown setting, ignored".to_string()]);
}

#[test]
fn tls_needs_both_files_or_neither() {
    let c = config("", &[("SIDECAR_INSTANCE_ID", "a")]).expect("valid");
    assert!(c.server.tls.is_none(), "no files means plain HTTP");
    let c = config(
        "tls_cert_file = \"/etc/tls/tls.crt\"",
        &[("SIDECAR_TLS_KEY_FILE", "/etc/tls/tls.key"), ("SIDECAR_INSTANCE_ID", "a")],
    )
    .expect("valid");
    let tls = c.server.tls.expect("both files set");
    assert_eq!(tls.cert_file, PathBuf::from("/etc/tls/tls.crt"));
    assert_eq!(tls.key_file, PathBuf::from("/etc/tls/tls.key"));
    let errors = config("", &[("SIDECAR_TLS_CERT_FILE", "/etc/tls/tls.crt")]).expect_err("key missing");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("SIDECAR_TLS_KEY_FILE: must be set with SIDECAR_TLS_CERT_FILE"), "{errors:?}");
    let errors = config("tls_key_file = \"/k\"", &[]).expect_err("certificate missing");
    assert!(errors[0].starts_with("SIDECAR_TLS_CERT_FILE: must be set with SIDECAR_TLS_KEY_FILE"), "{errors:?}");
}

#[test]
fn the_spool_is_bounded_and_may_be_off() {
    let redis = |env: &[(&str, &str)]| {
        let mut all = vec![("SIDECAR_INSTANCE_ID", "a"), ("SIDECAR_REDIS_URL", "redis://a:1")];
        all.extend_from_slice(env);
        config("", &all)
    };
    assert_eq!(redis(&[]).expect("valid").redis.expect("redis").spool_max_events, 10_000);
    assert_eq!(redis(&[("SIDECAR_SPOOL_MAX_EVENTS", "0")]).expect("valid").redis.expect("redis").spool_max_events, 0);
    let errors = redis(&[("SIDECAR_SPOOL_MAX_EVENTS", "2000000")]).expect_err("too large");
    assert_eq!(errors, vec!["SIDECAR_SPOOL_MAX_EVENTS: must be between 0 and 1000000, got 2000000".to_string()]);
}

#[test]
fn durations_have_a_ceiling_named_by_the_setting() {
    let errors = config(
        "",
        &[
            ("SIDECAR_TYPING_TIMEOUT_SECONDS", "18446744073709551615"),
            ("SIDECAR_COALESCE_WINDOW_MS", "99999999999999"),
            ("SIDECAR_INSTANCE_ID", "a"),
        ],
    )
    .expect_err("a timer of 584 billion years is a typo");
    let all = errors.join("\n");
    assert!(all.contains("SIDECAR_TYPING_TIMEOUT_SECONDS: must be at most 31536000"), "{all}");
    assert!(all.contains("SIDECAR_COALESCE_WINDOW_MS: must be at most"), "{all}");
}

#[test]
fn browser_push_is_off_without_a_key_and_its_settings_are_checked_by_name() {
    let c = config("", &[("SIDECAR_INSTANCE_ID", "a")]).expect("valid");
    assert!(c.push.vapid.is_none());
    assert_eq!(c.push.ttl, Duration::from_secs(86_400));
    assert!(!c.push.allow_loopback);

    let key = std::env::temp_dir().join(format!("vapid-config-test-{}.pem", std::process::id()));
    std::fs::write(&key, "any text: the key itself is read at start").expect("write");
    let path = key.display().to_string();
    let c = config(
        "",
        &[
            ("SIDECAR_INSTANCE_ID", "a"),
            ("SIDECAR_VAPID_PRIVATE_KEY_FILE", &path),
            ("SIDECAR_VAPID_SUBJECT", "mailto:ops@example.com"),
            ("SIDECAR_PUSH_ENDPOINT_HOSTS", ".googleapis.com, push.services.mozilla.com"),
        ],
    )
    .expect("valid");
    assert_eq!(c.push.vapid.expect("on").subject, "mailto:ops@example.com");
    assert_eq!(c.push.endpoint_hosts, ["googleapis.com", "push.services.mozilla.com"]);

    let only_key = config("", &[("SIDECAR_INSTANCE_ID", "a"), ("SIDECAR_VAPID_PRIVATE_KEY_FILE", &path)]).unwrap_err();
    assert!(only_key[0].starts_with("SIDECAR_VAPID_SUBJECT: must be set with"), "{only_key:?}");
    let only_subject =
        config("", &[("SIDECAR_INSTANCE_ID", "a"), ("SIDECAR_VAPID_SUBJECT", "mailto:a@b")]).unwrap_err();
    assert!(only_subject[0].starts_with("SIDECAR_VAPID_PRIVATE_KEY_FILE: must be set with"), "{only_subject:?}");
    let errors = config(
        "",
        &[
            ("SIDECAR_INSTANCE_ID", "a"),
            ("SIDECAR_VAPID_PRIVATE_KEY_FILE", "/nonexistent/vapid.pem"),
            ("SIDECAR_VAPID_SUBJECT", "ops@example.com"),
            ("SIDECAR_PUSH_TTL_SECONDS", "99999999"),
        ],
    )
    .unwrap_err()
    .join("\n");
    assert!(errors.contains("SIDECAR_VAPID_SUBJECT: 'ops@example.com' must be a mailto: or https://"), "{errors}");
    assert!(errors.contains("SIDECAR_VAPID_PRIVATE_KEY_FILE: cannot read /nonexistent/vapid.pem"), "{errors}");
    assert!(errors.contains("SIDECAR_PUSH_TTL_SECONDS: must be at most"), "{errors}");
    let _ = std::fs::remove_file(&key);
}

fn errors_of(env: &[(&str, &str)]) -> Vec<String> {
    let mut all = vec![("SIDECAR_INSTANCE_ID", "a")];
    all.extend_from_slice(env);
    config("", &all).expect_err("invalid")
}

#[test]
fn a_transport_message_may_carry_many_hub_messages() {
    let c = config("", &[("SIDECAR_INSTANCE_ID", "a")]).expect("defaults are valid");
    assert_eq!(c.server.max_transport_message_bytes, 2 << 20);
    let big = config("", &[("SIDECAR_INSTANCE_ID", "a"), ("SIDECAR_MAX_MESSAGE_BYTES", "4194304")]).expect("valid");
    assert_eq!(big.server.max_transport_message_bytes, 4 << 20, "never below one hub message");
    let set = config("", &[("SIDECAR_INSTANCE_ID", "a"), ("SIDECAR_MAX_TRANSPORT_MESSAGE_BYTES", "65536")]);
    assert_eq!(set.expect("valid").server.max_transport_message_bytes, 65536);
    assert_eq!(
        errors_of(&[("SIDECAR_MAX_TRANSPORT_MESSAGE_BYTES", "1024")]),
        ["SIDECAR_MAX_TRANSPORT_MESSAGE_BYTES: must be at least SIDECAR_MAX_MESSAGE_BYTES: a transport message carries whole hub messages"]
    );
}

#[test]
fn timings_that_contradict_each_other_are_refused_by_name() {
    assert_eq!(
        errors_of(&[("SIDECAR_CLIENT_TIMEOUT_SECONDS", "15"), ("SIDECAR_LONG_POLL_TIMEOUT_SECONDS", "5")]),
        ["SIDECAR_CLIENT_TIMEOUT_SECONDS: must be longer than SIDECAR_KEEPALIVE_SECONDS"]
    );
    assert_eq!(
        errors_of(&[("SIDECAR_LONG_POLL_TIMEOUT_SECONDS", "30")]),
        ["SIDECAR_LONG_POLL_TIMEOUT_SECONDS: must be shorter than SIDECAR_CLIENT_TIMEOUT_SECONDS"]
    );
    assert_eq!(
        errors_of(&[("SIDECAR_DRAIN_WINDOW_SECONDS", "25")]),
        ["SIDECAR_SHUTDOWN_TIMEOUT_SECONDS: must be longer than SIDECAR_DRAIN_WINDOW_SECONDS"]
    );
}

#[test]
fn the_long_poll_timeout_follows_a_short_client_timeout() {
    let c = config("", &[("SIDECAR_INSTANCE_ID", "a")]).expect("valid");
    assert_eq!(c.server.long_poll_timeout, Duration::from_secs(20));
    let c = config(
        "",
        &[("SIDECAR_INSTANCE_ID", "a"), ("SIDECAR_KEEPALIVE_SECONDS", "2"), ("SIDECAR_CLIENT_TIMEOUT_SECONDS", "6")],
    )
    .expect("valid");
    assert_eq!(c.server.long_poll_timeout, Duration::from_secs(4), "two thirds of the client timeout");
}

#[test]
fn the_admin_port_is_never_the_client_port() {
    let errors = errors_of(&[("SIDECAR_LISTEN", "127.0.0.1:7000"), ("SIDECAR_ADMIN_LISTEN", "127.0.0.1:7000")]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("SIDECAR_ADMIN_LISTEN: must differ from SIDECAR_LISTEN"), "{errors:?}");
}

#[test]
fn authentication_settings_are_checked() {
    assert_eq!(
        errors_of(&[("SIDECAR_AUTH", "jwt")]),
        ["SIDECAR_AUTH: jwt needs SIDECAR_JWT_SECRET, SIDECAR_JWT_PUBLIC_KEY_FILE or SIDECAR_JWKS_FILE"]
    );
    assert_eq!(errors_of(&[("SIDECAR_AUTH", "basic")]), ["SIDECAR_AUTH: 'basic' must be none or jwt"]);
    let c = config("", &[("SIDECAR_INSTANCE_ID", "a"), ("SIDECAR_AUTH", "jwt"), ("SIDECAR_JWT_SECRET", "s")])
        .expect("valid");
    let AuthConfig::Jwt(jwt) = c.auth else { panic!("jwt configured") };
    assert_eq!((jwt.secret.as_deref(), jwt.user_claim.as_str(), jwt.leeway_seconds), (Some("s"), "sub", 30));
}

#[test]
fn values_that_do_not_fit_name_the_setting_and_the_value() {
    let errors = errors_of(&[
        ("SIDECAR_STATEFUL_RECONNECT", "maybe"),
        ("SIDECAR_KEEPALIVE_SECONDS", "0"),
        ("SIDECAR_COALESCE_WINDOW_MS", "0"),
        ("SIDECAR_LOG_FORMAT", "xml"),
        ("SIDECAR_MAX_MESSAGE_BYTES", "100"),
        ("SIDECAR_LOG", "debu"),
    ]);
    let all = errors.join("\n");
    assert!(all.contains("SIDECAR_STATEFUL_RECONNECT: 'maybe' is not valid"), "{all}");
    assert!(all.contains("SIDECAR_KEEPALIVE_SECONDS: must be at least 1 (seconds), got 0"), "{all}");
    assert!(all.contains("SIDECAR_COALESCE_WINDOW_MS: must be at least 1 (milliseconds), got 0"), "{all}");
    assert!(all.contains("SIDECAR_LOG_FORMAT: 'xml' must be text or json"), "{all}");
    assert!(all.contains("SIDECAR_MAX_MESSAGE_BYTES: must be between 256 and 16777216, got 100"), "{all}");
    assert!(all.contains("SIDECAR_LOG: 'debu' is no level (did you mean 'debug'?)"), "{all}");
    assert!(errors.iter().all(|e| e.starts_with("SIDECAR_")), "{all}");
}

#[test]
fn an_instance_id_with_spaces_or_a_colon_is_refused() {
    let errors = config("", &[("SIDECAR_INSTANCE_ID", "a b")]).expect_err("spaces");
    assert_eq!(errors, ["SIDECAR_INSTANCE_ID: 'a b' must be non-empty without spaces or ':'"]);
    let errors = config("", &[("SIDECAR_INSTANCE_ID", "staging:a")]).expect_err("a colon");
    assert_eq!(errors, ["SIDECAR_INSTANCE_ID: 'staging:a' must be non-empty without spaces or ':'"]);
}

#[test]
fn lists_are_comma_separated_and_trimmed() {
    let c = config(
        "",
        &[
            ("SIDECAR_INSTANCE_ID", "a"),
            ("SIDECAR_STREAMS", " s1, ,s2 "),
            ("SIDECAR_CORS_ORIGINS", "https://a.example,https://b.example"),
            ("SIDECAR_REDIS_URL", "redis://n1:7000, redis://n2:7000"),
            ("SIDECAR_CLIENT_IP_HEADER", "X-Forwarded-For"),
        ],
    )
    .expect("valid");
    assert_eq!(c.streams, ["s1", "s2"]);
    assert_eq!(c.server.cors_origins, ["https://a.example", "https://b.example"]);
    assert_eq!(c.redis.expect("redis").urls, ["redis://n1:7000", "redis://n2:7000"]);
    assert_eq!(c.server.client_ip_header.as_deref(), Some("x-forwarded-for"), "header names compare lower-case");
    assert_eq!(errors_of(&[("SIDECAR_STREAMS", " , ")]), ["SIDECAR_STREAMS: names no stream"]);
}

#[test]
fn the_settings_file_takes_arrays_and_numbers_but_no_tables() {
    let c = config("streams = [\"x\", \"y\"]\nkeepalive_seconds = 5\ninstance_id = \"f\"", &[]).expect("valid");
    assert_eq!(
        (c.streams, c.server.keepalive, c.instance_id),
        (vec!["x".into(), "y".into()], Duration::from_secs(5), "f".into())
    );
    assert_eq!(
        RawSettings::from_toml("[server]\nlisten = \"x\"").expect_err("a table"),
        "server: nested tables are not settings"
    );
    assert!(RawSettings::from_toml("not toml =").is_err());
}

#[test]
fn sidecar_config_names_the_file_not_a_setting() {
    let mut raw = RawSettings::default();
    raw.overlay_env([("SIDECAR_CONFIG", "/etc/sidecar.toml"), ("SIDECAR_INSTANCE_ID", "a"), ("OTHER", "x")]);
    let c = Config::from_raw(&raw).expect("valid");
    assert!(c.warnings.is_empty(), "neither SIDECAR_CONFIG nor foreign variables are settings: {:?}", c.warnings);
}

#[test]
fn unset_streams_follow_the_routes_and_set_ones_that_leave_a_route_out_are_warned_about() {
    let routes = |file: &str| RouteTable::load(std::path::Path::new(file)).expect("routing file");
    let mut c = config("", &[]).expect("defaults");
    c.fit_streams(&routes("protocol/routes.toml"));
    assert_eq!(c.streams, DEFAULT_STREAMS, "the default file names the four of CONTRACT section 5");
    c.fit_streams(&routes("protocol/routes-discussion.toml"));
    assert_eq!(c.streams, ["events:notification", "events:discussion"]);
    assert!(c.warnings.is_empty());

    let env = [("SIDECAR_STREAMS", "events:discussion"), ("SIDECAR_REDIS_URL", "redis://127.0.0.1:6379")];
    let mut c = config("", &env).expect("valid");
    c.fit_streams(&routes("protocol/routes-discussion.toml"));
    assert_eq!(c.streams, ["events:discussion"], "a set list is kept");
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(c.warnings[0].starts_with("SIDECAR_STREAMS does not name events:notification"), "{:?}", c.warnings);
}

#[test]
fn a_rate_or_burst_of_zero_is_refused_by_name() {
    // A bucket that never refills would lock every client out for good.
    for name in ["RATE_LIMIT_PER_MINUTE", "RATE_LIMIT_BURST", "CONNECTION_RATE_PER_IP", "CONNECTION_BURST_PER_IP"] {
        let setting = format!("SIDECAR_{name}");
        assert_eq!(errors_of(&[(&setting, "0")]), [format!("{setting}: must be between 1 and 4294967295, got 0")]);
    }
}

#[test]
fn origins_and_the_client_ip_header_are_checked() {
    assert!(config("", &[("SIDECAR_CORS_ORIGINS", "*, https://app.example.com, http://127.0.0.1:3000")]).is_ok());
    for bad in ["app.example.com", "https://app.example.com/path", "ftp://x", "https://"] {
        let errors = errors_of(&[("SIDECAR_CORS_ORIGINS", bad)]);
        assert_eq!(
            errors,
            [format!("SIDECAR_CORS_ORIGINS: '{bad}' must be * or an origin like https://app.example.com[:port]")]
        );
    }
    assert!(config("", &[("SIDECAR_CLIENT_IP_HEADER", "X-Forwarded-For")]).is_ok());
    assert_eq!(
        errors_of(&[("SIDECAR_CLIENT_IP_HEADER", "bad header")]),
        ["SIDECAR_CLIENT_IP_HEADER: 'bad header' is not an HTTP header name"]
    );
}

#[test]
fn the_redis_ca_file_is_read_at_start_and_must_hold_a_certificate() {
    let dir = std::env::temp_dir().join(format!("sidecar-ca-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (pem, junk) = (dir.join("ca.pem"), dir.join("junk.pem"));
    std::fs::write(&pem, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").expect("write");
    std::fs::write(&junk, "not a certificate").expect("write");
    let with = |path: &std::path::Path| {
        let ca = path.to_str().expect("utf-8");
        config(
            "",
            &[("SIDECAR_INSTANCE_ID", "a"), ("SIDECAR_REDIS_URL", "rediss://r:6380"), ("SIDECAR_REDIS_CA_FILE", ca)],
        )
    };
    let c = with(&pem).expect("valid");
    assert!(c.redis.and_then(|r| r.ca_pem).as_deref().is_some_and(|b| b.starts_with(b"-----BEGIN CERTIFICATE-----")));
    let errors = with(&junk).expect_err("no certificate");
    assert!(
        errors[0].starts_with("SIDECAR_REDIS_CA_FILE: ") && errors[0].ends_with("holds no PEM certificate"),
        "{errors:?}"
    );
    let errors = with(&dir.join("missing.pem")).expect_err("missing");
    assert!(errors[0].starts_with("SIDECAR_REDIS_CA_FILE: cannot read"), "{errors:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_redis_password_is_never_shown() {
    assert_eq!(redact_url("redis://u:pw@h:6379/3"), "redis://u:***@h:6379/3");
    assert_eq!(redact_url("rediss://:p%40ss@h"), "rediss://:***@h");
    assert_eq!(redact_url("redis://u:p@ss@h:1"), "redis://u:***@h:1");
    assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
    assert_eq!(redact_url("redis://user@h"), "redis://user@h");
    assert_eq!(redact_url("redis://h/0?x=a@b"), "redis://h/0?x=a@b");
    let errors = errors_of(&[("SIDECAR_REDIS_URL", "http://u:secret@h")]);
    assert_eq!(errors, ["SIDECAR_REDIS_URL: 'http://u:***@h' must start with redis:// or rediss://"]);
}

#[test]
fn a_token_key_without_auth_jwt_is_warned_about() {
    // A secret or key given while SIDECAR_AUTH stays `none` checks no token:
    // every client connects anonymously. Said at start, not silently.
    let c = config("", &[("SIDECAR_INSTANCE_ID", "a"), ("SIDECAR_JWT_SECRET", "s"), ("SIDECAR_JWKS_FILE", "/k")])
        .expect("valid");
    assert!(matches!(c.auth, AuthConfig::None));
    assert_eq!(
        c.warnings,
        ["SIDECAR_AUTH: none, so no token is checked and clients connect without one: SIDECAR_JWT_SECRET, \
          SIDECAR_JWKS_FILE unused (set SIDECAR_AUTH=jwt to require a token)"]
    );
    let c = config("", &[("SIDECAR_INSTANCE_ID", "a"), ("SIDECAR_AUTH", "jwt"), ("SIDECAR_JWT_SECRET", "s")])
        .expect("valid");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}
