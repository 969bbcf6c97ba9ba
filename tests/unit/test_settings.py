from pathlib import Path

from nrtrec.core.settings import Settings


def test_environment_overrides_nested_settings(monkeypatch):
    monkeypatch.setenv("NRTREC_KAFKA__PORT", "19092")
    monkeypatch.setenv("NRTREC_RUN_DIR", "/tmp/elsewhere")
    monkeypatch.setenv("NRTREC_TOKEN", "s3cret")
    s = Settings()
    assert s.kafka.bootstrap_servers == "127.0.0.1:19092"
    assert s.run_dir == Path("/tmp/elsewhere")
    assert s.token == "s3cret"


def test_defaults_bind_loopback_only():
    s = Settings()
    hosts = {s.kafka.host, s.flink.host, s.triton.host, s.redis.host, s.couchbase.host}
    assert hosts == {"127.0.0.1"}
