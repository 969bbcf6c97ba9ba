"""Training and offline evaluation of the two towers on MovieLens-100k (``train`` extra: jax).

Serving never imports this package: it needs only the exported ONNX files.
"""
