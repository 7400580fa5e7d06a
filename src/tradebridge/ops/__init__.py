"""Operations: structured logging with redaction, metrics, health checks, doctor."""
