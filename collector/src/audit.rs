//! What the collector puts on the audit trail (`bulkhead_store::audit`):
//! policy changes and refusals, tenant and key changes. Refused credentials
//! go through [`bulkhead_store::audit::RefusalAudit`]; queries are recorded
//! by the query API itself.
use std::sync::Arc;

use bulkhead_store::audit::{detail, AuditLog, EventKind, NewEvent};

use crate::tenants::PolicyChange;

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

/// The events of every policy change `tenants` took in and nobody has
/// audited yet (each is taken once).
pub fn unaudited_policy_events(tenants: &crate::tenants::TenantDirectory) -> Vec<NewEvent> {
    tenants
        .take_unaudited()
        .iter()
        .flat_map(policy_events)
        .collect()
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
    if let Some(held) = change.legal_hold {
        out.push(
            NewEvent::new(EventKind::LegalHoldChanged)
                .tenant(t)
                .detail("legal_hold", held)
                .detail(
                    detail::NEW_VERSION,
                    change.new_version.as_deref().unwrap_or(""),
                ),
        );
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
    match &change.by {
        Some(by) => out.into_iter().map(|e| e.detail("by", by)).collect(),
        None => out,
    }
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
            by: None,
            legal_hold: None,
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

    #[test]
    fn placing_a_legal_hold_is_its_own_event() {
        let change = PolicyChange {
            tenant: TenantId::new("acme").unwrap(),
            old_version: Some("v1".into()),
            new_version: Some("v2".into()),
            keys_added: vec![],
            keys_revoked: vec![],
            disabled_defaults: vec![],
            by: Some("ops".into()),
            legal_hold: Some(true),
        };
        let events = policy_events(&change);
        assert_eq!(events[1].kind, EventKind::LegalHoldChanged);
        assert_eq!(events[1].details["legal_hold"], "true");
        assert_eq!(events[1].details["by"], "ops");
    }
}
