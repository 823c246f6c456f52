//! Bounds on the values that some built-in functions make. The engine's
//! memory limit counts what sorts, joins and aggregates hold, not the value
//! a scalar function returns: `repeat('x', 2000000000)` built a 2 GB string
//! and `array_repeat(1, 2000000000)` took the whole node's memory. The
//! functions whose output size their arguments set are wrapped here: before
//! a call, the size of what it would return for the whole batch is
//! reckoned from its arguments, and a call over the tenant's memory limit
//! (`query.memory`) is refused with an error that names the function and
//! the limit. Everything else about the function is the built-in's.
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArrayType};
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::{ExprSchema, Result};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature,
};

/// How a function's output size follows from its arguments (as arrays of
/// the batch's rows): bytes for the batch, or None when it cannot tell.
type Reckon = fn(&[ArrayRef]) -> Option<u128>;

/// The wrapped functions, by name.
const BOUNDED: [(&str, Reckon); 9] = [
    ("repeat", |a| sum2(a, 0, 1, |len, n| len * n)),
    ("lpad", |a| Some(each(ints(a.get(1)?)?, |n| n * 4))),
    ("rpad", |a| Some(each(ints(a.get(1)?)?, |n| n * 4))),
    ("array_repeat", |a| Some(each(ints(a.get(1)?)?, |n| n * 8))),
    ("array_resize", |a| Some(each(ints(a.get(1)?)?, |n| n * 8))),
    ("range", series),
    ("generate_series", series),
    ("replace", |a| {
        let (s, from, to) = (lens(a.first()?)?, lens(a.get(1)?)?, lens(a.get(2)?)?);
        Some(
            (0..s.len())
                .map(|i| s[i] + s[i] / from[i].max(1) * to[i])
                .sum(),
        )
    }),
    ("regexp_replace", |a| {
        let (s, to) = (lens(a.first()?)?, lens(a.get(2)?)?);
        Some((0..s.len()).map(|i| (s[i] + 1) * (to[i] + 1)).sum())
    }),
];

/// Each row's value of `f` over a whole column, summed.
fn each(values: Vec<u128>, f: impl Fn(u128) -> u128) -> u128 {
    values.into_iter().map(f).sum()
}

/// `f(lens of argument i, ints of argument j)` summed over the rows.
fn sum2(a: &[ArrayRef], i: usize, j: usize, f: impl Fn(u128, u128) -> u128) -> Option<u128> {
    let (x, y) = (lens(a.get(i)?)?, ints(a.get(j)?)?);
    Some(x.into_iter().zip(y).map(|(x, y)| f(x, y)).sum())
}

/// `range`/`generate_series` as arrays: (stop - start) / step elements of
/// 8 bytes a row, for integer arguments (dates and times are not reckoned).
fn series(a: &[ArrayRef]) -> Option<u128> {
    let (start, stop, step) = match a.len() {
        1 => (None, signed(&a[0])?, None),
        2 => (Some(signed(&a[0])?), signed(&a[1])?, None),
        3 => (Some(signed(&a[0])?), signed(&a[1])?, Some(signed(&a[2])?)),
        _ => return None,
    };
    Some(
        (0..stop.len())
            .map(|r| {
                let from = start.as_ref().map_or(0, |s| s[r]);
                let by = step.as_ref().map_or(1, |s| s[r]).unsigned_abs().max(1);
                (stop[r] - from).unsigned_abs() / by * 8
            })
            .sum(),
    )
}

/// Byte lengths of a string column's values (0 for NULL); None for other
/// types.
fn lens(arr: &ArrayRef) -> Option<Vec<u128>> {
    fn of<'a>(s: impl StringArrayType<'a>) -> Vec<u128> {
        s.iter().map(|v| v.map_or(0, |v| v.len() as u128)).collect()
    }
    match arr.data_type() {
        DataType::Utf8 => Some(of(arr.as_string::<i32>())),
        DataType::LargeUtf8 => Some(of(arr.as_string::<i64>())),
        DataType::Utf8View => Some(of(arr.as_string_view())),
        _ => None,
    }
}

/// An integer column's values (NULL as 0); None for other types.
fn signed(arr: &ArrayRef) -> Option<Vec<i128>> {
    if !arr.data_type().is_integer() {
        return None;
    }
    let arr = datafusion::arrow::compute::cast(arr, &DataType::Int64).ok()?;
    let arr = arr.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
    Some(arr.iter().map(|v| i128::from(v.unwrap_or(0))).collect())
}

/// An integer column's values, negatives and NULL as 0; None for other
/// types.
fn ints(arr: &ArrayRef) -> Option<Vec<u128>> {
    Some(
        signed(arr)?
            .into_iter()
            .map(|v| u128::try_from(v).unwrap_or(0))
            .collect(),
    )
}

/// A built-in function, refusing calls whose output would pass `max_bytes`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: Arc<ScalarUDF>,
    /// Its name in [`BOUNDED`].
    which: &'static str,
    max_bytes: usize,
}

impl Bounded {
    fn check(&self, args: &ScalarFunctionArgs) -> Result<()> {
        let Ok(arrays) = ColumnarValue::values_to_arrays(&args.args) else {
            return Ok(());
        };
        let reckon = BOUNDED
            .iter()
            .find(|(n, _)| *n == self.which)
            .map(|(_, r)| r);
        if let Some(bytes) = reckon.and_then(|r| r(&arrays)) {
            if bytes > self.max_bytes as u128 {
                return Err(DataFusionError::ResourcesExhausted(format!(
                    "{}() would make about {bytes} bytes for {} rows, more than this tenant's query memory of {} bytes (query.memory)",
                    self.inner.name(),
                    args.number_rows,
                    self.max_bytes
                )));
            }
        }
        Ok(())
    }
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.inner.inner().schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn is_nullable(&self, args: &[Expr], schema: &dyn ExprSchema) -> bool {
        #[expect(deprecated)]
        self.inner.inner().is_nullable(args, schema)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.check(&args)?;
        self.inner.invoke_with_args(args)
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        self.inner.inner().simplify(args, info)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

/// Registers the bounded functions in `ctx` in place of the built-ins.
pub fn register(ctx: &datafusion::prelude::SessionContext, max_bytes: usize) {
    use datafusion::execution::FunctionRegistry;
    for (name, _) in BOUNDED {
        if let Ok(inner) = ctx.udf(name) {
            ctx.register_udf(ScalarUDF::new_from_impl(Bounded {
                inner,
                which: name,
                max_bytes,
            }));
        }
    }
}
