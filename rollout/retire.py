"""``nrtrec models retire M``: a version out of service, in steps that are each safe to redo.

1. Refused while M is the only serving version, or an experiment arm names it.
2. ``encoders``: M unloaded from Triton; the item job stops publishing its deltas (a delta
   already on ``item-deltas`` for M is skipped by the nodes once M is dropped).
3. ``index``: the version-M index dropped on every shard (declared ``dropped``). The app's
   next listing leaves it out; a search that races the drop gets 404 and the app tries the
   user's next version.
4. ``users``: each user's M vector removed where the record holds a newer one; a user with
   nothing newer keeps it (nothing serves it; it ages out with the record).

Rerunning after a kill redoes what is left: unloading an unloaded version, dropping a dropped
index and removing a removed vector change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from nrtrec.core.settings import Settings
from nrtrec.inference.lifecycle import ModelLifecycle
from nrtrec.query_node.client import BlockingQueryClient, NotFound
from nrtrec.rollout.errors import RolloutError
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
                store, version, batch=settings.streaming.flush_size, progress=progress
            )
    except StoreError as e:
        raise RolloutError(f"removing v{version} user vectors: {e}; rerun to resume") from e
    say(
        f"v{version} vectors removed from {users.removed} of {users.users} users; "
        f"{users.kept} kept (no newer version)"
    )
    return RetireReport(version, others, users)
