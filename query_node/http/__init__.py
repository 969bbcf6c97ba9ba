"""The query node's HTTP API (DESIGN.md, "Query node and gateway HTTP API")."""

from nrtrec.query_node.http.app import create_app

__all__ = ["create_app"]
