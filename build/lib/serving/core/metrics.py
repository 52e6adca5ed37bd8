"""Prometheus metrics of the API: requests, latencies, server errors, streamed tokens, LLM queue depth."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("conveyor_http_requests_total", "HTTP requests answered", ["method", "route", "status"])
LATENCY = Histogram(
    "conveyor_http_request_duration_seconds",
    "Time from request to the end of the response body",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
ERRORS = Counter(
    "conveyor_http_errors_total", "Responses that failed on the server side (5xx)", ["method", "route"]
)
TOKENS_STREAMED = Counter("conveyor_tokens_streamed_total", "Tokens sent in streamed answers", ["route"])
LLM_QUEUE_DEPTH = Gauge(
    "conveyor_llm_queue_depth", "LLM calls running or waiting for the model (NaN: no LLM)"
)


def _llm_queue_depth() -> float:
    try:
        from agents.llm import queue_depth
    except ImportError:
        return float("nan")
    return float(queue_depth())


LLM_QUEUE_DEPTH.set_function(_llm_queue_depth)
