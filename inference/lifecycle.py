"""Model lifecycle on Triton: register a version, serve it next to the old one, retire one.

Triton runs with ``--model-control-mode=explicit``. Which versions it serves is each model's
``version_policy`` in ``config.pbtxt``; a ``load_model`` applies a changed policy, loading new
versions and unloading dropped ones while the unchanged ones keep serving.
"""

from __future__ import annotations

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from nrtrec.inference.client.triton import ready_versions
from nrtrec.inference.errors import EncoderUnavailable, UnknownModelVersion
from nrtrec.inference.repository import ENCODERS, ModelRepository
from nrtrec.inference.towers import TowerWeights
from nrtrec.inference.triton_repository import set_served_versions


class ModelLifecycle:
    """``admin_headers``: Triton's model control is an admin API behind a key derived from the
    run's token (``core.access.triton_admin_headers``)."""

    def __init__(
        self,
        repository: ModelRepository,
        triton_grpc_url: str,
        admin_headers: dict[str, str] | None = None,
    ):
        self.repository = repository
        self.client = grpcclient.InferenceServerClient(url=triton_grpc_url)
        self.headers = admin_headers or {}

    def register(self, weights: TowerWeights, version: int | None = None) -> int:
        """Write a new encoder pair into the repository; not served until :meth:`load`."""
        served = self.served()
        version = self.repository.register(weights, version)
        # Keep the policy explicit so that registering never starts serving by itself.
        for name in ENCODERS:
            set_served_versions(self.repository.path, name, sorted(served) or [version])
        return version

    def served(self) -> set[int]:
        """Versions whose item and user encoders are both READY."""
        try:
            return ready_versions(self.client)
        except InferenceServerException as e:
            raise EncoderUnavailable(f"Triton: {e.message()}") from e

    def load(self, version: int) -> None:
        """Serve ``version`` in addition to what is served now."""
        if version not in self.repository.versions():
            raise UnknownModelVersion(
                f"version {version} is not registered (registered: {self.repository.versions()})"
            )
        self._apply(self.served() | {version})

    def unload(self, version: int) -> None:
        """Stop serving ``version``; the files stay, so it can be loaded again."""
        self._apply(self.served() - {version})

    def _apply(self, versions: set[int]) -> None:
        for name in ENCODERS:
            try:
                if versions:
                    set_served_versions(self.repository.path, name, sorted(versions))
                    self.client.load_model(name, headers=self.headers)
                else:
                    self.client.unload_model(name, headers=self.headers)
            except InferenceServerException as e:
                raise EncoderUnavailable(
                    f"Triton could not apply versions {sorted(versions)} to {name}: {e.message()}"
                ) from e

    def close(self) -> None:
        self.client.close()
