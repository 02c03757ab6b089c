"""Telemetry: the gateway's own tracing (settings, W3C trace context, sampling), its OTLP/HTTP export,
and the OTLP receiver that writes spans into a capture. Never imports mitmproxy (addons/telemetry.py
adapts); may import shadow.capture (the receiver writes spans) and shadow.gateway.mirror (the tracer)."""
