"""Training building blocks: the Lightning model and data, the scikit-learn pipeline, data validation."""
