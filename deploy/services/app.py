"""The recommender app (``nrtrec app``) over the local query nodes (its reads fan out over the
shards in-process; see ``app.query_path``), user-vector store and Kafka."""

from __future__ import annotations

from nrtrec.deploy.services.base import Process, Service
from nrtrec.deploy.services.query_nodes import healthz, nrtrec_command


class AppService(Service):
    name = "app"

    def install(self) -> None:
        """Nothing to fetch: the app is nrtrec itself."""

    def processes(self) -> list[Process]:
        settings = self.settings.with_local_shards()
        return [Process(self.name, nrtrec_command("app"), settings=settings)]

    def ports(self) -> list[int]:
        return [self.settings.app.port]

    def url(self) -> str:
        return f"http://{self.settings.app.host}:{self.settings.app.port}"

    def healthy(self) -> bool:
        return healthz(self.url())
