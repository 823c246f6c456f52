"""Exports logs, spans and metrics with the OpenTelemetry Python SDK.

Usage: otel_sdk_export.py KEY GRPC_ENDPOINT HTTP_ENDPOINT

For each transport (gRPC plain, gRPC gzip, HTTP protobuf, HTTP gzip) it sends,
under service.name "py-<transport>": 3 log records, 2 spans and one data point
each of a counter, an up-down counter, a histogram and a gauge. Exits non-zero
if any export is refused.
"""
import logging
import sys

from grpc import Compression as GrpcCompression
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetrics
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetrics
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

key, grpc_endpoint, http_endpoint = sys.argv[1:4]
failures = []


class Checked:
    """Wraps an exporter and records every export that did not succeed."""

    def __init__(self, inner, what):
        self._inner, self._what = inner, what

    def export(self, batch, *args, **kwargs):
        result = self._inner.export(batch, *args, **kwargs)
        # each signal has its own result enum; all name success SUCCESS
        if getattr(result, "name", None) != "SUCCESS":
            failures.append(f"{self._what}: {result}")
        return result

    def __getattr__(self, name):
        return getattr(self._inner, name)


class OnDemandReader(MetricReader):
    """Collects and exports when told to, through a checked exporter."""

    def __init__(self, exporter):
        super().__init__(
            preferred_temporality=exporter._preferred_temporality,
            preferred_aggregation=exporter._preferred_aggregation,
        )
        self._exporter = exporter

    def _receive_metrics(self, metrics_data, timeout_millis=10_000, **kwargs):
        if metrics_data is None:
            return
        result = self._exporter.export(metrics_data, timeout_millis=timeout_millis)
        if getattr(result, "name", None) != "SUCCESS":
            failures.append(f"metrics: {result}")

    def shutdown(self, timeout_millis=30_000, **kwargs):
        self._exporter.shutdown()


def run(name, logs, spans, metrics):
    resource = Resource.create({"service.name": f"py-{name}"})

    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(
        SimpleSpanProcessor(Checked(spans, f"{name} spans"))
    )
    tracer = tracer_provider.get_tracer("bulkhead-e2e")
    with tracer.start_as_current_span("parent"):
        with tracer.start_as_current_span("child"):
            pass
    tracer_provider.shutdown()

    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(
        SimpleLogRecordProcessor(Checked(logs, f"{name} logs"))
    )
    logger = logging.getLogger(f"py-{name}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = LoggingHandler(logger_provider=logger_provider)
    logger.addHandler(handler)
    for i in range(3):
        logger.warning("record %d from %s", i, name)
    logger.removeHandler(handler)
    logger_provider.shutdown()

    reader = OnDemandReader(metrics)
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    meter = meter_provider.get_meter("bulkhead-e2e")
    meter.create_counter("py.requests").add(5, {"route": "/a"})
    meter.create_up_down_counter("py.queue").add(-2)
    meter.create_histogram("py.latency", unit="ms").record(12.5)
    meter.create_gauge("py.temperature").set(21.0)
    reader.collect()
    meter_provider.shutdown()


auth = {"authorization": f"Bearer {key}"}
grpc_auth = (("authorization", f"Bearer {key}"),)
for name, compression in (("grpc", GrpcCompression.NoCompression), ("grpc-gzip", GrpcCompression.Gzip)):
    common = dict(endpoint=grpc_endpoint, insecure=True, headers=grpc_auth, compression=compression)
    run(name, GrpcLogs(**common), GrpcSpans(**common), GrpcMetrics(**common))
for name, compression in (("http", HttpCompression.NoCompression), ("http-gzip", HttpCompression.Gzip)):
    url = http_endpoint.rstrip("/")
    run(
        name,
        HttpLogs(endpoint=f"{url}/v1/logs", headers=auth, compression=compression),
        HttpSpans(endpoint=f"{url}/v1/traces", headers=auth, compression=compression),
        HttpMetrics(endpoint=f"{url}/v1/metrics", headers=auth, compression=compression),
    )

if failures:
    print("refused exports:", *failures, sep="\n  ", file=sys.stderr)
    sys.exit(1)
print("exported")
