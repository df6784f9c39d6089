//! Scans of JSON text that run before it is parsed: a request's size in values is known, and
//! refused past its value cap or charged to its memory reservation, before it becomes a tree;
//! and one top-level field read without building the tree (a sticky canary's key).

use crate::error::Error;
use crate::memory::{POOLED_FROM, Reservation};

/// What one value of a JSON text costs once it is a `serde_json::Value` tree: the value's 32
/// bytes, and as much again for the lists and maps holding it as they grow.
pub const TREE_VALUE_BYTES: usize = 64;

/// Roughly what a JSON tree holds in memory: [`TREE_VALUE_BYTES`] per value (containers
/// included) plus its strings' and keys' bytes. Walked without recursion.
pub fn tree_size(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    let mut size = 0usize;
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        size = size.saturating_add(TREE_VALUE_BYTES);
        match v {
            Value::String(text) => size = size.saturating_add(text.len()),
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => {
                for (key, item) in map {
                    size = size.saturating_add(key.len());
                    stack.push(item);
                }
            }
            _ => {}
        }
    }
    size
}

/// What a JSON text holds, counted without parsing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    /// Numbers, strings (object keys included), booleans and nulls.
    pub values: usize,
    /// Bytes inside strings (escapes as written).
    pub string_bytes: usize,
}

/// Counts the values a JSON text holds — numbers, strings (object keys included), booleans and
/// nulls — without parsing it, and refuses it with [`Error::TooManyValues`] past `max`. A linear
/// scan with no allocation: it runs before the text becomes a tree, so a small body cannot turn
/// into gigabytes. Malformed JSON is left to the parser.
pub fn count_values(json: &[u8], max: usize) -> Result<Counted, Error> {
    let mut count = 0usize;
    let mut string_bytes = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut in_number = false;
    for &b in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
                continue;
            }
            string_bytes += 1;
            continue;
        }
        let starts = match b {
            b'"' => {
                in_string = true;
                in_number = false;
                true
            }
            b'-' | b'0'..=b'9' if !in_number => {
                in_number = true;
                true
            }
            b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-' if in_number => false,
            b't' | b'f' | b'n' => {
                in_number = false;
                true
            }
            _ => {
                in_number = false;
                false
            }
        };
        if starts {
            count += 1;
            if count > max {
                return Err(Error::TooManyValues(max));
            }
        }
    }
    Ok(Counted {
        values: count,
        string_bytes,
    })
}

/// Refuses a JSON text past `max` values (see [`count_values`]); short texts are not scanned.
pub fn check_values(json: &[u8], max: usize) -> Result<(), Error> {
    // Every value needs at least one byte, so short texts cannot exceed the cap.
    if json.len() <= max {
        return Ok(());
    }
    count_values(json, max).map(|_| ())
}

/// Charges `memory`, before `json` is parsed, for what parsing makes of it: `per_value` bytes
/// for each value plus the bytes of its strings, and refuses it past `max` values. Short texts
/// are charged their bound (every value takes a byte of text) without a scan; longer ones are
/// counted first.
pub fn charge_values(
    json: &[u8],
    per_value: usize,
    max: usize,
    memory: &mut Reservation,
) -> Result<(), Error> {
    let bound = json.len().saturating_mul(per_value + 1);
    if json.len() <= max && bound < POOLED_FROM.min(memory.left()) {
        return memory.charge(bound);
    }
    let counted = count_values(json, max)?;
    memory.charge(
        counted
            .values
            .saturating_mul(per_value)
            .saturating_add(counted.string_bytes),
    )
}

/// A body tree's top-level field as a sticky key, as [`field_key`] reads it from text: a
/// string's text, a number's or boolean's JSON; none for null, lists and objects.
pub fn tree_field_key(body: &serde_json::Value, field: &str) -> Option<Vec<u8>> {
    use serde_json::Value;
    match body.as_object()?.get(field)? {
        Value::String(text) => Some(text.as_bytes().to_vec()),
        value @ (Value::Number(_) | Value::Bool(_)) => Some(value.to_string().into_bytes()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// A JSON object's top-level field `field` as a sticky key, read without building a tree (every
/// other value is skipped as it is read): a string's text, a number's or boolean's JSON text.
/// `None` when the text is not an object, or the field is absent, null, a list or an object.
pub fn field_key(json: &[u8], field: &str) -> Option<Vec<u8>> {
    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

    struct Object<'a>(&'a str);

    impl<'de> DeserializeSeed<'de> for Object<'_> {
        type Value = Option<Vec<u8>>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
    }

    impl<'de> Visitor<'de> for Object<'_> {
        type Value = Option<Vec<u8>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(key) = map.next_key::<String>()? {
                if found.is_none() && key == self.0 {
                    found = map.next_value::<KeyValue>()?.0;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(found)
        }
    }

    /// A scalar's key text; lists and objects are skipped and give none.
    struct KeyValue(Option<Vec<u8>>);

    impl<'de> serde::Deserialize<'de> for KeyValue {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(KeyVisitor)
        }
    }

    struct KeyVisitor;

    impl<'de> Visitor<'de> for KeyVisitor {
        type Value = KeyValue;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a value")
        }
        fn visit_str<E>(self, v: &str) -> Result<KeyValue, E> {
            Ok(KeyValue(Some(v.as_bytes().to_vec())))
        }
        fn visit_bool<E>(self, v: bool) -> Result<KeyValue, E> {
            Ok(KeyValue(Some(v.to_string().into_bytes())))
        }
        fn visit_i64<E>(self, v: i64) -> Result<KeyValue, E> {
            Ok(KeyValue(Some(
                serde_json::Number::from(v).to_string().into_bytes(),
            )))
        }
        fn visit_u64<E>(self, v: u64) -> Result<KeyValue, E> {
            Ok(KeyValue(Some(
                serde_json::Number::from(v).to_string().into_bytes(),
            )))
        }
        fn visit_f64<E>(self, v: f64) -> Result<KeyValue, E> {
            let text = serde_json::Number::from_f64(v).map(|n| n.to_string().into_bytes());
            Ok(KeyValue(text))
        }
        fn visit_unit<E>(self) -> Result<KeyValue, E> {
            Ok(KeyValue(None))
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<KeyValue, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(KeyValue(None))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeyValue, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(KeyValue(None))
        }
    }

    let mut reader = serde_json::Deserializer::from_slice(json);
    Object(field).deserialize(&mut reader).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(text: &str) -> usize {
        (0..=text.len())
            .find(|max| check_values(text.as_bytes(), *max).is_ok())
            .unwrap_or(usize::MAX)
    }

    #[test]
    fn a_tree_is_sized_by_its_values_and_strings_without_recursion() {
        let small = serde_json::json!({"ab": [1, "xyz"]});
        // The object, the list, the number, the string; "ab" and "xyz".
        assert_eq!(tree_size(&small), 4 * TREE_VALUE_BYTES + 2 + 3);
        let big = serde_json::json!({"y": vec!["x".repeat(1000); 1000]});
        assert!(tree_size(&big) > 1_000_000);
        let mut deep = serde_json::json!(1);
        for _ in 0..1_000 {
            deep = serde_json::json!([deep]);
        }
        assert_eq!(tree_size(&deep), 1_001 * TREE_VALUE_BYTES);
    }

    #[test]
    fn values_are_counted_without_parsing() {
        assert_eq!(
            count(r#"{"x0": 1, "x1": -2.5e+3, "s": "a,\"b\" 1 true"}"#),
            6
        );
        assert_eq!(count("[[0,0,0,0],[1,1,1,1]]"), 8);
        assert_eq!(count("[true, false, null, 10, 1e5]"), 5);
        let big = format!("[{}0]", "0,".repeat(100));
        assert!(matches!(
            check_values(big.as_bytes(), 100),
            Err(Error::TooManyValues(100))
        ));
        assert!(check_values(big.as_bytes(), 101).is_ok());
        assert_eq!(
            count_values(br#"{"ab": "c\"d", "n": [1, 22]}"#, 100).unwrap(),
            Counted {
                values: 5,
                string_bytes: 7
            }
        );
    }

    #[test]
    fn parsing_is_charged_before_it_happens() {
        let pool = crate::memory::MemoryPool::new(1 << 30);
        // A short text is charged its bound without a scan.
        let mut memory = Reservation::new(pool.clone(), 1 << 30);
        charge_values(b"[1,2]", 10, 100, &mut memory).unwrap();
        assert_eq!(memory.charged(), 5 * 11);
        // A long one is counted: 200,000 values of 64 bytes is past a 10 MiB budget.
        let many = format!("[{}0]", "0,".repeat(199_999));
        let mut memory = Reservation::new(pool.clone(), 10 << 20);
        let error = charge_values(many.as_bytes(), 64, 1 << 20, &mut memory).unwrap_err();
        assert!(
            matches!(error, Error::OverBudget { needs, .. } if needs == 200_000 * 64),
            "{error:?}"
        );
        let mut memory = Reservation::new(pool, 100 << 20);
        charge_values(many.as_bytes(), 64, 1 << 20, &mut memory).unwrap();
        assert_eq!(memory.charged(), 200_000 * 64);
    }

    #[test]
    fn a_sticky_field_is_read_without_the_tree() {
        let body = br#"{"rows": [[1, 2], {"deep": [3]}], "user_id": "u-7", "n": 42, "f": 1.5}"#;
        assert_eq!(field_key(body, "user_id"), Some(b"u-7".to_vec()));
        assert_eq!(field_key(body, "n"), Some(b"42".to_vec()));
        assert_eq!(field_key(body, "f"), Some(b"1.5".to_vec()));
        assert_eq!(field_key(body, "rows"), None);
        assert_eq!(field_key(body, "missing"), None);
        assert_eq!(field_key(br#"{"user_id": null}"#, "user_id"), None);
        assert_eq!(field_key(b"[1, 2]", "user_id"), None);
        assert_eq!(field_key(b"not json", "user_id"), None);
        // Deep nesting is skipped without recursion (serde_json ignores values iteratively).
        let nest = |n| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let deep = format!(r#"{{"x": {}, "user_id": "a"}}"#, nest(100_000));
        assert_eq!(field_key(deep.as_bytes(), "user_id"), Some(b"a".to_vec()));
        let deep = format!(r#"{{"user_id": {}}}"#, nest(100_000));
        assert_eq!(field_key(deep.as_bytes(), "user_id"), None);
        // The same text as a tree's value gives (send_request bodies are trees).
        let tree: serde_json::Value = serde_json::from_slice(body).unwrap();
        for field in ["user_id", "n", "f"] {
            assert_eq!(tree_field_key(&tree, field), field_key(body, field));
        }
    }
}
