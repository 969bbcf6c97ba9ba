"""The local runner's processes under supervisord: started on request, restarted when they die.

One supervisord per run directory (``<run_dir>/supervisor/``), reached over a unix socket of
mode 0700 (no TCP listener). Every process is a supervisord program that does not start by
itself (the runner starts services in order, each once the one before is healthy) and is
restarted by supervisord whenever it exits unexpectedly: at once after a crash, with a
growing delay (1 s, 2 s, ...) when it keeps dying within ``startsecs`` of starting, for
``startretries`` tries before supervisord gives up on it (FATAL, which ``nrtrec up`` retries).

Restarts are counted by an event listener (``nrtrec.deploy.restart_counter``) into
``restarts.json``; ``nrtrec status`` shows them. supervisord itself runs in a session of its own,
so a terminal's Ctrl-C on the CLI does not take the services with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil
from supervisor.xmlrpc import SupervisorTransport

from nrtrec.core.settings import SETTINGS_FILE_ENV, write_settings_file
from nrtrec.deploy.errors import DeployError
from nrtrec.deploy.services.base import Process

# A process that dies within this many seconds of starting has not started.
START_SECONDS = 3
START_RETRIES = 100
STOP_WAIT_SECONDS = 15

RUNNING, STARTING, BACKOFF = "RUNNING", "STARTING", "BACKOFF"
RESTART_COUNTER = "restart-counter"


@dataclass(frozen=True)
class ProcessInfo:
    name: str
    state: str  # supervisord's: STOPPED, STARTING, RUNNING, BACKOFF, STOPPING, EXITED, FATAL
    pid: int | None
    log: Path

    @property
    def alive(self) -> bool:
        return self.state in (RUNNING, STARTING) and self.pid is not None


@dataclass(frozen=True)
class Program:
    """One supervisord program: a process and whether supervisord restarts it."""

    process: Process
    autorestart: bool = True


class Supervisor:
    def __init__(self, run_dir: Path):
        self.run_dir = run_dir.resolve()
        self.home = self.run_dir / "supervisor"
        self.log_dir = self.run_dir / "logs"
        self.config = self.home / "supervisord.conf"
        self.socket = self.home / "supervisord.sock"
        self.restarts_file = self.home / "restarts.json"
        # Every process supervisord ever started here, with its start time: what `down` and
        # the next `up` stop if supervisord itself died and left them running.
        self.spawned_file = self.home / "spawned.json"

    # ---- the daemon ---------------------------------------------------------------------------

    def running(self) -> bool:
        try:
            return self._rpc().supervisor.getState()["statename"] == RUNNING
        except (OSError, xmlrpc.client.Error):
            return False

    def launch(self, programs: Iterable[Program]) -> None:
        """Write the configuration and start supervisord with every program stopped."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.stop_orphans()
        self.restarts_file.unlink(missing_ok=True)
        text = self._daemon_configuration() + "".join(self._program(p) for p in programs)
        self.config.write_text(text)
        self.config.chmod(0o600)
        log = open(self.log_dir / "supervisord.out", "ab")  # noqa: SIM115 - handed to the child
        with log:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "supervisor.supervisord", "-c", str(self.config), "-n"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._record([daemon.pid])
        deadline = time.monotonic() + 30
        while not self.running():
            if daemon.poll() is not None:
                raise DeployError(
                    f"supervisord exited ({daemon.returncode}); see {self.log_dir}/supervisord.out"
                )
            if time.monotonic() > deadline:
                raise DeployError(f"supervisord did not answer on {self.socket} within 30 s")
            time.sleep(0.1)

    def add(self, programs: Iterable[Program]) -> None:
        """Programs the running supervisord does not have yet join it, stopped; those it has
        stay as they are (running or not)."""
        known = self.info()
        missing = [p for p in programs if p.process.name not in known]
        if not missing:
            return
        with open(self.config, "a") as f:
            f.write("".join(self._program(p) for p in missing))
        rpc = self._rpc()
        rpc.supervisor.reloadConfig()
        for program in missing:
            with contextlib.suppress(xmlrpc.client.Fault):  # added meanwhile
                rpc.supervisor.addProcessGroup(program.process.name)

    def shutdown(self) -> None:
        """Stop every program, children included, then supervisord; idempotent."""
        if self.running():
            rpc = self._rpc()
            with contextlib.suppress(OSError, xmlrpc.client.Error):
                rpc.supervisor.stopAllProcesses(True)
            with contextlib.suppress(OSError, xmlrpc.client.Error):
                rpc.supervisor.shutdown()
            deadline = time.monotonic() + STOP_WAIT_SECONDS + 5
            while self.running() and time.monotonic() < deadline:
                time.sleep(0.1)
        self.stop_orphans()

    def stop_orphans(self) -> None:
        """Stop what an earlier supervisord started and left behind (it was killed itself)."""
        for pid, created in self._spawned().items():
            stop_tree(int(pid), created, STOP_WAIT_SECONDS)
        self.spawned_file.unlink(missing_ok=True)

    # ---- programs -----------------------------------------------------------------------------

    def start(self, name: str) -> ProcessInfo:
        """Start a stopped (or given-up) program; a running one is left alone."""
        info = self.info().get(name)
        if info is None:
            raise DeployError(f"supervisord has no program {name!r}; run `nrtrec down` first")
        if not info.alive and info.state != BACKOFF:
            self._rpc().supervisor.startProcess(name, False)
        return self.info()[name]

    def stop(self, name: str) -> None:
        """Stop a program and keep it stopped until ``start`` (a node held down, say)."""
        try:
            self._rpc().supervisor.stopProcess(name, True)
        except xmlrpc.client.Fault as e:
            if "NOT_RUNNING" not in e.faultString:
                raise

    def info(self) -> dict[str, ProcessInfo]:
        """Every program's state and pid; empty when supervisord is not running."""
        try:
            rows = self._rpc().supervisor.getAllProcessInfo()
        except (OSError, xmlrpc.client.Error):
            return {}
        found = {
            row["name"]: ProcessInfo(
                row["name"],
                row["statename"],
                row["pid"] or None,
                Path(row["stdout_logfile"] or self.log_dir / f"{row['name']}.log"),
            )
            for row in rows
            if row["name"] != RESTART_COUNTER
        }
        self._record(p.pid for p in found.values() if p.pid)
        return found

    def restarts(self) -> dict[str, int]:
        """Unexpected exits per program since supervisord started (each one restarted)."""
        try:
            return {str(k): int(v) for k, v in json.loads(self.restarts_file.read_text()).items()}
        except (OSError, ValueError):
            return {}

    # ---- plumbing -----------------------------------------------------------------------------

    def _rpc(self) -> xmlrpc.client.ServerProxy:
        transport = SupervisorTransport(None, None, f"unix://{self.socket}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    def _daemon_configuration(self) -> str:
        counter = [sys.executable, "-m", "nrtrec.deploy.restart_counter", self.restarts_file]
        factory = "supervisor.rpcinterface:make_main_rpcinterface"
        return _sections(
            [
                ("unix_http_server", {"file": self.socket, "chmod": "0700"}),
                (
                    "supervisord",
                    {
                        "logfile": self.log_dir / "supervisord.log",
                        "pidfile": self.home / "supervisord.pid",
                        "childlogdir": self.log_dir,
                        "nodaemon": "true",
                        "silent": "true",
                    },
                ),
                ("rpcinterface:supervisor", {"supervisor.rpcinterface_factory": factory}),
                ("supervisorctl", {"serverurl": f"unix://{self.socket}"}),
                (
                    f"eventlistener:{RESTART_COUNTER}",
                    {
                        "command": _command(counter),
                        "events": "PROCESS_STATE_EXITED,PROCESS_STATE_BACKOFF",
                        "autostart": "true",
                        "autorestart": "true",
                        "stdout_logfile": "NONE",
                        "stderr_logfile": self.log_dir / f"{RESTART_COUNTER}.log",
                    },
                ),
            ]
        )

    def _program(self, program: Program) -> str:
        p = program.process
        env = dict(p.env)
        if p.settings is not None:
            path = self.run_dir / "settings" / f"{p.name}.json"
            env[SETTINGS_FILE_ENV] = str(write_settings_file(p.settings, path))
        options: dict[str, object] = {
            "command": _command(p.argv),
            "autostart": "false",
            # Whatever its exit code: a service that exits is down.
            "autorestart": "true" if program.autorestart else "false",
            "startsecs": START_SECONDS,
            "startretries": START_RETRIES,
            "stopasgroup": "true",
            "killasgroup": "true",
            "stopwaitsecs": STOP_WAIT_SECONDS,
            "stdout_logfile": self.log_dir / f"{p.name}.log",
            "stdout_logfile_maxbytes": "100MB",
            "stdout_logfile_backups": 1,
            "redirect_stderr": "true",
        }
        if p.cwd is not None:
            options["directory"] = p.cwd
        if env:
            options["environment"] = ",".join(f'{k}="{_quoted(v)}"' for k, v in env.items())
        return _sections([(f"program:{p.name}", options)])

    def _record(self, pids: Iterable[int]) -> None:
        known = self._spawned()
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                known[str(pid)] = psutil.Process(pid).create_time()
        self.home.mkdir(parents=True, exist_ok=True)
        temp = self.spawned_file.with_suffix(".tmp")
        temp.write_text(json.dumps(known))
        temp.replace(self.spawned_file)

    def _spawned(self) -> dict[str, float]:
        try:
            return {str(k): float(v) for k, v in json.loads(self.spawned_file.read_text()).items()}
        except (OSError, ValueError):
            return {}


def _sections(sections: list[tuple[str, dict[str, object]]]) -> str:
    out = ""
    for title, options in sections:
        out += f"\n[{title}]\n" + "".join(f"{k}={_escape(str(v))}\n" for k, v in options.items())
    return out


def stop_tree(pid: int, created: float, grace_s: float) -> None:
    """SIGTERM a process (if it is the one started at ``created``) and its children, then
    SIGKILL what is left after ``grace_s``."""
    try:
        root = psutil.Process(pid)
        if abs(root.create_time() - created) >= 1.0:
            return  # the pid was reused by another process
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGTERM)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=5)


def _command(argv: Iterable[object]) -> str:
    import shlex

    return shlex.join(str(a) for a in argv)


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _escape(value: str) -> str:
    # supervisord expands %(name)s in every value.
    return value.replace("%", "%%")


def log_tail(path: str | Path, lines: int = 30) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()
