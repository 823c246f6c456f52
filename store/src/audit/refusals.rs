//! Refused credentials on the audit trail without one fsync each.
use super::{detail, AuditLog, NewEvent};
use bulkhead_rules::AuthError;

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

impl NewEvent {
    /// The audit event for a refused credential: a valid key without the
    /// scope is `scope_refused` under its tenant; anything else an
    /// `auth_failure` with the key id the request claimed, if it parsed.
    /// `interface` names where it was presented (`otlp_http`, `query`, ...).
    pub fn refused_credential(e: &AuthError, presented: Option<&str>, interface: &str) -> Self {
        let event = match e {
            AuthError::Forbidden {
                tenant,
                key_id,
                needed,
            } => match bulkhead_rules::TenantId::new(tenant) {
                Ok(t) => NewEvent::scope_refused(&t, key_id, needed),
                Err(_) => NewEvent::auth_failure(Some(key_id), &e.to_string()),
            },
            _ => {
                let id = presented.and_then(|k| bulkhead_rules::ApiKey::parse(k).ok());
                NewEvent::auth_failure(id.as_ref().map(|k| k.id()), &e.to_string())
            }
        };
        event.detail(detail::INTERFACE, interface)
    }
}
