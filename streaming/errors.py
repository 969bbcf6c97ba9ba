"""What the streaming package raises."""


class StreamingError(Exception):
    """A streaming job could not do its work."""


class JobSubmitFailed(StreamingError):
    """The Flink cluster did not accept a job."""


class NoCheckpoint(StreamingError):
    """There is no completed checkpoint to restart a job from."""


class BulkError(StreamingError):
    """The bulk backfill cannot go on; the message says what to fix."""
