//! Atomic Parquet commits: write to a hidden temporary name in the target
//! directory, fsync the file, rename it into place, fsync the directory.
//! A reader (or a crash) sees either the whole file or nothing.
use std::collections::HashSet;
use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::{KeyValue, ParquetMetaDataReader};
use parquet::file::properties::WriterProperties;

use crate::error::{Error, Result};
use crate::paths::ParquetFilePath;
use crate::store::WAL_FOOTER_KEY;

/// Prefix of in-progress files; readers skip them, recovery removes them.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";

fn writer_properties(footer: Option<(String, String)>) -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
        .set_max_row_group_row_count(Some(128 * 1024))
        .set_key_value_metadata(footer.map(|(k, v)| vec![KeyValue::new(k, v)]))
        .build()
}

/// The footer value naming the WAL entries a file holds: the WAL's id and
/// its entries' seqs as inclusive ranges, `{"wal":"<id>","seqs":[[1,4],[9,9]]}`.
pub(crate) fn wal_footer(wal_id: &str, seqs: &[u64]) -> String {
    let mut sorted = seqs.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut ranges: Vec<[u64; 2]> = Vec::new();
    for s in sorted {
        match ranges.last_mut() {
            Some(r) if r[1].checked_add(1) == Some(s) => r[1] = s,
            _ => ranges.push([s, s]),
        }
    }
    serde_json::json!({ "wal": wal_id, "seqs": ranges }).to_string()
}

/// The seqs of WAL `wal_id` held by the committed files of one hour
/// directory, read from their footers (a missing directory holds none).
pub(crate) fn committed_wal_seqs(dir: &Path, wal_id: &str) -> Result<HashSet<u64>> {
    let mut out = HashSet::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !name.ends_with(".parquet") || name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let meta = ParquetMetaDataReader::new()
            .parse_and_finish(&file)
            .map_err(|e| Error::Parquet {
                path: path.clone(),
                source: e,
            })?;
        let Some(kv) = meta.file_metadata().key_value_metadata() else {
            continue;
        };
        for item in kv.iter().filter(|kv| kv.key == WAL_FOOTER_KEY) {
            let Some(v) = item
                .value
                .as_deref()
                .and_then(|v| serde_json::from_str::<serde_json::Value>(v).ok())
            else {
                continue;
            };
            if v["wal"].as_str() != Some(wal_id) {
                continue;
            }
            for r in v["seqs"].as_array().into_iter().flatten() {
                if let (Some(a), Some(b)) = (r[0].as_u64(), r[1].as_u64()) {
                    // ranges are written by `wal_footer`; a corrupt huge one is bounded
                    out.extend((a..=b).take(1 << 24));
                }
            }
        }
    }
    Ok(out)
}

/// A fully written and fsynced file under its temporary name, not yet visible.
#[derive(Debug)]
pub(crate) struct StagedFile {
    temp_path: PathBuf,
    final_path: PathBuf,
    pub(crate) size: u64,
}

impl StagedFile {
    /// Renames the file into place and fsyncs its directory. On error the
    /// temporary file is removed and nothing became visible.
    pub(crate) fn publish(self) -> Result<PathBuf> {
        crate::atomic::publish(&self.temp_path, &self.final_path)
            .map_err(|e| Error::io(&self.final_path, e))?;
        Ok(self.final_path)
    }
}

/// Writes `batches` as one Parquet file for `path` below `root` under a
/// temporary name and fsyncs it; [`StagedFile::publish`] makes it visible.
pub(crate) fn stage_parquet(
    root: &Path,
    path: &ParquetFilePath,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    footer: Option<(String, String)>,
) -> Result<StagedFile> {
    let final_path = path.absolute(root);
    let dir = final_path.parent().expect("parquet paths have a directory");
    create_dir_all_synced(root, dir)?;
    let file_name = final_path
        .file_name()
        .and_then(|n| n.to_str())
        .expect("parquet paths have a file name");
    let temp_path = dir.join(format!("{TEMP_PREFIX}{file_name}"));
    let parquet_err = |e| Error::Parquet {
        path: temp_path.clone(),
        source: e,
    };
    let result = (|| {
        let file = File::create(&temp_path).map_err(|e| Error::io(&temp_path, e))?;
        let mut writer = ArrowWriter::try_new(
            BufWriter::new(file),
            schema.clone(),
            Some(writer_properties(footer)),
        )
        .map_err(parquet_err)?;
        for b in batches {
            writer.write(b).map_err(parquet_err)?;
        }
        let buffered = writer.into_inner().map_err(parquet_err)?;
        let file = buffered
            .into_inner()
            .map_err(|e| Error::io(&temp_path, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&temp_path, e))?;
        file.metadata()
            .map_err(|e| Error::io(&temp_path, e))
            .map(|m| m.len())
    })();
    match result {
        Ok(size) => Ok(StagedFile {
            temp_path,
            final_path,
            size,
        }),
        Err(e) => {
            let _ = fs::remove_file(&temp_path);
            Err(e)
        }
    }
}

/// Creates `dir` and its missing parents below `root`, fsyncing each parent
/// whose entries changed, so a new partition directory survives a crash.
fn create_dir_all_synced(root: &Path, dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut cur = dir;
    while !cur.is_dir() {
        missing.push(cur.to_path_buf());
        match cur.parent() {
            Some(p) if p.starts_with(root) || p == root => cur = p,
            _ => break,
        }
    }
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for m in missing.iter().rev() {
        if let Some(parent) = m.parent() {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

/// Fsyncs `dir` if it still exists (after deletions below it).
pub(crate) fn sync_dir_if_exists(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        sync_dir(dir)
    } else {
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    crate::atomic::sync_dir(dir).map_err(|e| Error::io(dir, e))
}

/// Removes temporary files left behind by a crash mid-commit; returns how many.
pub(crate) fn remove_stale_temp_files(dir: &Path) -> Result<usize> {
    let mut removed = 0;
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            removed += remove_stale_temp_files(&path)?;
        } else if name.to_string_lossy().starts_with(TEMP_PREFIX) {
            fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            removed += 1;
        }
    }
    Ok(removed)
}
