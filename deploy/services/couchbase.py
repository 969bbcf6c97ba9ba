"""A Couchbase-protocol server for the user-vector store: CouchbaseMock from Maven Central.

The local runner cannot start a real Couchbase Server without Docker, so it starts Couchbase's own
SDK test server instead and the store adapter talks to it with the real Couchbase SDK (memcached
binary protocol: HELLO, SASL, CCCP cluster maps, CAS, sub-document operations).

Why CouchbaseMock and not gocaves: gocaves (the Go test server the Python SDK's own tests use) is
published as GitHub release binaries and as a Go module that the Go module proxy does not serve
(``go mod download -json github.com/couchbaselabs/gocaves@v0.0.1-78`` fails with "403 This module
version is not available", as does every other version and commit), so it cannot be installed
from a package registry. CouchbaseMock is one self-contained jar on Maven Central, run by ``java``.

What works against it with SDK 4.6 (checked): KV get/upsert/insert/replace/remove on the default
collection, CAS mismatch, document-not-found, sub-document lookups and mutations, ping and
``wait_until_ready``. What does not: named collections (the SDK raises UnsupportedOperation), and
``get(..., GetOptions(with_expiry=True))``, which aborts the whole Python process inside the SDK's
C++ core (``std::invalid_argument: stoul``): code that runs against the mock never asks for expiry.
Nor does the mock check credentials on its KV port: the SDK's SASL handshake succeeds with any
username and password, so tests against it cannot prove authentication.

A real cluster is configured with ``NRTREC_COUCHBASE__CONNSTR``; this class only ever describes
the local mock (the code that picks between the two reads ``settings.couchbase.connstr``).

Ports: the mock's REST API listens on ``settings.couchbase.control_port``; CouchbaseMock binds it
on all interfaces (its code has no option for a bind address), so we only ever connect to it
through 127.0.0.1. Its KV (memcached) port is picked by the mock at start, bound on 127.0.0.1, and
read back from the REST API's bucket config; it is not a port we can reserve or check up front.
"""

from __future__ import annotations

import logging
import shutil
from datetime import timedelta
from pathlib import Path

from nrtrec.core.settings import CouchbaseSettings
from nrtrec.deploy.errors import InstallFailed
from nrtrec.deploy.maven import resolve
from nrtrec.deploy.services.base import Process, Service

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


class CouchbaseService(Service):
    name = "couchbase"

    @property
    def jar_dir(self) -> Path:
        return self.cache_dir / f"CouchbaseMock-{self.settings.couchbase.mock_version}"

    @property
    def jar(self) -> Path:
        return self.jar_dir / f"CouchbaseMock-{self.settings.couchbase.mock_version}.jar"

    @property
    def rest_url(self) -> str:
        return f"http://{LOOPBACK}:{self.settings.couchbase.control_port}"

    def install(self) -> None:
        if shutil.which("java") is None:
            raise InstallFailed("`java` is not on PATH; the README's set-up installs OpenJDK 17")
        # The jar is self-contained; resolve() is a no-op once its marker matches.
        coordinates = f"com.couchbase.mock:CouchbaseMock:{self.settings.couchbase.mock_version}"
        resolve([coordinates], self.jar_dir, transitive=False)
        if not self.jar.is_file():
            raise InstallFailed(f"mvn resolved {coordinates} but {self.jar} is missing")

    def processes(self) -> list[Process]:
        cfg = self.settings.couchbase
        argv = [
            "java", "-Xmx256m", "-XX:+UseSerialGC",
            "-jar", str(self.jar),
            # Host written into the cluster map (and the KV listener's bind address).
            "--host", LOOPBACK,
            "--port", str(cfg.control_port),
            "--nodes", "1",
            "--replicas", "0",
            # Clients bootstrap over the memcached port (CCCP), as the SDK 4.x C++ core requires.
            "--cccp",
            "--buckets", f"{cfg.bucket}::couchbase",
        ]  # fmt: skip
        return [Process(self.name, argv, cwd=self.data_dir)]

    def ports(self) -> list[int]:
        # Only the REST port is ours to choose; the KV port is picked by the mock (see module doc).
        return [self.settings.couchbase.control_port]

    def connection_string(self) -> str:
        """``couchbase://127.0.0.1:<kv port>`` of the running mock; raises when it is not up."""
        from nrtrec.user_store.couchbase import discover_connstr

        return discover_connstr(self.settings.couchbase)

    def url(self) -> str:
        """The connection string while the mock runs; otherwise where it would be discovered."""
        try:
            return self.connection_string()
        except Exception:
            return self.rest_url

    def healthy(self) -> bool:
        try:
            connstr = self.connection_string()
        except Exception:
            return False
        try:
            return _sdk_ready(connstr, self.settings.couchbase, timedelta(seconds=5))
        except Exception as exc:
            log.debug("couchbase not ready at %s: %s", connstr, exc)
            return False


def _sdk_ready(connstr: str, cfg: CouchbaseSettings, timeout: timedelta) -> bool:
    """Connect with the real SDK, open the bucket and ping its KV service."""
    from couchbase.auth import PasswordAuthenticator
    from couchbase.cluster import Cluster
    from couchbase.diagnostics import PingState, ServiceType
    from couchbase.options import ClusterOptions, ClusterTimeoutOptions, WaitUntilReadyOptions

    options = ClusterOptions(
        PasswordAuthenticator(cfg.username, cfg.password),
        timeout_options=ClusterTimeoutOptions(
            connect_timeout=timeout, bootstrap_timeout=timeout, kv_timeout=timeout
        ),
    )
    cluster = Cluster(connstr, options)
    try:
        bucket = cluster.bucket(cfg.bucket)
        cluster.wait_until_ready(
            timeout, WaitUntilReadyOptions(service_types=[ServiceType.KeyValue])
        )
        endpoints = bucket.ping().endpoints.get(ServiceType.KeyValue, [])
        return bool(endpoints) and all(e.state == PingState.OK for e in endpoints)
    finally:
        cluster.close()
