"""Pipeline frame: stage entry, MLflow tracking, profiles. May import config, models, data."""
