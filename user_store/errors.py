"""What a user-vector store raises; callers catch these, never a backend's own exceptions."""


class StoreError(Exception):
    """A store operation failed."""


class StoreUnavailable(StoreError):
    """The backend did not answer in time or refused the connection."""
