//! Parses each setting from text, collecting *every* error, each starting
//! with the setting's name, so one start-up shows all that is wrong.

use std::str::FromStr;
use std::time::Duration;

/// The longest duration any setting may name.
const MAX_SECONDS: u64 = 365 * 24 * 3600;

use super::source::{env_name, RawSettings};

/// Reads typed settings out of [`RawSettings`] and remembers what failed.
pub(super) struct Reader<'a> {
    raw: &'a RawSettings,
    errors: Vec<String>,
    known: Vec<&'static str>,
}

impl<'a> Reader<'a> {
    /// Starts reading `raw`.
    pub(super) fn new(raw: &'a RawSettings) -> Self {
        Reader { raw, errors: Vec::new(), known: Vec::new() }
    }

    /// The setting parsed as `T`, or `default` when absent.
    pub(super) fn get<T: FromStr>(&mut self, name: &'static str, default: T) -> T
    where
        T::Err: std::fmt::Display,
    {
        self.opt(name).unwrap_or(default)
    }

    /// The setting parsed as `T`, or `None` when absent or empty.
    pub(super) fn opt<T: FromStr>(&mut self, name: &'static str) -> Option<T>
    where
        T::Err: std::fmt::Display,
    {
        self.known.push(name);
        let text = self.raw.get(name)?.trim();
        if text.is_empty() {
            return None;
        }
        match text.parse() {
            Ok(v) => Some(v),
            Err(e) => {
                self.error(name, format!("'{text}' is not valid: {e}"));
                None
            }
        }
    }

    /// A whole number of seconds that must be at least `min`.
    /// At most a year: a longer timer is a typo, and `Instant + Duration`
    /// of an absurd value would panic where the timer is armed.
    pub(super) fn seconds(&mut self, name: &'static str, default: u64, min: u64) -> Duration {
        let v = self.get(name, default);
        if v < min {
            self.error(name, format!("must be at least {min} (seconds), got {v}"));
        } else if v > MAX_SECONDS {
            self.error(name, format!("must be at most {MAX_SECONDS} (seconds, a year), got {v}"));
            return Duration::from_secs(default);
        }
        Duration::from_secs(v)
    }

    /// A whole number of milliseconds that must be at least `min`.
    /// At most a year, as for [`Self::seconds`].
    pub(super) fn millis(&mut self, name: &'static str, default: u64, min: u64) -> Duration {
        let v = self.get(name, default);
        if v < min {
            self.error(name, format!("must be at least {min} (milliseconds), got {v}"));
        } else if v > MAX_SECONDS * 1000 {
            self.error(name, format!("must be at most {} (milliseconds, a year), got {v}", MAX_SECONDS * 1000));
            return Duration::from_millis(default);
        }
        Duration::from_millis(v)
    }

    /// A count that must lie in `min..=max`.
    pub(super) fn count(&mut self, name: &'static str, default: usize, min: usize, max: usize) -> usize {
        let v = self.get(name, default);
        if v < min || v > max {
            self.error(name, format!("must be between {min} and {max}, got {v}"));
        }
        v
    }

    /// A comma-separated list; empty items are dropped.
    pub(super) fn list(&mut self, name: &'static str, default: &[&str]) -> Vec<String> {
        self.known.push(name);
        match self.raw.get(name) {
            Some(text) => text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect(),
            None => default.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Records an error about a setting.
    pub(super) fn error(&mut self, name: &str, message: impl std::fmt::Display) {
        self.errors.push(format!("{}: {message}", env_name(name)));
    }

    /// Names given in the settings file that no setting reads: a typo there
    /// is an error. Unknown `SIDECAR_*` environment variables are only
    /// returned as warnings, because Kubernetes injects `<SERVICE>_PORT`-style
    /// variables for every Service, and a Service named `sidecar` would
    /// otherwise stop the pod from starting.
    pub(super) fn finish(mut self) -> (Vec<String>, Vec<String>) {
        let mut warnings = Vec::new();
        for (name, origin) in self.raw.names() {
            if self.known.contains(&name) {
                continue;
            }
            match origin {
                super::source::Origin::File => {
                    self.errors.push(format!("{name}: unknown setting in the settings file"))
                }
                super::source::Origin::Env => warnings.push(format!("{}: unknown setting, ignored", env_name(name))),
            }
        }
        (self.errors, warnings)
    }
}
