//! A payload schema's checks compiled to code, run during one pass over the
//! payload's text that builds nothing.
//!
//! The shipped payload schemas use a few keywords: `type`, `required`,
//! `properties` whose members have `type`, `minLength`, `minimum`, `enum`.
//! A schema made of those (an operator's too) is compiled here; one with
//! any other keyword is not, and runs as a JSON Schema on the parsed object.
//! The pass only ever says "valid" when the schema would: anything it is
//! unsure of (an escaped enum, `1.0` for an integer) sends the payload the
//! slow way, where the schema decides and names the error.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// JSON Schema's type names as bits.
const STRING: u8 = 1;
const INTEGER: u8 = 2;
const NUMBER: u8 = 4;
const BOOLEAN: u8 = 8;
const NULL: u8 = 16;
const OBJECT: u8 = 32;
const ARRAY: u8 = 64;
const ANY: u8 = 127;

/// What the pass found of a JSON object that parses into a map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scan {
    /// It meets the checks.
    Passed,
    /// It may break the schema: the slow way decides.
    Unsure,
}

/// Where each top-level member of a payload's text is, so a string field
/// is read later without another pass over the text.
#[derive(Debug, Clone, Default)]
pub(super) struct Index(Vec<Member>);

#[derive(Debug, Clone)]
struct Member {
    key: (u32, u32),
    value: Kind,
}

/// A member's value, as a string lookup needs it.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// A string without escapes: where its characters are in the text.
    Plain(u32, u32),
    /// A string with escapes.
    Escaped,
    /// Not a string.
    Other,
}

/// What a lookup of a top-level string found.
pub(super) enum Found<'a> {
    /// Its characters, borrowed from the text.
    Plain(&'a str),
    /// A string with escapes, to be read from the parsed object.
    Escaped,
    /// No such member, or not a string.
    Other,
}

impl Index {
    /// The last member named `field` (the one a parsed object keeps) of
    /// `text`, the text this index was made from.
    pub(super) fn string<'a>(&self, text: &'a str, field: &str) -> Found<'a> {
        let at = |(start, len): (u32, u32)| text.get(start as usize..start as usize + len as usize);
        match self.0.iter().rev().find(|m| at(m.key) == Some(field)).map(|m| m.value) {
            None | Some(Kind::Other) => Found::Other,
            Some(Kind::Escaped) => Found::Escaped,
            Some(Kind::Plain(start, len)) => at((start, len)).map_or(Found::Escaped, Found::Plain),
        }
    }
}

/// One payload schema as code.
#[derive(Debug, Default)]
pub(super) struct Compiled {
    /// Every property the schema names or requires.
    fields: Vec<Field>,
    /// One bit per required property.
    all_required: u64,
}

#[derive(Debug)]
struct Field {
    name: String,
    check: Check,
    /// This property's bit in `Compiled::all_required`, if required.
    required: u64,
}

/// The checks of one property.
#[derive(Debug)]
struct Check {
    types: u8,
    min_length: Option<u64>,
    max_length: Option<u64>,
    minimum: Option<f64>,
    one_of: Option<Vec<Value>>,
}

impl Compiled {
    /// The schema as code, or `None` when it uses anything this pass does
    /// not do (it then runs as a schema).
    pub(super) fn from_schema(schema: &Value) -> Option<Compiled> {
        let schema = schema.as_object()?;
        let mut compiled = Compiled::default();
        for (keyword, value) in schema {
            match keyword.as_str() {
                "$schema" | "$id" | "title" | "description" | "$comment" => {}
                "type" if value == "object" => {}
                "required" => {
                    for name in value.as_array()? {
                        let bit = 1u64.checked_shl(compiled.all_required.count_ones())?;
                        compiled.field(name.as_str()?).required |= bit;
                        compiled.all_required |= bit;
                    }
                }
                "properties" => {
                    for (name, property) in value.as_object()? {
                        compiled.field(name).check = Check::from_schema(property)?;
                    }
                }
                _ => return None,
            }
        }
        Some(compiled)
    }

    fn field(&mut self, name: &str) -> &mut Field {
        let at = match self.fields.iter().position(|f| f.name == name) {
            Some(at) => at,
            None => {
                self.fields.push(Field { name: name.to_owned(), check: Check::any(), required: 0 });
                self.fields.len() - 1
            }
        };
        &mut self.fields[at]
    }
}

impl Check {
    fn any() -> Check {
        Check { types: ANY, min_length: None, max_length: None, minimum: None, one_of: None }
    }

    fn from_schema(schema: &Value) -> Option<Check> {
        let mut check = Check::any();
        for (keyword, value) in schema.as_object()? {
            match keyword.as_str() {
                "title" | "description" | "$comment" => {}
                "type" => {
                    check.types = match value {
                        Value::String(name) => type_bit(name)?,
                        Value::Array(names) => {
                            names.iter().try_fold(0, |bits, name| Some(bits | type_bit(name.as_str()?)?))?
                        }
                        _ => return None,
                    }
                }
                "minLength" => check.min_length = Some(value.as_u64()?),
                "maxLength" => check.max_length = Some(value.as_u64()?),
                "minimum" => check.minimum = Some(value.as_f64()?),
                "enum" => check.one_of = Some(value.as_array()?.clone()),
                _ => return None,
            }
        }
        Some(check)
    }
}

fn type_bit(name: &str) -> Option<u8> {
    Some(match name {
        "string" => STRING,
        "integer" => INTEGER,
        "number" => NUMBER,
        "boolean" => BOOLEAN,
        "null" => NULL,
        "object" => OBJECT,
        "array" => ARRAY,
        _ => return None,
    })
}

/// One pass over a payload's text: whether it meets `compiled` if given,
/// and where its members are (`None` if a key has escapes). `Err` unless it
/// is an object `serde_json` parses into a map (the same parser, so the
/// same syntax, number range and depth limit).
pub(super) fn scan(text: &str, compiled: Option<&Compiled>) -> Result<(Scan, Option<Index>), serde_json::Error> {
    static NONE: Compiled = Compiled { fields: Vec::new(), all_required: 0 };
    let mut de = serde_json::Deserializer::from_str(text);
    let scanned = de.deserialize_map(Top { compiled: compiled.unwrap_or(&NONE), text })?;
    de.end()?;
    Ok(scanned)
}

/// Where `part`, a slice of `text`, starts in it and how long it is.
fn span(text: &str, part: &str) -> Option<(u32, u32)> {
    let start = (part.as_ptr() as usize).checked_sub(text.as_ptr() as usize)?;
    (start + part.len() <= text.len()).then_some(())?;
    Some((u32::try_from(start).ok()?, u32::try_from(part.len()).ok()?))
}

/// The top level: an object whose members are checked and indexed
/// (anything else is refused by the parser).
struct Top<'c, 't> {
    compiled: &'c Compiled,
    text: &'t str,
}

impl<'de> Visitor<'de> for Top<'_, '_> {
    type Value = (Scan, Option<Index>);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut passed, mut seen) = (true, 0u64);
        let mut index = Some(Vec::with_capacity(map.size_hint().unwrap_or(12)));
        while let Some(key) = map.next_key_seed(Key)? {
            let field = self.compiled.fields.iter().find(|f| f.name == key);
            let (ok, value) = map.next_value_seed(Checked { check: field.map(|f| &f.check), text: self.text })?;
            passed &= ok;
            seen |= field.map_or(0, |f| f.required);
            let key = match key {
                Cow::Borrowed(key) => span(self.text, key),
                Cow::Owned(_) => None,
            };
            match (&mut index, key, value) {
                (Some(members), Some(key), Some(value)) => members.push(Member { key, value }),
                _ => index = None,
            }
        }
        let scan = if passed && seen == self.compiled.all_required { Scan::Passed } else { Scan::Unsure };
        Ok((scan, index.map(Index)))
    }
}

/// A key as text: borrowed from the input unless it had escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(key))
    }

    fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(key.to_owned()))
    }
}

/// Goes through a value as `serde_json` parses one into a `Value`, building
/// nothing.
struct Walk;

impl<'de> DeserializeSeed<'de> for Walk {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(Walk)?.is_some() {
            map.next_value_seed(Walk)?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Walk)?.is_some() {}
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// A top-level member's value against its property's checks (none for a
/// property the schema does not name): `true` only when the schema surely
/// accepts it, and the value as the index records it (`None` if a plain
/// string is not in `text`, which cannot be).
struct Checked<'c, 't> {
    check: Option<&'c Check>,
    text: &'t str,
}

impl<'de> DeserializeSeed<'de> for Checked<'_, '_> {
    type Value = (bool, Option<Kind>);

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Checked<'_, '_> {
    fn number(&self, as_f64: f64, integral: bool) -> bool {
        self.check.is_none_or(|check| {
            let typed = check.types & NUMBER != 0 || (integral && check.types & INTEGER != 0);
            typed && check.minimum.is_none_or(|m| as_f64 >= m) && check.one_of.is_none()
        })
    }

    fn plain(&self, bit: u8) -> bool {
        self.check.is_none_or(|check| check.types & bit != 0 && check.one_of.is_none())
    }

    fn string(&self, text: &str) -> bool {
        let Some(check) = self.check else { return true };
        if check.types & STRING == 0 {
            return false;
        }
        if check.min_length.is_some() || check.max_length.is_some() {
            // JSON Schema counts characters (code points), not bytes.
            let chars = text.chars().count() as u64;
            if check.min_length.is_some_and(|min| chars < min) || check.max_length.is_some_and(|max| chars > max) {
                return false;
            }
        }
        check.one_of.as_ref().is_none_or(|values| values.iter().any(|v| v.as_str() == Some(text)))
    }
}

impl<'de> Visitor<'de> for Checked<'_, '_> {
    type Value = (bool, Option<Kind>);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok((self.string(text), span(self.text, text).map(|(start, len)| Kind::Plain(start, len))))
    }

    fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
        Ok((self.string(text), Some(Kind::Escaped)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok((self.number(v as f64, true), Some(Kind::Other)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok((self.number(v as f64, true), Some(Kind::Other)))
    }

    // `1.0` may or may not be an integer to a schema: the slow way decides.
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok((self.number(v, false), Some(Kind::Other)))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok((self.plain(BOOLEAN), Some(Kind::Other)))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok((self.plain(NULL), Some(Kind::Other)))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Walk.visit_map(map)?;
        Ok((self.plain(OBJECT), Some(Kind::Other)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Walk.visit_seq(seq)?;
        Ok((self.plain(ARRAY), Some(Kind::Other)))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Map;

    use super::*;

    fn verdict(text: &str, compiled: Option<&Compiled>) -> Result<Scan, serde_json::Error> {
        scan(text, compiled).map(|(verdict, _)| verdict)
    }

    /// Whether the parser that builds the object takes `text`.
    fn parses(text: &str) -> bool {
        serde_json::from_str::<Map<String, Value>>(text).is_ok()
    }

    fn chat() -> Compiled {
        let schema: Value =
            serde_json::from_str(include_str!("../../protocol/schemas/chat_message.json")).expect("JSON");
        Compiled::from_schema(&schema).expect("the shipped schema compiles")
    }

    const OK: &str = r#"{"id":"m1","request_id":"r1","sender_id":null,"content":"","sequence_number":3,
        "is_screenshot":false,"created_at":"t","extra":{"deep":[1,2.5,{"x":null}]}}"#;

    #[test]
    fn a_payload_that_meets_the_schema_passes_and_one_that_may_not_is_unsure() {
        let c = chat();
        assert_eq!(verdict(OK, Some(&c)).expect("parses"), Scan::Passed);
        for (broken, why) in [
            (OK.replace(r#""id":"m1","#, ""), "a required field missing"),
            (OK.replace(r#""id":"m1""#, r#""id":"""#), "shorter than minLength"),
            (OK.replace(r#""sequence_number":3"#, r#""sequence_number":"3""#), "a string for an integer"),
            (OK.replace(r#""sequence_number":3"#, r#""sequence_number":3.0"#), "3.0: the schema decides"),
            (OK.replace(r#""sender_id":null"#, r#""sender_id":7"#), "not in the type list"),
        ] {
            assert_eq!(verdict(&broken, Some(&c)).expect("parses"), Scan::Unsure, "{why}");
        }
        assert_eq!(verdict(r#"{"k\u00e9":"\u00e9"}"#, None).expect("parses"), Scan::Passed, "escapes");
    }

    #[test]
    fn what_does_not_parse_into_a_map_fails_the_scan_as_it_fails_the_parser() {
        for text in [
            r#"{"n":1e400}"#,
            r#"{"a":1} x"#,
            "{nope",
            "[1]",
            "\"text\"",
            &format!("{}{}", "[".repeat(200), "]".repeat(200)),
        ] {
            assert!(verdict(text, None).is_err(), "{text}");
            assert!(!parses(text), "{text}");
        }
        assert!(parses(OK));
    }

    #[test]
    fn characters_not_bytes_count_and_enums_and_minimums_are_checked() {
        let schema = serde_json::json!({
            "type": "object", "required": ["s"],
            "properties": {"s": {"type": "string", "minLength": 2, "maxLength": 3}, "k": {"enum": ["a", "b"]},
                           "n": {"type": "integer", "minimum": 1}}
        });
        let c = Compiled::from_schema(&schema).expect("compiles");
        assert_eq!(verdict(r#"{"s":"éé"}"#, Some(&c)).expect("parses"), Scan::Passed, "two characters, four bytes");
        assert_eq!(verdict(r#"{"s":"é"}"#, Some(&c)).expect("parses"), Scan::Unsure);
        assert_eq!(verdict(r#"{"s":"abcd"}"#, Some(&c)).expect("parses"), Scan::Unsure);
        assert_eq!(verdict(r#"{"s":"ab","k":"b","n":1}"#, Some(&c)).expect("parses"), Scan::Passed);
        assert_eq!(verdict(r#"{"s":"ab","k":"c"}"#, Some(&c)).expect("parses"), Scan::Unsure);
        assert_eq!(verdict(r#"{"s":"ab","n":0}"#, Some(&c)).expect("parses"), Scan::Unsure);
        let other = serde_json::json!({"type": "object", "properties": {"s": {"pattern": "^a"}}});
        assert!(Compiled::from_schema(&other).is_none(), "a keyword it does not do");
    }

    /// Differential: over every shipped payload schema and payloads made
    /// to sit on each check's edges, "passed" is never said of a payload
    /// the schema refuses, and a payload the schema takes mostly passes.
    #[test]
    fn the_pass_never_accepts_what_a_shipped_schema_refuses() {
        let candidates: Vec<Value> = serde_json::from_str(
            r#"["", "x", "é", "ab", "\"q\"", 0, -1, 1, 7, 1.0, 2.5, -0.5, 1e300, true, false, null, {}, {"a":1}, [], [1]]"#,
        )
        .expect("JSON");
        let (mut checked, mut passed) = (0, 0);
        for entry in std::fs::read_dir("protocol/schemas").expect("the schema directory") {
            let path = entry.expect("an entry").path();
            if path.file_stem().is_some_and(|s| s == "envelope") {
                continue;
            }
            let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("JSON");
            let validator = jsonschema::validator_for(&schema).expect("a schema");
            let compiled = Compiled::from_schema(&schema).unwrap_or_else(|| panic!("{path:?} compiles"));
            let properties = schema["properties"].as_object().cloned().unwrap_or_default();
            let mut base = serde_json::Map::new();
            for (name, property) in &properties {
                let value = match &property["enum"] {
                    Value::Array(values) => values[0].clone(),
                    _ => match property["type"].as_str().or(property["type"][0].as_str()) {
                        Some("integer") | Some("number") => {
                            property["minimum"].as_f64().map_or(3, |m| m as i64 + 1).into()
                        }
                        Some("boolean") => true.into(),
                        Some("object") => serde_json::json!({}),
                        Some("array") => serde_json::json!([]),
                        Some("null") => Value::Null,
                        _ => "x".repeat(property["minLength"].as_u64().unwrap_or(1) as usize).into(),
                    },
                };
                base.insert(name.clone(), value);
            }
            let mut payloads = vec![Value::Object(base.clone())];
            for name in properties.keys() {
                let mut without = base.clone();
                without.remove(name);
                payloads.push(Value::Object(without));
                for value in &candidates {
                    let mut changed = base.clone();
                    changed.insert(name.clone(), value.clone());
                    payloads.push(Value::Object(changed));
                }
            }
            for payload in &payloads {
                let text = payload.to_string();
                let scan = verdict(&text, Some(&compiled)).expect("parses");
                checked += 1;
                if scan == Scan::Passed {
                    passed += 1;
                    assert!(validator.is_valid(payload), "{path:?}: passed, but the schema refuses {text}");
                }
            }
            assert!(validator.is_valid(&payloads[0]), "{path:?}: the made payload is valid");
            let base_scan = verdict(&payloads[0].to_string(), Some(&compiled)).expect("parses");
            assert_eq!(base_scan, Scan::Passed, "{path:?}: a valid payload takes the fast way");
        }
        assert!(checked > 1000 && passed > 100, "{passed} of {checked}");
    }
}
