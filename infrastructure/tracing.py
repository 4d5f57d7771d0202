"""OpenTelemetry traces, configured by the standard OTEL_* variables and off
without them.

Spans are made through the API everywhere; until `configure_tracing` installs
the SDK's provider they are the API's no-op spans, which record nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry import trace

TRACER = trace.get_tracer("authledger")
ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
EXPORTERS = ("otlp", "console")


class TracingSettingsError(ValueError):
    """OTEL_* asks for what this service cannot do: it refuses to start."""


def exporters_asked(env: Mapping[str, str]) -> list[str]:
    """The span exporters OTEL_* names: none unless traces are asked for.

    OTEL_TRACES_EXPORTER names them (otlp, console; none), an OTLP endpoint
    alone means otlp, and OTEL_SDK_DISABLED=true turns everything off.
    """
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    named = env.get("OTEL_TRACES_EXPORTER", "").strip()
    if not named:
        named = "otlp" if any(env.get(name) for name in ENDPOINTS) else "none"
    asked = [part.strip() for part in named.split(",") if part.strip() != "none"]
    unknown = sorted(set(asked) - set(EXPORTERS))
    if unknown:
        raise TracingSettingsError(
            f"OTEL_TRACES_EXPORTER: {', '.join(unknown)} is not one of"
            f" {', '.join(EXPORTERS)} or none"
        )
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if "otlp" in asked and protocol != "http/protobuf":
        raise TracingSettingsError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol} is not supported"
            " (http/protobuf is)"
        )
    return asked


def configure_tracing(env: Mapping[str, str] = os.environ) -> bool:
    """Install the SDK's provider with the exporters OTEL_* asks for; whether
    it did. The SDK reads the rest itself: OTEL_SERVICE_NAME and
    OTEL_RESOURCE_ATTRIBUTES, the sampler, the OTLP endpoint and headers."""
    asked = exporters_asked(env)
    if not asked:
        return False
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415 (only when on)
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import (  # noqa: PLC0415
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "authledger"}))
    provider = TracerProvider(resource=resource)
    for name in asked:
        exporter: SpanExporter
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
                OTLPSpanExporter,
            )

            exporter = OTLPSpanExporter()
        else:
            exporter = ConsoleSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return True
