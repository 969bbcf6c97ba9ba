"""The Triton launcher clears what a dead server on its port left: orphaned stubs (any process
carrying the port's shm prefix whose parent is not a live server) and stale shm regions."""

from __future__ import annotations

import subprocess
import sys
import uuid

import psutil

from nrtrec.deploy.services.triton_launch import clear_leftovers
from tests.waiting import wait_until

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def test_an_orphan_of_the_prefix_is_killed_and_its_regions_removed(tmp_path):
    prefix = f"nrtrec_triton_{uuid.uuid4().hex[:6]}_"
    # Stands where a stub stands: its shm region name among its arguments, no server above it.
    orphan = subprocess.Popen([*SLEEPER, f"{prefix}region-a"])
    bystander = subprocess.Popen([*SLEEPER, "nrtrec_triton_other_port_x"])
    (tmp_path / f"{prefix}region-a").write_bytes(b"x")
    (tmp_path / "nrtrec_triton_other_port_x").write_bytes(b"x")
    try:
        wait_until("the processes started", lambda: psutil.pid_exists(orphan.pid), 10)
        assert clear_leftovers(prefix, tmp_path) == [orphan.pid]
        # clear_leftovers reaped it (psutil waits for what it kills): it is gone.
        assert not psutil.pid_exists(orphan.pid)
        assert bystander.poll() is None
        assert [p.name for p in tmp_path.iterdir()] == ["nrtrec_triton_other_port_x"]
    finally:
        for p in (orphan, bystander):
            p.kill()
            p.wait()


def test_a_live_server_s_stubs_and_regions_are_left_alone(tmp_path):
    prefix = f"nrtrec_triton_{uuid.uuid4().hex[:6]}_"
    # A "server" (its argv names the prefix as Triton's does) with a child carrying the prefix.
    stub = [*SLEEPER, f"{prefix}r"]
    child = f"import subprocess, time; subprocess.Popen({stub!r}); time.sleep(120)"
    server = subprocess.Popen(
        [sys.executable, "-c", child, f"--backend-config=python,shm-region-prefix-name={prefix}"]
    )
    (tmp_path / f"{prefix}r").write_bytes(b"x")
    try:
        wait_until(
            "the server's child started",
            lambda: len(psutil.Process(server.pid).children()) == 1,
            10,
        )
        assert clear_leftovers(prefix, tmp_path) == []
        assert len(psutil.Process(server.pid).children()) == 1
        assert (tmp_path / f"{prefix}r").exists()
    finally:
        for p in psutil.Process(server.pid).children(recursive=True):
            p.kill()
        server.kill()
        server.wait()
