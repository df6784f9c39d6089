//! Scans of JSON text that run before it is parsed: a request's size in values is known, and
//! refused past its value cap or charged to its memory reservation, before it becomes a tree.

use crate::error::Error;
use crate::memory::{POOLED_FROM, Reservation};

/// What one value of a JSON text costs once it is a `serde_json::Value` tree: the value's 32
/// bytes, and as much again for the lists and maps holding it as they grow.
pub const TREE_VALUE_BYTES: usize = 64;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn count(text: &str) -> usize {
        (0..=text.len())
            .find(|max| check_values(text.as_bytes(), *max).is_ok())
            .unwrap_or(usize::MAX)
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
}
