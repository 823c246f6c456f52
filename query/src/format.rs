//! Result encodings, chosen by the request's `Accept` header.
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::error::QueryError;

/// The formats a query result can be returned in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// An array of row objects (the default).
    Json,
    Csv,
    /// Arrow IPC stream.
    Arrow,
    Parquet,
}

impl Format {
    pub const JSON: &'static str = "application/json";
    pub const CSV: &'static str = "text/csv";
    pub const ARROW: &'static str = "application/vnd.apache.arrow.stream";
    pub const PARQUET: &'static str = "application/vnd.apache.parquet";

    /// Picks the format from an `Accept` header; the first known media type
    /// wins, anything else (or none) means JSON.
    pub fn from_accept(accept: Option<&str>) -> Self {
        let Some(accept) = accept else {
            return Format::Json;
        };
        for part in accept.split(',') {
            let media = part
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            match media.as_str() {
                Self::JSON => return Format::Json,
                Self::CSV => return Format::Csv,
                Self::ARROW | "application/vnd.apache.arrow.file" => return Format::Arrow,
                Self::PARQUET | "application/x-parquet" => return Format::Parquet,
                _ => {}
            }
        }
        Format::Json
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => Self::JSON,
            Format::Csv => "text/csv; charset=utf-8",
            Format::Arrow => Self::ARROW,
            Format::Parquet => Self::PARQUET,
        }
    }

    pub fn encode(
        self,
        schema: &SchemaRef,
        batches: &[RecordBatch],
    ) -> Result<Vec<u8>, QueryError> {
        let internal =
            |e: &dyn std::fmt::Display| QueryError::Internal(format!("encoding {self:?}: {e}"));
        let mut out = Vec::new();
        match self {
            Format::Json => {
                let mut w = datafusion::arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, datafusion::arrow::json::writer::JsonArray>(&mut out);
                for b in batches {
                    w.write(b).map_err(|e| internal(&e))?;
                }
                w.finish().map_err(|e| internal(&e))?;
                drop(w);
                if out.is_empty() {
                    out.extend_from_slice(b"[]");
                }
            }
            Format::Csv => {
                let flat_schema = flat_schema(schema);
                let mut w = datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut out);
                if batches.is_empty() {
                    let empty = RecordBatch::new_empty(flat_schema.clone());
                    w.write(&empty).map_err(|e| internal(&e))?;
                }
                for b in batches {
                    w.write(&flatten(&flat_schema, b)?)
                        .map_err(|e| internal(&e))?;
                }
            }
            Format::Arrow => {
                let mut w = datafusion::arrow::ipc::writer::StreamWriter::try_new(&mut out, schema)
                    .map_err(|e| internal(&e))?;
                for b in batches {
                    w.write(b).map_err(|e| internal(&e))?;
                }
                w.finish().map_err(|e| internal(&e))?;
            }
            Format::Parquet => {
                let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, schema.clone(), None)
                    .map_err(|e| internal(&e))?;
                for b in batches {
                    w.write(b).map_err(|e| internal(&e))?;
                }
                w.close().map_err(|e| internal(&e))?;
            }
        }
        Ok(out)
    }
}

fn is_nested(t: &DataType) -> bool {
    t.is_nested()
        || matches!(
            t,
            DataType::Map(_, _) | DataType::Binary | DataType::LargeBinary
        )
}

/// CSV has no nested values: maps, lists and structs are written as text.
fn flat_schema(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            if is_nested(f.data_type()) {
                Field::new(f.name(), DataType::Utf8, true)
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    Arc::new(Schema::new(fields))
}

fn flatten(flat: &SchemaRef, batch: &RecordBatch) -> Result<RecordBatch, QueryError> {
    let options = FormatOptions::default();
    let columns: Result<Vec<ArrayRef>, QueryError> = batch
        .columns()
        .iter()
        .map(|c| {
            if !is_nested(c.data_type()) {
                return Ok(c.clone());
            }
            let f = ArrayFormatter::try_new(c.as_ref(), &options)
                .map_err(|e| QueryError::Internal(e.to_string()))?;
            let mut b = StringBuilder::new();
            for i in 0..c.len() {
                if c.is_null(i) {
                    b.append_null();
                } else {
                    b.append_value(f.value(i).to_string());
                }
            }
            Ok(Arc::new(b.finish()) as ArrayRef)
        })
        .collect();
    RecordBatch::try_new(flat.clone(), columns?).map_err(|e| QueryError::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_header_picks_the_format() {
        assert_eq!(Format::from_accept(None), Format::Json);
        assert_eq!(Format::from_accept(Some("*/*")), Format::Json);
        assert_eq!(Format::from_accept(Some("text/csv")), Format::Csv);
        assert_eq!(
            Format::from_accept(Some("text/html, application/vnd.apache.arrow.stream;q=0.9")),
            Format::Arrow
        );
        assert_eq!(
            Format::from_accept(Some("application/vnd.apache.parquet")),
            Format::Parquet
        );
    }
}
