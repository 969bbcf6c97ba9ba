"""``POST /v1/indexes/{name}/load``: serve a snapshot built elsewhere (the bulk backfill).

The snapshot is read beside the live index, then swapped in: searches never stop, those in
flight finish on the old index. It is saved into this node's data dir, so a restart serves it,
and with the ``item-deltas`` consumer running its offsets become where the consumer replays
from, so the deltas that came after the snapshot apply to it too.

A version held back (building) stays so: only a promote serves it. A version declared dropped
is refused (409): a bulk load that outlived a retire must not bring the retired index back.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from nrtrec.ann import AnnError, Snapshot, SnapshotStore, VectorIndex
from nrtrec.query_node.declarations import Declarations
from nrtrec.query_node.deltas import Snapshotter
from nrtrec.query_node.errors import QueryNodeError
from nrtrec.query_node.http.deps import TOKEN_REQUIRED, IndexNameParam, Node, NodeDeclarations
from nrtrec.query_node.http.errors import error_response
from nrtrec.query_node.node import QueryNode
from nrtrec.schemas.query_api import LoadedIndex, LoadRequest, LoadResult

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/indexes", tags=["indexes"])


async def _snapshotter(request: Request) -> Snapshotter:
    return request.state.snapshotter


NodeSnapshotter = Annotated[Snapshotter, Depends(_snapshotter)]


@router.post(
    "/{name}/load",
    dependencies=TOKEN_REQUIRED,
    response_model=LoadResult,
    responses={
        404: {"description": "no snapshot there"},
        409: {"description": "the version was dropped"},
        422: {"description": "unreadable"},
    },
)
def load(
    name: IndexNameParam,
    body: LoadRequest,
    node: Node,
    snapshotter: NodeSnapshotter,
    declarations: NodeDeclarations,
) -> LoadResult | JSONResponse:
    if node.settings.token is None:
        # Reading files the caller names is for a node whose writes are closed, and only then.
        return error_response(
            403, "forbidden", "loading snapshots needs a node started with a token"
        )
    try:
        source = _inside_import_root(node, body)
    except PermissionError as e:
        return error_response(403, "outside_import_root", str(e))
    try:
        found = _read(node, name, body, source)
    except FileNotFoundError as e:
        return error_response(404, "not_found", str(e))
    except (QueryNodeError, AnnError, OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        return error_response(422, "invalid_snapshot", f"{type(e).__name__}: {e}")
    if dropped := _dropped(declarations, found):
        return error_response(409, "dropped", dropped)
    loaded = []
    for index, snapshot in found:
        saved = snapshotter.load(index, snapshot.offsets)
        if dropped := _dropped(declarations, [(index, snapshot)]):
            # The drop was applied while this snapshot was read or swapped: apply it again.
            node.drop_index(index.name, index.model_version)
            return error_response(409, "dropped", dropped)
        log.info(
            "swapped in %s v%d (%d items) from %s",
            index.name,
            index.model_version,
            index.count,
            snapshot.path,
        )
        loaded.append(
            LoadedIndex(
                name=index.name,
                model_version=index.model_version,
                count=saved.count,
                source=str(snapshot.path),
                snapshot_id=saved.snapshot_id,
                offsets=saved.offsets,
            )
        )
    return LoadResult(loaded=loaded)


def _dropped(
    declarations: Declarations | None, found: list[tuple[VectorIndex, Snapshot]]
) -> str | None:
    """Why a load is refused: a version of ``found`` is declared dropped (None: none is)."""
    if declarations is None:
        return None
    for index, _ in found:
        if declarations.is_dropped(index.name, index.model_version):
            return (
                f"{index.name!r} v{index.model_version} was dropped (retired); "
                "create it again before loading a snapshot of it"
            )
    return None


def _inside_import_root(node: QueryNode, body: LoadRequest) -> Path:
    """The folder asked for, resolved (``..`` and links followed); ``PermissionError`` unless
    it lies below the node's import root (``query_node.import_root``)."""
    root = node.settings.snapshot_import_root().resolve()
    asked = Path(body.path if body.path is not None else body.snapshot_dir or "")
    resolved = asked.resolve()
    if not resolved.is_relative_to(root):
        raise PermissionError(f"{asked} is outside this node's import root {root}")
    return resolved


def _read(
    node: QueryNode, name: str, body: LoadRequest, source: Path
) -> list[tuple[VectorIndex, Snapshot]]:
    settings = node.settings.query_node
    if body.path is not None:
        path = source
        if not (path / "meta.json").is_file():
            raise FileNotFoundError(f"no snapshot at {body.path} (no meta.json)")
        # The folder itself, not the newest of its index: the caller chose this one.
        found = [SnapshotStore(path.parent, settings).load_path(path)]
    else:
        store = SnapshotStore(source, settings)
        stored = store.keys()  # (name, version) pairs
        versions = [v for n, v in stored if n == name]
        if body.model_version is not None:
            versions = [v for v in versions if v == body.model_version]
        if not versions:
            which = "" if body.model_version is None else f" version {body.model_version}"
            raise FileNotFoundError(f"no snapshot of {name!r}{which} in {body.snapshot_dir}")
        found = [store.load(name, v) for v in versions]
    for index, snapshot in found:
        if index.name != name:
            raise ValueError(f"{snapshot.path} is a snapshot of {index.name!r}, not {name!r}")
        if body.model_version is not None and index.model_version != body.model_version:
            raise ValueError(
                f"{snapshot.path} is version {index.model_version}, not {body.model_version}"
            )
    return found
