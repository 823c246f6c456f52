//! Functions Bulkhead adds to tenant SQL.
//!
//! `attr(map, key)`: the value stored under `key` in an attribute map column
//! (`attributes`, `resource_attributes`, `scope_attributes`, ...), or NULL
//! when the key is absent. Example:
//! `SELECT attr(resource_attributes, 'host.name'), count(*) FROM logs GROUP BY 1`.
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{exec_err, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

#[derive(Debug, PartialEq, Eq, Hash)]
struct Attr {
    signature: Signature,
}

/// The `attr(map, key)` function.
pub fn attr() -> ScalarUDF {
    ScalarUDF::from(Attr {
        signature: Signature::any(2, Volatility::Immutable),
    })
}

impl ScalarUDFImpl for Attr {
    fn name(&self) -> &str {
        "attr"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match &args[0] {
            DataType::Map(_, _) | DataType::Null => Ok(DataType::Utf8),
            other => exec_err!(
                "attr(map, key) takes an attribute map as its first argument, got {other}"
            ),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let maps = args.args[0].clone().into_array(rows)?;
        let keys = args.args[1].clone().into_array(rows)?;
        let keys = datafusion::arrow::compute::cast(&keys, &DataType::Utf8)?;
        let keys = keys.as_string::<i32>();
        if maps.data_type() == &DataType::Null {
            return Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None)));
        }
        let maps = maps.as_map();
        let mut out = StringBuilder::with_capacity(rows, rows * 8);
        for row in 0..rows {
            if maps.is_null(row) || keys.is_null(row) {
                out.append_null();
                continue;
            }
            let entries = maps.value(row);
            let k = entries.column(0).as_string::<i32>();
            let v = entries.column(1);
            let v = datafusion::arrow::compute::cast(v, &DataType::Utf8)?;
            let v = v.as_string::<i32>();
            let wanted = keys.value(row);
            // Last occurrence wins, as for duplicate attribute keys in OTLP.
            match (0..k.len()).rev().find(|&i| k.value(i) == wanted) {
                Some(i) if !v.is_null(i) => out.append_value(v.value(i)),
                _ => out.append_null(),
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish()) as ArrayRef))
    }
}
