"""What the app answers: personalized recommendations, similar items, recent views.

A user back after a break (their newest click older than ``app.session_gap_s``) gets the
popularity prior (:mod:`.prior`): the search's hits and the popular pool, ranked by search
score plus the prior's weight times each item's prior; the answer says the weight
(``popularity_prior``) and each item's search score (``similarity``). Fresh listings get the
fresh boost (:mod:`.fresh`), found among the fresh listings the app keeps (:mod:`.fresh_pool`),
and the answer marks them (``fresh``, ``fresh_boost``). :mod:`.ranking` blends the three.

Version safety (DESIGN.md, "Embedding versions"): a vector is only ever searched against the
index of its own ``model_version``. A user's versions are tried newest first; the first with a
live index answers (``personalized`` when it is the user's newest, ``older-version`` otherwise);
with none, or with no vector at all, the answer is the popular items (``popular``).

Under an experiment (``arms``) the user's arm names a version that is tried first, the others
after it as above, or is the control (the popular items). When the arm's version does not
answer, the fallback is as without an experiment and ``reasons`` says so (``arm_fallback``).

Every call to the store or the gateway is bounded by the request's budget (``Timings``). A
failure never fails the request: the answer falls back to what is available, and ``reasons``
says what happened (``degraded`` in the response).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from nrtrec.core.settings import Settings
from nrtrec.query_node.client import NotFound, QueryApiError, QueryReader, Refused, Unavailable
from nrtrec.recommender_app.arms import DEFAULT, Arm
from nrtrec.recommender_app.fresh import FreshBoost
from nrtrec.recommender_app.fresh_pool import FreshListings
from nrtrec.recommender_app.models import DEFAULT_ARM
from nrtrec.recommender_app.popular import PopularItems
from nrtrec.recommender_app.prior import PopularityPrior
from nrtrec.recommender_app.ranking import Prior, rank
from nrtrec.recommender_app.store import AsyncStore
from nrtrec.recommender_app.timing import Timings
from nrtrec.recommender_app.versions import Listing, LiveVersions
from nrtrec.schemas import Source
from nrtrec.schemas.filters import Filter
from nrtrec.schemas.query_api import Metric, SearchHit, SearchRequest
from nrtrec.schemas.records import UserVectors
from nrtrec.user_store import StoreError

log = logging.getLogger(__name__)

Json = dict[str, Any]


class _GiveUp(Exception):
    """The gateway could not answer a search; the reason is already noted."""


@dataclass
class Answer:
    items: list[Json]  # {id, score, title?}
    model_version: int | None
    source: Source
    reasons: list[str] = field(default_factory=list)
    # The experiment arm it was served under (``arms``); "default" outside an experiment.
    arm: str = DEFAULT_ARM
    # Set by the route for a list it logs as an impression.
    request_id: str | None = None
    # Seconds since the newest click behind the user vector searched with (personalized only).
    vector_age_s: float | None = None
    # The popularity prior's weight in the items' scores (0: scores are search scores).
    popularity_prior: float = 0.0
    # The boost in the scores of the items marked fresh (0: none is).
    fresh_boost: float = 0.0
    # The search's best score (the drift signal), whatever a prior did to the order.
    top_similarity: float | None = None


def _arm_missed(arm: Arm, record: UserVectors, listing: Listing | None) -> str:
    """Why ``arm``'s version did not answer (the user got another version, or popular items)."""
    v = arm.model_version
    if record.newest(v) is None:
        why = f"the user has no v{v} vector"
    elif listing is not None and v not in listing.by_version:
        why = f"v{v} is not served"
    else:
        why = f"v{v} did not answer"
    return f"arm_fallback: arm {arm.name!r} serves v{v}; {why}"


def _item(hit: SearchHit) -> Json:
    title = (hit.attributes or {}).get("title")
    item: Json = {"id": hit.id, "score": hit.score}
    if title is not None:
        item["title"] = str(title)
    return item


class Recommender:
    def __init__(
        self,
        settings: Settings,
        store: AsyncStore,
        gateway: QueryReader,
        versions: LiveVersions,
        popular: PopularItems,
        fresh_listings: FreshListings,
    ):
        self._app = settings.app
        # A search asks for k plus the user's recent items, at most what a node answers.
        self._search_max_k = settings.query_node.max_k
        self._store = store
        self._gateway = gateway
        self._versions = versions
        self._popular = popular
        self._fresh_listings = fresh_listings
        self._prior = PopularityPrior(settings.app.popularity_prior, settings.app.session_gap_s)
        self._fresh = FreshBoost(settings.app.fresh_boost, settings.app.fresh_listing_s)

    # ---- GET /v1/users/{user_id}/recommendations ------------------------------------------

    async def for_user(
        self, user_id: str, k: int, filter: Filter, t: Timings, arm: Arm = DEFAULT
    ) -> Answer:
        """The user's list under ``arm``: its model version tried first (then the others,
        newest first, as without an experiment), or, for the control, the popular items."""
        reasons: list[str] = []
        try:
            with t.stage("store"):
                record = await self._store.get(user_id, t.budget(self._app.store_timeout_s))
        except StoreError as e:
            reasons.append(f"store_unavailable: {e}")
            return await self._popular_answer(k, (), filter, t, reasons, arm)
        if record is None:
            # No history (or not yet): the popular items, nothing degraded.
            return await self._popular_answer(k, (), filter, t, reasons, arm)
        viewed = set(record.recent_items)
        if arm.control:
            # Recent views are left out here too: the arms differ only in how they rank.
            return await self._popular_answer(k, viewed, filter, t, reasons, arm)
        listing = await self._listing(t, reasons)
        answer = None
        if listing is not None:
            answer = await self._personalized(record, listing, k, viewed, filter, t, reasons, arm)
        if answer is None:
            answer = await self._popular_answer(k, viewed, filter, t, reasons, arm)
        if arm.model_version is not None and answer.model_version != arm.model_version:
            answer.reasons.append(_arm_missed(arm, record, listing))
        return answer

    async def _personalized(
        self,
        record: UserVectors,
        listing: Listing,
        k: int,
        viewed: set[str],
        filter: Filter,
        t: Timings,
        reasons: list[str],
        arm: Arm,
    ) -> Answer | None:
        """The first of the user's versions (the arm's first, then newest first) with a live
        index that answers; None when none does (popular items then)."""
        newest = record.versions[0].model_version
        ordered = record.versions
        if arm.model_version is not None:
            # Stable: the arm's version first, the others still newest first.
            ordered = sorted(ordered, key=lambda v: v.model_version != arm.model_version)
        for user_vector in ordered:
            version = user_vector.model_version
            live = listing.by_version.get(version)
            if live is None:
                continue
            if live.dim != len(user_vector.vector):
                log.warning(
                    "user %s: vector v%d has dimension %d, the index %d; skipped",
                    record.user_id,
                    version,
                    len(user_vector.vector),
                    live.dim,
                )
                continue
            wanted = min(k + len(viewed), self._search_max_k)
            # Scores add to a similarity (larger is nearer), never to a distance.
            similarity = not Metric(live.metric).smaller_is_nearer
            now = time.time()
            try:
                hits = await self._search(user_vector.vector, version, wanted, filter, t, reasons)
            except _GiveUp:
                break
            if hits is None:
                continue
            source = Source.PERSONALIZED if version == newest else Source.OLDER_VERSION
            age = max(0.0, now - user_vector.source_ts / 1000)
            top = next((h.score for h in hits if h.id not in viewed), None)
            # Away since the newest click behind any of the user's vectors: an older version's
            # vector may lag behind (its items not embedded yet), the user has not.
            away = max(0.0, now - max(v.source_ts for v in record.versions) / 1000)
            weight = self._prior.weight_after(away) if similarity else 0.0
            pool = self._popular.current.by_version.get(version)
            if weight and pool is None:
                weight = 0.0  # no pool vectors yet at this version: no prior
            if similarity:
                kept, blended = rank(
                    hits, user=user_vector.vector, metric=live.metric,
                    prior=Prior(weight, pool) if weight and pool is not None else None,
                    fresh=self._fresh, fresh_pool=self._fresh_listings.current.get(version),
                    now_s=now, k=k, viewed=viewed, filter=filter,
                )  # fmt: skip
            else:
                kept, blended = [_item(h) for h in hits if h.id not in viewed][:k], False
            boosted = blended and any(item.get("fresh") for item in kept)
            return Answer(
                kept,
                version,
                source,
                reasons,
                arm.name,
                vector_age_s=age,
                popularity_prior=weight,
                fresh_boost=self._fresh.boost if boosted else 0.0,
                top_similarity=top,
            )
        return None

    # ---- GET /v1/items/{item_id}/similar ---------------------------------------------------

    async def similar(self, item_id: str, k: int, filter: Filter, t: Timings) -> Answer:
        reasons: list[str] = []
        listing = await self._listing(t, reasons)
        if listing is None:
            return await self._popular_answer(k, {item_id}, filter, t, reasons)
        live = listing.newest_first()
        for live_index in live:
            version = live_index.model_version
            try:
                with t.stage("search"):
                    found = await self._gateway.items(
                        self._app.index_name,
                        [item_id],
                        version,
                        timeout_s=t.budget(self._app.search_timeout_s),
                    )
            except NotFound:
                self._versions.invalidate()
                continue
            except QueryApiError as e:
                reasons.append(f"search_unavailable: {e}")
                break
            if not found.items:
                if found.partial:
                    # The item's own shard did not answer: it may well be there.
                    reasons.append(f"partial_results: shard(s) {found.failed_shards} down")
                    break
                continue  # not in this version: try the next older one
            vector = found.items[0].vector
            try:
                hits = await self._search(vector, version, k + 1, filter, t, reasons)
            except _GiveUp:
                break
            if hits is None:
                continue
            kept = [_item(h) for h in hits if h.id != item_id][:k]
            newest = version == live[0].model_version
            source = Source.PERSONALIZED if newest else Source.OLDER_VERSION
            return Answer(kept, version, source, reasons)
        return await self._popular_answer(k, {item_id}, filter, t, reasons)

    # ---- GET /v1/users/{user_id}/recent-views ----------------------------------------------

    async def recent_views(self, user_id: str, t: Timings) -> tuple[list[Json], list[str]]:
        reasons: list[str] = []
        try:
            with t.stage("store"):
                record = await self._store.get(user_id, t.budget(self._app.store_timeout_s))
        except StoreError as e:
            return [], [f"store_unavailable: {e}"]
        if record is None or not record.recent_items:
            return [], reasons
        ids = record.recent_items[: self._app.recent_shown]
        titles = await self.titles(ids, t, reasons)
        return [{"id": i, "title": titles.get(i)} for i in ids], reasons

    async def titles(self, ids: list[str], t: Timings, reasons: list[str]) -> dict[str, str]:
        """Titles of ``ids`` at the newest live version (those found)."""
        listing = await self._listing(t, reasons)
        if listing is None or not listing.by_version or not ids:
            return {}
        newest = listing.newest_first()[0].model_version
        try:
            with t.stage("search"):
                found = await self._gateway.items(
                    self._app.index_name,
                    ids,
                    newest,
                    timeout_s=t.budget(self._app.search_timeout_s),
                )
        except QueryApiError as e:
            reasons.append(f"search_unavailable: {e}")
            return {}
        if found.partial:
            reasons.append(f"partial_results: shard(s) {found.failed_shards} did not answer")
        return {
            item.id: str(item.attributes["title"])
            for item in found.items
            if "title" in item.attributes
        }

    # ---- the steps --------------------------------------------------------------------------

    async def _listing(self, t: Timings, reasons: list[str]) -> Listing | None:
        try:
            with t.stage("search"):
                return await self._versions.get(t.budget(self._app.search_timeout_s))
        except QueryApiError as e:
            reasons.append(f"search_unavailable: {e}")
            return None

    async def _search(
        self,
        vector: list[float],
        version: int,
        k: int,
        filter: Filter,
        t: Timings,
        reasons: list[str],
    ) -> list[SearchHit] | None:
        """The hits; None when the version's index is gone (try another). Raises ``_GiveUp``
        when the gateway could not answer (no vector search then: popular items)."""
        request = SearchRequest(
            vector=vector,
            k=k,
            model_version=version,
            include_attributes=True,
            filter=filter.to_json(),
        )
        try:
            with t.stage("search"):
                answer = await self._gateway.search(
                    self._app.index_name,
                    request,
                    timeout_s=t.budget(self._app.search_timeout_s),
                )
        except NotFound:
            # Dropped since the listing: list again next time, try the next version now.
            self._versions.invalidate()
            return None
        except Refused as e:
            # Our request, not the caller's: a bug or bad data (say, a NaN in a stored vector).
            log.error("search v%d rejected: %s", version, e)
            reasons.append(f"search_rejected: {e}")
            raise _GiveUp from None
        except Unavailable as e:
            reasons.append(f"search_unavailable: {e}")
            raise _GiveUp from None
        if answer.partial:
            reasons.append(
                f"partial_results: shard(s) {answer.failed_shards} did not answer; "
                "their items are missing"
            )
        return answer.items

    async def _popular_answer(
        self,
        k: int,
        exclude: Collection[str],
        filter: Filter,
        t: Timings,
        reasons: list[str],
        arm: Arm = DEFAULT,
    ) -> Answer:
        with t.stage("store"):
            popular = await self._popular.get(t.budget(self._app.store_timeout_s))
        reasons.extend(popular.reasons())
        items: list[Json] = []
        for p in popular.items:
            if p.id in exclude or not filter.matches(p.attributes):
                continue
            item: Json = {"id": p.id, "score": p.views}
            title = (p.attributes or {}).get("title")
            if title is not None:
                item["title"] = str(title)
            items.append(item)
            if len(items) == k:
                break
        return Answer(items, None, Source.POPULAR, reasons, arm.name)
