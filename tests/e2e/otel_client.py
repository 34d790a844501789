"""A real OpenTelemetry SDK client: one span, one metric point, one log record, over OTLP/HTTP.

Configured only by the environment, the way the SDK reads it: the endpoint
(``OTEL_EXPORTER_OTLP_ENDPOINT``, to which the exporters append ``/v1/<signal>``), the
headers (``OTEL_EXPORTER_OTLP_HEADERS``, W3C-baggage style, percent-decoded), the CA
(``OTEL_EXPORTER_OTLP_CERTIFICATE``), the resource (``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_SERVICE_NAME``). ``OTEL_EXPORTER_OTLP_PROTOCOL`` must be ``http/protobuf`` (or
unset), and each ``OTEL_<SIGNAL>_EXPORTER`` must be ``otlp`` (or unset): anything else
exits 2, because this client only speaks OTLP/HTTP.

Exit 0 when every signal was exported successfully, 1 otherwise. One JSON line on stdout
says what was sent and each export's result.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExportResult, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult

SPAN_NAME = "statekit.e2e.span"
METRIC_NAME = "statekit.e2e.counter"
LOG_BODY = "statekit e2e log record"
RESULTS: dict[str, list[bool]] = {"traces": [], "metrics": [], "logs": []}


class CheckedSpanExporter(OTLPSpanExporter):
    """The SDK's span exporter, remembering each export's result."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = super().export(spans)
        RESULTS["traces"].append(result == SpanExportResult.SUCCESS)
        return result


class CheckedMetricExporter(OTLPMetricExporter):
    """The SDK's metric exporter, remembering each export's result."""

    def export(self, metrics_data: MetricsData, timeout_millis: float | None = 10_000,
               **kwargs: Any) -> MetricExportResult:
        if not metrics_data.resource_metrics:
            return MetricExportResult.SUCCESS
        result = super().export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        RESULTS["metrics"].append(result == MetricExportResult.SUCCESS)
        return result


class CheckedLogExporter(OTLPLogExporter):
    """The SDK's log exporter, remembering each export's result."""

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        result = super().export(batch)
        RESULTS["logs"].append(result == LogRecordExportResult.SUCCESS)
        return result


def check_config() -> str | None:
    """An error message when the environment asks for something other than OTLP/HTTP."""
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    if protocol != "http/protobuf":
        return f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: only http/protobuf is supported"
    for key in ("OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_LOGS_EXPORTER"):
        if os.environ.get(key, "otlp") != "otlp":
            return f"{key}={os.environ[key]!r}: only otlp is supported"
    return None


def send_span(resource: Resource) -> None:
    """Export one span through a simple (synchronous) processor."""
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(CheckedSpanExporter()))
    with provider.get_tracer("statekit.e2e").start_as_current_span(SPAN_NAME) as span:
        span.set_attribute("statekit.e2e", True)
    provider.shutdown()


def send_metric(resource: Resource) -> None:
    """Export one counter data point (the reader's shutdown collects and exports it)."""
    reader = PeriodicExportingMetricReader(CheckedMetricExporter(),
                                           export_interval_millis=3_600_000)
    provider = MeterProvider(resource=resource, metric_readers=[reader])
    provider.get_meter("statekit.e2e").create_counter(METRIC_NAME).add(1, {"e2e": "yes"})
    provider.shutdown()


def send_log(resource: Resource) -> None:
    """Export one log record through a simple (synchronous) processor."""
    provider = LoggerProvider(resource=resource)
    provider.add_log_record_processor(SimpleLogRecordProcessor(CheckedLogExporter()))
    provider.get_logger("statekit.e2e").emit(body=LOG_BODY,
                                             severity_number=SeverityNumber.INFO,
                                             severity_text="INFO")
    provider.shutdown()


def main() -> int:
    """Send the three signals; 0 when all were exported, 1 otherwise, 2 on bad config."""
    problem = check_config()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    resource = Resource.create()
    send_span(resource)
    send_metric(resource)
    send_log(resource)
    ok = all(results and all(results) for results in RESULTS.values())
    grafana = sorted(k for k in os.environ if k.startswith("GRAFANA_"))
    print(json.dumps({"ok": ok, "results": RESULTS, "grafana": grafana,
                      "resource": dict(resource.attributes)}, sort_keys=True, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
