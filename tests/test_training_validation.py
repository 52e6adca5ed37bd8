"""Training data checks: every bad input is refused before fitting, with the problem named."""

import numpy as np
import pandas as pd
import pytest

from conveyor.training.validation import DataValidationError, check_training_frame


def frame(rows: int = 20) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "a": rng.normal(size=rows),
            "b": rng.normal(size=rows),
            "colour": ["red", "blue"] * (rows // 2),
            "label": [0, 1] * (rows // 2),
        }
    )


class TestCheckTrainingFrame:
    def test_valid_frame_returns_feature_columns(self):
        assert check_training_frame(frame(), "label") == ["a", "b", "colour"]
        assert check_training_frame(frame(), "label", ["a"]) == ["a"]

    def test_missing_target_is_named(self):
        with pytest.raises(DataValidationError, match="target column 'species' is missing"):
            check_training_frame(frame(), "species")

    def test_missing_features_are_named(self):
        with pytest.raises(DataValidationError, match="missing feature columns: height, width"):
            check_training_frame(frame(), "label", ["a", "height", "width"])

    def test_nans_are_counted_per_column(self):
        bad = frame().assign(a=lambda f: f["a"].mask(f.index < 3), label=lambda f: f["label"].astype(float))
        bad.loc[5, "label"] = np.nan
        with pytest.raises(DataValidationError, match=r"NaN\) in columns: a \(3\), label \(1\)"):
            check_training_frame(bad, "label")

    def test_infinite_values_are_refused(self):
        with pytest.raises(DataValidationError, match="'b' has infinite values"):
            check_training_frame(frame().assign(b=np.inf), "label")

    def test_single_class_is_refused(self):
        with pytest.raises(DataValidationError, match="single class \\(1\\)"):
            check_training_frame(frame().assign(label=1), "label")

    def test_text_feature_is_wrong_type_for_neural_models(self):
        check_training_frame(frame(), "label")  # forests one-hot encode text
        with pytest.raises(DataValidationError, match="'colour' has type (object|str), expected numbers"):
            check_training_frame(frame(), "label", numeric_only=True)

    def test_neural_labels_must_be_integers_from_zero(self):
        with pytest.raises(DataValidationError, match="labels must be 0..1"):
            check_training_frame(frame().assign(label=[1, 2] * 10), "label", ["a"], integer_labels=True)
        with pytest.raises(DataValidationError, match="expected integer class labels"):
            check_training_frame(frame().assign(label=["x", "y"] * 10), "label", ["a"], integer_labels=True)

    def test_regression_needs_a_numeric_target(self):
        check_training_frame(frame(), "a", ["b"], task="regression")
        with pytest.raises(DataValidationError, match="regression needs numbers"):
            check_training_frame(frame(), "colour", ["a"], task="regression")

    def test_too_few_rows_and_all_problems_reported_together(self):
        with pytest.raises(
            DataValidationError,
            match="only 4 rows.*missing feature columns: z|missing feature columns: z.*only 4 rows",
        ):
            check_training_frame(frame(4), "label", ["a", "z"])
