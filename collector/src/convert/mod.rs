//! OTLP to Arrow conversion.
