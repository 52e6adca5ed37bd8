"""Cross-cutting pieces of the API: security, metrics, rate limits, request middleware."""
