"""Redis from Debian's `redis-server`: the embedded default user-vector store."""

from __future__ import annotations

import shutil

import redis

from nrtrec.deploy.errors import InstallFailed
from nrtrec.deploy.services.base import Process, Service


class RedisService(Service):
    name = "redis"

    def install(self) -> None:
        if shutil.which("redis-server") is None:
            raise InstallFailed(
                "redis-server is not on PATH; install Debian's package "
                "(`apt-get install redis-server`, which the README's set-up runs)"
            )

    def processes(self) -> list[Process]:
        cfg = self.settings.redis
        argv = [
            "redis-server",
            "--bind", cfg.host,
            "--port", str(cfg.port),
            "--dir", str(self.data_dir),
            # User vectors are the store's only copy until the job recomputes them: keep an AOF.
            # Redis writes it to the kernel before it answers a write, so a killed redis-server
            # loses no acknowledged write; "everysec" fsyncs once a second, so a power loss
            # could lose the last second ("always" would not, at a fsync per write).
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "yes",
        ]  # fmt: skip
        return [Process(self.name, argv)]

    def ports(self) -> list[int]:
        return [self.settings.redis.port]

    def url(self) -> str:
        return self.settings.redis.url

    def healthy(self) -> bool:
        try:
            return bool(redis.Redis.from_url(self.url(), socket_timeout=1).ping())
        except redis.RedisError:
            return False
