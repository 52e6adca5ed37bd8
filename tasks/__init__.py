"""Prefect tasks: one job each, typed inputs, small references out."""
