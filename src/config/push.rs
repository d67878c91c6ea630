//! Browser push settings (FR-009): the VAPID key and contact, and the
//! limits of the Web Push sender. Push is off until a key is given.

use std::path::PathBuf;
use std::time::Duration;

use super::validate::Reader;

/// The `SIDECAR_VAPID_*` and `SIDECAR_PUSH_*` settings.
#[derive(Debug, Clone)]
pub struct PushConfig {
    /// The key and contact; `None` turns browser push off.
    pub vapid: Option<VapidConfig>,
    /// How long a push service keeps an undelivered message
    /// (`push_ttl_seconds`, the `TTL` header of RFC 8030). Default 86400.
    pub ttl: Duration,
    /// Notifications waiting for the sender; past it they are dropped and
    /// counted (`push_queue_capacity`). Default 1024.
    pub queue_capacity: usize,
    /// Subscriptions one user may register (`push_max_subscriptions_per_user`). Default 10.
    pub max_subscriptions_per_user: usize,
    /// When set, endpoints must be on these hosts or their subdomains
    /// (`push_endpoint_hosts`, comma-separated). Default: any https host.
    pub endpoint_hosts: Vec<String>,
    /// Also accept `http://127.0.0.1` endpoints, for a local push service in
    /// tests (`push_allow_loopback`). Default false.
    pub allow_loopback: bool,
}

/// Who the sidecar says it is to push services (RFC 8292).
#[derive(Debug, Clone)]
pub struct VapidConfig {
    /// The P-256 private key: PEM (SEC 1 or PKCS #8) or the raw 32 octets
    /// in base64url (`vapid_private_key_file`).
    pub private_key_file: PathBuf,
    /// A `mailto:` or `https:` contact for the push service's operator (`vapid_subject`).
    pub subject: String,
}

pub(super) fn read(r: &mut Reader<'_>) -> PushConfig {
    let key: Option<PathBuf> = r.opt("vapid_private_key_file");
    let subject: Option<String> = r.opt("vapid_subject");
    let vapid = match (key, subject) {
        (Some(private_key_file), Some(subject)) => {
            if !(subject.starts_with("mailto:") && subject.len() > 7
                || subject.starts_with("https://") && subject.len() > 8)
            {
                r.error("vapid_subject", format!("'{subject}' must be a mailto: or https:// contact (RFC 8292)"));
            }
            if let Err(e) = std::fs::File::open(&private_key_file) {
                r.error("vapid_private_key_file", format!("cannot read {}: {e}", private_key_file.display()));
            }
            Some(VapidConfig { private_key_file, subject })
        }
        (None, None) => None,
        (Some(_), None) => {
            r.error("vapid_subject", "must be set with SIDECAR_VAPID_PRIVATE_KEY_FILE (a mailto: or https:// contact)");
            None
        }
        (None, Some(_)) => {
            r.error(
                "vapid_private_key_file",
                "must be set with SIDECAR_VAPID_SUBJECT (the key push requests are signed with)",
            );
            None
        }
    };
    let endpoint_hosts: Vec<String> = r
        .list("push_endpoint_hosts", &[])
        .into_iter()
        .map(|h| h.trim_start_matches('.').to_ascii_lowercase())
        .collect();
    let ttl_seconds: u64 = r.get("push_ttl_seconds", 86_400);
    if ttl_seconds > 28 * 86_400 {
        r.error("push_ttl_seconds", format!("must be at most {} (28 days), got {ttl_seconds}", 28 * 86_400));
    }
    PushConfig {
        vapid,
        ttl: Duration::from_secs(ttl_seconds),
        queue_capacity: r.count("push_queue_capacity", 1024, 1, 1 << 20),
        max_subscriptions_per_user: r.count("push_max_subscriptions_per_user", 10, 1, 1000),
        endpoint_hosts,
        allow_loopback: r.get("push_allow_loopback", false),
    }
}
