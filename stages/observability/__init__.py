"""Production you can see and trust: OpenTelemetry traces and metrics (`tracing`), OTLP JSON trace files and
their waterfall (`otlp_json`, `waterfall`), PII redaction (`pii`), input guardrails (`guardrails`) and the
monitoring dashboard (`monitor`)."""
