"""Topic names: the only place they are spelled."""

from enum import StrEnum


class Topic(StrEnum):
    CLICKS = "clicks"
    LISTINGS = "listings"
    ITEM_DELTAS = "item-deltas"
    DEAD_LETTERS = "dead-letters"
    INDEX_DECLARATIONS = "index-declarations"
    IMPRESSIONS = "impressions"
