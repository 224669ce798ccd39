"""Observability: operation metrics, structured logs with context, health checks."""

from .metrics import MetricsCollector

__all__ = ["MetricsCollector"]
