"""Registry: versions, aliases, promotion both ways, decision records, champion loading."""

import math

import mlflow
import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactCollectionFilter, ArtifactCollectionFilterKey
from sklearn.datasets import load_breast_cancer
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from conveyor import registry, tracking
from conveyor.training.evaluation import model_scorer

FRAME = load_breast_cancer(as_frame=True).frame
FEATURES = [c for c in FRAME.columns if c != "target"]
TRAIN, HELD_OUT = FRAME.iloc[::2], FRAME.iloc[1::2]


def log_sklearn(model) -> tuple[str, str]:
    """Fit `model`, log it in a fresh run and return (run id, model URI)."""
    model.fit(TRAIN[FEATURES], TRAIN["target"])
    with tracking.start_run("test-registry") as run:
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            input_example=TRAIN[FEATURES].head(3),
            serialization_format="cloudpickle",
            pip_requirements=[],
        )
    return run.info.run_id, info.model_uri


def good_model():
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))


def promote(name: str, model, evaluate=None, greater_is_better: bool = True) -> registry.PromotionDecision:
    run_id, uri = log_sklearn(model)
    return registry.register_and_promote(
        run_id=run_id,
        model_uri=uri,
        name=name,
        metric="accuracy",
        greater_is_better=greater_is_better,
        evaluate=evaluate or model_scorer(HELD_OUT, "target", FEATURES, "accuracy"),
    )


def aliases(name: str) -> dict[str, str]:
    return {alias: str(v) for alias, v in tracking.client().get_registered_model(name).aliases.items()}


class TestPromotion:
    def test_first_version_becomes_champion_and_challenger(self):
        decision = promote("reg-first", DummyClassifier())
        assert decision.promoted and decision.version == "1" and decision.champion_version is None
        assert decision.reason == "no champion yet"
        assert aliases("reg-first") == {"champion": "1", "challenger": "1"}

    def test_worse_challenger_keeps_champion_and_records_both_metrics(self):
        first = promote("reg-worse", good_model())
        second = promote("reg-worse", DummyClassifier())
        assert first.promoted and not second.promoted
        assert second.champion_version == "1"
        assert second.champion_value == pytest.approx(first.challenger_value)
        assert second.challenger_value < second.champion_value
        assert aliases("reg-worse") == {"champion": "1", "challenger": "2"}
        version_tags = tracking.client().get_model_version("reg-worse", "2").tags
        assert version_tags["conveyor.promotion.promoted"] == "False"
        assert version_tags["conveyor.promotion.champion_version"] == "1"
        assert float(version_tags["conveyor.promotion.champion_value"]) == pytest.approx(
            second.champion_value
        )
        run_tags = tracking.client().get_run(second.run_id).data.tags
        assert run_tags["conveyor.promotion.challenger_value"] == str(second.challenger_value)

    def test_better_challenger_takes_champion(self):
        promote("reg-better", DummyClassifier())
        decision = promote("reg-better", good_model())
        assert decision.promoted and decision.champion_version == "1"
        assert registry.champion_version("reg-better") == "2"
        assert (
            tracking.client().get_model_version("reg-better", "1").tags["conveyor.promotion.promoted"]
            == "True"
        )

    def test_equal_metric_does_not_promote(self):
        promote("reg-tie", DummyClassifier())
        assert not promote("reg-tie", DummyClassifier()).promoted
        assert registry.champion_version("reg-tie") == "1"

    def test_lower_is_better_metric(self):
        promote("reg-loss", good_model(), evaluate=lambda uri: 0.5, greater_is_better=False)
        decision = promote(
            "reg-loss",
            good_model(),
            evaluate=lambda uri: 0.2 if uri.endswith("/2") else 0.5,
            greater_is_better=False,
        )
        assert decision.promoted and registry.champion_version("reg-loss") == "2"

    def test_nan_challenger_is_never_promoted(self):
        promote("reg-nan", DummyClassifier())
        decision = promote(
            "reg-nan", good_model(), evaluate=lambda uri: math.nan if uri.endswith("/2") else 0.5
        )
        assert not decision.promoted and "never promoted" in decision.reason
        assert registry.champion_version("reg-nan") == "1"

    def test_champion_that_cannot_be_evaluated_blocks_promotion(self):
        promote("reg-broken", DummyClassifier())

        def evaluate(uri: str) -> float:
            if uri.endswith("/1"):
                raise ValueError("feature columns differ")
            return 0.9

        with pytest.raises(registry.PromotionError, match="feature columns differ"):
            promote("reg-broken", good_model(), evaluate=evaluate)
        assert aliases("reg-broken") == {"champion": "1", "challenger": "2"}

    def test_decision_is_a_prefect_artifact_inside_a_flow(self):
        @flow
        def promote_in_flow() -> registry.PromotionDecision:
            return promote("Reg_Artifact", good_model())

        decision = promote_in_flow()
        with get_client(sync_client=True) as client:
            artifact = client.read_latest_artifacts(
                artifact_filter=ArtifactCollectionFilter(
                    key=ArtifactCollectionFilterKey(any_=["promotion-reg-artifact"])
                )
            )[0]
        assert f"v{decision.version}" in artifact.description
        assert "promoted to @champion" in artifact.description and artifact.type == "table"


class TestChampion:
    def test_load_champion_predicts_rows_and_records(self):
        promote("reg-serve", good_model())
        version, model = registry.load_champion("reg-serve")
        assert version == "1"
        rows = HELD_OUT[FEATURES].head(4)
        from_rows = registry.predict_rows(model, rows.to_numpy().tolist())
        from_records = registry.predict_rows(model, rows.to_dict(orient="records"))
        assert from_rows == from_records == model.predict(rows).tolist()
        assert len(from_rows) == 4 and set(from_rows) <= {0, 1}

    def test_unknown_model_has_no_champion(self):
        assert registry.champion_version("no-such-model") is None
        with pytest.raises(registry.ModelNotFound, match="no-such-model"):
            registry.load_champion("no-such-model")

    def test_predict_rows_rejects_wrong_width(self):
        promote("reg-width", good_model())
        _, model = registry.load_champion("reg-width")
        with pytest.raises(Exception, match="(?i)column|schema|feature"):
            registry.predict_rows(model, [[1.0, 2.0]])
