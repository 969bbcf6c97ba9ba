"""The local runner behind ``nrtrec up | down | status``: every service on 127.0.0.1, no Docker,
each process supervised (``deploy.supervisor``): restarted by supervisord when it dies.

``up`` starts what is not running, in order, each service once the one before is healthy, and
leaves alone what runs: a second ``up`` of a whole stack changes nothing, and an ``up`` after a
service gave up (too many failed starts) starts just that one.
"""

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
from nrtrec.deploy.services.base import Process, Service, port_free
from nrtrec.deploy.supervisor import Program, Supervisor, log_tail, wait_until

log = logging.getLogger(__name__)

# Exits of one process while its service starts after which `up` stops waiting for it.
START_FAILURES = 3


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    url: str
    pid: int | None
    healthy: bool
    # How often supervisord restarted the service's processes since it started.
    restarts: int = 0


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
        """Start every service that is not running; False when all of them were."""
        programs = [Program(p) for s in self.services for p in s.processes()]
        if not self.supervisor.running():
            # Leftovers of a run whose supervisord died would hold ports.
            self.supervisor.stop_orphans()
            self._check_ports()
            for service in self.services:
                on_progress(f"installing {service.name}")
                service.install()
            self.supervisor.launch(programs)
        else:
            self.supervisor.add(programs)
        started = False
        try:
            for service in self.services:
                if self._running(service):
                    continue
                on_progress(f"starting {service.name}")
                self._start(service)
                started = True
        except BaseException:
            if started:
                log.error("a service failed to start; `nrtrec down` stops the others")
            raise
        return started

    def run(self, process: Process, *, autorestart: bool = True) -> None:
        """Start one more supervised process (the demo's click replay, say), unless it runs."""
        self.supervisor.add([Program(process, autorestart)])
        self.supervisor.start(process.name)

    def down(self) -> int:
        """Stop every process of the run; returns how many were running."""
        alive = sum(1 for p in self.supervisor.info().values() if p.alive)
        self.supervisor.shutdown()
        return alive

    def status(self) -> list[ServiceStatus]:
        infos = self.supervisor.info()
        restarts = self.supervisor.restarts()
        statuses = []
        for s in self.services:
            for member, names in s.members().items():
                alive = all(n in infos and infos[n].alive for n in names)
                pid = infos[names[0]].pid if alive else None
                statuses.append(
                    ServiceStatus(
                        member,
                        s.member_url(member),
                        pid,
                        alive and s.member_healthy(member),
                        sum(restarts.get(n, 0) for n in names),
                    )
                )
        return statuses

    def _running(self, service: Service) -> bool:
        infos = self.supervisor.info()
        names = [p.name for p in service.processes()]
        return all(n in infos and infos[n].alive for n in names) and service.healthy()

    def _check_ports(self) -> None:
        for service in self.services:
            for port in service.ports():
                if not port_free("127.0.0.1", port):
                    raise PortInUse(service.name, port, "127.0.0.1")

    def _start(self, service: Service) -> None:
        service.data_dir.mkdir(parents=True, exist_ok=True)
        service.prepare()
        names = [p.name for p in service.processes()]
        before = self.supervisor.restarts()
        for name in names:
            self.supervisor.start(name)

        def ready() -> bool:
            infos = self.supervisor.info()
            restarts = self.supervisor.restarts()
            # supervisord would go on restarting it; a start that fails this often will not do.
            failing = [n for n in names if restarts.get(n, 0) - before.get(n, 0) >= START_FAILURES]
            if failing or any(infos[n].state == "FATAL" for n in names):
                name = (failing or names)[0]
                raise ServiceFailed(service.name, f"{name} kept exiting", log_tail(infos[name].log))
            return all(infos[n].alive for n in names) and service.healthy()

        if not wait_until(ready, self.settings.startup_timeout_s):
            raise ServiceFailed(
                service.name,
                f"not healthy after {self.settings.startup_timeout_s:.0f}s",
                log_tail(self.supervisor.info()[names[0]].log),
            )
        service.after_start()
