"""The local Flink cluster runs a real PyFlink job: Kafka (official KafkaSource) -> Python map ->
Kafka (official KafkaSink), submitted with ``bin/flink run -d`` to the standalone cluster."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from nrtrec.core.settings import FlinkSettings, Settings
from nrtrec.deploy.errors import InstallFailed
from nrtrec.deploy.services.flink import FlinkService, pyflink_version
from nrtrec.deploy.supervisor import log_tail
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

JOB = Path(__file__).with_name("flink_uppercase_job.py")


def job_diagnosis(flink: FlinkService, job_id: str) -> str:
    """What a failed run needs to be understood: the job's exceptions and the TaskManager log."""
    try:
        exceptions = flink.rest("GET", f"/jobs/{job_id}/exceptions")
    except Exception as e:
        exceptions = f"(no exceptions: {e})"
    logs = sorted(flink.log_dir.glob("*taskexecutor*.log"))
    tail = log_tail(logs[-1], 60) if logs else "(no taskmanager log)"
    return f"job exceptions: {exceptions}\n--- taskmanager log ---\n{tail}"


@pytest.fixture(scope="module")
def flink(stack) -> FlinkService:
    return stack.flink()


def produce(bootstrap: str, topic: str, values: list[str]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for value in values:
        producer.produce(topic, value=value.encode())
    assert producer.flush(30) == 0


def test_connector_must_match_the_installed_flink_minor(tmp_path: Path) -> None:
    major, minor = pyflink_version().split(".")[:2]
    other = f"5.0.0-{major}.{int(minor) - 1}"
    service = FlinkService(
        Settings(run_dir=tmp_path, flink=FlinkSettings(kafka_connector_version=other))
    )
    with pytest.raises(InstallFailed, match="not built for the installed apache-flink"):
        service.install()


def test_cluster_is_healthy_on_loopback(flink: FlinkService) -> None:
    overview = flink.rest("GET", "/overview")
    assert overview["taskmanagers"] == flink.settings.flink.taskmanagers
    assert overview["slots-total"] == flink.settings.flink.slots
    # `nrtrec status`: the JobManager's row and one per TaskManager, each registered by name.
    rows = flink.members()
    assert list(rows) == ["flink", "flink-taskmanager-0", "flink-taskmanager-1"]
    assert all(flink.member_healthy(row) for row in rows)
    assert overview["flink-version"] == pyflink_version()
    config = {e["key"]: e["value"] for e in flink.rest("GET", "/jobmanager/config")}
    assert config["rest.bind-address"] == "127.0.0.1"
    assert config["jobmanager.bind-host"] == "127.0.0.1"


def test_jobs_the_cluster_has_no_slots_for_are_refused_with_the_reason(
    flink: FlinkService, tmp_path: Path
) -> None:
    from nrtrec.streaming.errors import JobSubmitFailed
    from nrtrec.streaming.submit import ensure_jobs, live_jobs

    slots = flink.settings.flink.slots
    too_wide = flink.settings.model_copy(
        update={
            "run_dir": tmp_path,
            "streaming": flink.settings.streaming.model_copy(update={"parallelism": slots}),
        }
    )
    before = live_jobs(flink)
    with pytest.raises(JobSubmitFailed, match=rf"need {2 * slots} task slots .* has {slots}"):
        ensure_jobs(too_wide, flink)
    assert live_jobs(flink) == before, "a job was submitted"


def test_pyflink_kafka_job_runs_on_the_local_cluster(stack, flink: FlinkService) -> None:
    bootstrap = stack.kafka()
    suffix = uuid.uuid4().hex[:8]
    in_topic, out_topic = f"flink-it-in-{suffix}", f"flink-it-out-{suffix}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    created = admin.create_topics(
        [NewTopic(t, num_partitions=1, replication_factor=1) for t in (in_topic, out_topic)]
    )
    for future in created.values():
        future.result(timeout=30)

    records = [f"item-{i:02d}:viewed" for i in range(20)]
    # Half before the job starts (read from the earliest offset), half while it runs.
    produce(bootstrap, in_topic, records[:10])

    start = time.monotonic()
    job_id = flink.submit_python_job(
        JOB,
        [
            "--bootstrap", bootstrap,
            "--in-topic", in_topic,
            "--out-topic", out_topic,
            "--group", f"flink-it-{suffix}",
            "--jars", *map(str, flink.connector_jars()),
        ],
    )  # fmt: skip
    submitted_s = time.monotonic() - start
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"flink-it-reader-{suffix}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        running_s = wait_until("job RUNNING", lambda: flink.job_state(job_id) == "RUNNING", 120)
        produce(bootstrap, in_topic, records[10:])

        consumer.subscribe([out_topic])
        received: list[str] = []

        def all_received() -> bool:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                received.append(msg.value().decode())
            return len(received) >= len(records)

        # Generous: the first Python operator start on a loaded 2-core machine is slow.
        output_s = wait_until(
            f"{len(records)} records in {out_topic}",
            all_received,
            240,
            diagnose=lambda: f"received: {received}\n{job_diagnosis(flink, job_id)}",
        )
        # Nothing more arrives: no duplicates, no strays.
        extra = consumer.poll(2.0)
        assert extra is None or extra.error() is not None
        assert received == [r.upper() for r in records]

        assert flink.job_state(job_id) == "RUNNING"
        assert flink.rest("GET", "/overview")["jobs-running"] >= 1
        print(
            f"\nflink job {job_id}: submitted in {submitted_s:.1f}s, RUNNING after "
            f"{running_s:.1f}s more, all output {output_s:.1f}s after that"
        )
    finally:
        consumer.close()
        flink.cancel_job(job_id)
        wait_until("job CANCELED", lambda: flink.job_state(job_id) == "CANCELED", 60)
        admin.delete_topics([in_topic, out_topic])


def test_a_killed_taskmanager_comes_back_under_its_own_name(flink: FlinkService) -> None:
    """SIGKILL one of the two TaskManagers: supervisord starts another, which registers under
    the same name and so takes the dead one's registration over: the cluster never counts a
    third TaskManager while the dead one's heartbeat runs out."""
    import os
    import signal

    import psutil

    name = flink.taskmanager_names()[-1]

    def pid() -> int | None:
        for p in psutil.process_iter(["cmdline"]):
            line = " ".join(p.info["cmdline"] or [])
            if f"taskmanager.resource-id={name}" in line and str(flink.conf_dir) in line:
                return p.pid
        return None

    def registration() -> str | None:
        """The registered TaskManager's RPC address: a new process has a new port."""
        registered = flink.rest("GET", "/taskmanagers").get("taskmanagers", [])
        return next((tm["path"] for tm in registered if tm["id"] == name), None)

    before, registered_before = pid(), registration()
    assert before is not None and registered_before is not None, f"{name} is not running"
    os.kill(before, signal.SIGKILL)
    wait_until(
        f"{name} restarted and registered anew",
        lambda: pid() not in (None, before) and registration() not in (None, registered_before),
        120,
        diagnose=lambda: str(flink.rest("GET", "/taskmanagers")),
    )
    assert flink.rest("GET", "/overview")["taskmanagers"] == flink.settings.flink.taskmanagers
    wait_until("the cluster healthy again", flink.healthy, 60)
