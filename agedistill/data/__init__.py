"""Faces as training data: tables, augmentation, splits. Imports nothing else in agedistill."""
