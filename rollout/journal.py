"""Where a rollout stands: ``<run_dir>/rollouts/v<N>/journal.json``, the steps it has done.

Every step is safe to redo; the journal only saves redoing a long one (the bulk embedding of
the catalogue) after a kill. It is written whole to a temporary file and renamed over the old
one, so a kill leaves the old journal or the new one, never half of one.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field

from nrtrec.core.settings import Settings


class Journal(BaseModel):
    model_version: int
    done: list[str] = Field(default_factory=list)
    # The bulk run's bulk.json, once written: a resumed rollout loads its snapshots again.
    bulk_manifest: str | None = None
    updated: str = ""

    def has(self, step: str) -> bool:
        return step in self.done


def rollout_dir(settings: Settings, version: int) -> Path:
    """The rollout's own state (its snapshots go below the nodes' import root instead)."""
    return settings.run_dir / "rollouts" / f"v{version}"


def rollout_snapshots_dir(settings: Settings, version: int) -> Path:
    """Where the bulk step writes: below the nodes' import root, beside the delta job's
    ``bulk.json`` (the only folder a node loads snapshots from)."""
    return settings.snapshot_import_root() / "rollouts" / f"v{version}"


class JournalFile:
    def __init__(self, settings: Settings, version: int):
        self.path = rollout_dir(settings, version) / "journal.json"
        if self.path.exists():
            self.journal = Journal.model_validate_json(self.path.read_text())
        else:
            self.journal = Journal(model_version=version)

    @property
    def resumed_after(self) -> str | None:
        """The last step done before this run, if any."""
        return self.journal.done[-1] if self.journal.done else None

    def mark(self, step: str, **fields: object) -> None:
        done = self.journal.done if step in self.journal.done else [*self.journal.done, step]
        update = {"done": done, **fields, "updated": datetime.now(UTC).isoformat()}
        journal = self.journal.model_copy(update=update)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(journal.model_dump_json(indent=2))
        os.replace(tmp, self.path)
        self.journal = journal
