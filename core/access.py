"""Credentials derived from the run's bearer token, one per admin surface that cannot take the
token itself, so that a leaked one opens only its own door.

``derived_secret(token, "triton-model-control")`` is the key Triton checks on its restricted
APIs (model load and unload, the repository index, shared memory, traces, logging): nobody but
the token's holder can change what Triton serves.
"""

from __future__ import annotations

import hashlib
import hmac

TRITON_ADMIN_HEADER = "nrtrec-admin-key"
# Triton's gRPC server looks for a restricted key in a header of this prefix.
TRITON_GRPC_PREFIX = "triton-grpc-protocol-"
TRITON_RESTRICTED_APIS = ("model-repository", "shared-memory", "trace", "logging")


def derived_secret(token: str, purpose: str) -> str:
    """HMAC-SHA256 of ``purpose`` under ``token``, in hex: stable for a token, not reversible."""
    return hmac.new(token.encode(), f"nrtrec:{purpose}".encode(), hashlib.sha256).hexdigest()


def triton_admin_key(token: str) -> str:
    return derived_secret(token, "triton-model-control")


def triton_admin_headers(token: str | None, protocol: str = "grpc") -> dict[str, str]:
    """The header Triton's restricted APIs want over ``protocol`` ("grpc" or "http"), for a
    run with ``token``; none without one."""
    if token is None:
        return {}
    name = TRITON_GRPC_PREFIX + TRITON_ADMIN_HEADER if protocol == "grpc" else TRITON_ADMIN_HEADER
    return {name: triton_admin_key(token)}
