"""Starts tritonserver after clearing what a dead server on the same port left behind.

Triton's Python-backend stubs can outlive a server killed with SIGKILL: the fault suite found
one still running, re-parented and serving nobody, after the supervisor had restarted Triton.
Each holds an onnxruntime session, and each server's stubs leave ``/dev/shm`` regions. Stubs
and regions carry the prefix ``nrtrec_triton_<grpc port>_`` (``shm-region-prefix-name``), so
before a server starts on that port this launcher kills every stub with the prefix whose
parent is not a live tritonserver, removes the regions when no live server uses the prefix,
then becomes the server (``execv``: the supervisor's pid is the server's)::

    python -m nrtrec.deploy.services.triton_launch PREFIX -- /path/to/tritonserver ARGS...
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import psutil

SHM = Path("/dev/shm")
SERVER = "tritonserver"


def _is_server(process: psutil.Process | None, prefix: str) -> bool:
    try:
        return process is not None and any(
            a.endswith(f"shm-region-prefix-name={prefix}") for a in process.cmdline()
        )
    except psutil.Error:
        return False


def clear_leftovers(prefix: str, shm: Path = SHM) -> list[int]:
    """Kill the orphaned stubs of ``prefix`` and remove its stale shm regions; returns the pids
    killed. A live server's stubs and regions are left alone."""
    orphans, live_server = [], False
    for process in psutil.process_iter():
        if process.pid == os.getpid():
            continue
        if _is_server(process, prefix):
            live_server = True
            continue
        with contextlib.suppress(psutil.Error):
            if any(a.startswith(prefix) for a in process.cmdline()[1:]) and not _is_server(
                process.parent(), prefix
            ):
                orphans.append(process)
    for process in orphans:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(orphans, timeout=10)
    if not live_server:
        for region in shm.glob(f"{prefix}*"):
            region.unlink(missing_ok=True)
    return [p.pid for p in orphans]


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3 or args[1] != "--":
        raise SystemExit("usage: triton_launch PREFIX -- TRITONSERVER [ARGS...]")
    prefix, command = args[0], args[2:]
    killed = clear_leftovers(prefix)
    if killed:
        print(f"killed orphaned Triton stubs of {prefix}: {killed}", file=sys.stderr, flush=True)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
