//! Parsing of the CLI's structured arguments: io shapes and types, aux config, metric variables.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail, ensure};
use serval_engine::Datatype;
use serval_store::{IoSpec, MetricVariable};

use crate::cli::IoArgs;

/// A `--input-type` / `--output-type` as stored: its numpy name (`float32`; `int` → `int64`,
/// `np.float32`, `TYPE_FP32` and the like accepted), by the one type vocabulary the server reads
/// them with (`serval_engine::Datatype`). Text types keep their kind (`str`, `bytes`, `object`).
fn dtype(raw: &str) -> Result<String> {
    let datatype = Datatype::from_numpy(raw).ok_or_else(|| {
        anyhow!(
            "'{raw}' is not a supported type (use numpy names: float32, float64, int32, int64, uint8, bool, str, ...)"
        )
    })?;
    if datatype != Datatype::Bytes {
        return Ok(datatype.numpy_name().to_string());
    }
    let name = raw.trim().to_ascii_lowercase();
    Ok(if name.contains("object") {
        "object"
    } else if name.contains("bytes") {
        "bytes"
    } else {
        "str"
    }
    .to_string())
}

/// clearml's size converter: `1 28 28` is one shape; `"[1, 784]" "[-1, 10]"` are one per input.
fn shapes(flag: &str, raw: &[String]) -> Result<Vec<Vec<i64>>> {
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    let values: Vec<serde_json::Value> = raw
        .iter()
        .map(|item| {
            serde_json::from_str(item)
                .with_context(|| format!("{flag} '{item}' is neither a number nor a JSON list"))
        })
        .collect::<Result<_>>()?;
    let as_dim = |v: &serde_json::Value| -> Result<i64> {
        v.as_i64()
            .ok_or_else(|| anyhow!("{flag}: '{v}' is not an integer dimension"))
    };
    if values.iter().all(|v| v.is_number()) {
        return Ok(vec![values.iter().map(as_dim).collect::<Result<_>>()?]);
    }
    if values.iter().all(|v| v.is_array()) {
        return values
            .iter()
            .map(|v| {
                v.as_array()
                    .map_or(Ok(Vec::new()), |dims| dims.iter().map(as_dim).collect())
            })
            .collect();
    }
    bail!("{flag} mixes numbers and lists: give `1 28 28` for one input or one JSON list per input")
}

/// Builds the stored io spec from the six flags.
pub fn io_spec(args: &IoArgs) -> Result<IoSpec> {
    let spec = IoSpec {
        input_name: args.input_name.clone(),
        input_type: args
            .input_type
            .iter()
            .map(|t| dtype(t))
            .collect::<Result<_>>()?,
        input_size: shapes("--input-size", &args.input_size)?,
        output_name: args.output_name.clone(),
        output_type: args
            .output_type
            .iter()
            .map(|t| dtype(t))
            .collect::<Result<_>>()?,
        output_size: shapes("--output-size", &args.output_size)?,
    };
    for (flag, names) in [
        ("--input-name", &spec.input_name),
        ("--output-name", &spec.output_name),
    ] {
        if let Some(empty) = names.iter().find(|n| n.trim().is_empty()) {
            bail!("{flag} has an empty name '{empty}'");
        }
    }
    Ok(spec)
}

/// `--aux-config`: one existing file is stored as its text; otherwise `key=value` items, dotted
/// keys nesting, values read as JSON when they parse (numbers, booleans, "quoted strings", lists)
/// and as plain strings otherwise.
pub fn aux_config(raw: &[String]) -> Result<Option<serde_json::Value>> {
    if raw.is_empty() {
        return Ok(None);
    }
    if let [single] = raw {
        let path = Path::new(single);
        if !single.contains('=') && path.is_file() {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading --aux-config file '{single}'"))?;
            return Ok(Some(serde_json::Value::String(text)));
        }
    }
    let mut root = serde_json::Map::new();
    for item in raw {
        let (key, value) = item.split_once('=').ok_or_else(|| {
            anyhow!(
                "--aux-config item '{item}' must be key=value (or the path of an existing file)"
            )
        })?;
        let key = key.trim();
        ensure!(
            !key.is_empty(),
            "--aux-config item '{item}' has an empty key"
        );
        let value = value.trim();
        let value = serde_json::from_str(value)
            .unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
        let mut parts: Vec<&str> = key.split('.').collect();
        ensure!(
            parts.iter().all(|p| !p.is_empty()),
            "--aux-config key '{key}' has an empty part"
        );
        let last = parts.pop().unwrap_or(key);
        let mut node = &mut root;
        for part in parts {
            let entry = node
                .entry(part.to_string())
                .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
            node = entry.as_object_mut().ok_or_else(|| {
                anyhow!("--aux-config key '{key}' nests under a value that is not a section")
            })?;
        }
        node.insert(last.to_string(), value);
    }
    Ok(Some(serde_json::Value::Object(root)))
}

/// The aux configuration with serval's batching flags written in as Triton's keys (checked with
/// the rest of the endpoint by `serval_admin`).
pub fn with_batching(
    aux: Option<serde_json::Value>,
    args: &crate::cli::BatchArgs,
) -> Result<Option<serde_json::Value>> {
    use serde_json::{Value, json};
    let flags = args.max_batch_size.is_some()
        || args.max_queue_delay_ms.is_some()
        || args.max_queue_size.is_some();
    let mut aux = aux;
    if flags {
        let mut map = match aux {
            None => serde_json::Map::new(),
            Some(Value::Object(map)) => map,
            Some(_) => bail!(
                "--max-batch-size/--max-queue-delay-ms/--max-queue-size cannot be combined with an \
                 --aux-config file: write max_batch_size and a dynamic_batching block in the file"
            ),
        };
        if let Some(rows) = args.max_batch_size {
            map.insert("max_batch_size".into(), json!(rows));
        }
        let section = map.entry("dynamic_batching").or_insert_with(|| json!({}));
        let Value::Object(section) = section else {
            bail!("--aux-config dynamic_batching must be a section (dynamic_batching.KEY=VALUE)");
        };
        if let Some(ms) = args.max_queue_delay_ms {
            ensure!(
                ms.is_finite() && ms >= 0.0,
                "--max-queue-delay-ms must be 0 or more milliseconds"
            );
            section.insert(
                "max_queue_delay_microseconds".into(),
                json!((ms * 1000.0).round() as u64),
            );
        }
        if let Some(size) = args.max_queue_size {
            ensure!(size >= 1, "--max-queue-size must be at least 1");
            let policy = section
                .entry("default_queue_policy")
                .or_insert_with(|| json!({}));
            if let Value::Object(policy) = policy {
                policy.insert("max_queue_size".into(), json!(size));
            }
        }
        aux = Some(Value::Object(map));
    }
    Ok(aux)
}

fn variable_name(raw: &str) -> Result<String> {
    Ok(serval_admin::metrics::check_variable_name(raw)?)
}

fn split_variable<'a>(raw: &'a str, example: &str) -> Result<(String, &'a str)> {
    let (name, buckets) = raw.split_once('=').ok_or_else(|| {
        anyhow!("Variable '{raw}' should be in the form of <name>=<buckets> example: {example}")
    })?;
    Ok((variable_name(name)?, buckets))
}

/// `name=b1,b2,...` or `name=min/max/count` (count equal buckets from min to max: count + 1 bounds).
pub fn scalar_variable(raw: &str) -> Result<(String, MetricVariable)> {
    let (name, spec) = split_variable(raw, "x1=0,1,2,3,4,5 or x1=0.0/1.0/5")?;
    let mut buckets: Vec<f64> = if spec.contains('/') {
        let parts: Vec<&str> = spec.split('/').collect();
        ensure!(
            parts.len() == 3,
            "scalar variable '{raw}': use name=min/max/count"
        );
        let min: f64 = parts[0]
            .trim()
            .parse()
            .with_context(|| format!("scalar variable '{raw}': bad min"))?;
        let max: f64 = parts[1]
            .trim()
            .parse()
            .with_context(|| format!("scalar variable '{raw}': bad max"))?;
        let count: u32 = parts[2].trim().parse().with_context(|| {
            format!("scalar variable '{raw}': count must be a positive integer")
        })?;
        ensure!(
            min.is_finite() && max.is_finite() && min < max,
            "scalar variable '{raw}': min must be below max"
        );
        ensure!(
            (1..=1000).contains(&count),
            "scalar variable '{raw}': count must be between 1 and 1000"
        );
        (0..=count)
            .map(|i| min + (max - min) * f64::from(i) / f64::from(count))
            .collect()
    } else {
        spec.split(',')
            .map(|b| {
                let b = b.trim();
                b.parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| anyhow!("scalar variable '{raw}': bucket '{b}' is not a number"))
            })
            .collect::<Result<_>>()?
    };
    buckets.sort_by(f64::total_cmp);
    buckets.dedup();
    ensure!(
        !buckets.is_empty(),
        "scalar variable '{raw}' has no buckets"
    );
    Ok((name, MetricVariable::Scalar { buckets }))
}

/// `name=v1,v2,...`
pub fn enum_variable(raw: &str) -> Result<(String, MetricVariable)> {
    let (name, spec) = split_variable(raw, "x1=cat,dog,sheep")?;
    let mut values: Vec<String> = Vec::new();
    for v in spec.split(',').map(str::trim) {
        ensure!(!v.is_empty(), "enum variable '{raw}' has an empty value");
        if !values.iter().any(|x| x == v) {
            values.push(v.to_string());
        }
    }
    Ok((name, MetricVariable::Enum { buckets: values }))
}

/// All variables of one `metrics add`, later ones replacing earlier ones of the same name.
pub fn metric_variables(
    scalar: &[String],
    enums: &[String],
    values: &[String],
    counters: &[String],
    warn: &mut dyn FnMut(String),
) -> Result<BTreeMap<String, MetricVariable>> {
    let mut out = BTreeMap::new();
    let mut add = |(name, var): (String, MetricVariable)| {
        if out.insert(name.clone(), var).is_some() {
            warn(format!("{name} defined twice"));
        }
    };
    for raw in scalar {
        add(scalar_variable(raw)?);
    }
    for raw in enums {
        add(enum_variable(raw)?);
    }
    for raw in values {
        add((variable_name(raw)?, MetricVariable::Value));
    }
    for raw in counters {
        add((variable_name(raw)?, MetricVariable::Counter));
    }
    Ok(out)
}

pub fn framework(raw: &str) -> Result<String> {
    Ok(serval_admin::registry::framework(raw)?)
}

/// Guesses the framework of a model file from its first bytes.
pub fn sniff_framework(path: &Path) -> Option<&'static str> {
    use std::io::Read;
    let mut head = vec![0u8; 4096];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .ok()?;
    let head = &head[..n];
    let text = String::from_utf8_lossy(head);
    if text.starts_with("tree\n") || text.starts_with("tree\r\n") {
        return Some("lightgbm");
    }
    if head.first() == Some(&b'{') && text.contains("learner") {
        return Some("xgboost");
    }
    match head.first()? {
        0x80 => Some("scikitlearn"), // pickle protocol 2+
        0x78 if head
            .get(1)
            .is_some_and(|b| matches!(b, 0x01 | 0x5e | 0x9c | 0xda)) =>
        {
            Some("scikitlearn")
        } // zlib joblib
        0x08 if text.contains("onnx") || text.contains("skl2onnx") || text.contains("ai.onnx") => {
            Some("onnx")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn sizes_follow_clearml_converter() {
        assert_eq!(
            shapes("x", &strings(&["1", "28", "28"])).unwrap(),
            vec![vec![1, 28, 28]]
        );
        assert_eq!(
            shapes("x", &strings(&["[-1, -1]", "[1,2]"])).unwrap(),
            vec![vec![-1, -1], vec![1, 2]]
        );
        assert!(shapes("x", &strings(&["1", "[1]"])).is_err());
        assert!(shapes("x", &strings(&["a"])).is_err());
        assert!(shapes("x", &strings(&["1.5"])).is_err());
    }

    #[test]
    fn types_are_numpy_names() {
        assert_eq!(dtype("float").unwrap(), "float64");
        assert_eq!(dtype("float32").unwrap(), "float32");
        assert!(dtype("floaty").is_err());
        // The server's vocabulary: what it reads, the CLI accepts.
        assert_eq!(dtype("np.float32").unwrap(), "float32");
        assert_eq!(dtype("TYPE_FP32").unwrap(), "float32");
        assert_eq!(dtype("bfloat16").unwrap(), "bfloat16");
        assert_eq!(dtype("int").unwrap(), "int64");
        assert_eq!(dtype("string").unwrap(), "str");
        assert_eq!(dtype("bytes").unwrap(), "bytes");
        assert_eq!(dtype("object").unwrap(), "object");
        for d in Datatype::ALL {
            let stored = dtype(d.numpy_name()).unwrap();
            assert_eq!(Datatype::from_numpy(&stored), Some(d), "{d}");
        }
    }

    #[test]
    fn aux_config_nests_and_reads_json_values() {
        let v = aux_config(&strings(&[
            "platform=\"onnxruntime_onnx\"",
            "max_batch_size=8",
            "a.b=c",
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"platform": "onnxruntime_onnx", "max_batch_size": 8, "a": {"b": "c"}})
        );
        assert!(aux_config(&strings(&["novalue"])).is_err());
        assert!(aux_config(&strings(&["a=1", "a.b=2"])).is_err());
    }

    #[test]
    fn scalar_ranges_mean_equal_buckets() {
        let (name, var) = scalar_variable("x1=0.0/1.0/5").unwrap();
        assert_eq!(name, "x1");
        let MetricVariable::Scalar { buckets } = var else {
            panic!()
        };
        assert_eq!(buckets.len(), 6);
        assert_eq!(buckets[0], 0.0);
        assert!((buckets[1] - 0.2).abs() < 1e-12);
        assert_eq!(buckets[5], 1.0);
        assert!(scalar_variable("x1=1/0/5").is_err());
        assert!(scalar_variable("x1=0/1/0").is_err());
        assert!(scalar_variable("x1").is_err());
        let (_, var) = scalar_variable("y=1,0.5,0,0.5").unwrap();
        assert_eq!(
            var,
            MetricVariable::Scalar {
                buckets: vec![0.0, 0.5, 1.0]
            }
        );
        assert!(scalar_variable("y=1,nan").is_err());
    }

    #[test]
    fn enum_values_keep_order_without_duplicates() {
        let (_, var) = enum_variable("animal=cat, dog,cat").unwrap();
        assert_eq!(
            var,
            MetricVariable::Enum {
                buckets: strings(&["cat", "dog"])
            }
        );
        assert!(enum_variable("animal=cat,,dog").is_err());
    }

    #[test]
    fn duplicates_warn_and_last_wins() {
        let mut warnings = Vec::new();
        let vars = metric_variables(&strings(&["x=1,2"]), &[], &strings(&["x"]), &[], &mut |w| {
            warnings.push(w)
        })
        .unwrap();
        assert_eq!(vars["x"], MetricVariable::Value);
        assert_eq!(warnings, vec!["x defined twice".to_string()]);
    }

    #[test]
    fn frameworks_accept_aliases() {
        assert_eq!(framework("scikit-learn").unwrap(), "scikitlearn");
        assert_eq!(framework("XGBoost").unwrap(), "xgboost");
        assert!(framework("sklearnish").is_err());
    }
}
