"""The recommender app (``nrtrec app``) over the local gateway, user-vector store and Kafka."""

from __future__ import annotations

from nrtrec.deploy.services.base import Process, Service
from nrtrec.deploy.services.query_nodes import healthz, nrtrec_command


class AppService(Service):
    name = "app"

    def install(self) -> None:
        """Nothing to fetch: the app is nrtrec itself."""

    def processes(self) -> list[Process]:
        return [Process(self.name, nrtrec_command("app"), settings=self.settings)]

    def ports(self) -> list[int]:
        return [self.settings.app.port]

    def url(self) -> str:
        return f"http://{self.settings.app.host}:{self.settings.app.port}"

    def healthy(self) -> bool:
        return healthz(self.url())
