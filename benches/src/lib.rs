//! What the benchmarks share.
use std::net::SocketAddr;
use std::path::Path;

use bulkhead::Config;

/// The default configuration with its data in `data_dir` and every listener
/// on an ephemeral loopback port, so a benchmark never collides with a
/// server already running on the machine.
pub fn loopback_config(data_dir: &Path) -> Config {
    let mut config = Config {
        data_dir: data_dir.to_path_buf(),
        ..Default::default()
    };
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    config.listen.grpc = any;
    config.listen.http = any;
    config.listen.api = any;
    config.listen.metrics = any;
    config.listen.flight = any;
    config
}

/// An OTLP string attribute.
pub fn kv(k: &str, v: String) -> opentelemetry_proto::tonic::common::v1::KeyValue {
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v)),
        }),
        ..Default::default()
    }
}

/// A SQL timestamp literal for nanoseconds since the epoch.
pub fn sql_timestamp(nanos: u64) -> String {
    let t = chrono::DateTime::from_timestamp_nanos(i64::try_from(nanos).unwrap_or(i64::MAX));
    format!("TIMESTAMP '{}'", t.format("%Y-%m-%dT%H:%M:%SZ"))
}
