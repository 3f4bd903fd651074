"""Ages for photos: load, predict, export. May import: models, faces.align (no pandas/mlflow)."""
