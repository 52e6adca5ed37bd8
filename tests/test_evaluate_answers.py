"""The evaluate-answers flow on three labelled questions with the real agent, embedding model and stores; the
deterministic checks it rests on (citation support, labels, correctness, calibration) on known cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId

from conveyor import grounding, tracking
from flows.evaluate_answers import QUESTIONS, evaluate_answers
from tasks.answers import AnswerCheck, calibration, check_labels, is_correct, is_labelled, load_questions

REPO = Path(__file__).resolve().parent.parent
IDS = ["ml-01", "ml-02", "ml-04"]


@pytest.fixture(scope="module")
def evaluated():
    state = evaluate_answers(ids=IDS, k=3, return_state=True)
    return str(state.state_details.flow_run_id), state.result()


def iris_and_wine(prepared_data: Path) -> tuple[str, str]:
    folder = prepared_data / "knowledge" / "ml-datasets"
    return (folder / "iris.rst").read_text()[:700], (folder / "wine.rst").read_text()[:700]


class TestFlow:
    def test_every_answer_is_checked_and_logged_to_mlflow(self, evaluated):
        _, report = evaluated
        assert [a.id for a in report.answers] == IDS
        run = tracking.client().get_run(report.run_id)
        assert run.info.status == "FINISHED" and run.data.tags["prefect.flow_name"] == "evaluate-answers"
        assert run.data.params["answers"] == "3" and run.data.params["domains"] == "ml-datasets"
        for name in ("accuracy", "retrieval_hit_rate", "citation_support", "calibration_brier"):
            assert run.data.metrics[name] == pytest.approx(
                report.summary.get(name, report.summary["calibration"].get(name.removeprefix("calibration_")))
            )
        history = tracking.client().get_metric_history(report.run_id, "answer_correct")
        assert [m.step for m in history] == [0, 1, 2]
        assert [m.value for m in history] == [float(a.correct) for a in report.answers]
        artifacts = {a.path for a in tracking.client().list_artifacts(report.run_id)}
        assert {"answers.json", "summary.json", "answers_table.json"} <= artifacts

    def test_retrieval_is_judged_by_the_labels_and_confidence_by_its_calibration(self, evaluated):
        _, report = evaluated
        labelled_doc = {"ml-01": "iris.rst", "ml-02": "wine.rst", "ml-04": "diabetes.rst"}
        for answer in report.answers:
            assert answer.ok and answer.sources
            assert all(s["labelled"] <= (s["doc_id"] == labelled_doc[answer.id]) for s in answer.sources)
            assert answer.retrieval_hit  # five dataset descriptions: the right one is always found
            assert 0.0 < answer.confidence < 1.0
        rated = [(a.confidence - a.correct) ** 2 for a in report.answers]
        assert report.summary["calibration"]["brier"] == pytest.approx(sum(rated) / 3, abs=1e-4)
        assert sum(b["answers"] for b in report.summary["calibration"]["buckets"]) == 3

    def test_the_flow_run_publishes_a_table_artifact(self, evaluated):
        flow_run_id, _ = evaluated
        with get_client(sync_client=True) as client:
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["answer-quality"])),
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            )
        [artifact] = artifacts
        table = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
        assert [row["id"] for row in table] == IDS


class TestChecks:
    def test_a_sentence_is_supported_by_the_passage_it_cites_not_by_another(self, prepared_data):
        iris, wine = iris_and_wine(prepared_data)
        sources = [{"n": 1, "text": iris}, {"n": 2, "text": wine}]
        claim = "Iris has 150 instances, 50 in each of three classes"
        checks = grounding.citation_support(f"{claim} [1]. {claim} [2]. It is a famous dataset.", sources)
        assert len(checks) == 2  # the sentence without a citation is not checked
        right, wrong = checks
        assert right.supported and right.cited == [1] and right.overlap == 1.0
        assert not wrong.supported and wrong.cited == [2]
        assert grounding.support_rate(checks) == 0.5

    def test_labels_match_a_document_and_its_evidence_quote_only(self, prepared_data):
        iris, _ = iris_and_wine(prepared_data)
        [question] = load_questions(REPO / QUESTIONS, ["ml-01"])
        assert is_labelled(question, "iris.rst", iris)
        assert not is_labelled(question, "wine.rst", iris)
        assert not is_labelled(question, "iris.rst", iris.replace("150", "151"))
        assert is_correct(question, "It has 150 instances.") and not is_correct(question, "It has 15.")
        with pytest.raises(ValueError, match="no question with id"):
            load_questions(REPO / QUESTIONS, ["nope"])

    def test_a_label_no_indexed_passage_matches_is_refused(self, evaluated):
        [question] = load_questions(REPO / QUESTIONS, ["ml-01"])
        question.passages[0].evidence = "Number of Instances: 151"
        with pytest.raises(ValueError, match="ml-01: iris.rst has no chunk with"):
            check_labels.fn([question])

    def test_calibration_buckets_and_brier(self):
        def check(confidence: float, correct: bool) -> AnswerCheck:
            return AnswerCheck.model_construct(confidence=confidence, correct=correct)

        found = calibration([check(0.9, True), check(0.8, False), check(0.1, False), check(0.2, True)])
        assert found["brier"] == pytest.approx((0.01 + 0.64 + 0.01 + 0.64) / 4)
        low, _, _, high = found["buckets"]
        assert (low["answers"], low["accuracy"], high["answers"], high["accuracy"]) == (2, 0.5, 2, 0.5)


def test_one_deployment_runs_the_flow_on_the_labelled_set():
    deployments = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    [deployment] = [d for d in deployments if d["entrypoint"] == "flows/evaluate_answers.py:evaluate_answers"]
    assert deployment["work_pool"]["name"] == "local" and deployment["enforce_parameter_schema"]
    assert evaluate_answers.validate_parameters(deployment.get("parameters", {})) is not None
    assert len(load_questions(REPO / QUESTIONS)) >= 20
