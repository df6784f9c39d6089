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
                            "column '{name}' holds {other}: give one column of numbers or texts per feature"
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
