"""A local standalone Flink cluster, started from the Flink distribution inside PyFlink's wheel.

One JobManager and ``flink.taskmanagers`` TaskManagers (one by default), every socket on
127.0.0.1. The cluster's Flink version is the ``apache-flink`` version pip installed, so the
PyFlink client and the cluster always agree.
The official Kafka connector is not part of the wheel: ``install()`` resolves the shaded
``flink-sql-connector-kafka`` jar from Maven Central, and jobs ship it with ``connector_jars()``
(``env.add_jars(...)``, i.e. ``pipeline.jars``).

Clients (``flink run``, ``python job.py`` with a remote target) must use this service's
configuration directory (``client_env()``): besides the cluster's address it holds the Python
defaults that are decided when the job graph is built on the client side, such as
``python.execution-mode``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from nrtrec.deploy import maven
from nrtrec.deploy.errors import InstallFailed
from nrtrec.deploy.services.base import Process, Service

_CONNECTOR = "org.apache.flink:flink-sql-connector-kafka"
_JOB_ID = re.compile(r"JobID ([0-9a-f]{32})")
# Loopback only: never route the REST calls through an HTTP proxy from the environment.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def flink_home() -> Path:
    """The Flink distribution that ships inside the ``apache-flink`` wheel."""
    import pyflink

    return Path(pyflink.__file__).resolve().parent


def pyflink_version() -> str:
    from pyflink.version import __version__

    return __version__


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


class FlinkService(Service):
    name = "flink"

    # --- locations -------------------------------------------------------------------------------

    @property
    def conf_dir(self) -> Path:
        return self.data_dir / "conf"

    @property
    def log_dir(self) -> Path:
        """Flink's own log files (the supervisor keeps each process's console output as well)."""
        return self.settings.run_dir.resolve() / "logs" / "flink"

    @property
    def connector_dir(self) -> Path:
        version = self.settings.flink.kafka_connector_version
        return self.cache_dir / f"flink-sql-connector-kafka-{version}"

    @property
    def python_executable(self) -> str:
        # Not resolved: a virtualenv's interpreter is a symlink, and following it would lose the
        # virtualenv (and PyFlink with it).
        return sys.executable

    # --- Service ---------------------------------------------------------------------------------

    def install(self) -> None:
        self.check_connector_version()
        home = flink_home()
        scripts = (home / "bin" / "jobmanager.sh").is_file()
        if not scripts or not list(home.glob("lib/flink-dist*.jar")):
            raise InstallFailed(
                f"the Flink distribution in the apache-flink wheel is incomplete ({home}); "
                "reinstall it: pip install --force-reinstall apache-flink"
            )
        if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
            raise InstallFailed(
                "Flink needs a Java 11+ runtime: put `java` on PATH or set JAVA_HOME"
            )
        self._resolve_connector()

    def check_connector_version(self) -> None:
        """The Kafka connector is released per Flink minor (``5.0.0-2.2`` is for Flink 2.2.x)."""
        connector = self.settings.flink.kafka_connector_version
        flink_minor = ".".join(pyflink_version().split(".")[:2])
        _, sep, connector_flink = connector.rpartition("-")
        if not sep or connector_flink != flink_minor:
            raise InstallFailed(
                f"the Flink Kafka connector {connector} is not built for the installed "
                f"apache-flink {pyflink_version()}: pick a connector released for Flink "
                f"{flink_minor} (NRTREC_FLINK__KAFKA_CONNECTOR_VERSION=<x.y.z>-{flink_minor}) or "
                f"pin apache-flink to the Flink version the connector names ({connector_flink})"
            )

    def connector_jars(self) -> list[Path]:
        """The jars a streaming job adds (``env.add_jars(*(p.as_uri() for p in ...))``)."""
        return self._resolve_connector()

    def _resolve_connector(self) -> list[Path]:
        coordinate = f"{_CONNECTOR}:{self.settings.flink.kafka_connector_version}"
        jars = maven.resolve([coordinate], self.connector_dir, transitive=False)
        if not jars:
            raise InstallFailed(f"mvn resolved no jar for {coordinate}")
        return jars

    def prepare(self) -> None:
        for d in (self.data_dir, self.log_dir, self.data_dir / "tmp", self.data_dir / "pid"):
            d.mkdir(parents=True, exist_ok=True)
        self._assemble_lib_dir()
        if self.conf_dir.exists():
            shutil.rmtree(self.conf_dir)
        shutil.copytree(flink_home() / "conf", self.conf_dir)
        dist = yaml.safe_load((self.conf_dir / "config.yaml").read_text()) or {}
        config = {**_flatten(dist), **self.flink_config()}
        (self.conf_dir / "config.yaml").write_text(
            "# Written by nrtrec's local runner: the distribution's defaults plus its overrides.\n"
            + yaml.safe_dump(config, sort_keys=True, default_flow_style=False, width=10_000)
        )

    @property
    def lib_dir(self) -> Path:
        return self.data_dir / "lib"

    def _assemble_lib_dir(self) -> None:
        """The distribution's lib/ plus opt/flink-python, as Flink's docs set up PyFlink clusters.

        Thread mode runs Python through pemja, whose native library a JVM can load only once.
        Shipped with each job, pemja would be loaded again by every job's (and every restart's)
        class loader, and the second load fails ("NoSuchFieldException: loadedLibraryNames").
        From lib/, with pemja parent-first, it is loaded once per TaskManager.
        """
        if self.lib_dir.exists():
            shutil.rmtree(self.lib_dir)
        self.lib_dir.mkdir(parents=True)
        home = flink_home()
        for jar in [*(home / "lib").glob("*.jar"), *(home / "opt").glob("flink-python-*.jar")]:
            (self.lib_dir / jar.name).symlink_to(jar)

    def flink_config(self) -> dict[str, Any]:
        """What this cluster changes in the distribution's config.yaml (flat keys)."""
        cfg = self.settings.flink
        host = cfg.host
        data = self.data_dir
        return {
            # Every socket on loopback. Ports left at 0 (TaskManager RPC and data, blob server,
            # metrics query service) are ephemeral, bound on the same loopback address, so that
            # two stacks never collide on them.
            "jobmanager.rpc.address": host,
            "jobmanager.bind-host": host,
            "jobmanager.rpc.port": cfg.rpc_port,
            "taskmanager.host": host,
            "taskmanager.bind-host": host,
            "taskmanager.rpc.port": "0",
            "taskmanager.data.port": 0,
            "blob.server.port": "0",
            "metrics.internal.query-service.port": "0",
            "rest.address": host,
            "rest.bind-address": host,
            "rest.port": cfg.rest_port,
            # Sizes that fit beside Kafka, Triton and the rest on a small machine.
            "jobmanager.memory.process.size": cfg.jobmanager_memory,
            "taskmanager.memory.process.size": cfg.process_memory,
            "taskmanager.numberOfTaskSlots": cfg.taskmanager_slots,
            "parallelism.default": 1,
            # Python: thread mode runs the Python functions inside the TaskManager's JVM (pemja)
            # instead of a separate worker talking gRPC; measured ~5x the throughput of process
            # mode on keyed state here. A job that needs AsyncFunction (process mode only) sets
            # python.execution-mode: process itself; the bundle time then keeps process mode's
            # Kafka-to-Kafka latency near 140 ms instead of ~700 ms.
            "python.execution-mode": "thread",
            "classloader.parent-first-patterns.additional": "pemja.",
            "python.fn-execution.bundle.time": 10,
            "python.executable": self.python_executable,
            "python.client.executable": self.python_executable,
            # A TaskManager that dies is noticed within seconds (two missed heartbeats to a
            # process that answers nothing), so its jobs restart from their latest checkpoint
            # on the one supervisord starts in its place; the default waits 50 s.
            "heartbeat.interval": 1000,
            "heartbeat.timeout": 10000,
            "heartbeat.rpc-failure-threshold": 2,
            # State and scratch space inside this run's data dir.
            "state.backend.type": "hashmap",
            "execution.checkpointing.dir": (data / "checkpoints").as_uri(),
            "execution.checkpointing.savepoint-dir": (data / "savepoints").as_uri(),
            # Aligned checkpoints stalled under backpressure here; unaligned ones completed.
            "execution.checkpointing.unaligned.enabled": True,
            "io.tmp.dirs": str(data / "tmp"),
            "blob.storage.directory": str(data / "tmp" / "blob"),
            "web.tmpdir": str(data / "tmp" / "web"),
            "web.upload.dir": str(data / "tmp" / "web-upload"),
            "env.log.dir": str(self.log_dir),
            "env.pid.dir": str(data / "pid"),
        }

    def _env(self) -> dict[str, str]:
        return {
            "FLINK_HOME": str(flink_home()),
            "FLINK_CONF_DIR": str(self.conf_dir),
            "FLINK_LIB_DIR": str(self.lib_dir),
            "FLINK_LOG_DIR": str(self.log_dir),
            "FLINK_PID_DIR": str(self.data_dir / "pid"),
            # Names Flink's log files (flink-<ident>-taskexecutor-...); $USER may be unset.
            "FLINK_IDENT_STRING": "nrtrec",
            # The TaskManager starts Python (embedded or as workers); it must be this venv's.
            "PYFLINK_CLIENT_EXECUTABLE": self.python_executable,
            # Thread mode embeds libpython (pemja), which finds its site-packages through the
            # `python3` on PATH and VIRTUAL_ENV, not python.executable: without these, a run
            # from an unactivated venv (`.venv/bin/pytest`, CI) fails "No module named pemja".
            "VIRTUAL_ENV": sys.prefix,
            "PATH": os.pathsep.join([str(Path(self.python_executable).parent), os.environ["PATH"]]),
        }

    def processes(self) -> list[Process]:
        bin_dir = flink_home() / "bin"
        env = self._env()
        # The console scripts `exec` java, so the supervisor's pid is the JVM's. TaskManagers
        # share the config: their RPC and data ports are ephemeral, their resource ids random.
        taskmanager = ["bash", str(bin_dir / "taskmanager.sh"), "start-foreground"]
        return [
            Process(
                "flink-jobmanager",
                ["bash", str(bin_dir / "jobmanager.sh"), "start-foreground"],
                env=env,
                cwd=self.data_dir,
            ),
            *(
                Process(
                    name, [*taskmanager, *self._taskmanager_args(name)], env=env, cwd=self.data_dir
                )
                for name in self.taskmanager_names()
            ),
        ]

    def _taskmanager_args(self, name: str) -> list[str]:
        # Beside others, a TaskManager registers under its process name (the REST API's
        # /taskmanagers id), so `nrtrec status` can tell which one is missing; a restarted one
        # takes its predecessor's registration over instead of waiting out its heartbeat.
        if self.settings.flink.taskmanagers == 1:
            return []
        return ["-D", f"taskmanager.resource-id={name}"]

    def taskmanager_names(self) -> list[str]:
        """``flink-taskmanager`` alone, as a one-TaskManager cluster always named it; else
        ``flink-taskmanager-0..N``."""
        n = self.settings.flink.taskmanagers
        return ["flink-taskmanager"] if n == 1 else [f"flink-taskmanager-{i}" for i in range(n)]

    def ports(self) -> list[int]:
        return [self.settings.flink.rest_port, self.settings.flink.rpc_port]

    def members(self) -> dict[str, list[str]]:
        """One row for the cluster, or with several TaskManagers the JobManager's row and one
        per TaskManager."""
        if self.settings.flink.taskmanagers == 1:
            return super().members()
        return {self.name: ["flink-jobmanager"], **{n: [n] for n in self.taskmanager_names()}}

    def member_healthy(self, member: str) -> bool:
        if self.settings.flink.taskmanagers == 1:
            return self.healthy()
        try:
            if member == self.name:  # the JobManager: it answers
                return bool(self.rest("GET", "/overview", timeout=2.0))
            registered = self.rest("GET", "/taskmanagers", timeout=2.0).get("taskmanagers", [])
        except Exception:
            return False
        return any(tm.get("id") == member for tm in registered)

    def url(self) -> str:
        return self.settings.flink.rest_url

    def healthy(self) -> bool:
        """The JobManager answers and every TaskManager has registered its slots."""
        try:
            overview = self.rest("GET", "/overview", timeout=2.0)
        except Exception:
            return False
        cfg = self.settings.flink
        return (
            int(overview.get("taskmanagers", 0)) >= cfg.taskmanagers
            and int(overview.get("slots-total", 0)) >= cfg.slots
        )

    # --- clients and jobs ------------------------------------------------------------------------

    def client_env(self) -> dict[str, str]:
        """Environment for a Flink client (``bin/flink``, a PyFlink script) of this cluster."""
        return {**self._env(), "FLINK_LOG_DIR": str(self.log_dir / "client")}

    def python_job_command(
        self,
        script: Path | str,
        args: Sequence[str] = (),
        *,
        detached: bool = True,
        restore_from: Path | str | None = None,
    ) -> list[str]:
        """``bin/flink run`` of a PyFlink script on this cluster (run it with ``client_env()``);
        ``restore_from``: a retained checkpoint or savepoint to start from."""
        cfg = self.settings.flink
        argv = ["bash", str(flink_home() / "bin" / "flink"), "run"]
        argv += ["-m", f"{cfg.host}:{cfg.rest_port}"]
        if detached:
            argv.append("-d")
        if restore_from is not None:
            argv += ["-s", str(restore_from)]
        argv += ["-pyclientexec", self.python_executable, "-pyexec", self.python_executable]
        argv += ["-py", str(script)]
        return [*argv, *args]

    def submit_python_job(
        self,
        script: Path | str,
        args: Sequence[str] = (),
        *,
        timeout_s: float = 300.0,
        restore_from: Path | str | None = None,
    ) -> str:
        """Submit a PyFlink script detached; returns the job id once the cluster accepted it."""
        result = subprocess.run(
            self.python_job_command(script, args, restore_from=restore_from),
            env={**os.environ, **self.client_env()},
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        match = _JOB_ID.search(result.stdout + result.stderr)
        if result.returncode != 0 or match is None:
            raise RuntimeError(
                f"flink run {script} failed (exit {result.returncode}):\n"
                f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
            )
        return match.group(1)

    def job_state(self, job_id: str) -> str:
        return str(self.rest("GET", f"/jobs/{job_id}")["state"])

    def cancel_job(self, job_id: str) -> None:
        self.rest("PATCH", f"/jobs/{job_id}?mode=cancel")

    def rest(self, method: str, path: str, timeout: float = 10.0) -> Any:
        """One call of the cluster's REST API; raises on errors."""
        request = urllib.request.Request(f"{self.url()}{path}", method=method)
        with _NO_PROXY.open(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else {}


__all__ = ["FlinkService", "flink_home", "pyflink_version"]
