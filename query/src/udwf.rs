//! The baseline detector as SQL window functions, so an SRE can score any
//! series they can query, exactly as the collector's detectors would.
//!
//! - `anomaly_score(time, value [, sensitivity [, seasonality]])`: the score in `[0, 1]`;
//! - `anomaly_detect(time, value [, sensitivity [, seasonality]])`: a struct
//!   `{score, anomaly, expected, lower, upper, severity}`.
//!
//! Both run the streaming detector over each window partition in the order of
//! its `ORDER BY` (use the time column), point by point:
//!
//! ```sql
//! SELECT minute, errors, anomaly_score(minute, errors) OVER (ORDER BY minute) AS score
//! FROM (SELECT date_trunc('minute', timestamp) AS minute, count(*) AS errors
//!       FROM logs WHERE service_name = 'checkout' AND severity_number >= 17 GROUP BY 1);
//! ```
use std::sync::Arc;

use bulkhead_rules::anomaly::{Detector, DetectorSettings, Seasonality, Severity};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Float64Builder, StringBuilder, StructArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Field, FieldRef, Fields, Float64Type, TimeUnit, TimestampSecondType,
};
use datafusion::common::{exec_err, plan_err, Result};
use datafusion::logical_expr::function::{PartitionEvaluatorArgs, WindowUDFFieldArgs};
use datafusion::logical_expr::{
    PartitionEvaluator, Signature, TypeSignature, Volatility, WindowUDF, WindowUDFImpl,
};

#[derive(Debug, PartialEq, Eq, Hash)]
struct AnomalyWindow {
    name: &'static str,
    detailed: bool,
    signature: Signature,
}

/// `anomaly_score(...)`.
pub fn anomaly_score() -> WindowUDF {
    WindowUDF::from(AnomalyWindow::new("anomaly_score", false))
}

/// `anomaly_detect(...)`.
pub fn anomaly_detect() -> WindowUDF {
    WindowUDF::from(AnomalyWindow::new("anomaly_detect", true))
}

impl AnomalyWindow {
    fn new(name: &'static str, detailed: bool) -> Self {
        Self {
            name,
            detailed,
            signature: Signature::one_of(
                vec![
                    TypeSignature::Any(2),
                    TypeSignature::Any(3),
                    TypeSignature::Any(4),
                ],
                Volatility::Immutable,
            ),
        }
    }
}

fn detail_fields() -> Fields {
    Fields::from(vec![
        Field::new("score", DataType::Float64, true),
        Field::new("anomaly", DataType::Boolean, true),
        Field::new("expected", DataType::Float64, true),
        Field::new("lower", DataType::Float64, true),
        Field::new("upper", DataType::Float64, true),
        Field::new("severity", DataType::Utf8, true),
    ])
}

impl WindowUDFImpl for AnomalyWindow {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn field(&self, args: WindowUDFFieldArgs) -> Result<FieldRef> {
        let fields = args.input_fields();
        match fields[0].data_type() {
            DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => {}
            other => {
                return plan_err!(
                    "{}: the first argument must be the time column, got {other}",
                    self.name
                )
            }
        }
        if !fields[1].data_type().is_numeric() && fields[1].data_type() != &DataType::Null {
            return plan_err!(
                "{}: the second argument must be numeric, got {}",
                self.name,
                fields[1].data_type()
            );
        }
        let t = if self.detailed {
            DataType::Struct(detail_fields())
        } else {
            DataType::Float64
        };
        Ok(Arc::new(Field::new(args.name(), t, true)))
    }

    fn partition_evaluator(
        &self,
        _args: PartitionEvaluatorArgs,
    ) -> Result<Box<dyn PartitionEvaluator>> {
        Ok(Box::new(Evaluator {
            name: self.name,
            detailed: self.detailed,
        }))
    }
}

#[derive(Debug)]
struct Evaluator {
    name: &'static str,
    detailed: bool,
}

fn settings_from(name: &str, values: &[ArrayRef]) -> Result<DetectorSettings> {
    let mut s = DetectorSettings::default();
    if let Some(sens) = values.get(2) {
        let sens = cast(sens, &DataType::Float64)?;
        let sens = sens.as_primitive::<Float64Type>();
        if sens.is_empty() || sens.is_null(0) {
            return exec_err!("{name}: sensitivity must be a number in [0, 1]");
        }
        s.sensitivity = sens.value(0);
    }
    if let Some(season) = values.get(3) {
        let season = cast(season, &DataType::Utf8)?;
        let season = season.as_string::<i32>();
        s.seasonality = match (!season.is_empty() && season.is_valid(0)).then(|| season.value(0)) {
            Some("none") => Seasonality::None,
            Some("daily") => Seasonality::Daily,
            Some("weekly") => Seasonality::Weekly,
            Some("auto") => Seasonality::Auto,
            other => {
                return exec_err!(
                "{name}: seasonality must be 'none', 'daily', 'weekly' or 'auto', got {other:?}"
            )
            }
        };
    }
    if let Err(e) = s.validate() {
        return exec_err!("{name}: {e}");
    }
    Ok(s)
}

impl PartitionEvaluator for Evaluator {
    fn evaluate_all(&mut self, values: &[ArrayRef], num_rows: usize) -> Result<ArrayRef> {
        let settings = settings_from(self.name, values)?;
        let times = cast(&values[0], &DataType::Timestamp(TimeUnit::Second, None))?;
        let times = times.as_primitive::<TimestampSecondType>();
        let vals = cast(&values[1], &DataType::Float64)?;
        let vals = vals.as_primitive::<Float64Type>();
        let mut detector = Detector::new(&settings);
        let mut score = Float64Builder::with_capacity(num_rows);
        let mut anomaly = BooleanBuilder::with_capacity(num_rows);
        let (mut expected, mut lower, mut upper) = (
            Float64Builder::with_capacity(num_rows),
            Float64Builder::with_capacity(num_rows),
            Float64Builder::with_capacity(num_rows),
        );
        let mut severity = StringBuilder::new();
        for i in 0..num_rows {
            if times.is_null(i) || vals.is_null(i) {
                score.append_null();
                anomaly.append_null();
                expected.append_null();
                lower.append_null();
                upper.append_null();
                severity.append_null();
                continue;
            }
            let s = detector.observe(times.value(i), vals.value(i));
            score.append_value(s.score);
            anomaly.append_value(s.anomaly);
            expected.append_value(s.expected);
            lower.append_value(s.lower);
            upper.append_value(s.upper);
            severity.append_value(match s.severity {
                Severity::None => "none",
                Severity::Low => "low",
                Severity::Medium => "medium",
                Severity::High => "high",
            });
        }
        if !self.detailed {
            return Ok(Arc::new(score.finish()));
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(score.finish()),
            Arc::new(anomaly.finish()),
            Arc::new(expected.finish()),
            Arc::new(lower.finish()),
            Arc::new(upper.finish()),
            Arc::new(severity.finish()),
        ];
        Ok(Arc::new(StructArray::try_new(
            detail_fields(),
            columns,
            None,
        )?))
    }
}
