//! The ingest pipeline: an authenticated export request becomes that
//! tenant's Arrow batch, stamped with tenant and lineage, buffered in the store.
use std::sync::Arc;
use std::time::Duration;

use bulkhead_rules::{Clock, Principal, Scope};
use bulkhead_store::{Signal, Store};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tokio::sync::Notify;

use crate::anomaly::{self, AnomalyEngine};
use crate::convert::{self, Stamp};
use crate::error::ReceiveError;
use crate::redact;
use crate::telemetry::Telemetry;
use crate::tenants::TenantDirectory;
use bulkhead_rules::redact::Report;

/// How long a client is asked to wait when the store is saturated.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// One decoded OTLP export request.
#[derive(Debug)]
pub enum Export {
    Logs(ExportLogsServiceRequest),
    Traces(ExportTraceServiceRequest),
    Metrics(ExportMetricsServiceRequest),
}

/// The outcome of an accepted request: full or partial success.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub accepted: u64,
    /// Records refused as invalid; 0 means full success.
    pub rejected: u64,
    pub error_message: String,
}

/// Everything a receiver hands its requests to.
#[derive(Debug)]
pub struct Pipeline {
    store: Arc<Store>,
    tenants: Arc<TenantDirectory>,
    node: String,
    clock: Arc<dyn Clock>,
    flush_wanted: Arc<Notify>,
    telemetry: Arc<Telemetry>,
    anomalies: Arc<AnomalyEngine>,
    audit: Option<Arc<bulkhead_store::audit::AuditLog>>,
    tenant_keys: Vec<String>,
    limiter: crate::limits::RateLimiter,
}

impl Pipeline {
    pub fn new(
        store: Arc<Store>,
        tenants: Arc<TenantDirectory>,
        node: String,
        clock: Arc<dyn Clock>,
        flush_wanted: Arc<Notify>,
        telemetry: Arc<Telemetry>,
        anomalies: Arc<AnomalyEngine>,
    ) -> Self {
        Self {
            store,
            tenants,
            node,
            clock,
            flush_wanted,
            telemetry,
            anomalies,
            audit: None,
            tenant_keys: redact::TENANT_KEYS.iter().map(|k| k.to_string()).collect(),
            limiter: Default::default(),
        }
    }

    /// The attribute keys that name a tenant (see `ingest.tenant_attribute_keys`).
    pub fn with_tenant_keys(mut self, keys: &[String]) -> Self {
        self.tenant_keys = keys.to_vec();
        self
    }

    /// Puts refused credentials on the audit trail.
    pub fn with_audit(mut self, log: Arc<bulkhead_store::audit::AuditLog>) -> Self {
        self.audit = Some(log);
        self
    }

    /// Counts and audits a refused credential; `presented` is the token sent.
    pub fn refused_auth(
        &self,
        err: &bulkhead_rules::AuthError,
        presented: Option<&str>,
        interface: &str,
    ) {
        if let Some(log) = &self.audit {
            crate::audit::record_later(
                log,
                bulkhead_query::http::auth_event(err, presented, interface),
            );
        }
    }

    /// Applies the tenant's governance to a converted batch: fields naming a
    /// tenant are pinned to the caller, then its redaction rules (and the
    /// secure defaults) run. None when every record was dropped by a rule.
    fn govern(
        &self,
        tenant: &bulkhead_rules::TenantId,
        signal: Signal,
        batch: arrow::record_batch::RecordBatch,
    ) -> Result<Option<arrow::record_batch::RecordBatch>, ReceiveError> {
        let internal = |e: arrow::error::ArrowError| {
            ReceiveError::Internal(format!("tenant {tenant}: redaction: {e}"))
        };
        let (batch, pinned) = redact::enforce_tenant_fields(
            &batch,
            tenant.as_str(),
            &self
                .tenant_keys
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
        .map_err(internal)?;
        self.telemetry.add(
            "bulkhead_tenant_fields_overwritten_total",
            &[("tenant", tenant.as_str())],
            pinned,
        );
        let mut report = Report::default();
        let redactor = self.tenants.redactor(tenant);
        let out = redact::redact_batch(signal, &batch, &redactor, &mut report).map_err(internal)?;
        for (rule, c) in &report.rules {
            for (action, n) in [
                ("masked", c.values_masked),
                ("hashed", c.values_hashed),
                ("attribute_dropped", c.attributes_dropped),
                ("record_dropped", c.records_dropped),
            ] {
                self.telemetry.add(
                    "bulkhead_redactions_total",
                    &[
                        ("tenant", tenant.as_str()),
                        ("rule", rule),
                        ("action", action),
                    ],
                    n,
                );
            }
        }
        Ok(out)
    }

    /// Deletes every tenant's data past its retention period (per table),
    /// except for tenants under legal hold; on the injected clock. Each
    /// deletion is counted and put on the audit trail. Returns files deleted.
    pub fn enforce_retention(&self) -> Result<usize, String> {
        let now = self.clock.now_nanos();
        let mut total = 0;
        for tenant in self.tenants.tenants() {
            let Some(policy) = self.tenants.policy(&tenant) else {
                continue;
            };
            if policy.retention.legal_hold {
                continue;
            }
            for signal in Signal::ALL {
                let Some(period) = policy.retention.period(signal.name()) else {
                    continue;
                };
                let cutoff =
                    now.saturating_sub(i64::try_from(period.as_nanos()).unwrap_or(i64::MAX));
                let files = self
                    .store
                    .delete_before(&tenant, signal, cutoff)
                    .map_err(|e| format!("retention of {tenant}/{signal}: {e}"))?;
                if files == 0 {
                    continue;
                }
                total += files;
                tracing::info!(%tenant, %signal, files, "retention: deleted data past its period");
                self.telemetry.add(
                    "bulkhead_retention_files_deleted_total",
                    &[("tenant", tenant.as_str()), ("signal", signal.name())],
                    files as u64,
                );
                if let Some(log) = &self.audit {
                    let before = chrono::DateTime::from_timestamp_nanos(cutoff).to_rfc3339();
                    let event = bulkhead_store::audit::NewEvent::new(
                        bulkhead_store::audit::EventKind::RetentionApplied,
                    )
                    .tenant(&tenant)
                    .detail("signal", signal.name())
                    .detail("before", before)
                    .detail("files", files);
                    if let Err(e) = log.append(event) {
                        tracing::error!(error = %e, "audit append failed");
                    }
                }
            }
        }
        Ok(total)
    }

    /// Stores anomaly findings in the tenant's `anomalies` table.
    pub fn record_anomalies(
        &self,
        tenant: &bulkhead_rules::TenantId,
        findings: &[anomaly::Finding],
    ) {
        if findings.is_empty() {
            return;
        }
        let version = self.tenants.policy_version(tenant);
        let batch = anomaly::to_batch(
            tenant,
            findings,
            &version,
            &self.node,
            self.clock.now_nanos(),
        );
        match batch.map(|b| self.store.append(tenant, Signal::Anomalies, b)) {
            Ok(Ok(_)) => tracing::info!(%tenant, count = findings.len(), "anomalies detected"),
            Ok(Err(e)) => tracing::error!(%tenant, error = %e, "anomalies not stored"),
            Err(e) => tracing::error!(%tenant, error = %e, "anomalies not stored"),
        }
    }

    /// Counts a request refused as a whole.
    pub fn refused(&self, err: &ReceiveError) {
        self.telemetry.add(
            "bulkhead_requests_refused_total",
            &[("reason", err.reason())],
            1,
        );
    }

    pub fn tenants(&self) -> &Arc<TenantDirectory> {
        &self.tenants
    }

    /// Converts and buffers one request for the caller's tenant. The tenant
    /// comes from the principal only; nothing in the request can choose it.
    pub fn ingest(&self, principal: &Principal, export: &Export) -> Result<Outcome, ReceiveError> {
        principal.require(Scope::Ingest)?;
        let version = self.tenants.policy_version(&principal.tenant);
        let stamp = Stamp {
            tenant: principal.tenant.as_str(),
            policy_version: &version,
            node: &self.node,
            received_at_nanos: self.clock.now_nanos(),
        };
        let (converted, signal) = match export {
            Export::Logs(r) => (convert::logs(r, &stamp), Signal::Logs),
            Export::Traces(r) => (convert::spans(r, &stamp), Signal::Spans),
            Export::Metrics(r) => (convert::metrics(r, &stamp), Signal::Metrics),
        };
        let policy = self.tenants.policy(&principal.tenant);
        if let Some(p) = &policy {
            let now = self.clock.now_nanos();
            if let Err(wait) =
                self.limiter
                    .take(&principal.tenant, &p.limits, converted.accepted, now)
            {
                return Err(ReceiveError::Throttled {
                    message: format!(
                        "tenant {} is over its ingest limit of {} records/s; retry after {} ms",
                        principal.tenant,
                        p.limits.records_per_second,
                        wait.as_millis()
                    ),
                    retry_after: wait,
                });
            }
        }
        let governed = match converted.batch {
            Some(b) => self.govern(&principal.tenant, signal, b)?,
            None => None,
        };
        if let Some(batch) = governed {
            match self.store.append(&principal.tenant, signal, batch.clone()) {
                Ok(true) => self.flush_wanted.notify_one(),
                Ok(false) => {}
                Err(e) if e.is_transient() => {
                    return Err(ReceiveError::Unavailable {
                        message: format!("{e}"),
                        retry_after: RETRY_AFTER,
                    })
                }
                Err(e) => {
                    return Err(ReceiveError::Internal(format!(
                        "tenant {}: {e}",
                        principal.tenant
                    )))
                }
            }
            if let Some(policy) = &policy {
                let findings =
                    self.anomalies
                        .observe(&principal.tenant, &policy.anomaly, signal, &batch);
                self.record_anomalies(&principal.tenant, &findings);
            }
        }
        let labels = [
            ("tenant", principal.tenant.as_str()),
            ("signal", signal.name()),
        ];
        self.telemetry.add(
            "bulkhead_records_accepted_total",
            &labels,
            converted.accepted,
        );
        self.telemetry.add(
            "bulkhead_records_rejected_total",
            &labels,
            converted.rejected,
        );
        if converted.rejected > 0 {
            tracing::debug!(tenant = %principal.tenant, %signal, rejected = converted.rejected, "partial success");
        }
        Ok(Outcome {
            accepted: converted.accepted,
            rejected: converted.rejected,
            error_message: converted.errors.join("; "),
        })
    }
}
