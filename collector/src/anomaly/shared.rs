//! Anomaly detection by several nodes that share one bucket.
//!
//! A tenant's traffic may reach any node, so no node alone sees a tenant's
//! whole series. Each node aggregates what it receives per tenant and
//! minute, as a single node does, but does not score it: every
//! [`PUBLISH_EVERY_NANOS`] it writes what it aggregated since the last time
//! as one object, `_anomaly/partials/<node>/<nanos>.json` (all tenants).
//!
//! One node leads, by a lease in the bucket: `_anomaly/leader/<epoch>.json`,
//! each epoch created by put-if-absent, so two nodes never both take the
//! same epoch. The leader reads every node's partials in order, merges them
//! into each tenant's open minutes, and closes and scores the minutes
//! exactly as a single node does, so baselines learn the tenant's whole
//! traffic wherever it was received. It keeps each tenant's detector state
//! in the bucket (`_anomaly/state/tenant=<id>.json`) together with, per
//! node, the name of the last partials object taken in: a new leader (after
//! the old one's lease ran out, or was given up at shutdown) starts from
//! those states and takes in every later object once, so no partial is
//! counted twice or skipped while it is kept ([`PARTIALS_KEEP_NANOS`]).
use std::collections::HashMap;
use std::sync::Arc;

use bulkhead_rules::TenantId;
use bulkhead_store::Store;
use object_store::path::Path as ObjPath;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::checkpoint::{self, StoredMinutes};
use super::{aggregate, Minutes, TenantState};

const PREFIX: &str = "_anomaly";
/// How often a node writes its partials.
pub(super) const PUBLISH_EVERY_NANOS: i64 = 5_000_000_000;
/// A lease is good for this long after it was taken or renewed.
const LEASE_NANOS: i64 = 30_000_000_000;
/// The leader renews once less than this is left (every ten seconds).
const RENEW_WHEN_LEFT_NANOS: i64 = 20_000_000_000;
/// The leader stops acting this long before its lease runs out, so that
/// clocks this far apart never let two nodes act at once.
const SAFETY_NANOS: i64 = 5_000_000_000;
/// A node deletes its partials objects once they are this old.
pub(super) const PARTIALS_KEEP_NANOS: i64 = 3_600_000_000_000;
/// Partials objects the leader reads in one tick at most.
const READ_PER_TICK: usize = 64;
/// Series-minutes a node keeps for publishing at most (while the bucket is
/// out of reach); past it the oldest minutes are dropped.
const MAX_OUTBOX: usize = 1_000_000;

#[derive(Serialize, Deserialize)]
struct PartialsDoc {
    node: String,
    tenants: Vec<(String, StoredMinutes)>,
}

#[derive(Serialize, Deserialize)]
struct LeaseDoc {
    node: String,
    expires_at: i64,
}

/// Whether this node leads detection.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Lead {
    /// It does, and did before this call.
    Leading,
    /// It just became leader: in-memory states are stale, load afresh.
    Took,
    /// Another node leads, or nobody can be seen to.
    Following,
}

/// One partials object of one node, read by the leader.
pub(super) struct Partials {
    pub(super) node: String,
    pub(super) name: String,
    pub(super) location: ObjPath,
    pub(super) tenants: Vec<(TenantId, Minutes)>,
}

/// This node's side of shared detection.
pub(super) struct Shared {
    store: Arc<Store>,
    node: String,
    outbox: Mutex<Outbox>,
    publisher: Mutex<Publisher>,
    lease: Mutex<LeaseState>,
}

#[derive(Default)]
struct Outbox {
    tenants: HashMap<TenantId, Minutes>,
}

/// The publishing side, locked only by the publisher (never by ingest).
#[derive(Default)]
struct Publisher {
    /// Name (nanos) of the last object written or tried; names only grow.
    last_name: Option<i64>,
    last_publish: i64,
    last_gc: i64,
    /// An object whose put failed: it may have been written all the same,
    /// so it is written again under the same name before anything new
    /// (never merged back, which could count it twice).
    retry: Option<(i64, bytes::Bytes)>,
}

#[derive(Default)]
struct LeaseState {
    /// The epoch held and when it runs out.
    held: Option<(u64, i64)>,
    /// Per node, the last partials object read (the leader's cursor).
    cursors: HashMap<String, ObjPath>,
}

fn dir(parts: &[&str]) -> ObjPath {
    let mut p = ObjPath::from(PREFIX);
    for part in parts {
        p = p.join(*part);
    }
    p
}

/// The number an object is named by (`<number>.json`): a lease epoch, or
/// the nanoseconds naming a partials object.
fn number_of<T: std::str::FromStr>(p: &ObjPath) -> Option<T> {
    p.filename()?.strip_suffix(".json")?.parse().ok()
}

fn state_path(tenant: &TenantId) -> ObjPath {
    dir(&["state", &format!("tenant={tenant}.json")])
}

/// Drops the oldest minutes (of any tenant) until at most `max`
/// series-minutes are left; returns how many series-minutes went.
fn trim_oldest(tenants: &mut HashMap<TenantId, Minutes>, max: usize) -> usize {
    let mut total: usize = tenants
        .values()
        .flat_map(|m| m.values())
        .map(|s| s.len())
        .sum();
    let mut dropped = 0;
    while total > max {
        let Some((tenant, minute)) = tenants
            .iter()
            .filter_map(|(t, m)| m.keys().next().map(|k| (t.clone(), *k)))
            .min_by_key(|(_, k)| *k)
        else {
            break;
        };
        if let Some(m) = tenants.get_mut(&tenant) {
            let n = m.remove(&minute).map_or(0, |s| s.len());
            total -= n;
            dropped += n;
            if m.is_empty() {
                tenants.remove(&tenant);
            }
        }
    }
    dropped
}

impl Shared {
    pub(super) fn new(store: Arc<Store>) -> Self {
        Self {
            node: store.node().to_string(),
            store,
            outbox: Mutex::default(),
            publisher: Mutex::default(),
            lease: Mutex::default(),
        }
    }

    pub(super) fn node(&self) -> &str {
        &self.node
    }

    /// Keeps `fresh` (a tenant's minutes just received) for the next publish.
    pub(super) fn add(&self, tenant: &TenantId, fresh: Minutes) {
        let mut out = self.outbox.lock();
        let minutes = out.tenants.entry(tenant.clone()).or_default();
        for (minute, series) in fresh {
            for (k, acc) in series {
                aggregate::add(minutes, minute, k, acc);
            }
        }
    }

    /// Writes what was received since the last publish as one object, at
    /// most every [`PUBLISH_EVERY_NANOS`] unless `force`d; then deletes this
    /// node's objects past [`PARTIALS_KEEP_NANOS`]. The storage is reached
    /// without holding the outbox, so ingest never waits for it. On failure
    /// the object is kept to be written again under its name, and the
    /// outbox is bounded ([`MAX_OUTBOX`]).
    pub(super) fn publish(&self, now: i64, force: bool) -> Result<(), String> {
        let mut p = self.publisher.lock();
        let published = self.publish_locked(&mut p, now, force);
        if published.is_err() {
            let dropped = trim_oldest(&mut self.outbox.lock().tenants, MAX_OUTBOX);
            if dropped > 0 {
                tracing::warn!(
                    dropped,
                    "anomaly partials dropped: the storage is out of reach"
                );
            }
        }
        published
    }

    fn publish_locked(&self, p: &mut Publisher, now: i64, force: bool) -> Result<(), String> {
        let storage = self.store.storage();
        let mine = dir(&["partials", &self.node]);
        let object = |name: i64| mine.clone().join(format!("{name:020}.json"));
        if p.last_name.is_none() {
            // names only grow, across restarts too: start after the last one
            let listed = storage.list(&mine).map_err(|e| e.to_string())?;
            p.last_name = Some(
                listed
                    .iter()
                    .filter_map(|m| number_of::<i64>(&m.location))
                    .max()
                    .unwrap_or(-1),
            );
        }
        if now.saturating_sub(p.last_gc) >= 60_000_000_000 {
            p.last_gc = now;
            let cutoff = now.saturating_sub(PARTIALS_KEEP_NANOS);
            let old = storage.list(&mine).map_err(|e| e.to_string())?;
            for m in old {
                if number_of::<i64>(&m.location).is_some_and(|n| n < cutoff) {
                    storage.delete(&m.location).map_err(|e| e.to_string())?;
                }
            }
        }
        if let Some((name, bytes)) = p.retry.take() {
            if let Err(e) = storage.put(&object(name), bytes.clone()) {
                p.retry = Some((name, bytes));
                return Err(e.to_string());
            }
            p.last_publish = now;
        }
        if !force && now.saturating_sub(p.last_publish) < PUBLISH_EVERY_NANOS {
            return Ok(());
        }
        let tenants = std::mem::take(&mut self.outbox.lock().tenants);
        if tenants.is_empty() {
            return Ok(());
        }
        let name = now.max(p.last_name.unwrap_or(-1).saturating_add(1)).max(0);
        let doc = PartialsDoc {
            node: self.node.clone(),
            tenants: tenants
                .iter()
                .map(|(t, m)| (t.to_string(), checkpoint::store_minutes(m)))
                .collect(),
        };
        let bytes = bytes::Bytes::from(serde_json::to_vec(&doc).map_err(|e| e.to_string())?);
        p.last_name = Some(name);
        if let Err(e) = storage.put(&object(name), bytes.clone()) {
            p.retry = Some((name, bytes));
            return Err(e.to_string());
        }
        tracing::debug!(tenants = tenants.len(), name, "anomaly partials published");
        p.last_publish = now;
        Ok(())
    }

    /// Takes, keeps or gives up the lead. Errors reaching the bucket keep a
    /// lease held until shortly before it runs out.
    pub(super) fn lead(&self, now: i64) -> Lead {
        let mut lease = self.lease.lock();
        if let Some((_, expires)) = lease.held {
            if expires.saturating_sub(now) > RENEW_WHEN_LEFT_NANOS {
                return Lead::Leading;
            }
        }
        let had = lease.held.is_some();
        match self.try_lead(&mut lease, now) {
            // renewed the epoch it held: nobody led in between
            Ok(Some(true)) => Lead::Leading,
            // a new lead, or one retaken after another node's epoch: what
            // this node holds in memory may be stale
            Ok(Some(false)) => {
                tracing::info!(node = %self.node, "this node now leads anomaly detection");
                lease.cursors.clear();
                Lead::Took
            }
            Ok(None) => {
                if had {
                    tracing::info!(node = %self.node, "another node leads anomaly detection now");
                }
                lease.held = None;
                Lead::Following
            }
            Err(e) => {
                tracing::warn!(error = %e, "anomaly lease not renewed");
                match lease.held {
                    Some((_, expires)) if now < expires.saturating_sub(SAFETY_NANOS) => {
                        Lead::Leading
                    }
                    _ => {
                        lease.held = None;
                        Lead::Following
                    }
                }
            }
        }
    }

    /// Takes the next epoch when the newest is this node's own, has run out,
    /// or is unreadable. Some(true): it renewed the epoch it held; Some(false):
    /// it took the lead after another epoch; None: another node leads.
    fn try_lead(&self, lease: &mut LeaseState, now: i64) -> Result<Option<bool>, String> {
        let storage = self.store.storage();
        let leader = dir(&["leader"]);
        let epochs: Vec<u64> = storage
            .list(&leader)
            .map_err(|e| e.to_string())?
            .iter()
            .filter_map(|m| number_of::<u64>(&m.location))
            .collect();
        let newest = epochs.iter().copied().max();
        let renewing = newest.is_some() && lease.held.map(|(mine, _)| mine) == newest;
        let free = match newest {
            None => true,
            Some(e) if lease.held.is_some_and(|(mine, _)| mine == e) => true,
            Some(e) => {
                let doc = storage
                    .get(&leader.clone().join(format!("{e:020}.json")))
                    .map_err(|e| e.to_string())?;
                match doc {
                    // removed meanwhile: a newer epoch exists, look again later
                    None => false,
                    Some(bytes) => match serde_json::from_slice::<LeaseDoc>(&bytes) {
                        // ran out, or this node's own (before a restart)
                        Ok(doc) => doc.expires_at <= now || doc.node == self.node,
                        // damaged: it holds nobody, or detection would stop
                        Err(err) => {
                            tracing::warn!(epoch = e, error = %err, "anomaly lease not readable; taken over");
                            true
                        }
                    },
                }
            }
        };
        if !free {
            return Ok(None);
        }
        let next = newest.map_or(0, |e| e + 1);
        let expires_at = now.saturating_add(LEASE_NANOS);
        let doc = serde_json::to_vec(&LeaseDoc {
            node: self.node.clone(),
            expires_at,
        })
        .map_err(|e| e.to_string())?;
        if !storage
            .put_if_absent(&leader.clone().join(format!("{next:020}.json")), doc.into())
            .map_err(|e| e.to_string())?
        {
            return Ok(None);
        }
        lease.held = Some((next, expires_at));
        for e in epochs.into_iter().filter(|e| *e + 1 < next) {
            let _ = storage.delete(&leader.clone().join(format!("{e:020}.json")));
        }
        Ok(Some(renewing))
    }

    /// Whether this node holds the lead now and may still act on it.
    pub(super) fn holds(&self, now: i64) -> bool {
        self.lease
            .lock()
            .held
            .is_some_and(|(_, expires)| now < expires.saturating_sub(SAFETY_NANOS))
    }

    /// Gives the lead up (at shutdown), so another node takes over at once.
    pub(super) fn resign(&self, now: i64) {
        let mut lease = self.lease.lock();
        let Some((epoch, _)) = lease.held.take() else {
            return;
        };
        let doc = LeaseDoc {
            node: String::new(),
            expires_at: now,
        };
        let path = dir(&["leader"]).join(format!("{:020}.json", epoch + 1));
        let done = serde_json::to_vec(&doc)
            .map_err(|e| e.to_string())
            .and_then(|b| {
                self.store
                    .storage()
                    .put_if_absent(&path, b.into())
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = done {
            tracing::warn!(error = %e, "could not give up the anomaly lead; it runs out by itself");
        }
    }

    /// Every node's partials objects not read yet, oldest first, at most
    /// [`READ_PER_TICK`]; true when that was all of them (caught up).
    pub(super) fn unread(&self) -> Result<(Vec<Partials>, bool), String> {
        let storage = self.store.storage();
        let root = dir(&["partials"]);
        let nodes = storage.list_dirs(Some(&root)).map_err(|e| e.to_string())?;
        let cursors = self.lease.lock().cursors.clone();
        // every node's unread objects, oldest first across nodes, and at
        // most READ_PER_TICK of them: a new leader works through an hour of
        // them over several ticks instead of holding up the others' upkeep
        let mut listed = Vec::new();
        for node_dir in nodes {
            let Some(node) = node_dir.filename().map(str::to_string) else {
                continue;
            };
            let after = cursors.get(&node).unwrap_or(&node_dir);
            for meta in storage
                .list_after(&node_dir, after)
                .map_err(|e| e.to_string())?
            {
                if let Some(name) = meta.location.filename().map(str::to_string) {
                    listed.push((name, node.clone(), meta));
                }
            }
        }
        listed.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        let caught_up = listed.len() <= READ_PER_TICK;
        listed.truncate(READ_PER_TICK);
        let mut out = Vec::new();
        for (name, node, meta) in listed {
            // deleted since listed (past its keep): nothing to take in
            let Some(bytes) = storage.get(&meta.location).map_err(|e| e.to_string())? else {
                continue;
            };
            // a damaged object is skipped, not retried forever: it
            // would stop detection for every tenant
            let doc: PartialsDoc = match serde_json::from_slice(&bytes) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(object = %meta.location, error = %e, "anomaly partials not readable; skipped");
                    PartialsDoc {
                        node: node.clone(),
                        tenants: Vec::new(),
                    }
                }
            };
            let mut tenants = Vec::with_capacity(doc.tenants.len());
            for (t, stored) in doc.tenants {
                let Ok(tenant) = TenantId::new(&t) else {
                    continue;
                };
                let mut minutes = Minutes::new();
                checkpoint::add_stored_minutes(stored, &mut minutes);
                tenants.push((tenant, minutes));
            }
            out.push(Partials {
                node,
                name,
                location: meta.location,
                tenants,
            });
        }
        Ok((out, caught_up))
    }

    /// Marks `p` read; it is not returned by [`Shared::unread`] again.
    pub(super) fn mark_read(&self, p: &Partials) {
        self.lease
            .lock()
            .cursors
            .insert(p.node.clone(), p.location.clone());
    }

    /// The tenant's state as the last leader left it; none for a new
    /// tenant, or (with a warning) when the saved state is damaged: the
    /// tenant's baselines then start afresh from the partials still kept.
    /// Failing to reach the storage is an error (try again later).
    pub(super) fn load_state(&self, tenant: &TenantId) -> Result<Option<TenantState>, String> {
        let path = state_path(tenant);
        match self.store.storage().get(&path).map_err(|e| e.to_string())? {
            None => Ok(None),
            Some(b) => match checkpoint::decode(&b, tenant) {
                Ok(st) => Ok(Some(st)),
                Err(e) => {
                    tracing::warn!(%tenant, object = %path, error = %e, "anomaly state not usable; baselines start afresh");
                    Ok(None)
                }
            },
        }
    }

    pub(super) fn save_state(&self, tenant: &TenantId, st: &TenantState) -> Result<(), String> {
        let bytes = checkpoint::encode(st)?;
        self.store
            .storage()
            .put(&state_path(tenant), bytes.into())
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anomaly::aggregate::{Acc, SeriesKey};
    use bulkhead_rules::SeriesKind;
    use bulkhead_store::Signal;

    #[test]
    fn an_outbox_past_its_bound_loses_its_oldest_minutes() {
        let key = |s: &str| SeriesKey {
            kind: SeriesKind::Volume,
            signal: Signal::Logs,
            service: Some(s.into()),
            name: None,
        };
        let mut tenants: HashMap<TenantId, Minutes> = HashMap::new();
        for (t, first) in [("a", 0), ("b", 30)] {
            let minutes = tenants.entry(TenantId::new(t).unwrap()).or_default();
            for m in first..first + 60 {
                for s in ["x", "y"] {
                    aggregate::add(minutes, m * 60, key(s), Acc::Count(1));
                }
            }
        }
        // 240 series-minutes; keep 100: the oldest 70 tenant-minutes go,
        // minutes 0..50 of a and 30..50 of b
        assert_eq!(trim_oldest(&mut tenants, 100), 140);
        let left: usize = tenants
            .values()
            .flat_map(|m| m.values())
            .map(|s| s.len())
            .sum();
        assert_eq!(left, 100);
        let oldest = |t: &str| tenants[&TenantId::new(t).unwrap()].keys().next().copied();
        assert_eq!(oldest("a"), Some(50 * 60));
        assert_eq!(oldest("b"), Some(50 * 60));
        assert_eq!(trim_oldest(&mut tenants, 1_000), 0);
    }
}
