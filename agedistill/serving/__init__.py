"""Ages for photos: load, predict, export.

May import: models, faces (not align_dataset: pandas), onnx_sessions.
"""
