//! Scans of JSON text that run before it is parsed: a request's size in values is known, and
//! refused past its budget, before it becomes a tree.

use crate::error::Error;

/// Counts the values a JSON text holds — numbers, strings (object keys included), booleans and
/// nulls — without parsing it, and refuses it with [`Error::TooManyValues`] past `max`. A linear
/// scan with no allocation: it runs before the text becomes a tree, so a small body cannot turn
/// into gigabytes. Malformed JSON is left to the parser.
pub fn check_values(json: &[u8], max: usize) -> Result<(), Error> {
    // Every value needs at least one byte, so short texts cannot exceed the cap.
    if json.len() <= max {
        return Ok(());
    }
    let mut count = 0usize;
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
            }
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
    Ok(())
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
    }
}
