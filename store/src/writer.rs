//! Parquet encoding of committed files. A file is encoded whole in memory
//! and put as one object: on local disk and on object storage alike, a
//! reader (or a crash) sees the whole file or nothing.
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::encryption::encrypt::FileEncryptionProperties;
use parquet::file::properties::{WriterProperties, WriterPropertiesBuilder};
use parquet::schema::types::ColumnPath;

use crate::error::{Error, Result};

/// Rows per row group: large enough for good compression, small enough that
/// statistics prune well.
const ROW_GROUP_ROWS: usize = 128 * 1024;

fn base_properties() -> WriterPropertiesBuilder {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
}

/// Properties of a flushed file.
pub(crate) fn flush_properties() -> WriterProperties {
    base_properties().build()
}

/// Properties of a compacted file: a bloom filter on `trace_id` when the
/// table has one, so a trace lookup skips row groups without it.
pub(crate) fn compacted_properties(schema: &SchemaRef) -> WriterProperties {
    let mut b = base_properties();
    if schema.column_with_name("trace_id").is_some() {
        b = b
            .set_column_bloom_filter_enabled(ColumnPath::from("trace_id"), true)
            .set_column_bloom_filter_fpp(ColumnPath::from("trace_id"), 0.01);
    }
    b.build()
}

/// `props` with the file encrypted (footer and every column) under `key`,
/// which the footer names.
pub(crate) fn encrypted(
    props: WriterProperties,
    key: Option<&crate::crypto::DataKey>,
) -> Result<WriterProperties> {
    let Some(key) = key else {
        return Ok(props);
    };
    let encryption = FileEncryptionProperties::builder(key.key().to_vec())
        .with_footer_key_metadata(key.metadata())
        .build()
        .map_err(|e| Error::Encode {
            what: "encryption properties".into(),
            source: e,
        })?;
    Ok(props
        .into_builder()
        .with_file_encryption_properties(encryption)
        .build())
}

/// Encodes `batches` as one Parquet file in memory.
pub(crate) fn encode_parquet(
    what: &str,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    props: WriterProperties,
) -> Result<Bytes> {
    let parquet_err = |e| Error::Encode {
        what: what.to_string(),
        source: e,
    };
    let mut writer =
        ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props)).map_err(parquet_err)?;
    for b in batches {
        writer.write(b).map_err(parquet_err)?;
    }
    Ok(Bytes::from(writer.into_inner().map_err(parquet_err)?))
}
