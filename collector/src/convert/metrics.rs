//! OTLP metrics to the `metrics` table: one row per data point of every kind,
//! with the columns that do not apply to a kind left null.
use std::sync::Arc;

use arrow::array::ListArray;
use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, ListBuilder,
    StringBuilder, TimestampNanosecondBuilder, UInt32Builder, UInt64Builder,
};
use arrow::datatypes::{FieldRef, Fields};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use bulkhead_store::schema::{metrics_schema, MetricColumns, TIME_ZONE};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
use opentelemetry_proto::tonic::metrics::v1::summary_data_point::ValueAtQuantile;
use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, metric::Data, number_data_point, Exemplar, Metric, NumberDataPoint,
};

use super::attrs::AttrsBuilder;
use super::common::{list_item, list_of_structs, list_struct_fields, push_offset, Context};
use super::{append_id, check_id, finish, nanos, Converted, Rejections, Stamp};

/// One data point flattened to the table's columns; `None` where the column
/// does not apply to the kind.
#[derive(Debug, Default)]
struct Point<'a> {
    time: u64,
    start: u64,
    temporality: Option<i32>,
    monotonic: Option<bool>,
    /// Outer `None`: not a gauge or sum; inner `None`: a point without a value.
    number: Option<Option<&'a number_data_point::Value>>,
    count: Option<u64>,
    sum: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    buckets: Option<(&'a [u64], &'a [f64])>,
    exponential: Option<Exponential<'a>>,
    quantiles: Option<&'a [ValueAtQuantile]>,
    exemplars: Option<&'a [Exemplar]>,
    flags: u32,
    attributes: &'a [KeyValue],
}

#[derive(Debug)]
struct Exponential<'a> {
    scale: i32,
    zero_count: u64,
    zero_threshold: f64,
    positive: Option<&'a Buckets>,
    negative: Option<&'a Buckets>,
}

fn number_point<'a>(
    dp: &'a NumberDataPoint,
    temporality: Option<i32>,
    monotonic: Option<bool>,
) -> Point<'a> {
    Point {
        time: dp.time_unix_nano,
        start: dp.start_time_unix_nano,
        temporality,
        monotonic,
        number: Some(dp.value.as_ref()),
        exemplars: Some(&dp.exemplars),
        flags: dp.flags,
        attributes: &dp.attributes,
        ..Point::default()
    }
}

/// Offset and counts of one side of an exponential histogram; absent buckets
/// are empty buckets (offset 0, no counts).
fn side(b: Option<&Buckets>) -> (i32, &[u64]) {
    b.map_or((0, &[][..]), |b| (b.offset, &b.bucket_counts[..]))
}

fn temporality_name(t: i32) -> Option<&'static str> {
    Some(match t {
        0 => "unspecified",
        1 => "delta",
        2 => "cumulative",
        _ => return None,
    })
}

/// Checks a point and returns its (event time, start time). The event time
/// falls back to the receive time when unset, so the row has a partition.
fn validate(
    p: &Point<'_>,
    received_at: i64,
    window: &super::EventWindow,
) -> Result<(i64, Option<i64>), String> {
    let time = nanos(p.time, "time_unix_nano")?;
    let start = nanos(p.start, "start_time_unix_nano")?;
    if let Some((counts, bounds)) = p.buckets {
        if !counts.is_empty() && counts.len() != bounds.len() + 1 {
            return Err(format!(
                "histogram has {} bucket_counts for {} explicit_bounds, expected {}",
                counts.len(),
                bounds.len(),
                bounds.len() + 1
            ));
        }
    }
    for (i, e) in p.exemplars.unwrap_or_default().iter().enumerate() {
        nanos(e.time_unix_nano, "time_unix_nano")
            .map(drop)
            .and_then(|()| check_id(&e.trace_id, 16, "trace_id", false))
            .and_then(|()| check_id(&e.span_id, 8, "span_id", false))
            .map_err(|m| format!("exemplar {i}: {m}"))?;
    }
    let (event, field) = if time != 0 {
        (time, "time_unix_nano")
    } else {
        (received_at, "receive time")
    };
    window.check(event, field)?;
    Ok((event, (start != 0).then_some(start)))
}

#[derive(Debug)]
struct Columns {
    timestamp: TimestampNanosecondBuilder,
    start_timestamp: TimestampNanosecondBuilder,
    metric_name: StringBuilder,
    metric_description: StringBuilder,
    metric_unit: StringBuilder,
    metric_type: StringBuilder,
    metric_metadata: AttrsBuilder,
    aggregation_temporality: StringBuilder,
    is_monotonic: BooleanBuilder,
    value: Float64Builder,
    value_int: Int64Builder,
    count: UInt64Builder,
    sum: Float64Builder,
    min: Float64Builder,
    max: Float64Builder,
    bucket_counts: ListBuilder<UInt64Builder>,
    explicit_bounds: ListBuilder<Float64Builder>,
    scale: Int32Builder,
    zero_count: UInt64Builder,
    zero_threshold: Float64Builder,
    positive_offset: Int32Builder,
    positive_bucket_counts: ListBuilder<UInt64Builder>,
    negative_offset: Int32Builder,
    negative_bucket_counts: ListBuilder<UInt64Builder>,
    quantiles: ListBuilder<Float64Builder>,
    quantile_values: ListBuilder<Float64Builder>,
    exemplars: Exemplars,
    flags: UInt32Builder,
    attributes: AttrsBuilder,
}

fn append_list<T: Copy, B: arrow::array::ArrayBuilder + Extend<Option<T>>>(
    b: &mut ListBuilder<B>,
    values: Option<&[T]>,
) {
    match values {
        Some(v) => {
            b.values().extend(v.iter().map(|x| Some(*x)));
            b.append(true);
        }
        None => b.append_null(),
    }
}

impl Columns {
    fn new(schema: &arrow::datatypes::SchemaRef) -> Self {
        let ts = || TimestampNanosecondBuilder::new().with_timezone(TIME_ZONE);
        let u64s =
            |name| ListBuilder::new(UInt64Builder::new()).with_field(list_item(schema, name));
        let f64s =
            |name| ListBuilder::new(Float64Builder::new()).with_field(list_item(schema, name));
        Self {
            timestamp: ts(),
            start_timestamp: ts(),
            metric_name: StringBuilder::new(),
            metric_description: StringBuilder::new(),
            metric_unit: StringBuilder::new(),
            metric_type: StringBuilder::new(),
            metric_metadata: AttrsBuilder::new(),
            aggregation_temporality: StringBuilder::new(),
            is_monotonic: BooleanBuilder::new(),
            value: Float64Builder::new(),
            value_int: Int64Builder::new(),
            count: UInt64Builder::new(),
            sum: Float64Builder::new(),
            min: Float64Builder::new(),
            max: Float64Builder::new(),
            bucket_counts: u64s("bucket_counts"),
            explicit_bounds: f64s("explicit_bounds"),
            scale: Int32Builder::new(),
            zero_count: UInt64Builder::new(),
            zero_threshold: Float64Builder::new(),
            positive_offset: Int32Builder::new(),
            positive_bucket_counts: u64s("positive_bucket_counts"),
            negative_offset: Int32Builder::new(),
            negative_bucket_counts: u64s("negative_bucket_counts"),
            quantiles: f64s("quantiles"),
            quantile_values: f64s("quantile_values"),
            exemplars: Exemplars::new(list_struct_fields(schema, "exemplars")),
            flags: UInt32Builder::new(),
            attributes: AttrsBuilder::new(),
        }
    }

    fn append(&mut self, m: &Metric, kind: &'static str, p: &Point<'_>, times: (i64, Option<i64>)) {
        self.timestamp.append_value(times.0);
        self.start_timestamp.append_option(times.1);
        self.metric_name.append_value(&m.name);
        self.metric_description.append_value(&m.description);
        self.metric_unit.append_value(&m.unit);
        self.metric_type.append_value(kind);
        self.metric_metadata.append(&m.metadata);
        match p.temporality {
            None => self.aggregation_temporality.append_null(),
            Some(t) => match temporality_name(t) {
                Some(name) => self.aggregation_temporality.append_value(name),
                None => self.aggregation_temporality.append_value(t.to_string()),
            },
        }
        self.is_monotonic.append_option(p.monotonic);
        let (value, value_int) = match p.number.flatten() {
            Some(number_data_point::Value::AsDouble(d)) => (Some(*d), None),
            // `value` keeps every number comparable; `value_int` keeps ints exact.
            Some(number_data_point::Value::AsInt(i)) => (Some(*i as f64), Some(*i)),
            None => (None, None),
        };
        self.value.append_option(value);
        self.value_int.append_option(value_int);
        self.count.append_option(p.count);
        self.sum.append_option(p.sum);
        self.min.append_option(p.min);
        self.max.append_option(p.max);
        append_list(&mut self.bucket_counts, p.buckets.map(|b| b.0));
        append_list(&mut self.explicit_bounds, p.buckets.map(|b| b.1));
        let e = p.exponential.as_ref();
        self.scale.append_option(e.map(|e| e.scale));
        self.zero_count.append_option(e.map(|e| e.zero_count));
        self.zero_threshold
            .append_option(e.map(|e| e.zero_threshold));
        let positive = e.map(|e| side(e.positive));
        let negative = e.map(|e| side(e.negative));
        self.positive_offset.append_option(positive.map(|b| b.0));
        append_list(&mut self.positive_bucket_counts, positive.map(|b| b.1));
        self.negative_offset.append_option(negative.map(|b| b.0));
        append_list(&mut self.negative_bucket_counts, negative.map(|b| b.1));
        match p.quantiles {
            Some(q) => {
                self.quantiles
                    .values()
                    .extend(q.iter().map(|q| Some(q.quantile)));
                self.quantiles.append(true);
                self.quantile_values
                    .values()
                    .extend(q.iter().map(|q| Some(q.value)));
                self.quantile_values.append(true);
            }
            None => {
                self.quantiles.append_null();
                self.quantile_values.append_null();
            }
        }
        self.exemplars.append(p.exemplars);
        self.flags.append_value(p.flags);
        self.attributes.append(p.attributes);
    }
}

/// The `exemplars` column: `List<Struct{timestamp, value, value_int, span_id,
/// trace_id, filtered_attributes}>`, null for summaries (which have none).
#[derive(Debug)]
struct Exemplars {
    item: FieldRef,
    fields: Fields,
    timestamp: TimestampNanosecondBuilder,
    value: Float64Builder,
    value_int: Int64Builder,
    span_id: StringBuilder,
    trace_id: StringBuilder,
    filtered_attributes: AttrsBuilder,
    offsets: Vec<i32>,
    valid: Vec<bool>,
}

impl Exemplars {
    fn new((item, fields): (FieldRef, Fields)) -> Self {
        Self {
            item,
            fields,
            timestamp: TimestampNanosecondBuilder::new().with_timezone(TIME_ZONE),
            value: Float64Builder::new(),
            value_int: Int64Builder::new(),
            span_id: StringBuilder::new(),
            trace_id: StringBuilder::new(),
            filtered_attributes: AttrsBuilder::new(),
            offsets: vec![0],
            valid: Vec::new(),
        }
    }

    /// Appends a point's exemplars; their times and ids were checked by `validate`.
    fn append(&mut self, exemplars: Option<&[Exemplar]>) {
        let list = exemplars.unwrap_or_default();
        for e in list {
            self.timestamp.append_value(e.time_unix_nano as i64);
            let (value, value_int) = match e.value {
                Some(exemplar::Value::AsDouble(d)) => (Some(d), None),
                Some(exemplar::Value::AsInt(i)) => (Some(i as f64), Some(i)),
                None => (None, None),
            };
            self.value.append_option(value);
            self.value_int.append_option(value_int);
            append_id(&mut self.span_id, &e.span_id);
            append_id(&mut self.trace_id, &e.trace_id);
            self.filtered_attributes.append(&e.filtered_attributes);
        }
        push_offset(&mut self.offsets, list.len());
        self.valid.push(exemplars.is_some());
    }

    fn finish(mut self) -> Result<ListArray, ArrowError> {
        let children: Vec<ArrayRef> = vec![
            Arc::new(self.timestamp.finish()),
            Arc::new(self.value.finish()),
            Arc::new(self.value_int.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.trace_id.finish()),
            Arc::new(self.filtered_attributes.finish()),
        ];
        list_of_structs(
            self.item,
            self.fields,
            children,
            self.offsets,
            Some(self.valid),
        )
    }
}

/// Walks the request, appending accepted points and counting rejected ones.
struct Walker {
    cols: Columns,
    ctx: Context,
    rejections: Rejections,
    received_at: i64,
    window: super::EventWindow,
}

impl Walker {
    fn point(&mut self, m: &Metric, kind: &'static str, p: Point<'_>, at: impl Fn() -> String) {
        match validate(&p, self.received_at, &self.window) {
            Ok(times) => {
                self.cols.append(m, kind, &p, times);
                self.ctx.row();
            }
            Err(e) => self.rejections.add(1, || format!("{}: {e}", at())),
        }
    }

    fn metric(&mut self, m: &Metric, at: &dyn Fn() -> String) {
        let data = match &m.data {
            Some(data) => data,
            None => {
                let kinds = "gauge, sum, histogram, exponential_histogram or summary";
                return self.rejections.add(1, || {
                    format!("{}: metric has no data (none of {kinds})", at())
                });
            }
        };
        let dp_at = |i: usize| move || format!("data point {i} of {}", at());
        match data {
            Data::Gauge(g) => {
                for (i, dp) in g.data_points.iter().enumerate() {
                    self.point(m, "gauge", number_point(dp, None, None), dp_at(i));
                }
            }
            Data::Sum(s) => {
                for (i, dp) in s.data_points.iter().enumerate() {
                    let p = number_point(dp, Some(s.aggregation_temporality), Some(s.is_monotonic));
                    self.point(m, "sum", p, dp_at(i));
                }
            }
            Data::Histogram(h) => {
                for (i, dp) in h.data_points.iter().enumerate() {
                    let p = Point {
                        time: dp.time_unix_nano,
                        start: dp.start_time_unix_nano,
                        temporality: Some(h.aggregation_temporality),
                        count: Some(dp.count),
                        sum: dp.sum,
                        min: dp.min,
                        max: dp.max,
                        buckets: Some((&dp.bucket_counts, &dp.explicit_bounds)),
                        exemplars: Some(&dp.exemplars),
                        flags: dp.flags,
                        attributes: &dp.attributes,
                        ..Point::default()
                    };
                    self.point(m, "histogram", p, dp_at(i));
                }
            }
            Data::ExponentialHistogram(h) => {
                for (i, dp) in h.data_points.iter().enumerate() {
                    let p = Point {
                        time: dp.time_unix_nano,
                        start: dp.start_time_unix_nano,
                        temporality: Some(h.aggregation_temporality),
                        count: Some(dp.count),
                        sum: dp.sum,
                        min: dp.min,
                        max: dp.max,
                        exponential: Some(Exponential {
                            scale: dp.scale,
                            zero_count: dp.zero_count,
                            zero_threshold: dp.zero_threshold,
                            positive: dp.positive.as_ref(),
                            negative: dp.negative.as_ref(),
                        }),
                        exemplars: Some(&dp.exemplars),
                        flags: dp.flags,
                        attributes: &dp.attributes,
                        ..Point::default()
                    };
                    self.point(m, "exponential_histogram", p, dp_at(i));
                }
            }
            Data::Summary(s) => {
                for (i, dp) in s.data_points.iter().enumerate() {
                    let p = Point {
                        time: dp.time_unix_nano,
                        start: dp.start_time_unix_nano,
                        count: Some(dp.count),
                        sum: Some(dp.sum),
                        quantiles: Some(&dp.quantile_values),
                        flags: dp.flags,
                        attributes: &dp.attributes,
                        ..Point::default()
                    };
                    self.point(m, "summary", p, dp_at(i));
                }
            }
        }
    }
}

pub(crate) fn convert(req: &ExportMetricsServiceRequest, stamp: &Stamp<'_>) -> Converted {
    let schema = metrics_schema();
    let mut w = Walker {
        cols: Columns::new(&schema),
        ctx: Context::new(&schema),
        rejections: Rejections::default(),
        received_at: stamp.received_at_nanos,
        window: stamp.window,
    };
    for (ri, rm) in req.resource_metrics.iter().enumerate() {
        w.ctx.resource(rm.resource.as_ref(), &rm.schema_url);
        for (si, sm) in rm.scope_metrics.iter().enumerate() {
            w.ctx.scope(sm.scope.as_ref(), &sm.schema_url);
            for (mi, m) in sm.metrics.iter().enumerate() {
                let at = || format!("metric {mi} ({}) of scope {si} of resource {ri}", m.name);
                w.metric(m, &at);
            }
        }
    }
    let accepted = w.ctx.rows() as u64;
    let Walker {
        cols,
        ctx,
        rejections,
        ..
    } = w;
    finish(columns(ctx, cols, stamp), accepted, rejections)
}

fn columns(ctx: Context, mut cols: Columns, stamp: &Stamp<'_>) -> Result<RecordBatch, ArrowError> {
    let shared = ctx.finish(stamp)?;
    MetricColumns {
        tenant: shared.tenant,
        timestamp: cols.timestamp.finish(),
        start_timestamp: cols.start_timestamp.finish(),
        service_name: shared.service_name,
        metric_name: cols.metric_name.finish(),
        metric_description: cols.metric_description.finish(),
        metric_unit: cols.metric_unit.finish(),
        metric_type: cols.metric_type.finish(),
        metric_metadata: cols.metric_metadata.finish(),
        aggregation_temporality: cols.aggregation_temporality.finish(),
        is_monotonic: cols.is_monotonic.finish(),
        value: cols.value.finish(),
        value_int: cols.value_int.finish(),
        count: cols.count.finish(),
        sum: cols.sum.finish(),
        min: cols.min.finish(),
        max: cols.max.finish(),
        bucket_counts: cols.bucket_counts.finish(),
        explicit_bounds: cols.explicit_bounds.finish(),
        scale: cols.scale.finish(),
        zero_count: cols.zero_count.finish(),
        zero_threshold: cols.zero_threshold.finish(),
        positive_offset: cols.positive_offset.finish(),
        positive_bucket_counts: cols.positive_bucket_counts.finish(),
        negative_offset: cols.negative_offset.finish(),
        negative_bucket_counts: cols.negative_bucket_counts.finish(),
        quantiles: cols.quantiles.finish(),
        quantile_values: cols.quantile_values.finish(),
        exemplars: cols.exemplars.finish()?,
        flags: cols.flags.finish(),
        attributes: cols.attributes.finish(),
        tail: shared.tail,
    }
    .into_batch()
}
