"""The Kubernetes path for the streaming jobs (``deploy/kubernetes``), checked against what the
local runner runs: no Kubernetes here, so the manifest is held to the code instead."""

import json
import re
from pathlib import Path

import yaml

from nrtrec.core.settings import FlinkSettings, Settings
from nrtrec.deploy.services.flink import FlinkService, pyflink_version
from nrtrec.streaming.submit import JOBS

ROOT = Path(__file__).resolve().parents[2]


def _documents() -> list[dict]:
    text = (ROOT / "deploy/kubernetes/flink-deployments.yaml").read_text()
    return [d for d in yaml.safe_load_all(text) if d]


def _settings() -> Settings:
    (config,) = [d for d in _documents() if d["kind"] == "ConfigMap"]
    return Settings.model_validate(json.loads(config["data"]["settings.json"]))


def _deployments() -> dict[str, dict]:
    return {
        d["metadata"]["name"]: d["spec"] for d in _documents() if d["kind"] == "FlinkDeployment"
    }


def _arg(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_the_settings_the_jobs_read_are_valid_settings():
    settings = _settings()
    assert settings.kafka.bootstrap_servers == "nrtrec-kafka-bootstrap:9092"
    assert settings.streaming.parallelism == 2


def test_one_flink_deployment_per_streaming_job_running_its_script():
    deployments = _deployments()
    assert sorted(deployments) == sorted(job.name for job in JOBS)
    settings = _settings()
    for job in JOBS:
        spec = deployments[job.name]["job"]
        args = spec["args"]
        assert Path(_arg(args, "-py")).name == job.script.name
        assert job.script.is_file()
        assert _arg(args, "--name") == job.name
        assert _arg(args, "--settings") == "/etc/nrtrec/settings.json"
        # The operator starts the job at spec.parallelism; the job's own setting says the same.
        assert spec["parallelism"] == settings.streaming.parallelism
        assert spec["upgradeMode"] == "savepoint"


def test_the_manifest_runs_the_flink_and_connector_versions_the_local_runner_pins():
    version = pyflink_version()
    major, minor = version.split(".")[:2]
    connector = FlinkSettings().kafka_connector_version
    dockerfile = (ROOT / "deploy/docker/flink.Dockerfile").read_text()
    assert re.search(rf"^FROM flink:{re.escape(version)}-", dockerfile, re.M)
    assert f"apache-flink=={version}" in dockerfile
    assert f"flink-sql-connector-kafka-{connector}.jar" in dockerfile
    for name, spec in _deployments().items():
        assert spec["flinkVersion"] == f"v{major}_{minor}", name
        assert spec["job"]["jarURI"].endswith(f"/flink-python-{version}.jar"), name
        assert _arg(spec["job"]["args"], "--jars").endswith(f"-{connector}.jar"), name


def test_the_manifest_configures_python_as_the_local_cluster_does(tmp_path):
    local = FlinkService(Settings(run_dir=tmp_path)).flink_config()
    for name, spec in _deployments().items():
        conf = spec["flinkConfiguration"]
        for key in (
            "python.execution-mode",
            "classloader.parent-first-patterns.additional",
            "python.fn-execution.bundle.time",
            "state.backend.type",
        ):
            assert str(conf[key]) == str(local[key]), f"{name}: {key}"
        assert int(conf["taskmanager.numberOfTaskSlots"]) == FlinkSettings().taskmanager_slots
