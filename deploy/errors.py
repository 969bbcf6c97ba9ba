"""Errors of the local runner; each says what to do about it."""


class DeployError(Exception):
    """Base of every local-runner error."""


class PortInUse(DeployError):
    def __init__(self, service: str, port: int, host: str):
        self.service, self.port, self.host = service, port, host
        super().__init__(
            f"{service}: port {host}:{port} is already in use by another process; stop it or "
            f"choose another port with the NRTREC_* settings (see README)"
        )


class InstallFailed(DeployError):
    """Fetching or building a component failed."""


class ServiceFailed(DeployError):
    """A service exited or did not become healthy in time."""

    def __init__(self, service: str, reason: str, log_tail: str = ""):
        self.service = service
        message = f"{service}: {reason}"
        if log_tail:
            message += f"\n--- last lines of its log ---\n{log_tail}"
        super().__init__(message)
