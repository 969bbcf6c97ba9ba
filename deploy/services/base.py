"""What the local runner needs to know about one service."""

from __future__ import annotations

import socket
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from nrtrec.core.settings import Settings


@dataclass(frozen=True)
class Process:
    """One OS process of a service; a service may need several (Flink: jobmanager, taskmanager).

    ``settings``: for a process of nrtrec's own, the whole settings it runs on; the supervisor
    writes them to a file the process reads at start (``write_settings_file``), the one way
    settings reach a child.
    """

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    settings: Settings | None = None


class Service(ABC):
    """A component that `nrtrec up` installs, starts, health-checks and stops."""

    name: ClassVar[str]

    def __init__(self, settings: Settings):
        self.settings = settings

    @property
    def data_dir(self) -> Path:
        """This service's state for one run (logs live beside it)."""
        return self.settings.run_dir.resolve() / self.name

    @property
    def cache_dir(self) -> Path:
        """Downloads and builds kept across runs."""
        return self.settings.cache_dir.resolve() / self.name

    @abstractmethod
    def install(self) -> None:
        """Fetch or build what the service needs into ``cache_dir``. Idempotent and cached."""

    def prepare(self) -> None:  # noqa: B027 - most services need no per-run step
        """Per-run setup before the processes start: config files, storage formatting."""

    def after_start(self) -> None:  # noqa: B027 - most services need no post-start step
        """Runs once the service is healthy: e.g. create Kafka's contract topics."""

    @abstractmethod
    def processes(self) -> list[Process]:
        """The processes to start, in order; each runs in the foreground."""

    @abstractmethod
    def ports(self) -> list[int]:
        """Ports the service binds on loopback; checked free before anything starts."""

    @abstractmethod
    def url(self) -> str:
        """``host:port`` for Kafka, ``http://...`` for HTTP services."""

    @abstractmethod
    def healthy(self) -> bool:
        """A quick probe that never raises."""

    def members(self) -> dict[str, list[str]]:
        """The rows of ``nrtrec status`` and the processes behind each: the service as one row
        by default; a cluster shows a row per node (``member_healthy``, ``member_url``)."""
        return {self.name: [p.name for p in self.processes()]}

    def member_healthy(self, member: str) -> bool:
        return self.healthy()

    def member_url(self, member: str) -> str:
        return self.url()


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Sockets left in TIME_WAIT by a stopped run must not count as taken.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True
