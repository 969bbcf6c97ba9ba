"""Submit the streaming jobs to a Flink cluster, and restart them from their last checkpoint.

The cluster is anything that can run a PyFlink script and answer Flink's REST API
(``FlinkCluster``): the local runner's standalone cluster is one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from nrtrec.core.settings import Settings, write_settings_file
from nrtrec.streaming.errors import JobSubmitFailed, NoCheckpoint
from nrtrec.streaming.jobs.common import checkpoint_dir

log = logging.getLogger(__name__)

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
    return {name: jid for name, (jid, state) in _jobs(flink).items() if state == "RUNNING"}


def live_jobs(flink: FlinkCluster) -> dict[str, str]:
    """Names of the jobs that run or will again (restarting after a failure) -> job id."""
    return {name: jid for name, (jid, state) in _jobs(flink).items() if state not in ENDED}


# A job in one of these states will not run again by itself.
ENDED = frozenset({"FAILED", "CANCELED", "FINISHED"})


def _jobs(flink: FlinkCluster) -> dict[str, tuple[str, str]]:
    """Each job name's newest job (id, state); an older run of the name may have ended."""
    jobs = sorted(
        flink.rest("GET", "/jobs/overview").get("jobs", []), key=lambda j: j["start-time"]
    )
    return {j["name"]: (j["jid"], j["state"]) for j in jobs}


def ensure_jobs(
    settings: Settings, flink: FlinkCluster, on_progress: Callable[[str], None] = lambda m: None
) -> dict[str, str]:
    """Submit each streaming job that is not live (running or restarting), from its newest
    checkpoint if any; returns every job's id."""
    from nrtrec.streaming.bulk import default_out_dir

    live = live_jobs(flink)
    if any(job.name not in live for job in JOBS):
        check_slots(settings, flink)
    ids = {}
    for job in JOBS:
        if job.name in live:
            ids[job.name] = live[job.name]
            continue
        try:
            restore = latest_checkpoint(settings, job)
        except NoCheckpoint:
            restore = None
        extra = []
        bulk = default_out_dir(settings) / "bulk.json"
        if job is ITEM_DELTAS and restore is None and bulk.is_file():
            # DELTA after BULK: continue from the listings offsets the bulk run recorded.
            extra = ["--listings-offsets", str(bulk.resolve())]
        on_progress(f"submitting {job.name}" + (f" from {restore}" if restore else ""))
        ids[job.name] = submit(flink, settings, job, restore_from=restore, extra_args=extra)
    return ids


def check_slots(settings: Settings, flink: FlinkCluster) -> None:
    """Refuse up front what the cluster could never run: each job at streaming.parallelism p
    takes p task slots (its operators share them), and a job short of slots would wait for
    them until Flink's slot request timed out, minutes later, with a less clear reason."""
    needed = settings.streaming.parallelism * len(JOBS)
    total = int(flink.rest("GET", "/overview").get("slots-total", 0))
    if total < needed:
        raise JobSubmitFailed(
            f"{len(JOBS)} jobs at parallelism {settings.streaming.parallelism} need {needed} task "
            f"slots and the Flink cluster has {total}: start more TaskManagers "
            "(flink.taskmanagers, flink.taskmanager_slots) or lower streaming.parallelism"
        )


def keep_jobs(
    settings: Settings, flink: FlinkCluster, stop: Callable[[], bool] = lambda: False
) -> None:
    """``ensure_jobs`` every ``streaming.keeper_interval_s`` until ``stop()``: a job whose
    JobManager restarted (a standalone cluster forgets its jobs) or that failed for good is
    submitted again from its newest checkpoint. A job that restarts by itself is left alone."""
    while not stop():
        try:
            ensure_jobs(settings, flink, lambda m: log.info("%s", m))
        except Exception as e:  # the cluster may be restarting: try again next round
            log.warning("streaming jobs not ensured: %s", e)
        time.sleep(settings.streaming.keeper_interval_s)
