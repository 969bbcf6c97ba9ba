"""Encoders: item and user towers, ONNX export, the Triton model repository and the client."""
