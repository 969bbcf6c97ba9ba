from pathlib import Path

import yaml

from nrtrec.core.settings import Settings
from nrtrec.deploy.services import default_services

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_every_local_runner_service_has_a_compose_counterpart():
    labelled = {
        svc.get("labels", {}).get("nrtrec.local-runner") for svc in _compose()["services"].values()
    }
    missing = {s.name for s in default_services(Settings())} - labelled
    assert not missing, f"docker-compose.yml has no service labelled for {sorted(missing)}"


def test_compose_services_are_well_formed():
    services = _compose()["services"]
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, f"{name} has neither image nor build"
        for dep in svc.get("depends_on", []):
            assert dep in services, f"{name} depends on unknown service {dep}"
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        dockerfile = svc.get("build", {}).get("dockerfile")
        if dockerfile:
            assert (ROOT / dockerfile).is_file(), f"{name}: {dockerfile} does not exist"


def test_compose_refuses_to_start_without_a_token_and_locks_model_control():
    """``${VAR:?message}``: compose stops with the message when VAR is unset or empty."""
    services = _compose()["services"]
    writers = ["gateway", *(n for n in services if n.startswith("query-node-"))]
    assert all("NRTREC_TOKEN" in services[n]["environment"] for n in writers)
    for name, svc in services.items():
        token = svc.get("environment", {}).get("NRTREC_TOKEN")
        if token is not None:
            assert token.startswith("${NRTREC_TOKEN:?"), f"{name} defaults NRTREC_TOKEN: {token}"
    triton = services["triton"]["command"]
    for option in ("--http-restricted-api=", "--grpc-restricted-protocol="):
        assert option + "model-repository," in triton
    assert "${NRTREC_TRITON_ADMIN_KEY:?" in triton


def test_compose_prometheus_records_the_local_runners_rules():
    import json

    from nrtrec.deploy.services.prometheus import PrometheusService

    committed = json.loads((ROOT / "deploy/docker/nrtrec-rules.yml").read_text())
    assert committed == PrometheusService.recording_rules(), (
        "regenerate deploy/docker/nrtrec-rules.yml"
    )
