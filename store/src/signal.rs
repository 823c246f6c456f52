use arrow::datatypes::SchemaRef;

use crate::schema;

/// The kinds of data a tenant stores; each is one table and one directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    Logs,
    Spans,
    Metrics,
    /// Written by the anomaly detectors, not received.
    Anomalies,
}

impl Signal {
    pub const ALL: [Signal; 4] = [
        Signal::Logs,
        Signal::Spans,
        Signal::Metrics,
        Signal::Anomalies,
    ];

    /// Directory (`signal=<name>`) and table name.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Logs => "logs",
            Signal::Spans => "spans",
            Signal::Metrics => "metrics",
            Signal::Anomalies => "anomalies",
        }
    }

    pub fn schema(self) -> SchemaRef {
        match self {
            Signal::Logs => schema::logs_schema(),
            Signal::Spans => schema::spans_schema(),
            Signal::Metrics => schema::metrics_schema(),
            Signal::Anomalies => schema::anomalies_schema(),
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
