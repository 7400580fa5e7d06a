"""Observability, the ground floor every package may use: JSON logging with redaction, metrics."""
