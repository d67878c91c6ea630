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
