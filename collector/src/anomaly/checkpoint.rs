//! Detector state, one JSON document per tenant: every series' detector and
//! the still-open minutes, so a restart neither forgets baselines nor
//! mistakes the open minutes for silent ones. A single node keeps it on its
//! own disk under `<data_dir>/anomaly/<tenant>.json`, written atomically;
//! nodes sharing a bucket keep it there (`super::shared`), with the
//! partials of every node it has taken in.
use std::path::Path;

use base64::Engine;
use bulkhead_rules::anomaly::Detector;
use bulkhead_rules::{AnomalyPolicy, SeriesKind, TenantId};
use bulkhead_store::Signal;
use serde::{Deserialize, Serialize};

use super::aggregate::{Acc, SeriesKey};
use super::{series_settings, SeriesState, TenantState};

#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    newest: Option<i64>,
    closed: Option<i64>,
    series: Vec<Series>,
    pending: Vec<(i64, Vec<(Key, Acc)>)>,
    /// Shared detection: per node, the last partials object taken in.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    taken: std::collections::BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct Key {
    kind: SeriesKind,
    signal: String,
    service: Option<String>,
    name: Option<String>,
}

/// `(minute, [(series, accumulator)])`, as stored.
pub(super) type StoredMinutes = Vec<(i64, Vec<(Key, Acc)>)>;

pub(super) fn store_minutes(m: &super::Minutes) -> StoredMinutes {
    m.iter()
        .map(|(m, series)| {
            (
                *m,
                series.iter().map(|(k, a)| (k.into(), a.clone())).collect(),
            )
        })
        .collect()
}

/// Adds stored minutes to `out`; series of an unknown signal are skipped.
pub(super) fn add_stored_minutes(stored: StoredMinutes, out: &mut super::Minutes) {
    for (minute, series) in stored {
        for (k, acc) in series {
            if let Some(key) = k.into_series_key() {
                super::aggregate::add(out, minute, key, acc);
            }
        }
    }
}

impl From<&SeriesKey> for Key {
    fn from(k: &SeriesKey) -> Self {
        Key {
            kind: k.kind,
            signal: k.signal.name().to_string(),
            service: k.service.clone(),
            name: k.name.clone(),
        }
    }
}

impl Key {
    fn into_series_key(self) -> Option<SeriesKey> {
        Some(SeriesKey {
            kind: self.kind,
            signal: Signal::from_name(&self.signal)?,
            service: self.service,
            name: self.name,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct Series {
    key: Key,
    /// `Detector::checkpoint`, base64.
    detector: String,
    prev_cumulative: Option<(i64, f64)>,
    last_minute: i64,
}

fn path(dir: &Path, tenant: &TenantId) -> std::path::PathBuf {
    dir.join(format!("{tenant}.json"))
}

pub(super) fn save(dir: &Path, tenant: &TenantId, st: &TenantState) -> Result<(), String> {
    let target = path(dir, tenant);
    bulkhead_store::atomic::write_atomic(&target, &encode(st)?)
        .map_err(|e| format!("{}: {e}", target.display()))
}

/// The tenant's state as a document.
pub(super) fn encode(st: &TenantState) -> Result<Vec<u8>, String> {
    let file = File {
        version: 1,
        newest: st.newest,
        closed: st.closed,
        series: st
            .series
            .iter()
            .map(|(k, s)| Series {
                key: k.into(),
                detector: base64::engine::general_purpose::STANDARD.encode(s.detector.checkpoint()),
                prev_cumulative: s.prev_cumulative,
                last_minute: s.last_minute,
            })
            .collect(),
        pending: store_minutes(&st.pending),
        taken: st.taken.clone(),
    };
    serde_json::to_vec(&file).map_err(|e| e.to_string())
}

/// The tenant's saved state, or a fresh one when there is none. Detectors are
/// rebuilt with the settings of the tenant's policy at first use.
pub(super) fn load(dir: &Path, tenant: &TenantId) -> Result<TenantState, String> {
    let p = path(dir, tenant);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(TenantState::default()),
        Err(e) => return Err(format!("{}: {e}", p.display())),
    };
    decode(&bytes, tenant).map_err(|e| format!("{}: {e}", p.display()))
}

/// A tenant's state from its document.
pub(super) fn decode(bytes: &[u8], tenant: &TenantId) -> Result<TenantState, String> {
    let file: File = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if file.version != 1 {
        return Err(format!("unknown version {}", file.version));
    }
    let defaults = AnomalyPolicy::default();
    let mut st = TenantState {
        newest: file.newest,
        closed: file.closed,
        taken: file.taken,
        ..Default::default()
    };
    for s in file.series {
        let Some(key) = s.key.into_series_key() else {
            continue;
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&s.detector)
            .map_err(|e| e.to_string())?;
        let settings = series_settings(&defaults.detector, key.kind);
        // A detector saved by another version of the detector (or damaged)
        // starts afresh; the series, its open minutes and the others keep.
        let detector = Detector::restore(&settings, &bytes).unwrap_or_else(|e| {
            tracing::warn!(%tenant, series = %key.label(), error = %e, "anomaly baseline not restored; it starts afresh");
            Detector::new(&settings)
        });
        st.series.insert(
            key,
            SeriesState {
                detector,
                prev_cumulative: s.prev_cumulative,
                last_minute: s.last_minute,
            },
        );
    }
    add_stored_minutes(file.pending, &mut st.pending);
    // Built with default settings: the first `apply_policy` rebuilds them
    // with the tenant's.
    st.settings = Some(defaults);
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file written before the detector's checkpoint format changed: the
    /// tenant loads, the series keeps its place and starts a fresh baseline.
    #[test]
    fn an_old_detector_checkpoint_starts_that_baseline_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let tenant = TenantId::new("acme").unwrap();
        // magic, version 1, then the old fixed length of zeros
        let mut old = b"BHAD\x01".to_vec();
        old.resize(2014, 0);
        let text = serde_json::json!({
            "version": 1,
            "newest": 1_748_822_400,
            "closed": 1_748_822_280,
            "series": [{
                "key": {"kind": "volume", "signal": "logs", "service": "svc", "name": null},
                "detector": base64::engine::general_purpose::STANDARD.encode(&old),
                "prev_cumulative": null,
                "last_minute": 1_748_822_280,
            }],
            "pending": [],
        });
        std::fs::write(path(dir.path(), &tenant), text.to_string()).unwrap();
        let st = load(dir.path(), &tenant).expect("loads");
        assert_eq!(st.closed, Some(1_748_822_280));
        assert_eq!(st.series.len(), 1);
        let s = st.series.values().next().unwrap();
        assert_eq!(s.detector.points_seen(), 0, "a fresh baseline");
        assert_eq!(s.last_minute, 1_748_822_280);
    }
}
