//! What the collector puts on the audit trail (`bulkhead_store::audit`):
//! refused credentials, policy changes and refusals, tenant and key changes.
//! Queries are recorded by the query API itself.
use std::sync::Arc;

use bulkhead_store::audit::{detail, AuditLog, EventKind, NewEvent};

use crate::tenants::PolicyChange;

/// Refused credentials, summed up: requests only count them in memory, and
/// each flush writes one audit entry per distinct refusal (kind, key id,
/// tenant, interface, reason) with its count, in one write and one fsync.
/// A flood of bad keys costs bounded memory ([`MAX_DISTINCT_REFUSALS`]) and
/// no fsync per request.
#[derive(Debug, Default)]
pub struct RefusalAudit {
    pending: parking_lot::Mutex<std::collections::BTreeMap<String, (NewEvent, u64)>>,
    /// Refusals not told apart because the map was full.
    overflow: std::sync::atomic::AtomicU64,
}

/// Distinct refusals kept between two flushes; more are only counted.
pub const MAX_DISTINCT_REFUSALS: usize = 1024;

impl RefusalAudit {
    pub fn record(&self, event: NewEvent) {
        let key = format!("{event:?}");
        let mut pending = self.pending.lock();
        let len = pending.len();
        match pending.get_mut(&key) {
            Some((_, n)) => *n += 1,
            None if len < MAX_DISTINCT_REFUSALS => {
                pending.insert(key, (event, 1));
            }
            None => {
                self.overflow
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// The summed-up events since the last call.
    pub fn drain(&self) -> Vec<NewEvent> {
        let pending = std::mem::take(&mut *self.pending.lock());
        let mut out: Vec<NewEvent> = pending
            .into_values()
            .map(|(e, n)| e.detail(detail::COUNT, n))
            .collect();
        let overflow = self.overflow.swap(0, std::sync::atomic::Ordering::Relaxed);
        if overflow > 0 {
            out.push(
                NewEvent::auth_failure(
                    None,
                    "more distinct refused credentials than recorded apart",
                )
                .detail(detail::COUNT, overflow),
            );
        }
        out
    }

    /// Writes what [`RefusalAudit::drain`] gives to `log` (blocking).
    pub fn flush(&self, log: &AuditLog) {
        let events = self.drain();
        if events.is_empty() {
            return;
        }
        if let Err(e) = log.append_all(events) {
            tracing::error!(error = %e, "audit append of refused credentials failed");
        }
    }
}

/// Appends without waiting: for refusals on the request path, where the
/// caller is answered either way. Failures are logged.
pub fn record_later(log: &Arc<AuditLog>, event: NewEvent) {
    let log = log.clone();
    let append = move || {
        if let Err(e) = log.append(event) {
            tracing::error!(error = %e, "audit append failed");
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(h) => {
            h.spawn_blocking(append);
        }
        Err(_) => append(),
    }
}

/// The events a policy reload stands for.
pub fn policy_events(change: &PolicyChange) -> Vec<NewEvent> {
    let t = &change.tenant;
    let mut out = Vec::new();
    match (&change.old_version, &change.new_version) {
        (None, Some(new)) => {
            out.push(NewEvent::new(EventKind::TenantCreated).tenant(t));
            out.push(NewEvent::policy_changed(t, None, new));
        }
        (old, Some(new)) => out.push(NewEvent::policy_changed(t, old.as_deref(), new)),
        (Some(old), None) => out.push(
            NewEvent::new(EventKind::TenantRevoked)
                .tenant(t)
                .detail(detail::OLD_VERSION, old),
        ),
        (None, None) => {}
    }
    if !change.disabled_defaults.is_empty() {
        if let Some(e) = out.pop() {
            out.push(e.detail("disabled_defaults", change.disabled_defaults.join(",")));
        }
    }
    for k in &change.keys_added {
        out.push(
            NewEvent::new(EventKind::KeyCreated)
                .tenant(t)
                .key_id(k.clone()),
        );
    }
    for k in &change.keys_revoked {
        out.push(
            NewEvent::new(EventKind::KeyRevoked)
                .tenant(t)
                .key_id(k.clone()),
        );
    }
    out
}

/// A refused policy change (the reason shortened for the log line).
pub fn policy_rejected(reason: &str) -> NewEvent {
    let short: String = reason.chars().take(500).collect();
    NewEvent::new(EventKind::PolicyRejected).detail(detail::REASON, short)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_rules::TenantId;

    #[test]
    fn a_new_tenant_with_a_key_and_disabled_defaults_is_three_events() {
        let change = PolicyChange {
            tenant: TenantId::new("acme").unwrap(),
            old_version: None,
            new_version: Some("v2".into()),
            keys_added: vec!["k1".into()],
            keys_revoked: vec![],
            disabled_defaults: vec!["payment_card".into()],
        };
        let events = policy_events(&change);
        let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            vec![
                EventKind::TenantCreated,
                EventKind::PolicyChanged,
                EventKind::KeyCreated
            ]
        );
        assert_eq!(
            events[1]
                .details
                .get("disabled_defaults")
                .map(String::as_str),
            Some("payment_card")
        );
        assert_eq!(events[2].key_id.as_deref(), Some("k1"));
    }
}
