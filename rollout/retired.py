"""Which encoder versions were retired: ``<run_dir>/rollouts/retired.json``.

A retired version's files stay in the model repository (it can be rolled out again), so the
repository alone cannot say that it is out of service; ``nrtrec up`` reads this list and neither
loads a retired version on Triton nor creates its index again. ``nrtrec models retire M`` adds
M before it unloads anything; ``nrtrec models rollout M`` takes M out again first.
Written whole to a temporary file and renamed, like the journal: a kill leaves one list.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field

from nrtrec.core.settings import Settings


class Retired(BaseModel):
    versions: list[int] = Field(default_factory=list)


class RetiredVersions:
    def __init__(self, settings: Settings):
        self.path: Path = settings.run_dir / "rollouts" / "retired.json"

    def versions(self) -> set[int]:
        if not self.path.exists():
            return set()
        return set(Retired.model_validate_json(self.path.read_text()).versions)

    def add(self, version: int) -> None:
        self._write(self.versions() | {version})

    def discard(self, version: int) -> None:
        versions = self.versions()
        if version in versions:
            self._write(versions - {version})

    def _write(self, versions: set[int]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(Retired(versions=sorted(versions)).model_dump_json())
        os.replace(tmp, self.path)
