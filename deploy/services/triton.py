"""NVIDIA Triton from the `nvidia-pytriton` wheel, run directly on nrtrec's model repository.

The wheel holds ``tritonserver`` 2.51 with the Python backend only; our encoders are served by
that backend calling onnxruntime (``nrtrec/inference/triton_python/model.py``). We skip
PyTriton's own ``bind()`` layer (it adds ~2 ms per call and cannot serve two versions of one
model name) but start the binary the way PyTriton does:

- the Python backend's stub is shipped per Python minor version outside ``backends/python``;
  ``install()`` assembles a backend directory with the stub matching this interpreter;
- ``LD_LIBRARY_PATH`` holds the wheel's bundled libraries and this interpreter's own lib dir
  (the stub links ``libpython3.X.so``; otherwise it may load the system's libpython);
- ``PATH`` starts with this environment's ``bin`` so the stub's ``python3`` is this venv's.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

import httpx

from nrtrec.core.access import TRITON_ADMIN_HEADER, TRITON_RESTRICTED_APIS, triton_admin_key
from nrtrec.deploy.errors import InstallFailed, ServiceFailed
from nrtrec.deploy.services.base import Process, Service

_BACKEND_FILES = ("libtriton_python.so", "triton_python_backend_utils.py")
_STUB = "triton_python_backend_stub"


def shipped_model_repository() -> Path:
    """``inference/model_repository``: the repository used when none is configured."""
    spec = importlib.util.find_spec("nrtrec.inference")
    if spec is None or not spec.submodule_search_locations:
        raise InstallFailed("the nrtrec.inference package cannot be found; reinstall nrtrec")
    return Path(next(iter(spec.submodule_search_locations))) / "model_repository"


def pytriton_dir() -> Path:
    """The installed ``pytriton`` package directory (found without importing it)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise InstallFailed(
            "the nvidia-pytriton package is not installed in this environment "
            f"({sys.prefix}); `pip install nvidia-pytriton==0.7.0` (a dependency of nrtrec)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


class TritonService(Service):
    name = "triton"

    # --- where the wheel keeps things --------------------------------------------------------

    @property
    def _dist(self) -> Path:
        return pytriton_dir() / "tritonserver"

    @property
    def binary(self) -> Path:
        return self._dist / "bin" / "tritonserver"

    @property
    def libs_dir(self) -> Path:
        # auditwheel's directory of bundled shared libraries, beside the package.
        return pytriton_dir().parent / "nvidia_pytriton.libs"

    @property
    def _python_version(self) -> str:
        return f"{sys.version_info.major}.{sys.version_info.minor}"

    @property
    def _stub_source(self) -> Path:
        return self._dist / "python_backend_stubs" / self._python_version / _STUB

    @property
    def backend_dir(self) -> Path:
        """Our assembled ``--backend-directory`` (Python backend plus this interpreter's stub)."""
        try:
            version = importlib.metadata.version("nvidia-pytriton")
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        return self.cache_dir / f"backends-pytriton{version}-py{self._python_version}"

    @property
    def model_repository(self) -> Path:
        configured = self.settings.triton.model_repository
        return (configured or shipped_model_repository()).resolve()

    @staticmethod
    def python_lib_dir() -> Path:
        """The lib dir of the interpreter running nrtrec (pyenv's, not the system's)."""
        return Path(sysconfig.get_config_var("LIBDIR") or Path(sys.base_prefix) / "lib")

    # --- Service -----------------------------------------------------------------------------

    def install(self) -> None:
        if not self.binary.is_file() or not os.access(self.binary, os.X_OK):
            raise InstallFailed(
                f"triton: no executable tritonserver at {self.binary}; reinstall the wheel "
                "(`pip install --force-reinstall nvidia-pytriton==0.7.0`)"
            )
        python_dir = self._dist / "backends" / "python"
        missing = [f for f in _BACKEND_FILES if not (python_dir / f).is_file()]
        if missing:
            raise InstallFailed(f"triton: the Python backend at {python_dir} lacks {missing}")
        if not self._stub_source.is_file():
            shipped = sorted(p.name for p in self._stub_source.parent.parent.glob("*"))
            raise InstallFailed(
                f"triton: nvidia-pytriton ships no Python-backend stub for Python "
                f"{self._python_version} (it has {shipped}); run nrtrec on one of those"
            )
        libpython = sysconfig.get_config_var("LDLIBRARY") or ""
        if (
            not sysconfig.get_config_var("Py_ENABLE_SHARED")
            or not (self.python_lib_dir() / libpython).exists()
        ):
            raise InstallFailed(
                f"triton: the Python-backend stub links libpython{self._python_version}.so, but "
                f"this interpreter ({sys.executable}) is built without a shared libpython; use "
                "one built with --enable-shared (pyenv: PYTHON_CONFIGURE_OPTS=--enable-shared)"
            )
        self._assemble_backend_dir()

    def prepare(self) -> None:
        repo = self.model_repository
        if not repo.is_dir():
            if self.settings.triton.model_repository is not None:
                raise ServiceFailed(
                    self.name,
                    f"the model repository {repo} does not exist; create it or change "
                    "NRTREC_TRITON__MODEL_REPOSITORY",
                )
            repo.mkdir(parents=True, exist_ok=True)

    def processes(self) -> list[Process]:
        cfg = self.settings.triton
        # The Python backend's /dev/shm regions: <prefix><uuid>. The prefix tells whose server
        # left them behind after a crash (a developer's stack or the tests').
        shm_prefix = f"nrtrec_triton_{cfg.grpc_port}_"
        argv = [
            str(self.binary),
            f"--model-repository={self.model_repository}",
            "--model-control-mode=explicit",
            *self._restricted(),
            # At every start, each model of the repository at the versions its config serves:
            # a restarted server serves what the one before did, with nobody to ask it.
            "--load-model=*",
            f"--backend-directory={self.backend_dir}",
            f"--cache-directory={self._dist / 'caches'}",
            f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
            f"--http-address={cfg.host}",
            f"--http-port={cfg.http_port}",
            f"--grpc-address={cfg.host}",
            f"--grpc-port={cfg.grpc_port}",
            "--allow-metrics=true",
            f"--metrics-address={cfg.host}",
            f"--metrics-port={cfg.metrics_port}",
            # CPU-only serving: no pinned host pool, no CUDA pool, no GPU (DCGM) metrics.
            # (Triton still logs "CudaDriverHelper has not been initialized" on a host without
            # a GPU: harmless.)
            "--pinned-memory-pool-byte-size=0",
            "--cuda-memory-pool-byte-size=0:0",
            "--allow-gpu-metrics=false",
            "--log-verbose=0",
            # On SIGTERM finish in-flight requests for at most this long (the runner waits 15 s).
            "--exit-timeout-secs=10",
        ]  # fmt: skip
        # Through the launcher: it clears what a killed server on this port left, then execs.
        launch = [sys.executable, "-m", "nrtrec.deploy.services.triton_launch", shm_prefix, "--"]
        return [Process(self.name, launch + argv, env=self.environment(), cwd=self.data_dir)]

    def _restricted(self) -> list[str]:
        """Model control and the other admin APIs want the key derived from the run's token."""
        if self.settings.token is None:
            return []
        key, value = TRITON_ADMIN_HEADER, triton_admin_key(self.settings.token)
        apis = ",".join(TRITON_RESTRICTED_APIS)
        return [
            f"--http-restricted-api={apis}:{key}={value}",
            f"--grpc-restricted-protocol={apis}:{key}={value}",
        ]

    def environment(self) -> dict[str, str]:
        """What the server and its Python stubs need on top of the caller's environment."""
        ld_path = [str(self.python_lib_dir()), str(self.libs_dir)]
        if os.environ.get("LD_LIBRARY_PATH"):
            ld_path.append(os.environ["LD_LIBRARY_PATH"])
        # The venv's bin, not the resolved interpreter's: `python3` there is this environment.
        bin_dir = str(Path(sys.executable).parent)
        rest = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != bin_dir]
        path = [bin_dir, *rest]
        return {"LD_LIBRARY_PATH": os.pathsep.join(ld_path), "PATH": os.pathsep.join(path)}

    def ports(self) -> list[int]:
        cfg = self.settings.triton
        return [cfg.http_port, cfg.grpc_port, cfg.metrics_port]

    def url(self) -> str:
        return self.settings.triton.http_url

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url()}/v2/health/ready", timeout=1.0).status_code == 200
        except Exception:
            return False

    # --- helpers -----------------------------------------------------------------------------

    def _assemble_backend_dir(self) -> None:
        """``<backend_dir>/python``: the wheel's Python backend with this interpreter's stub.

        Copied (3 MB) rather than linked: Triton hands the backend its own directory and the
        stub is looked up there. Built in a temporary directory and renamed into place so
        that concurrent installs (tests beside a developer's stack) never see half of it.
        """
        target = self.backend_dir
        if (target / "python" / _STUB).is_file():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".backends-", dir=target.parent))
        try:
            python_dir = staging / "python"
            python_dir.mkdir()
            for f in _BACKEND_FILES:
                shutil.copy2(self._dist / "backends" / "python" / f, python_dir / f)
            shutil.copy2(self._stub_source, python_dir / _STUB)
            (python_dir / _STUB).chmod(0o755)
            staging.chmod(0o755)
            try:
                staging.rename(target)
            except OSError:
                if not (target / "python" / _STUB).is_file():
                    raise
        except OSError as e:
            raise InstallFailed(
                f"triton: cannot assemble the backend directory {target}: {e}"
            ) from e
        finally:
            shutil.rmtree(staging, ignore_errors=True)
