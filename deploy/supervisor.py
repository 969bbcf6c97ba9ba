"""Start, track and stop service processes; state lives in ``<run_dir>/state.json``."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from nrtrec.core.settings import SETTINGS_FILE_ENV, write_settings_file
from nrtrec.deploy.services.base import Process


@dataclass
class Running:
    """A process the supervisor started, as recorded in the state file."""

    service: str
    name: str
    pid: int
    create_time: float
    log: str

    def alive(self) -> bool:
        # A pid alone can be reused by an unrelated process after a reboot; the start time cannot.
        try:
            p = psutil.Process(self.pid)
            return (
                p.is_running()
                and abs(p.create_time() - self.create_time) < 1.0
                and (p.status() != psutil.STATUS_ZOMBIE)
            )
        except psutil.Error:
            return False


class Supervisor:
    def __init__(self, run_dir: Path):
        self.run_dir = run_dir.resolve()
        self.log_dir = self.run_dir / "logs"
        self.state_file = self.run_dir / "state.json"

    def load(self) -> list[Running]:
        if not self.state_file.exists():
            return []
        return [Running(**r) for r in json.loads(self.state_file.read_text())]

    def _save(self, running: list[Running]) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps([asdict(r) for r in running], indent=2))
        tmp.replace(self.state_file)

    def start(self, service: str, process: Process) -> Running:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{process.name}.log"
        env = {**os.environ, **process.env}
        if process.settings is not None:
            path = self.run_dir / "settings" / f"{process.name}.json"
            env[SETTINGS_FILE_ENV] = str(write_settings_file(process.settings, path))
        with open(log_path, "ab") as log:
            # A session of its own, so that `down` can stop the whole process group and a
            # terminal's Ctrl-C on the CLI does not take the services with it.
            proc = subprocess.Popen(
                process.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=process.cwd,
                env=env,
                start_new_session=True,
            )
        running = Running(
            service=service,
            name=process.name,
            pid=proc.pid,
            create_time=psutil.Process(proc.pid).create_time(),
            log=str(log_path),
        )
        self._save([*self.load(), running])
        return running

    def stop_all(self, grace_s: float = 15.0) -> list[Running]:
        """Stop every recorded process, newest first, and all of their children."""
        running = self.load()
        for r in reversed(running):
            stop_tree(r, grace_s)
        if self.state_file.exists():
            self.state_file.unlink()
        return running


def stop_tree(running: Running, grace_s: float) -> None:
    if not running.alive():
        return
    try:
        root = psutil.Process(running.pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return
    with contextlib.suppress(OSError):
        os.killpg(running.pid, signal.SIGTERM)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=5)


def log_tail(path: str | Path, lines: int = 30) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def wait_until(predicate, timeout_s: float, interval_s: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()
