"""Conveyor chat API (FastAPI)."""
