//! Where settings come from: a TOML file, then `SIDECAR_*` environment
//! variables on top. Both become one flat map of `name -> text`, so every
//! setting is parsed, defaulted and reported in one place.

use std::collections::BTreeMap;

/// The prefix of every environment setting.
pub(super) const ENV_PREFIX: &str = "SIDECAR_";

/// Settings as text, keyed by their lower-case name without the prefix
/// (`SIDECAR_REDIS_URL` and the TOML key `redis_url` are the same setting).
#[derive(Debug, Default, Clone)]
pub struct RawSettings {
    values: BTreeMap<String, Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    value: String,
    origin: Origin,
}

/// Where a setting's text came from, for error messages and the unknown-key rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The TOML file named by `SIDECAR_CONFIG`.
    File,
    /// A `SIDECAR_*` environment variable.
    Env,
}

impl RawSettings {
    /// Reads the TOML text of a settings file: a flat table of `name = value`.
    /// Arrays become comma-separated text, as in the environment.
    pub fn from_toml(text: &str) -> Result<RawSettings, String> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
        let mut raw = RawSettings::default();
        for (key, value) in table {
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Array(items) => items
                    .iter()
                    .map(|v| match v {
                        toml::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                toml::Value::Table(_) => return Err(format!("{key}: nested tables are not settings")),
                other => other.to_string(),
            };
            raw.values.insert(key, Entry { value: text, origin: Origin::File });
        }
        Ok(raw)
    }

    /// Lays `SIDECAR_*` variables over what is here. `vars` is the process
    /// environment in production and a plain list in tests.
    pub fn overlay_env<I, K, V>(&mut self, vars: I)
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Into<String>,
    {
        for (key, value) in vars {
            if let Some(name) = key.as_ref().strip_prefix(ENV_PREFIX) {
                if name == "CONFIG" {
                    continue;
                }
                self.values.insert(name.to_ascii_lowercase(), Entry { value: value.into(), origin: Origin::Env });
            }
        }
    }

    /// The text of a setting, if it was given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(|e| e.value.as_str())
    }

    /// Every setting given, with its origin.
    pub fn names(&self) -> impl Iterator<Item = (&str, Origin)> {
        self.values.iter().map(|(k, e)| (k.as_str(), e.origin))
    }
}

/// The display name of a setting: its environment variable.
pub(super) fn env_name(name: &str) -> String {
    format!("{ENV_PREFIX}{}", name.to_ascii_uppercase())
}
