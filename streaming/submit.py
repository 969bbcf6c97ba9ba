"""Submit the streaming jobs to a Flink cluster, and restart them from their last checkpoint.

The cluster is anything that can run a PyFlink script and answer Flink's REST API
(``FlinkCluster``): the local runner's standalone cluster is one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from nrtrec.core.settings import Settings, write_settings_file
from nrtrec.streaming.errors import JobSubmitFailed, NoCheckpoint
from nrtrec.streaming.jobs.common import checkpoint_dir

JOBS_DIR = Path(__file__).resolve().parent / "jobs"


@dataclass(frozen=True)
class JobSpec:
    name: str  # the Flink job name; also the checkpoint folder's
    script: Path


USER_VECTORS = JobSpec("nrtrec-user-vectors", JOBS_DIR / "user_vectors_job.py")
ITEM_DELTAS = JobSpec("nrtrec-item-deltas", JOBS_DIR / "item_deltas_job.py")
JOBS = (ITEM_DELTAS, USER_VECTORS)


class FlinkCluster(Protocol):
    """What submitting needs of a Flink cluster."""

    def connector_jars(self) -> list[Path]: ...

    def submit_python_job(
        self, script: Path | str, args: Sequence[str] = (), *, restore_from: Path | None = None
    ) -> str: ...

    def rest(self, method: str, path: str, timeout: float = 10.0) -> Any: ...


def settings_file(settings: Settings, job: JobSpec) -> Path:
    """The job's settings, as its ``--settings`` argument names them."""
    return write_settings_file(
        settings, settings.run_dir.resolve() / "jobs" / f"{job.name}.settings.json"
    )


def submit(
    flink: FlinkCluster,
    settings: Settings,
    job: JobSpec,
    *,
    restore_from: Path | None = None,
    extra_args: list[str] | None = None,
) -> str:
    """Submit ``job`` detached and return its id; ``restore_from``: a retained checkpoint."""
    args = ["--settings", str(settings_file(settings, job)), "--name", job.name, "--jars"]
    args += [str(j) for j in flink.connector_jars()]
    args += extra_args or []
    try:
        return flink.submit_python_job(job.script, args, restore_from=restore_from)
    except RuntimeError as e:
        raise JobSubmitFailed(str(e)) from e


def latest_checkpoint(settings: Settings, job: JobSpec) -> Path:
    """The newest completed checkpoint of ``job`` (any run of it) in its checkpoint folder."""
    base = checkpoint_dir(settings, job.name)
    completed = [p.parent for p in base.glob("*/chk-*/_metadata")]
    if not completed:
        raise NoCheckpoint(f"{job.name}: no completed checkpoint under {base}")
    return max(completed, key=lambda p: (p.stat().st_mtime, int(p.name.split("-")[1])))


def wait_for_checkpoint(flink: FlinkCluster, job_id: str, after: int = 0, timeout_s=60.0) -> int:
    """Block until ``job_id`` completed a checkpoint numbered above ``after``; returns its id."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stats = flink.rest("GET", f"/jobs/{job_id}/checkpoints")
        latest = (stats.get("latest") or {}).get("completed") or {}
        if int(latest.get("id", 0)) > after:
            return int(latest["id"])
        time.sleep(0.5)
    raise NoCheckpoint(f"job {job_id}: no checkpoint after #{after} within {timeout_s:.0f}s")


def running_jobs(flink: FlinkCluster) -> dict[str, str]:
    """Names of the RUNNING jobs on the cluster -> job id."""
    overview = flink.rest("GET", "/jobs/overview")
    return {j["name"]: j["jid"] for j in overview.get("jobs", []) if j["state"] == "RUNNING"}
