//! Strict JSON: a parser that refuses an object holding the same member twice.
//!
//! A map-based parser silently keeps the last of two equal members, so `{"kty":"EC",
//! "kty":"OKP"}` would mean different things to different readers. keyward refuses such
//! input and says where the repetition is, so the caller can tell a bad JWK from a bad body.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrictJsonError {
    /// Not JSON at all (or nested deeper than the parser allows).
    Syntax(String),
    /// An object repeats a member. `pointer` is the JSON Pointer of the repeated member.
    DuplicateMember { pointer: String },
}

impl fmt::Display for StrictJsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax(reason) => write!(f, "the body is not valid JSON: {reason}"),
            Self::DuplicateMember { pointer } => {
                write!(
                    f,
                    "the member '{pointer}' appears more than once; send each member once"
                )
            }
        }
    }
}

/// Parses `bytes` into a [`Value`], refusing repeated members at any depth.
///
/// The path to a repeated member is assembled only when one is found, as the error
/// unwinds through the enclosing containers, so well-formed input pays nothing for it.
pub fn parse_strict(bytes: &[u8]) -> Result<Value, StrictJsonError> {
    let duplicate = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = StrictSeed {
        duplicate: &duplicate,
    }
    .deserialize(&mut de)
    .and_then(|value| de.end().map(|()| value));
    match parsed {
        Ok(value) => Ok(value),
        Err(err) => match duplicate.into_inner() {
            Some(segments) => Err(StrictJsonError::DuplicateMember {
                pointer: pointer(&segments),
            }),
            None => Err(StrictJsonError::Syntax(err.to_string())),
        },
    }
}

/// The JSON Pointer of `segments`, which were collected innermost first.
fn pointer(segments: &[String]) -> String {
    segments
        .iter()
        .rev()
        .map(|segment| format!("/{}", segment.replace('~', "~0").replace('/', "~1")))
        .collect()
}

/// The segments from the repeated member outwards, once one has been found.
type DuplicatePath = RefCell<Option<Vec<String>>>;

#[derive(Clone, Copy)]
struct StrictSeed<'a> {
    duplicate: &'a DuplicatePath,
}

impl StrictSeed<'_> {
    /// Adds the segment of the container member whose value failed, if the failure was a
    /// repeated member further in.
    fn enclosing(&self, segment: impl FnOnce() -> String) {
        if let Some(segments) = self.duplicate.borrow_mut().as_mut() {
            segments.push(segment());
        }
    }
}

impl<'de> DeserializeSeed<'de> for StrictSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            match seq.next_element_seed(self) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => return Ok(Value::Array(items)),
                Err(err) => {
                    self.enclosing(|| items.len().to_string());
                    return Err(err);
                }
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if members.contains_key(&name) {
                *self.duplicate.borrow_mut() = Some(vec![name]);
                return Err(de::Error::custom("duplicate member"));
            }
            match map.next_value_seed(self) {
                Ok(value) => {
                    members.insert(name, value);
                }
                Err(err) => {
                    self.enclosing(|| name);
                    return Err(err);
                }
            }
        }
        Ok(Value::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_json() {
        let v = parse_strict(br#"{"a":[1,{"b":null}],"c":"d","e":1.5,"f":-3}"#);
        assert_eq!(
            v,
            Ok(serde_json::json!({"a":[1,{"b":null}],"c":"d","e":1.5,"f":-3}))
        );
    }

    #[test]
    fn refuses_a_repeated_member_and_says_where() {
        assert_eq!(
            parse_strict(br#"{"jwks":{"keys":[{"kty":"EC","kty":"OKP"}]}}"#),
            Err(StrictJsonError::DuplicateMember {
                pointer: "/jwks/keys/0/kty".into()
            })
        );
        assert_eq!(
            parse_strict(br#"{"a/b":1,"a/b":2}"#),
            Err(StrictJsonError::DuplicateMember {
                pointer: "/a~1b".into()
            })
        );
    }

    #[test]
    fn refuses_trailing_garbage_and_deep_nesting() {
        assert!(matches!(
            parse_strict(b"{} {}"),
            Err(StrictJsonError::Syntax(_))
        ));
        let deep = "[".repeat(10_000);
        assert!(matches!(
            parse_strict(deep.as_bytes()),
            Err(StrictJsonError::Syntax(_))
        ));
    }
}
