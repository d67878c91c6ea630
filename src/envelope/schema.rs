//! The JSON Schemas of `protocol/schemas/`: `envelope.json` for every
//! event and `<event_type>.json` for the payloads that have one.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use super::payload::Payload;
use super::payload_check::{self, Compiled, Scan};
use super::EnvelopeError;

/// The shipped `protocol/schemas/envelope.json`, to recognise it at load.
fn shipped_envelope() -> Value {
    serde_json::from_str(include_str!("../../protocol/schemas/envelope.json")).unwrap_or(Value::Null)
}

/// A schema file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The directory or a file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file or directory.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not JSON or not a valid JSON Schema.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// Compiled validators, loaded once at start.
pub struct Schemas {
    envelope: jsonschema::Validator,
    /// The envelope schema is the shipped one, whose checks `checks.rs`
    /// makes as code; an operator's own is always run as a schema.
    shipped: bool,
    payloads: HashMap<String, PayloadSchema, ahash::RandomState>,
}

/// One event type's payload schema: as a validator, and as code when it
/// uses only what `payload_check` compiles.
struct PayloadSchema {
    validator: jsonschema::Validator,
    compiled: Option<Compiled>,
}

impl std::fmt::Debug for Schemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schemas").field("payloads", &self.payloads.keys().collect::<Vec<_>>()).finish()
    }
}

impl Schemas {
    /// Loads `envelope.json` (required) and every other `*.json` in `dir`
    /// as the payload schema of the event type named like the file.
    pub fn load(dir: &Path) -> Result<Schemas, SchemaError> {
        let read_err = |path: &Path| {
            let path = path.display().to_string();
            move |source| SchemaError::Read { path, source }
        };
        let mut envelope = None;
        let mut payloads = HashMap::default();
        for entry in std::fs::read_dir(dir).map_err(read_err(dir))? {
            let path = entry.map_err(read_err(dir))?.path();
            let (Some(stem), Some("json")) =
                (path.file_stem().and_then(|s| s.to_str()), path.extension().and_then(|s| s.to_str()))
            else {
                continue;
            };
            let text = std::fs::read_to_string(&path).map_err(read_err(&path))?;
            let invalid = |message: String| SchemaError::Invalid { path: path.display().to_string(), message };
            let schema: Value = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
            let validator = jsonschema::validator_for(&schema).map_err(|e| invalid(e.to_string()))?;
            if stem == "envelope" {
                envelope = Some((validator, schema == shipped_envelope()));
            } else {
                let compiled = Compiled::from_schema(&schema);
                payloads.insert(stem.to_string(), PayloadSchema { validator, compiled });
            }
        }
        let (envelope, shipped) = envelope.ok_or_else(|| SchemaError::Invalid {
            path: dir.display().to_string(),
            message: "no envelope.json in the schema directory".into(),
        })?;
        Ok(Schemas { envelope, shipped, payloads })
    }

    /// Whether the envelope's checks may run as code.
    pub(super) fn envelope_is_shipped(&self) -> bool {
        self.shipped
    }

    /// The payload of an event of `event_type`, checked against its type's
    /// schema (if it has one) in one pass over its text that builds
    /// nothing; the object is built here only when that pass is unsure or
    /// the schema could not be compiled. `Ok(None)` when the text is not a
    /// JSON object: the caller's slow way names the problem.
    pub(super) fn checked_payload(&self, event_type: &str, raw: &str) -> Result<Option<Payload>, EnvelopeError> {
        let raw = super::payload::trim(raw);
        let schema = self.payloads.get(event_type);
        // The pass runs unless the type's schema could not be compiled.
        if schema.is_none_or(|s| s.compiled.is_some()) {
            match payload_check::scan(raw, schema.and_then(|s| s.compiled.as_ref())) {
                Ok((Scan::Passed, index)) => return Ok(Some(Payload::from_checked_text(raw, index))),
                Ok((Scan::Unsure, _)) => {}
                Err(_) => return Ok(None),
            }
        }
        let Ok(value @ Value::Object(_)) = serde_json::from_str::<Value>(raw) else { return Ok(None) };
        if let Some(schema) = schema {
            check(&schema.validator, &value, "/payload")?;
        }
        let Value::Object(object) = value else { return Ok(None) };
        Ok(Some(Payload::from_text_and_object(raw, object)))
    }

    pub(super) fn check_envelope(&self, value: &Value) -> Result<(), EnvelopeError> {
        check(&self.envelope, value, "")
    }

    pub(super) fn check_payload(&self, event_type: &str, payload: &Value) -> Result<(), EnvelopeError> {
        match self.payloads.get(event_type) {
            Some(schema) => check(&schema.validator, payload, "/payload"),
            None => Ok(()),
        }
    }
}

fn check(validator: &jsonschema::Validator, value: &Value, prefix: &str) -> Result<(), EnvelopeError> {
    // The yes/no check is several times cheaper than collecting errors, and
    // nearly every event passes: the errors are gathered only to name one.
    if validator.is_valid(value) {
        return Ok(());
    }
    match validator.iter_errors(value).next() {
        None => Ok(()),
        Some(e) => {
            let at = format!("{prefix}{}", e.instance_path);
            let at = if at.is_empty() { "/".to_string() } else { at };
            Err(EnvelopeError::Schema(format!("{at}: {e}")))
        }
    }
}
