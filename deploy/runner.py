"""The local runner behind `nrtrec up | down | status`: every service on 127.0.0.1, no Docker."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nrtrec.core.settings import Settings
from nrtrec.deploy.errors import PortInUse, ServiceFailed
from nrtrec.deploy.services import default_services
from nrtrec.deploy.services.base import Service, port_free
from nrtrec.deploy.supervisor import Supervisor, log_tail, wait_until

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    url: str
    pid: int | None
    healthy: bool


def run_token(run_dir: Path) -> str:
    """The bearer token of a local run: made once, kept in ``<run_dir>/token`` (mode 600), so
    the write and admin endpoints of everything `up` starts are never open by accident."""
    path = run_dir / "token"
    if not path.exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(24))
    return path.read_text().strip()


class LocalRunner:
    def __init__(self, settings: Settings, services: Sequence[Service] | None = None):
        if settings.token is None:
            settings = settings.model_copy(update={"token": run_token(settings.run_dir)})
        self.settings = settings
        self.services = list(services) if services is not None else default_services(settings)
        self.supervisor = Supervisor(settings.run_dir)

    def up(self, on_progress: Callable[[str], None] = log.info) -> bool:
        """Start everything; False (and nothing done) when the same stack already runs."""
        if self._all_running():
            on_progress("already running")
            return False
        # Leftovers of a crashed run would hold ports and confuse the state file.
        self.supervisor.stop_all()
        self._check_ports()
        for service in self.services:
            on_progress(f"installing {service.name}")
            service.install()
        try:
            for service in self.services:
                on_progress(f"starting {service.name}")
                self._start(service)
        except BaseException:
            self.supervisor.stop_all()
            raise
        return True

    def down(self) -> int:
        """Stop every process of the run; returns how many were recorded."""
        return len(self.supervisor.stop_all())

    def status(self) -> list[ServiceStatus]:
        pids = {}
        for r in self.supervisor.load():
            if r.alive():
                pids.setdefault(r.service, r.pid)
        return [
            ServiceStatus(s.name, s.url(), pids.get(s.name), s.name in pids and s.healthy())
            for s in self.services
        ]

    def _all_running(self) -> bool:
        running = self.supervisor.load()
        if not running or not all(r.alive() for r in running):
            return False
        started = {r.service for r in running}
        return all(s.name in started and s.healthy() for s in self.services)

    def _check_ports(self) -> None:
        for service in self.services:
            for port in service.ports():
                if not port_free("127.0.0.1", port):
                    raise PortInUse(service.name, port, "127.0.0.1")

    def _start(self, service: Service) -> None:
        service.data_dir.mkdir(parents=True, exist_ok=True)
        service.prepare()
        started = [self.supervisor.start(service.name, p) for p in service.processes()]

        def ready() -> bool:
            dead = [r for r in started if not r.alive()]
            if dead:
                raise ServiceFailed(service.name, f"{dead[0].name} exited", log_tail(dead[0].log))
            return service.healthy()

        if not wait_until(ready, self.settings.startup_timeout_s):
            raise ServiceFailed(
                service.name,
                f"not healthy after {self.settings.startup_timeout_s:.0f}s",
                log_tail(started[0].log),
            )
        service.after_start()
