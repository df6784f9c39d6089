//! One Parquet payload file: records buffered into row groups, written under a name that does
//! not end in `.parquet` and renamed to its final name once complete (a reader listing
//! `*.parquet` never sees a half-written file).
//!
//! Columns: `time` (timestamp, microseconds, UTC), `endpoint`, `version` (null when the endpoint
//! has none), `request_id`, `protocol` (strings), `status` (int32), `latency_ms` (double), then
//! the schema's columns: lists of numbers as `list<double>` / `list<int64>` / `list<boolean>` /
//! `list<string>` (null when the request did not have the value), a body as a string.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use parquet::basic::{Compression, LogicalType, Repetition, TimeUnit, Type as Physical};
use parquet::data_type::Int64Type;
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DataType, DoubleType, Int32Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::{SerializedFileWriter, SerializedRowGroupWriter};
use parquet::schema::types::{Type, TypePtr};

use crate::MonitorError;
use crate::record::{Kind, Record, Schema, Value};

/// A row group is written once its records hold about this many bytes (or rows).
const ROW_GROUP_BYTES: usize = 4 << 20;
const ROW_GROUP_ROWS: usize = 16_384;

/// The suffix of a file still being written.
pub const PARTIAL: &str = ".partial";

/// An open payload file.
pub struct PayloadFile {
    writer: SerializedFileWriter<BufWriter<File>>,
    partial: PathBuf,
    path: PathBuf,
    schema: Schema,
    rows: Vec<Record>,
    buffered: usize,
    written_rows: usize,
    /// When it was opened (files are closed by age).
    pub opened: Instant,
}

fn parquet_error(path: &Path) -> impl Fn(parquet::errors::ParquetError) -> MonitorError + '_ {
    move |e| MonitorError::Write(format!("{}: {e}", path.display()))
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> MonitorError + '_ {
    move |e| MonitorError::Write(format!("{}: {e}", path.display()))
}

impl PayloadFile {
    /// Starts the file that becomes `path` (its parent folders made as needed).
    pub fn create(path: PathBuf, schema: Schema) -> Result<PayloadFile, MonitorError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_error(parent))?;
        }
        let mut partial = path.clone().into_os_string();
        partial.push(PARTIAL);
        let partial = PathBuf::from(partial);
        let file = File::create(&partial).map_err(io_error(&partial))?;
        let properties = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_created_by("serval".to_string())
            .build();
        let writer = SerializedFileWriter::new(
            BufWriter::with_capacity(1 << 16, file),
            parquet_schema(&schema).map_err(parquet_error(&partial))?,
            Arc::new(properties),
        )
        .map_err(parquet_error(&partial))?;
        Ok(PayloadFile {
            writer,
            partial,
            path,
            schema,
            rows: Vec::new(),
            buffered: 0,
            written_rows: 0,
            opened: Instant::now(),
        })
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The final name.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds a record (a row group is written when enough are buffered).
    pub fn push(&mut self, record: Record) -> Result<(), MonitorError> {
        self.buffered += record.size();
        self.rows.push(record);
        if self.buffered >= ROW_GROUP_BYTES || self.rows.len() >= ROW_GROUP_ROWS {
            self.write_group()?;
        }
        Ok(())
    }

    /// Bytes written so far plus about what is buffered.
    pub fn size(&self) -> usize {
        self.writer.bytes_written() + self.buffered
    }

    /// Records in the file (written and buffered).
    pub fn rows(&self) -> usize {
        self.written_rows + self.rows.len()
    }

    /// Writes what is buffered, closes the file, makes it durable and gives it its final name.
    pub fn finish(mut self) -> Result<PathBuf, MonitorError> {
        self.write_group()?;
        let file = self
            .writer
            .into_inner()
            .map_err(parquet_error(&self.partial))?
            .into_inner()
            .map_err(|e| io_error(&self.partial)(e.into_error()))?;
        file.sync_all().map_err(io_error(&self.partial))?;
        drop(file);
        std::fs::rename(&self.partial, &self.path).map_err(io_error(&self.path))?;
        Ok(self.path)
    }

    /// Gives up on the file (it could not be written): removes what was written.
    pub fn abandon(self) {
        let _ = std::fs::remove_file(&self.partial);
    }

    fn write_group(&mut self) -> Result<(), MonitorError> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.rows);
        self.buffered = 0;
        let error = parquet_error(&self.partial);
        let mut group = self.writer.next_row_group().map_err(&error)?;
        write_group(&mut group, &self.schema, &rows).map_err(&error)?;
        group.close().map_err(&error)?;
        self.written_rows += rows.len();
        Ok(())
    }
}

fn write_group(
    group: &mut SerializedRowGroupWriter<'_, BufWriter<File>>,
    schema: &Schema,
    rows: &[Record],
) -> parquet::errors::Result<()> {
    let text = |s: &str| ByteArray::from(s.as_bytes().to_vec());
    required::<Int64Type>(group, rows.iter().map(|r| r.time_us).collect())?;
    required::<ByteArrayType>(group, rows.iter().map(|r| text(&r.endpoint)).collect())?;
    optional::<ByteArrayType>(group, rows.iter().map(|r| r.version.as_deref().map(text)))?;
    required::<ByteArrayType>(group, rows.iter().map(|r| text(&r.request_id)).collect())?;
    required::<ByteArrayType>(group, rows.iter().map(|r| text(r.protocol)).collect())?;
    required::<Int32Type>(group, rows.iter().map(|r| i32::from(r.status)).collect())?;
    required::<DoubleType>(group, rows.iter().map(|r| r.latency_ms).collect())?;
    for (i, column) in schema.iter().enumerate() {
        let values = rows.iter().map(|r| r.values.get(i).unwrap_or(&Value::Null));
        match column.kind {
            Kind::Floats => list::<DoubleType, _>(group, values, |v| match v {
                Value::Floats(v) => Some(v.clone()),
                _ => None,
            })?,
            Kind::Ints => list::<Int64Type, _>(group, values, |v| match v {
                Value::Ints(v) => Some(v.clone()),
                _ => None,
            })?,
            Kind::Bools => list::<BoolType, _>(group, values, |v| match v {
                Value::Bools(v) => Some(v.clone()),
                _ => None,
            })?,
            Kind::Texts => list::<ByteArrayType, _>(group, values, |v| match v {
                Value::Texts(v) => Some(v.iter().map(|s| text(s)).collect()),
                _ => None,
            })?,
            Kind::Text => optional::<ByteArrayType>(
                group,
                values.map(|v| match v {
                    Value::Text(s) => Some(text(s)),
                    _ => None,
                }),
            )?,
        }
    }
    Ok(())
}

fn next<'g>(
    group: &'g mut SerializedRowGroupWriter<'_, BufWriter<File>>,
) -> parquet::errors::Result<parquet::file::writer::SerializedColumnWriter<'g>> {
    group.next_column()?.ok_or_else(|| {
        parquet::errors::ParquetError::General("more values than columns".to_string())
    })
}

fn required<T: DataType>(
    group: &mut SerializedRowGroupWriter<'_, BufWriter<File>>,
    values: Vec<T::T>,
) -> parquet::errors::Result<()> {
    let mut column = next(group)?;
    column.typed::<T>().write_batch(&values, None, None)?;
    column.close()
}

fn optional<T: DataType>(
    group: &mut SerializedRowGroupWriter<'_, BufWriter<File>>,
    values: impl Iterator<Item = Option<T::T>>,
) -> parquet::errors::Result<()> {
    let mut present = Vec::new();
    let mut levels = Vec::new();
    for value in values {
        levels.push(i16::from(value.is_some()));
        present.extend(value);
    }
    let mut column = next(group)?;
    column
        .typed::<T>()
        .write_batch(&present, Some(&levels), None)?;
    column.close()
}

/// A `list<element>` column: definition level 0 = null, 1 = empty list, 2 = an element;
/// repetition level 0 starts a row's list, 1 continues it.
fn list<'r, T: DataType, F>(
    group: &mut SerializedRowGroupWriter<'_, BufWriter<File>>,
    values: impl Iterator<Item = &'r Value>,
    elements: F,
) -> parquet::errors::Result<()>
where
    F: Fn(&Value) -> Option<Vec<T::T>>,
{
    let mut all = Vec::new();
    let mut definitions = Vec::new();
    let mut repetitions = Vec::new();
    for value in values {
        match elements(value) {
            None => {
                definitions.push(0);
                repetitions.push(0);
            }
            Some(list) if list.is_empty() => {
                definitions.push(1);
                repetitions.push(0);
            }
            Some(list) => {
                for i in 0..list.len() {
                    definitions.push(2);
                    repetitions.push(i16::from(i > 0));
                }
                all.extend(list);
            }
        }
    }
    let mut column = next(group)?;
    column
        .typed::<T>()
        .write_batch(&all, Some(&definitions), Some(&repetitions))?;
    column.close()
}

fn primitive(
    name: &str,
    physical: Physical,
    logical: Option<LogicalType>,
    repetition: Repetition,
) -> parquet::errors::Result<TypePtr> {
    Ok(Arc::new(
        Type::primitive_type_builder(name, physical)
            .with_logical_type(logical)
            .with_repetition(repetition)
            .build()?,
    ))
}

fn parquet_schema(schema: &Schema) -> parquet::errors::Result<TypePtr> {
    const OPTIONAL: Repetition = Repetition::OPTIONAL;
    const REQUIRED: Repetition = Repetition::REQUIRED;
    let string = || Some(LogicalType::String);
    let mut fields = vec![
        primitive(
            "time",
            Physical::INT64,
            Some(LogicalType::timestamp(true, TimeUnit::MICROS)),
            REQUIRED,
        )?,
        primitive("endpoint", Physical::BYTE_ARRAY, string(), REQUIRED)?,
        primitive("version", Physical::BYTE_ARRAY, string(), OPTIONAL)?,
        primitive("request_id", Physical::BYTE_ARRAY, string(), REQUIRED)?,
        primitive("protocol", Physical::BYTE_ARRAY, string(), REQUIRED)?,
        primitive("status", Physical::INT32, None, REQUIRED)?,
        primitive("latency_ms", Physical::DOUBLE, None, REQUIRED)?,
    ];
    for column in schema.iter() {
        let (physical, logical) = match column.kind {
            Kind::Text => {
                fields.push(primitive(
                    &column.name,
                    Physical::BYTE_ARRAY,
                    string(),
                    OPTIONAL,
                )?);
                continue;
            }
            Kind::Floats => (Physical::DOUBLE, None),
            Kind::Ints => (Physical::INT64, None),
            Kind::Bools => (Physical::BOOLEAN, None),
            Kind::Texts => (Physical::BYTE_ARRAY, string()),
        };
        let element = primitive("element", physical, logical, REQUIRED)?;
        let repeated = Type::group_type_builder("list")
            .with_repetition(Repetition::REPEATED)
            .with_fields(vec![element])
            .build()?;
        fields.push(Arc::new(
            Type::group_type_builder(&column.name)
                .with_repetition(OPTIONAL)
                .with_logical_type(Some(LogicalType::List))
                .with_fields(vec![Arc::new(repeated)])
                .build()?,
        ));
    }
    Ok(Arc::new(
        Type::group_type_builder("schema")
            .with_fields(fields)
            .build()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Column;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    fn schema() -> Schema {
        vec![
            Column {
                name: "in_input".into(),
                kind: Kind::Floats,
            },
            Column {
                name: "out_label".into(),
                kind: Kind::Ints,
            },
            Column {
                name: "out_names".into(),
                kind: Kind::Texts,
            },
        ]
        .into()
    }

    fn record(i: i64) -> Record {
        Record {
            time_us: 1_700_000_000_000_000 + i,
            endpoint: "iris/2".into(),
            version: (i % 2 == 0).then(|| "2".to_string()),
            request_id: format!("r{i}"),
            protocol: "v2_rest",
            status: 200,
            latency_ms: 0.5,
            values: vec![
                Value::Floats(vec![i as f64, 1.5]),
                if i % 3 == 0 {
                    Value::Null
                } else {
                    Value::Ints(vec![i])
                },
                Value::Texts(if i % 5 == 0 {
                    Vec::new()
                } else {
                    vec!["a".into(), "b".into()]
                }),
            ],
        }
    }

    #[test]
    fn a_file_appears_under_its_name_only_when_complete_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ep=iris_2/x.parquet");
        let mut file = PayloadFile::create(path.clone(), schema()).unwrap();
        for i in 0..40_000 {
            file.push(record(i)).unwrap();
        }
        assert!(!path.exists(), "not under its final name while written");
        assert_eq!(file.rows(), 40_000);
        let done = file.finish().unwrap();
        assert_eq!(done, path);
        let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
        let meta = reader.metadata();
        assert_eq!(meta.file_metadata().num_rows(), 40_000);
        assert!(
            meta.num_row_groups() >= 3,
            "row groups of at most 16,384 rows"
        );
        let rows: Vec<_> = reader
            .get_row_iter(None)
            .unwrap()
            .map(|r| r.unwrap().to_string())
            .take(6)
            .collect();
        assert!(rows[0].contains("in_input: [0E0, 1.5]"), "{}", rows[0]);
        assert!(rows[0].contains("out_label: null"), "{}", rows[0]);
        assert!(rows[0].contains("out_names: []"), "{}", rows[0]);
        assert!(rows[1].contains("version: null"), "{}", rows[1]);
        assert!(rows[1].contains("out_label: [1]"), "{}", rows[1]);
        assert!(rows[1].contains(r#"out_names: ["a", "b"]"#), "{}", rows[1]);
        assert!(rows[2].contains(r#"version: "2""#), "{}", rows[2]);
    }

    #[test]
    fn an_abandoned_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.parquet");
        let mut file = PayloadFile::create(path.clone(), schema()).unwrap();
        file.push(record(1)).unwrap();
        file.abandon();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
