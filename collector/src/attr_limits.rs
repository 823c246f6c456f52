//! A tenant's attribute limits, applied to a decoded request before it is
//! converted: at most `max_attributes_per_record` attributes per resource,
//! scope, record, span, event, link and data point (the first ones are kept,
//! the rest dropped and added to the item's `dropped_attributes_count` where
//! OTLP has one), and string and bytes values, nested ones included, cut to
//! `max_attribute_value_length` bytes (at a character boundary). Both are
//! counted, per tenant, in `/metrics`.
use bulkhead_rules::Limits;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::Exemplar;

use crate::pipeline::Export;

/// What applying the limits changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub attributes_dropped: u64,
    pub values_truncated: u64,
}

struct Apply {
    max_attributes: usize,
    max_len: usize,
    applied: Applied,
}

impl Apply {
    /// Limits one attribute list; returns how many were dropped.
    fn list(&mut self, kvs: &mut Vec<KeyValue>) -> u32 {
        let dropped = kvs.len().saturating_sub(self.max_attributes);
        kvs.truncate(self.max_attributes);
        for kv in kvs.iter_mut() {
            if let Some(v) = kv.value.as_mut() {
                self.value(v);
            }
        }
        self.applied.attributes_dropped += dropped as u64;
        u32::try_from(dropped).unwrap_or(u32::MAX)
    }

    fn value(&mut self, v: &mut AnyValue) {
        match v.value.as_mut() {
            Some(Value::StringValue(s)) if s.len() > self.max_len => {
                let mut end = self.max_len;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                s.truncate(end);
                self.applied.values_truncated += 1;
            }
            Some(Value::BytesValue(b)) if b.len() > self.max_len => {
                b.truncate(self.max_len);
                self.applied.values_truncated += 1;
            }
            // nesting is bounded by the protobuf and JSON decoders' depth limits
            Some(Value::ArrayValue(a)) => a.values.iter_mut().for_each(|v| self.value(v)),
            Some(Value::KvlistValue(l)) => {
                for kv in l.values.iter_mut() {
                    if let Some(v) = kv.value.as_mut() {
                        self.value(v);
                    }
                }
            }
            _ => {}
        }
    }

    fn logs(&mut self, req: &mut ExportLogsServiceRequest) {
        for rl in &mut req.resource_logs {
            if let Some(r) = rl.resource.as_mut() {
                let d = self.list(&mut r.attributes);
                r.dropped_attributes_count = r.dropped_attributes_count.saturating_add(d);
            }
            for sl in &mut rl.scope_logs {
                if let Some(s) = sl.scope.as_mut() {
                    let d = self.list(&mut s.attributes);
                    s.dropped_attributes_count = s.dropped_attributes_count.saturating_add(d);
                }
                for r in &mut sl.log_records {
                    let d = self.list(&mut r.attributes);
                    r.dropped_attributes_count = r.dropped_attributes_count.saturating_add(d);
                }
            }
        }
    }

    fn traces(&mut self, req: &mut ExportTraceServiceRequest) {
        for rs in &mut req.resource_spans {
            if let Some(r) = rs.resource.as_mut() {
                let d = self.list(&mut r.attributes);
                r.dropped_attributes_count = r.dropped_attributes_count.saturating_add(d);
            }
            for ss in &mut rs.scope_spans {
                if let Some(s) = ss.scope.as_mut() {
                    let d = self.list(&mut s.attributes);
                    s.dropped_attributes_count = s.dropped_attributes_count.saturating_add(d);
                }
                for span in &mut ss.spans {
                    let d = self.list(&mut span.attributes);
                    span.dropped_attributes_count = span.dropped_attributes_count.saturating_add(d);
                    for e in &mut span.events {
                        let d = self.list(&mut e.attributes);
                        e.dropped_attributes_count = e.dropped_attributes_count.saturating_add(d);
                    }
                    for l in &mut span.links {
                        let d = self.list(&mut l.attributes);
                        l.dropped_attributes_count = l.dropped_attributes_count.saturating_add(d);
                    }
                }
            }
        }
    }

    /// A data point's attributes and its exemplars' (OTLP counts no
    /// dropped attributes there).
    fn point(&mut self, attributes: &mut Vec<KeyValue>, exemplars: &mut [Exemplar]) {
        self.list(attributes);
        for e in exemplars {
            self.list(&mut e.filtered_attributes);
        }
    }

    fn metrics(&mut self, req: &mut ExportMetricsServiceRequest) {
        for rm in &mut req.resource_metrics {
            if let Some(r) = rm.resource.as_mut() {
                let d = self.list(&mut r.attributes);
                r.dropped_attributes_count = r.dropped_attributes_count.saturating_add(d);
            }
            for sm in &mut rm.scope_metrics {
                if let Some(s) = sm.scope.as_mut() {
                    let d = self.list(&mut s.attributes);
                    s.dropped_attributes_count = s.dropped_attributes_count.saturating_add(d);
                }
                for m in &mut sm.metrics {
                    self.list(&mut m.metadata);
                    match m.data.as_mut() {
                        Some(Data::Gauge(g)) => g
                            .data_points
                            .iter_mut()
                            .for_each(|p| self.point(&mut p.attributes, &mut p.exemplars)),
                        Some(Data::Sum(s)) => s
                            .data_points
                            .iter_mut()
                            .for_each(|p| self.point(&mut p.attributes, &mut p.exemplars)),
                        Some(Data::Histogram(h)) => h
                            .data_points
                            .iter_mut()
                            .for_each(|p| self.point(&mut p.attributes, &mut p.exemplars)),
                        Some(Data::ExponentialHistogram(h)) => h
                            .data_points
                            .iter_mut()
                            .for_each(|p| self.point(&mut p.attributes, &mut p.exemplars)),
                        Some(Data::Summary(s)) => s
                            .data_points
                            .iter_mut()
                            .for_each(|p| self.point(&mut p.attributes, &mut [])),
                        None => {}
                    }
                }
            }
        }
    }
}

/// Applies `limits` to every attribute list of `export`.
pub fn apply(export: &mut Export, limits: &Limits) -> Applied {
    let mut a = Apply {
        max_attributes: limits.max_attributes_per_record as usize,
        max_len: limits.max_attribute_value_length as usize,
        applied: Applied::default(),
    };
    match export {
        Export::Logs(r) => a.logs(r),
        Export::Traces(r) => a.traces(r),
        Export::Metrics(r) => a.metrics(r),
    }
    a.applied
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};

    fn kv(k: String, v: &str) -> KeyValue {
        KeyValue {
            key: k,
            value: Some(AnyValue {
                value: Some(Value::StringValue(v.into())),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn extra_attributes_are_dropped_and_counted_long_values_cut_at_a_char() {
        let attrs: Vec<_> = (0..10).map(|i| kv(format!("k{i}"), "v")).collect();
        let mut long = attrs.clone();
        long[0] = kv("long".into(), "ééééé"); // 10 bytes
        let mut export = Export::Logs(ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![
                        LogRecord {
                            attributes: attrs,
                            dropped_attributes_count: 2,
                            ..Default::default()
                        },
                        LogRecord {
                            attributes: long,
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        });
        let limits = Limits {
            max_attributes_per_record: 4,
            max_attribute_value_length: 5,
            ..Limits::default()
        };
        let applied = apply(&mut export, &limits);
        assert_eq!(
            applied,
            Applied {
                attributes_dropped: 12,
                values_truncated: 1
            }
        );
        let Export::Logs(req) = export else {
            unreachable!()
        };
        let recs = &req.resource_logs[0].scope_logs[0].log_records;
        assert_eq!(recs[0].attributes.len(), 4);
        assert_eq!(recs[0].dropped_attributes_count, 8);
        assert_eq!(recs[1].dropped_attributes_count, 6);
        let Some(Value::StringValue(s)) = recs[1].attributes[0]
            .value
            .as_ref()
            .and_then(|v| v.value.as_ref())
        else {
            unreachable!()
        };
        assert_eq!(s, "éé", "cut to at most 5 bytes at a character boundary");
    }
}
