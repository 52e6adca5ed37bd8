"""Router: the labelled set, the real model's routing, and the keyword fallback when the model is down."""

import json
from pathlib import Path

import pytest

from agents import router
from agents.catalog import AGENTS
from conveyor.settings import reset_settings

CASES = [
    json.loads(line)
    for line in (Path(router.__file__).parent / "router_cases.jsonl").read_text().splitlines()
]


def test_labelled_set_is_large_varied_and_valid():
    assert len(CASES) >= 60
    assert {c["agent"] for c in CASES} == set(AGENTS)
    assert len({c["message"] for c in CASES}) == len(CASES)


def test_model_routes_a_sample_of_the_labelled_set(settings):
    sample = CASES[::4]  # 16 messages from every agent; bench/bench_agents.py measures all of them
    routes = [router.route(c["message"]) for c in sample]
    assert all(r.agent in AGENTS and r.method in {"llm", "llm+keywords"} for r in routes)
    assert all(r.model_choice in AGENTS for r in routes)
    accuracy = sum(r.agent == c["agent"] for r, c in zip(routes, sample, strict=True)) / len(sample)
    assert accuracy >= 0.6, [(c["message"], r.agent) for r, c in zip(routes, sample, strict=True)]


@pytest.mark.parametrize(
    ("message", "agent"),
    [
        ("Average unit_price per region in sales_2024.csv", "data"),
        ("Write a Python function to flatten a nested list", "code"),
        ("TL;DR: the vote was postponed until more data is available", "summary"),
        ("Who maintains the lighthouse?", "research"),
    ],
)
def test_keyword_fallback_when_the_model_is_down(monkeypatch, message, agent):
    monkeypatch.setenv("CONVEYOR_LLM_BACKEND", "openai")
    monkeypatch.setenv("CONVEYOR_LLM_BASE_URL", "http://127.0.0.1:9/v1")
    reset_settings()
    try:
        decision = router.route(message)
    finally:
        monkeypatch.undo()
        reset_settings()
    assert decision.method == "keywords" and decision.agent == agent and decision.error
