//! Reference data for drift (`serval monitor reference --data`): a CSV file with a header, or a
//! Parquet file, read into one column per feature — numbers where every value is a number (an
//! empty cell or null is missing), texts otherwise.

use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;

use crate::MonitorError;

/// A column of reference data.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// Missing values are NaN.
    Numbers(Vec<f64>),
    /// Missing values are empty.
    Texts(Vec<String>),
}

/// Named columns and the number of rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub columns: Vec<(String, Column)>,
    pub rows: usize,
}

fn invalid(path: &Path, why: impl std::fmt::Display) -> MonitorError {
    MonitorError::InvalidInput(format!("cannot read '{}': {why}", path.display()))
}

/// Reads a `.csv` or `.parquet` file (told by its extension).
pub fn read(path: &Path) -> Result<Table, MonitorError> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("csv") => read_csv(path),
        Some("parquet") => read_parquet(path),
        _ => Err(invalid(path, "reference data is a .csv or a .parquet file")),
    }
}

/// Texts whose every non-empty cell is a number become numbers.
fn typed(name: String, cells: Vec<String>) -> (String, Column) {
    let numbers: Option<Vec<f64>> = cells
        .iter()
        .map(|c| {
            let c = c.trim();
            if c.is_empty() {
                Some(f64::NAN)
            } else {
                c.parse::<f64>().ok()
            }
        })
        .collect();
    match numbers {
        Some(numbers) => (name, Column::Numbers(numbers)),
        None => (name, Column::Texts(cells)),
    }
}

fn read_csv(path: &Path) -> Result<Table, MonitorError> {
    let mut reader = csv::Reader::from_path(path).map_err(|e| invalid(path, e))?;
    let names: Vec<String> = reader
        .headers()
        .map_err(|e| invalid(path, e))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    if names.is_empty() || names.iter().any(String::is_empty) {
        return Err(invalid(
            path,
            "the first line must name every column (the model's feature names)",
        ));
    }
    let mut cells: Vec<Vec<String>> = vec![Vec::new(); names.len()];
    let mut rows = 0;
    for record in reader.records() {
        let record = record.map_err(|e| invalid(path, e))?;
        for (i, column) in cells.iter_mut().enumerate() {
            column.push(record.get(i).unwrap_or("").to_string());
        }
        rows += 1;
    }
    if rows == 0 {
        return Err(invalid(path, "no rows"));
    }
    Ok(Table {
        columns: names
            .into_iter()
            .zip(cells)
            .map(|(n, c)| typed(n, c))
            .collect(),
        rows,
    })
}

fn read_parquet(path: &Path) -> Result<Table, MonitorError> {
    let file = std::fs::File::open(path).map_err(|e| invalid(path, e))?;
    let reader = SerializedFileReader::new(file).map_err(|e| invalid(path, e))?;
    let names: Vec<String> = reader
        .metadata()
        .file_metadata()
        .schema()
        .get_fields()
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    let mut numbers: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let mut texts: Vec<Option<Vec<String>>> = vec![Some(Vec::new()); names.len()];
    let mut numeric = vec![true; names.len()];
    let mut rows = 0;
    for row in reader.get_row_iter(None).map_err(|e| invalid(path, e))? {
        let row = row.map_err(|e| invalid(path, e))?;
        for (i, (name, field)) in row.get_column_iter().enumerate().take(names.len()) {
            let number = match field {
                Field::Null => Some(f64::NAN),
                Field::Bool(b) => Some(f64::from(u8::from(*b))),
                Field::Byte(v) => Some(f64::from(*v)),
                Field::Short(v) => Some(f64::from(*v)),
                Field::Int(v) => Some(f64::from(*v)),
                Field::Long(v) => Some(*v as f64),
                Field::UByte(v) => Some(f64::from(*v)),
                Field::UShort(v) => Some(f64::from(*v)),
                Field::UInt(v) => Some(f64::from(*v)),
                Field::ULong(v) => Some(*v as f64),
                Field::Float16(v) => Some(f64::from(*v)),
                Field::Float(v) => Some(f64::from(*v)),
                Field::Double(v) => Some(*v),
                Field::Str(_) => None,
                other => {
                    return Err(invalid(
                        path,
                        format!(
                            "column '{name}' holds {other}: give one column of numbers or texts per feature (for payload logs, give their folder)"
                        ),
                    ));
                }
            };
            let text = match field {
                Field::Str(s) => s.clone(),
                Field::Null => String::new(),
                other => other.to_string(),
            };
            match number {
                Some(n) => numbers[i].push(n),
                None => numeric[i] = false,
            }
            if let Some(t) = &mut texts[i] {
                t.push(text);
            }
        }
        rows += 1;
    }
    if rows == 0 {
        return Err(invalid(path, "no rows"));
    }
    let columns = names
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            if numeric[i] {
                (name, Column::Numbers(std::mem::take(&mut numbers[i])))
            } else {
                (name, Column::Texts(texts[i].take().unwrap_or_default()))
            }
        })
        .collect();
    Ok(Table { columns, rows })
}

/// Which rows of payload logs make reference data.
#[derive(Debug, Clone, Default)]
pub struct LogRows {
    /// Only rows of this endpoint (a url, or a name: all its versions).
    pub endpoint: String,
    /// Only rows from this time on / before this time (microseconds since the Unix epoch).
    pub since_us: Option<i64>,
    pub until_us: Option<i64>,
    /// The input column (`in_<input>`); needed when the files have several.
    pub input: Option<String>,
    /// The features' names, in the order of the input's columns; `None`: `f0`, `f1`, … (the
    /// names serval gives a model without names), as many as the rows have values.
    pub names: Option<Vec<String>>,
}

fn parquet_files(path: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<(), MonitorError> {
    if path.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let entries = std::fs::read_dir(path).map_err(|e| invalid(path, e))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            parquet_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    Ok(())
}

fn greatest_common_divisor(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Reference data from payload logs (`serval logging`): the rows of one input column of the
/// requests `rows` selects, split into one column per feature. A request of several rows holds
/// them row-major; the number of features is the names' count, else the largest that divides
/// every request's values (single-row requests give it exactly).
pub fn read_payload_logs(path: &Path, rows: &LogRows) -> Result<Table, MonitorError> {
    let mut files = Vec::new();
    parquet_files(path, &mut files)?;
    files.sort();
    if files.is_empty() {
        return Err(invalid(path, "no .parquet files"));
    }
    let wanted = |endpoint: &str| {
        endpoint
            .strip_prefix(rows.endpoint.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    let mut values: Vec<Vec<f64>> = Vec::new();
    let mut column_name: Option<String> = None;
    for file in &files {
        let reader =
            SerializedFileReader::new(std::fs::File::open(file).map_err(|e| invalid(file, e))?)
                .map_err(|e| invalid(file, e))?;
        let inputs: Vec<String> = reader
            .metadata()
            .file_metadata()
            .schema()
            .get_fields()
            .iter()
            .map(|f| f.name().to_string())
            .filter(|n| n.starts_with("in_") && n != "in_body")
            .collect();
        let input = match (&rows.input, inputs.as_slice()) {
            (Some(name), _) => {
                let name = if name.starts_with("in_") {
                    name.clone()
                } else {
                    format!("in_{name}")
                };
                if !inputs.contains(&name) {
                    return Err(invalid(
                        file,
                        format!(
                            "no input column '{name}' (its inputs: {})",
                            inputs.join(", ")
                        ),
                    ));
                }
                name
            }
            (None, [one]) => one.clone(),
            (None, []) => {
                return Err(invalid(
                    file,
                    "no input columns of tensors: reference data comes from the payload logs of native models (endpoints with Python code log text)",
                ));
            }
            (None, many) => {
                return Err(invalid(
                    file,
                    format!(
                        "several input columns ({}): name one with --input",
                        many.join(", ")
                    ),
                ));
            }
        };
        column_name.get_or_insert_with(|| input.clone());
        for row in reader.get_row_iter(None).map_err(|e| invalid(file, e))? {
            let row = row.map_err(|e| invalid(file, e))?;
            let (mut time, mut endpoint, mut list) = (None, None, None);
            for (name, field) in row.get_column_iter() {
                match (name.as_str(), field) {
                    ("time", Field::TimestampMicros(t)) => time = Some(*t),
                    ("endpoint", Field::Str(e)) => endpoint = Some(e.as_str()),
                    (n, Field::ListInternal(l)) if *n == input => list = Some(l),
                    _ => {}
                }
            }
            let (Some(time), Some(endpoint), Some(list)) = (time, endpoint, list) else {
                continue;
            };
            if !wanted(endpoint)
                || rows.since_us.is_some_and(|s| time < s)
                || rows.until_us.is_some_and(|u| time >= u)
            {
                continue;
            }
            values.push(
                list.elements()
                    .iter()
                    .map(|f| match f {
                        Field::Double(v) => *v,
                        Field::Long(v) => *v as f64,
                        Field::Bool(b) => f64::from(u8::from(*b)),
                        _ => f64::NAN,
                    })
                    .collect(),
            );
        }
    }
    let width = match &rows.names {
        Some(names) => names.len(),
        None => values.iter().map(Vec::len).fold(0, greatest_common_divisor),
    };
    if values.is_empty() || width == 0 {
        return Err(invalid(
            path,
            format!(
                "no logged requests of '{}' in that time range",
                rows.endpoint
            ),
        ));
    }
    let names = rows
        .names
        .clone()
        .unwrap_or_else(|| (0..width).map(|i| format!("f{i}")).collect());
    let mut columns: Vec<Vec<f64>> = vec![Vec::new(); width];
    for request in &values {
        if request.len() % width != 0 {
            return Err(invalid(
                path,
                format!(
                    "a request of {} holds {} values, not rows of {width} features",
                    column_name.as_deref().unwrap_or("?"),
                    request.len()
                ),
            ));
        }
        for (i, v) in request.iter().enumerate() {
            columns[i % width].push(*v);
        }
    }
    let count = columns[0].len();
    Ok(Table {
        columns: names
            .into_iter()
            .zip(columns)
            .map(|(n, c)| (n, Column::Numbers(c)))
            .collect(),
        rows: count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_columns_are_numbers_or_texts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ref.csv");
        std::fs::write(&path, "x0,colour,x2\n1.5,red,\n2,\"blue, dark\",3\n").unwrap();
        let table = read(&path).unwrap();
        assert_eq!(table.rows, 2);
        assert_eq!(table.columns[0].0, "x0");
        assert_eq!(table.columns[0].1, Column::Numbers(vec![1.5, 2.0]));
        assert_eq!(
            table.columns[1].1,
            Column::Texts(vec!["red".into(), "blue, dark".into()])
        );
        let Column::Numbers(x2) = &table.columns[2].1 else {
            panic!("numbers")
        };
        assert!(x2[0].is_nan() && x2[1] == 3.0);
    }

    #[test]
    fn payload_logs_give_one_column_per_feature_for_the_endpoint_and_time_range() {
        use crate::record::{Kind, Record, Value};
        let dir = tempfile::tempdir().unwrap();
        let schema: crate::Schema = vec![crate::Column {
            name: "in_input".into(),
            kind: Kind::Floats,
        }]
        .into();
        let mut file =
            crate::file::PayloadFile::create(dir.path().join("a.parquet"), schema).unwrap();
        let record = |t: i64, endpoint: &str, values: Vec<f64>| Record {
            time_us: t,
            endpoint: endpoint.into(),
            version: None,
            request_id: "r".into(),
            protocol: "v2_rest",
            status: 200,
            latency_ms: 1.0,
            values: vec![Value::Floats(values)],
        };
        file.push(record(10, "iris/1", vec![1.0, 2.0])).unwrap();
        file.push(record(20, "iris/2", vec![3.0, 4.0, 5.0, 6.0]))
            .unwrap();
        file.push(record(30, "iris/1", vec![7.0, 8.0])).unwrap();
        file.push(record(20, "other", vec![9.0, 9.0])).unwrap();
        file.finish().unwrap();
        let rows = LogRows {
            endpoint: "iris".into(),
            until_us: Some(30),
            ..LogRows::default()
        };
        let table = read_payload_logs(dir.path(), &rows).unwrap();
        assert_eq!(
            table.rows, 3,
            "two rows of the two-row request, one of the first"
        );
        assert_eq!(
            table.columns[0],
            ("f0".into(), Column::Numbers(vec![1.0, 3.0, 5.0]))
        );
        assert_eq!(
            table.columns[1],
            ("f1".into(), Column::Numbers(vec![2.0, 4.0, 6.0]))
        );
        let none = LogRows {
            endpoint: "iris/2".into(),
            since_us: Some(25),
            ..LogRows::default()
        };
        assert!(
            read_payload_logs(dir.path(), &none)
                .unwrap_err()
                .to_string()
                .contains("no logged requests")
        );
    }

    #[test]
    fn other_files_and_empty_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ref.txt");
        std::fs::write(&path, "x\n1\n").unwrap();
        assert!(
            read(&path)
                .unwrap_err()
                .to_string()
                .contains(".csv or a .parquet")
        );
        let path = dir.path().join("empty.csv");
        std::fs::write(&path, "x,y\n").unwrap();
        assert!(read(&path).unwrap_err().to_string().contains("no rows"));
    }
}
