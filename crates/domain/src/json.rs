//! Strict JSON: a parser that refuses an object holding the same member twice.
//!
//! A map-based parser silently keeps the last of two equal members, so `{"kty":"EC",
//! "kty":"OKP"}` would mean different things to different readers. keyward refuses such
//! input and says where the repetition is, so the caller can tell a bad JWK from a bad body.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

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

/// Parses `bytes` as one JSON object and returns its top-level members without building
/// a tree: names and strings are borrowed from `bytes` where they hold no escapes, and
/// nested arrays and objects are checked (repeated members refused at any depth, as by
/// [`parse_strict`]) but not kept. `Ok(None)` when the document is valid JSON but not an
/// object. For the hot path, where only a few top-level scalars matter.
pub fn parse_strict_object(bytes: &[u8]) -> Result<Option<Members<'_>>, StrictJsonError> {
    let duplicate = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = de
        .deserialize_any(ObjectVisitor {
            strict: StrictSeed {
                duplicate: &duplicate,
            },
        })
        .and_then(|members| de.end().map(|()| members));
    parsed.map_err(|err| match duplicate.into_inner() {
        Some(segments) => StrictJsonError::DuplicateMember {
            pointer: pointer(&segments),
        },
        None => StrictJsonError::Syntax(err.to_string()),
    })
}

/// A top-level member's value as [`parse_strict_object`] keeps it.
#[derive(Debug, Clone, PartialEq)]
pub enum Member<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    /// An array or an object: checked, not kept.
    Container,
}

/// Objects with more members than this find repeated names through a hash set instead
/// of a scan, so a hostile document cannot make the check quadratic.
const SCAN_MEMBERS_MAX: usize = 16;

/// An object's top-level members in document order, each name once.
#[derive(Debug, Default)]
pub struct Members<'a> {
    members: Vec<(Cow<'a, str>, Member<'a>)>,
    names: HashSet<Cow<'a, str>>,
}

impl<'a> Members<'a> {
    /// The value of the member `name`, if present.
    pub fn get(&self, name: &str) -> Option<&Member<'a>> {
        self.members
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The members' names, in document order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|(name, _)| name.as_ref())
    }

    fn has_name(&self, name: &str) -> bool {
        if self.members.len() <= SCAN_MEMBERS_MAX {
            self.members.iter().any(|(n, _)| n == name)
        } else {
            self.names.contains(name)
        }
    }

    fn push(&mut self, name: Cow<'a, str>, value: Member<'a>) {
        if self.members.len() == SCAN_MEMBERS_MAX {
            self.names = self.members.iter().map(|(n, _)| n.clone()).collect();
        }
        if self.members.len() >= SCAN_MEMBERS_MAX {
            self.names.insert(name.clone());
        }
        self.members.push((name, value));
    }
}

/// A member name, borrowed from the input when it holds no escapes.
struct Name<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(TextVisitor).map(Name)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// The top-level document of [`parse_strict_object`].
struct ObjectVisitor<'a> {
    strict: StrictSeed<'a>,
}

impl<'de> Visitor<'de> for ObjectVisitor<'_> {
    type Value = Option<Members<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.strict.visit_seq(seq).map(|_| None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Members::default();
        while let Some(Name(name)) = map.next_key()? {
            if members.has_name(&name) {
                *self.strict.duplicate.borrow_mut() = Some(vec![name.into_owned()]);
                return Err(de::Error::custom("duplicate member"));
            }
            match map.next_value_seed(MemberSeed(self.strict)) {
                Ok(value) => members.push(name, value),
                Err(err) => {
                    self.strict.enclosing(|| name.into_owned());
                    return Err(err);
                }
            }
        }
        Ok(Some(members))
    }
}

/// One top-level member's value: scalars kept, containers checked by [`StrictSeed`].
#[derive(Clone, Copy)]
struct MemberSeed<'a>(StrictSeed<'a>);

impl<'de> DeserializeSeed<'de> for MemberSeed<'_> {
    type Value = Member<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MemberSeed<'_> {
    type Value = Member<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Member::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Member::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Member::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Number::from_f64(v).map_or(Member::Null, Member::Number))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Member::String(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Member::String(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Member::String(Cow::Owned(v)))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Member::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.0.visit_seq(seq).map(|_| Member::Container)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.0.visit_map(map).map(|_| Member::Container)
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

    /// The top-level scalars of `parse_strict`'s tree, as `parse_strict_object` keeps them.
    fn scalars(value: &Value) -> Vec<(String, Member<'static>)> {
        let Value::Object(map) = value else {
            panic!("an object")
        };
        let mut members: Vec<_> = map
            .iter()
            .map(|(name, value)| {
                let member = match value {
                    Value::Null => Member::Null,
                    Value::Bool(b) => Member::Bool(*b),
                    Value::Number(n) => Member::Number(n.clone()),
                    Value::String(s) => Member::String(Cow::Owned(s.clone())),
                    Value::Array(_) | Value::Object(_) => Member::Container,
                };
                (name.clone(), member)
            })
            .collect();
        members.sort_by(|a, b| a.0.cmp(&b.0));
        members
    }

    #[test]
    fn object_members_agree_with_the_tree() {
        for doc in [
            r#"{"alg":"EdDSA","kid":"k\u0031","typ":"JWT"}"#,
            r#"{"a":[1,{"b":null}],"c":"d\n","e":1.5,"f":-3,"g":true,"h":null,"i":{},"j":18446744073709551615}"#,
            r#"{"k\"ey":"v","key":"w","":""}"#,
            "{}",
            r#" { "spaced" : 1e3 } "#,
        ] {
            let tree = parse_strict(doc.as_bytes()).expect("valid");
            let members = parse_strict_object(doc.as_bytes())
                .expect("valid")
                .expect("an object");
            let mut flat: Vec<_> = members
                .members
                .iter()
                .map(|(n, v)| (n.to_string(), v.clone()))
                .collect();
            flat.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(flat, scalars(&tree), "{doc}");
        }
        let members = parse_strict_object(br#"{"b":1,"a":2}"#).unwrap().unwrap();
        assert_eq!(members.names().collect::<Vec<_>>(), ["b", "a"]);
        assert_eq!(members.get("a"), Some(&Member::Number(2.into())));
        assert_eq!(members.get("c"), None);
        assert!(members.contains("b") && !members.contains("B"));
    }

    #[test]
    fn object_members_refuse_what_the_tree_refuses() {
        for doc in [
            r#"{"kid":"a","kid":"b"}"#,
            r#"{"kid":"a","k\u0069d":"b"}"#,
            r#"{"x":{"y":[0,{"z":1,"z":2}]}}"#,
            r#"[{"a":1,"a":2}]"#,
            r#"{"a":1} {}"#,
            r#"{"a":1"#,
            "",
        ] {
            assert_eq!(
                parse_strict_object(doc.as_bytes()).map(|_| ()),
                parse_strict(doc.as_bytes()).map(|_| ()),
                "{doc}"
            );
            assert!(parse_strict_object(doc.as_bytes()).is_err(), "{doc}");
        }
        // Nesting inside a member is bounded as in the tree parser.
        let deep = format!(r#"{{"a":{}}}"#, "[".repeat(10_000));
        assert!(matches!(
            parse_strict_object(deep.as_bytes()),
            Err(StrictJsonError::Syntax(_))
        ));
        for doc in ["[1]", "\"text\"", "42", "null", "true"] {
            assert!(
                matches!(parse_strict_object(doc.as_bytes()), Ok(None)),
                "{doc}"
            );
        }
    }

    #[test]
    fn object_members_find_repeats_among_many() {
        // Past the scan limit the names go through a set; a repeat anywhere is found.
        for repeat in [0, SCAN_MEMBERS_MAX - 1, SCAN_MEMBERS_MAX, 500] {
            let mut doc: Vec<String> = (0..600).map(|i| format!(r#""m{i}":{i}"#)).collect();
            doc.push(format!(r#""m{repeat}":0"#));
            let doc = format!("{{{}}}", doc.join(","));
            assert_eq!(
                parse_strict_object(doc.as_bytes()).map(|_| ()),
                Err(StrictJsonError::DuplicateMember {
                    pointer: format!("/m{repeat}")
                }),
            );
        }
        let doc: Vec<String> = (0..600).map(|i| format!(r#""m{i}":{i}"#)).collect();
        let doc = format!("{{{}}}", doc.join(","));
        let members = parse_strict_object(doc.as_bytes()).unwrap().unwrap();
        assert_eq!(members.names().count(), 600);
        assert_eq!(members.get("m599"), Some(&Member::Number(599.into())));
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
