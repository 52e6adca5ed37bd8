"""Router: the training set, the classifier on the evaluation set, the LLM for unsure messages (and what
happens when it is down), training in-process while nothing is registered, and the train-router flow."""

import hashlib
import logging
import threading
from collections import Counter
from difflib import SequenceMatcher

import numpy as np
import pytest

from agents import router, router_model
from agents.catalog import AGENTS
from conveyor import registry, tracking
from conveyor.settings import get_settings
from flows.train_router import train_router
from serving.testing import poll
from tasks.routing import check_router_examples

TRAINING = router_model.load_examples()
CASES = router_model.load_examples(router_model.TRAINING_FILE.with_name("router_cases.jsonl"))
NEAR_DUPLICATE = 0.8  # similarity of normalised texts (difflib ratio) from which two messages are one
UNSURE = "How do I read a CSV file?"  # code, data or research: the classifier hesitates
CLEAR = "Write a Python function that reverses the words of a sentence"
LLM_DOWN = {"llm_backend": "openai", "llm_base_url": "http://127.0.0.1:9/v1"}


def similarity(a: str, b: str) -> float:
    return SequenceMatcher(None, router_model.normalise(a), router_model.normalise(b)).ratio()


def top_two(message: str) -> list[str]:
    _, model = router.classifier()
    probabilities = model.predict_proba(router_model.features([message]))[0]
    return [str(model.classes_[i]) for i in np.argsort(-probabilities)[:2]]


class TestTrainingSet:
    def test_is_large_and_balanced_over_every_agent(self):
        counts = Counter(e.agent for e in TRAINING)
        assert set(counts) == set(AGENTS)
        assert min(counts.values()) >= 40 and max(counts.values()) <= 1.2 * min(counts.values()), counts

    def test_has_no_message_twice(self):
        texts = [router_model.normalise(e.message) for e in TRAINING]
        assert len(set(texts)) == len(texts)

    def test_the_near_duplicate_check_sees_a_paraphrase(self):
        case = "What is the average revenue per region in sales_2024.csv?"
        assert similarity("what's the average revenue per region in sales_2024.csv", case) >= NEAR_DUPLICATE
        assert similarity(CLEAR, case) < NEAR_DUPLICATE

    def test_shares_no_message_with_the_evaluation_set(self):
        close = [
            (t.message, c.message)
            for t in TRAINING
            for c in CASES
            if similarity(t.message, c.message) >= NEAR_DUPLICATE
        ]
        assert close == []

    def test_held_out_messages_cover_every_agent_and_stay_held_out(self):
        training, held_out = router_model.split(TRAINING)
        assert {e.agent for e in held_out} == set(AGENTS)
        assert 0.1 <= len(held_out) / len(TRAINING) <= 0.3
        grown = [*TRAINING, router_model.Example(message=CLEAR, agent="code")]
        assert router_model.split(grown)[1][: len(held_out)] == held_out  # new messages move nothing

    @pytest.mark.parametrize(
        ("lines", "refused"),
        [
            ('{"message": "hi", "agent": "poet"}', "unknown agent 'poet'"),
            ('{"message": "Write code", "agent": "code"}', "no example for"),
        ],
    )
    def test_a_bad_training_file_is_refused(self, tmp_path, lines, refused):
        path = tmp_path / "training.jsonl"
        path.write_text(lines + "\n")
        with pytest.raises(ValueError, match=refused):
            check_router_examples.fn(str(path))

    def test_a_repeated_message_is_refused(self, tmp_path):
        path = tmp_path / "training.jsonl"
        path.write_text(
            router_model.TRAINING_FILE.read_text()
            + '{"message": "'
            + TRAINING[0].message.upper()
            + '", "agent": "code"}\n'
        )
        with pytest.raises(ValueError, match="more than once"):
            check_router_examples.fn(str(path))


class TestRoute:
    def test_the_classifier_alone_routes_the_evaluation_set(self, configure):
        configure(**LLM_DOWN)  # every agent below is the classifier's pick
        routes = [router.route(c.message) for c in CASES]
        right = [r.agent == c.agent for r, c in zip(routes, CASES, strict=True)]
        alone = [r.method == "classifier" and r.error is None for r in routes]
        assert np.mean(right) >= 0.85, [(c.message, r.agent) for r, c in zip(routes, CASES, strict=True)]
        assert np.mean(alone) >= 0.85
        assert all(
            r.score >= get_settings().router_confidence_threshold
            for r, a in zip(routes, alone, strict=True)
            if a
        )

    def test_a_clear_message_never_reaches_the_llm(self, configure):
        configure(**LLM_DOWN)
        decision = router.route(CLEAR)
        assert decision.agent == "code" and decision.method == "classifier" and decision.error is None
        assert decision.latency_s < 1

    def test_an_unsure_message_goes_to_the_llm(self, settings):
        decision = router.route(UNSURE)
        assert decision.score < settings.router_confidence_threshold
        assert decision.method == "classifier+llm" and decision.error is None
        assert decision.model_choice == decision.agent and decision.agent in top_two(UNSURE)

    def test_with_the_llm_down_an_unsure_message_keeps_the_classifiers_pick(self, configure):
        configure(**LLM_DOWN)
        decision = router.route(UNSURE)
        assert decision.method == "classifier+llm" and decision.error and decision.model_choice is None
        assert decision.agent == top_two(UNSURE)[0]

    def test_without_a_registered_router_one_is_trained_in_process(
        self, configure, monkeypatch, tmp_path, caplog
    ):
        configure(mlflow_tracking_uri=f"sqlite:///{tmp_path / 'empty.db'}", **LLM_DOWN)
        monkeypatch.setattr(router, "_loaded", None)
        with caplog.at_level(logging.WARNING, logger=router.__name__):
            decision = router.route(CLEAR)
        assert decision.classifier_version == router.IN_PROCESS and decision.agent == "code"
        assert "training a classifier in this process" in caplog.text

    def test_a_slow_registry_never_holds_a_reply(self, monkeypatch):
        """Once a classifier is loaded, alias checks run in the background: a tracking server that hangs
        (here: the check waits on an event) leaves routing to the classifier in hand."""
        version, _ = router.classifier()
        no_check_in_flight()  # one left by an earlier test would make this one's check look already done
        release = threading.Event()
        monkeypatch.setattr(registry, "champion_version", lambda name: release.wait(120) and None)
        monkeypatch.setattr(router, "REFRESH_S", 0.0)
        try:
            decision = router.route(CLEAR)
            assert router._refreshing.is_set(), "the reply came only after the alias check"
            assert decision.classifier_version == version and decision.agent == "code"
        finally:
            release.set()
        no_check_in_flight()


def no_check_in_flight() -> None:
    poll(lambda: not router._refreshing.is_set(), 30, "no registry alias check in flight", every_s=0.1)


class TestTrainRouterFlow:
    def test_registers_the_champion_that_routes(self, monkeypatch):
        result = train_router()
        run = tracking.client().get_run(result.run_id)
        assert run.info.status == "FINISHED" and run.data.tags["prefect.flow_name"] == "train-router"
        sha256 = hashlib.sha256(router_model.TRAINING_FILE.read_bytes()).hexdigest()
        assert run.data.tags["conveyor.dataset_sha256"] == sha256
        assert run.data.metrics["cv_accuracy"] >= 0.85 and run.data.metrics["test_accuracy"] >= 0.85
        assert 0 < run.data.metrics["cv_kept"] <= 1

        decision = result.decision
        champion = registry.champion_version(router.MODEL_NAME)
        assert decision.name == router.MODEL_NAME and champion is not None
        if decision.promoted:
            assert champion == decision.version
        else:  # an earlier run in this session registered a model at least as good
            assert (
                decision.champion_version == champion and decision.champion_value >= decision.challenger_value
            )

        monkeypatch.setattr(router, "_loaded", None)
        assert router.route(CLEAR).classifier_version == champion
