"""How nrtrec starts: the no-Docker local runner (`nrtrec up`) and its services."""

from nrtrec.deploy.errors import DeployError, InstallFailed, PortInUse, ServiceFailed
from nrtrec.deploy.runner import LocalRunner, ServiceStatus

__all__ = [
    "DeployError",
    "InstallFailed",
    "LocalRunner",
    "PortInUse",
    "ServiceFailed",
    "ServiceStatus",
]
