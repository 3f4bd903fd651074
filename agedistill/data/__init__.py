"""Faces as training data: tables, augmentation, splits. May import: models, faces.sources."""
