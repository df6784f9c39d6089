//! Dynamic batching of an endpoint, as its aux configuration holds it: Triton's own keys
//! (`max_batch_size`, `dynamic_batching.max_queue_delay_microseconds`,
//! `dynamic_batching.preferred_batch_size`,
//! `dynamic_batching.default_queue_policy.max_queue_size`), which clearml-serving users already
//! write with `--aux-config` and which serval's `--max-batch-size` / `--max-queue-delay-ms` /
//! `--max-queue-size` write too. One reading for the CLI (checks) and the server (runs it).

use serde_json::{Map, Value};

/// Batching as configured: on when the aux configuration has a `dynamic_batching` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchConfig {
    /// Rows per engine call at most (`max_batch_size`).
    pub max_batch_size: u64,
    /// `dynamic_batching.max_queue_delay_microseconds` (default 0).
    pub max_queue_delay_us: u64,
    /// `dynamic_batching.preferred_batch_size`: row counts sent at once when the queue can form
    /// one (ascending, none above `max_batch_size`; empty: none).
    pub preferred: Vec<u64>,
    /// `dynamic_batching.default_queue_policy.max_queue_size` (`None`: the server's default).
    pub max_queue_size: Option<u64>,
}

/// Longest delay accepted: a minute (Triton's delays are micro- to milliseconds).
const MAX_DELAY_US: u64 = 60_000_000;

/// Reads batching from an endpoint's aux configuration: key=value pairs (a JSON object) or the
/// text of a Triton `config.pbtxt`. `Ok(None)`: no `dynamic_batching` section (a
/// `max_batch_size` alone tells Triton the model takes batches; it batches nothing).
pub fn batch_config(aux: Option<&Value>) -> Result<Option<BatchConfig>, String> {
    match aux {
        Some(Value::Object(map)) => from_object(map),
        Some(Value::String(text)) => from_pbtxt(text),
        _ => Ok(None),
    }
}

fn number(value: &Value, key: &str) -> Result<u64, String> {
    let parsed = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    parsed.ok_or_else(|| format!("aux-config {key} must be a whole number 0 or more, got {value}"))
}

/// `preferred_batch_size`: a list of whole numbers (or one), as JSON or as `[1, 2, 4]` text.
fn preferred_sizes(value: &Value) -> Result<Vec<u64>, String> {
    let key = "dynamic_batching.preferred_batch_size";
    let parsed;
    let value = match value {
        Value::String(text) => {
            parsed = serde_json::from_str::<Value>(text.trim()).map_err(|_| {
                format!("aux-config {key} must be a list of whole numbers, got {value}")
            })?;
            &parsed
        }
        other => other,
    };
    match value {
        Value::Array(items) => items.iter().map(|v| number(v, key)).collect(),
        single => Ok(vec![number(single, key)?]),
    }
}

fn from_object(map: &Map<String, Value>) -> Result<Option<BatchConfig>, String> {
    let Some(section) = map.get("dynamic_batching") else {
        return Ok(None);
    };
    let empty = Map::new();
    let section = match section {
        Value::Object(section) => section,
        // `dynamic_batching=` with nothing, or `{}` as text: the section with its defaults.
        Value::String(s) if s.trim().is_empty() || s.trim() == "{}" => &empty,
        other => {
            return Err(format!(
                "aux-config dynamic_batching must be a section (dynamic_batching.KEY=VALUE), got {other}"
            ));
        }
    };
    let max_batch_size = map
        .get("max_batch_size")
        .map(|v| number(v, "max_batch_size"))
        .transpose()?;
    let max_queue_delay_us = section
        .get("max_queue_delay_microseconds")
        .map(|v| number(v, "dynamic_batching.max_queue_delay_microseconds"))
        .transpose()?
        .unwrap_or(0);
    let max_queue_size = match section.get("default_queue_policy") {
        Some(Value::Object(policy)) => policy
            .get("max_queue_size")
            .map(|v| number(v, "dynamic_batching.default_queue_policy.max_queue_size"))
            .transpose()?,
        _ => None,
    };
    let preferred = section
        .get("preferred_batch_size")
        .map(preferred_sizes)
        .transpose()?
        .unwrap_or_default();
    checked(
        max_batch_size,
        max_queue_delay_us,
        max_queue_size,
        preferred,
    )
}

fn checked(
    max_batch_size: Option<u64>,
    max_queue_delay_us: u64,
    max_queue_size: Option<u64>,
    mut preferred: Vec<u64>,
) -> Result<Option<BatchConfig>, String> {
    let max_batch_size = match max_batch_size {
        Some(n) if n >= 1 => n,
        _ => {
            return Err(
                "dynamic batching needs max_batch_size of at least 1 (rows per engine call): \
                 --max-batch-size ROWS or --aux-config max_batch_size=ROWS"
                    .to_string(),
            );
        }
    };
    if max_queue_delay_us > MAX_DELAY_US {
        return Err(format!(
            "dynamic_batching.max_queue_delay_microseconds {max_queue_delay_us} is longer than a minute"
        ));
    }
    preferred.sort_unstable();
    preferred.dedup();
    if let Some(bad) = preferred.iter().find(|&&n| n == 0 || n > max_batch_size) {
        return Err(format!(
            "dynamic_batching.preferred_batch_size {bad} must be between 1 and max_batch_size \
             ({max_batch_size})"
        ));
    }
    Ok(Some(BatchConfig {
        max_batch_size,
        max_queue_delay_us,
        preferred,
        // Triton's 0 means "no limit"; serval keeps every queue bounded: its default.
        max_queue_size: max_queue_size.filter(|n| *n > 0),
    }))
}

/// The same keys in a `config.pbtxt` text: `max_batch_size: N` at the top, and a
/// `dynamic_batching { ... }` block.
fn from_pbtxt(text: &str) -> Result<Option<BatchConfig>, String> {
    let Some(at) = find_key(text, "dynamic_batching") else {
        return Ok(None);
    };
    let block = &text[at..];
    let block = match block.find('{') {
        // The block's text up to its matching closing brace (default_queue_policy nests one).
        Some(open) => {
            let mut depth = 0usize;
            let mut end = block.len();
            for (i, c) in block.char_indices().skip(open) {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = i;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            &block[open..end]
        }
        None => "",
    };
    let value = |text: &str, key: &str| -> Result<Option<u64>, String> {
        let Some(at) = find_key(text, key) else {
            return Ok(None);
        };
        let rest = text[at + key.len()..].trim_start();
        let rest = rest.strip_prefix(':').unwrap_or(rest).trim_start();
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits
            .parse()
            .map(Some)
            .map_err(|_| format!("config.pbtxt: {key} must be a whole number"))
    };
    let outside = text.replace(block, "");
    checked(
        value(&outside, "max_batch_size")?,
        value(block, "max_queue_delay_microseconds")?.unwrap_or(0),
        value(block, "max_queue_size")?,
        preferred_in_pbtxt(block)?,
    )
}

/// `preferred_batch_size: [ 4, 8 ]`, or the key repeated (`preferred_batch_size: 4`).
fn preferred_in_pbtxt(block: &str) -> Result<Vec<u64>, String> {
    let key = "preferred_batch_size";
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut sizes = Vec::new();
    for (at, _) in block.match_indices(key) {
        let before = block[..at].chars().next_back();
        let rest = &block[at + key.len()..];
        if before.is_some_and(word) || rest.chars().next().is_some_and(word) {
            continue;
        }
        let rest = rest.trim_start();
        let rest = rest.strip_prefix(':').unwrap_or(rest).trim_start();
        let items = match rest.strip_prefix('[') {
            Some(list) => list.split(']').next().unwrap_or_default(),
            None => rest
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap_or_default(),
        };
        for item in items.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            sizes.push(
                item.parse()
                    .map_err(|_| format!("config.pbtxt: {key} must be whole numbers"))?,
            );
        }
    }
    Ok(sizes)
}

/// Where `key` appears as a whole word (not inside a longer name).
fn find_key(text: &str, key: &str) -> Option<usize> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(key).map(|(i, _)| i).find(|&i| {
        let before = text[..i].chars().next_back();
        let after = text[i + key.len()..].chars().next();
        !before.is_some_and(word) && !after.is_some_and(word)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn triton_keys_turn_batching_on() {
        let aux = json!({"max_batch_size": 64, "dynamic_batching": {"max_queue_delay_microseconds": 100}});
        assert_eq!(
            batch_config(Some(&aux)),
            Ok(Some(BatchConfig {
                max_batch_size: 64,
                max_queue_delay_us: 100,
                max_queue_size: None,
                preferred: vec![],
            }))
        );
        let aux = json!({"max_batch_size": "8", "dynamic_batching": {"default_queue_policy": {"max_queue_size": 5}}});
        assert_eq!(
            batch_config(Some(&aux)),
            Ok(Some(BatchConfig {
                max_batch_size: 8,
                max_queue_delay_us: 0,
                max_queue_size: Some(5),
                preferred: vec![],
            }))
        );
        // clearml's huggingface example, as `--aux-config` stores it (a list, or its text).
        for preferred in [
            json!([64, 1, 2, 4, 8, 16, 32, 2]),
            json!("[1, 2, 4, 8, 16, 32, 64]"),
        ] {
            let aux = json!({"max_batch_size": 64, "dynamic_batching": {
                "preferred_batch_size": preferred, "max_queue_delay_microseconds": 5_000_000}});
            assert_eq!(
                batch_config(Some(&aux)).unwrap().unwrap().preferred,
                [1, 2, 4, 8, 16, 32, 64]
            );
        }
    }

    #[test]
    fn without_a_dynamic_batching_section_nothing_is_batched() {
        assert_eq!(batch_config(None), Ok(None));
        assert_eq!(batch_config(Some(&json!({"max_batch_size": 64}))), Ok(None));
        assert_eq!(
            batch_config(Some(&json!({"platform": "onnxruntime_onnx"}))),
            Ok(None)
        );
    }

    #[test]
    fn bad_values_are_named() {
        let err = batch_config(Some(&json!({"dynamic_batching": {}}))).unwrap_err();
        assert!(err.contains("max_batch_size"), "{err}");
        let err =
            batch_config(Some(&json!({"max_batch_size": 0, "dynamic_batching": {}}))).unwrap_err();
        assert!(err.contains("at least 1"), "{err}");
        let err = batch_config(Some(
            &json!({"max_batch_size": 4, "dynamic_batching": {"max_queue_delay_microseconds": -3}}),
        ))
        .unwrap_err();
        assert!(err.contains("max_queue_delay_microseconds"), "{err}");
        let err =
            batch_config(Some(&json!({"max_batch_size": 4, "dynamic_batching": 7}))).unwrap_err();
        assert!(err.contains("section"), "{err}");
        let err = batch_config(Some(
            &json!({"max_batch_size": 4, "dynamic_batching": {"preferred_batch_size": [2, 8]}}),
        ))
        .unwrap_err();
        assert!(err.contains("preferred_batch_size 8"), "{err}");
    }

    #[test]
    fn a_config_pbtxt_text_is_read_too() {
        let text = "name: \"m\"\nmax_batch_size: 32\ninput [ { name: \"x\" dims: [ 4 ] } ]\n\
                    dynamic_batching {\n  preferred_batch_size: [ 8 ]\n  max_queue_delay_microseconds: 500\n  \
                    default_queue_policy { max_queue_size: 100 }\n}\n";
        assert_eq!(
            batch_config(Some(&Value::String(text.into()))),
            Ok(Some(BatchConfig {
                max_batch_size: 32,
                max_queue_delay_us: 500,
                max_queue_size: Some(100),
                preferred: vec![8],
            }))
        );
        let text = "max_batch_size: 16\ndynamic_batching {\n preferred_batch_size: 4\n \
                    preferred_batch_size: 2\n}\n";
        let config = batch_config(Some(&Value::String(text.into())));
        assert_eq!(config.unwrap().unwrap().preferred, [2, 4]);
        let text = "max_batch_size: 32\n";
        assert_eq!(batch_config(Some(&Value::String(text.into()))), Ok(None));
    }
}
