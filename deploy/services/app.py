"""The recommender app (``nrtrec app``) over the local gateway, user-vector store and Kafka."""

from __future__ import annotations

from nrtrec.deploy.services.base import Process, Service
from nrtrec.deploy.services.query_nodes import _healthz, _nrtrec


class AppService(Service):
    name = "app"

    def install(self) -> None:
        """Nothing to fetch: the app is nrtrec itself."""

    def processes(self) -> list[Process]:
        s = self.settings
        argv = [_nrtrec(), "app", "--host", s.app.host, "--port", str(s.app.port)]
        argv += ["--gateway-url", f"http://{s.gateway.host}:{s.gateway.port}"]
        argv += ["--kafka", s.kafka.bootstrap_servers]
        # The store's address travels as settings, as the other services' do not need it.
        env = {"NRTREC_REDIS__HOST": s.redis.host, "NRTREC_REDIS__PORT": str(s.redis.port)}
        return [Process(self.name, argv, env=env)]

    def ports(self) -> list[int]:
        return [self.settings.app.port]

    def url(self) -> str:
        return f"http://{self.settings.app.host}:{self.settings.app.port}"

    def healthy(self) -> bool:
        return _healthz(self.url())
