"""Photos to aligned faces: decode, detect, align, read labels. May import config, onnx_sessions."""
