//! The per-tenant metric series limit (`limits.max_metric_series`): a series
//! is a metric name with one set of resource and data point attributes. A
//! tenant's known series are kept as 64-bit hashes, at most the limit; data
//! points of a new series past it are rejected one by one (OTLP partial
//! success), those of known series keep flowing.
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use arrow::array::{Array, BooleanArray, MapArray, StringArray};
use arrow::compute::filter_record_batch;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use bulkhead_rules::TenantId;
use parking_lot::Mutex;

/// Series seen per tenant.
#[derive(Debug, Default)]
pub struct SeriesLimiter {
    tenants: Mutex<HashMap<TenantId, HashSet<u64>>>,
}

/// What [`SeriesLimiter::admit`] kept.
#[derive(Debug)]
pub struct Admitted {
    pub batch: Option<RecordBatch>,
    /// Data points rejected because they would start a series past the limit.
    pub rejected: u64,
}

fn hash_map_row(map: &MapArray, row: usize, h: &mut impl Hasher) {
    if map.is_null(row) {
        return;
    }
    let entries = map.value(row);
    let keys = entries.column(0).as_any().downcast_ref::<StringArray>();
    let values = entries.column(1).as_any().downcast_ref::<StringArray>();
    if let (Some(k), Some(v)) = (keys, values) {
        // maps are built with keys deduplicated in sender order; sort so the
        // order a sender lists attributes in does not make a new series
        let mut pairs: Vec<(&str, Option<&str>)> = (0..k.len())
            .map(|i| (k.value(i), (!v.is_null(i)).then(|| v.value(i))))
            .collect();
        pairs.sort_unstable();
        pairs.hash(h);
    }
}

/// The series hash of every row of a metrics batch.
fn series_hashes(batch: &RecordBatch) -> Result<Vec<u64>, ArrowError> {
    let col = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| ArrowError::SchemaError(format!("metrics batch without {name}")))
    };
    let names = col("metric_name")?
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| ArrowError::SchemaError("metric_name is not Utf8".into()))?;
    let attrs = col("attributes")?
        .as_any()
        .downcast_ref::<MapArray>()
        .ok_or_else(|| ArrowError::SchemaError("attributes is not a map".into()))?;
    let resource = col("resource_attributes")?
        .as_any()
        .downcast_ref::<MapArray>()
        .ok_or_else(|| ArrowError::SchemaError("resource_attributes is not a map".into()))?;
    Ok((0..batch.num_rows())
        .map(|i| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            names.value(i).hash(&mut h);
            hash_map_row(resource, i, &mut h);
            hash_map_row(attrs, i, &mut h);
            h.finish()
        })
        .collect())
}

impl SeriesLimiter {
    /// Keeps the rows of known series and of new ones while the tenant has
    /// room under `limit` (0: no limit).
    pub fn admit(
        &self,
        tenant: &TenantId,
        limit: u64,
        batch: RecordBatch,
    ) -> Result<Admitted, ArrowError> {
        if limit == 0 {
            return Ok(Admitted {
                batch: Some(batch),
                rejected: 0,
            });
        }
        let hashes = series_hashes(&batch)?;
        let keep: Vec<bool> = {
            let mut all = self.tenants.lock();
            let known = all.entry(tenant.clone()).or_default();
            hashes
                .iter()
                .map(|h| known.contains(h) || (known.len() < limit as usize && known.insert(*h)))
                .collect()
        };
        let rejected = keep.iter().filter(|k| !**k).count() as u64;
        if rejected == 0 {
            return Ok(Admitted {
                batch: Some(batch),
                rejected,
            });
        }
        let kept = filter_record_batch(&batch, &BooleanArray::from(keep))?;
        Ok(Admitted {
            batch: (kept.num_rows() > 0).then_some(kept),
            rejected,
        })
    }
}
