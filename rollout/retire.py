"""``nrtrec models retire M``: a version out of service, in steps that are each safe to redo.

1. Refused while M is the only serving version, or an experiment arm names it.
2. ``retired``: M recorded as retired (``retired``), so that ``nrtrec up`` neither loads it on
   Triton nor creates its index again, whatever a kill leaves undone.
3. ``held back``: the version-M index held back on every shard (declared ``building``); then
   the app's and the user job's cached listings expire, so nothing answers from M or writes M
   vectors any more, while its index and encoders are still all there.
4. ``encoders``: M unloaded from Triton; the item job stops publishing its deltas (a delta
   already on ``item-deltas`` for M is skipped by the nodes once M is dropped).
5. ``index``: the version-M index dropped on every shard (declared ``dropped``); a bulk load
   of M that outlived the retire is refused by the nodes.
6. ``users``: each user's M vector removed where the record holds one of a newer serving
   version; a user with nothing newer keeps it (nothing serves it; it ages out with the record).
7. The rollout's journal and snapshots of M removed: rolling M out again starts afresh.

Rerunning after a kill redoes what is left: holding back a held-back index, unloading an
unloaded version, dropping a dropped index and removing a removed vector change nothing.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass

from nrtrec.core.settings import Settings
from nrtrec.inference.lifecycle import ModelLifecycle
from nrtrec.query_node.client import BlockingQueryClient, NotFound
from nrtrec.rollout.errors import RolloutError
from nrtrec.rollout.journal import rollout_dir, rollout_snapshots_dir
from nrtrec.rollout.retired import RetiredVersions
from nrtrec.rollout.roll_out import Say
from nrtrec.rollout.users import DropPass, Progress, drop_user_vectors
from nrtrec.user_store import StoreError, open_store


@dataclass(frozen=True)
class RetireReport:
    model_version: int
    still_serving: list[int]
    users: DropPass


def retire(
    settings: Settings, version: int, lifecycle: ModelLifecycle, say: Say, progress: Progress
) -> RetireReport:
    name = settings.query_node.index_name
    arms = [a.name for a in settings.experiment.arms if a.model_version == version]
    if arms:
        raise RolloutError(f"v{version} is served by experiment arm(s) {arms}: end it first")
    with BlockingQueryClient.of(settings, timeout_s=30.0) as gateway:
        listing = [i for i in gateway.indexes() if i.name == name]
        others = sorted(
            i.model_version for i in listing if i.serving and i.model_version != version
        )
        if not others:
            raise RolloutError(
                f"v{version} is the only serving version of {name}: roll out another first"
            )
        RetiredVersions(settings).add(version)
        if any(i.model_version == version for i in listing):
            gateway.hold_back(name, version)
            say(f"index {name} v{version} held back on every shard; serving {others}")
            # The app and the user job read the serving versions through caches this old.
            time.sleep(max(settings.streaming.versions_ttl_s, settings.app.versions_ttl_s) + 1.0)
        if version in lifecycle.served():
            lifecycle.unload(version)
        say(f"v{version} unloaded from Triton; serving {sorted(lifecycle.served())}")
        try:
            gateway.drop_index(name, version)
            say(f"index {name} v{version} dropped on every shard")
        except NotFound:
            say(f"index {name} v{version} was dropped already")
    try:
        with open_store(settings) as store:
            users = drop_user_vectors(
                store,
                version,
                serving=set(others),
                batch=settings.streaming.flush_size,
                progress=progress,
            )
    except StoreError as e:
        raise RolloutError(f"removing v{version} user vectors: {e}; rerun to resume") from e
    say(
        f"v{version} vectors removed from {users.removed} of {users.users} users; "
        f"{users.kept} kept (no newer serving version)"
    )
    for leftover in (rollout_dir(settings, version), rollout_snapshots_dir(settings, version)):
        shutil.rmtree(leftover, ignore_errors=True)
    return RetireReport(version, others, users)
