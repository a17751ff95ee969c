# -*- test-case-name: txstore.test.unit.test_replication_frames -*-
"""
The missing check's decision, pure: given what the sender offers for one object and what the
receiver holds, what the receiver wants sent (see docs/replication.rst for the rules).
"""

from __future__ import annotations

from collections.abc import Mapping

from txstore.common.timestamps import Timestamp
from txstore.replication.frames import ProtocolError
from txstore.storage.partitions import ObjectFiles

WANT_DATA = "data"
WANT_META = "meta"
WANT_TOMBSTONE = "ts"
OFFER_KEYS = (WANT_DATA, WANT_META, WANT_TOMBSTONE)


def parse_offer(offer: object) -> dict[str, Timestamp]:
    """An offer's timestamps; ProtocolError for anything that is not a valid offer."""
    if not isinstance(offer, Mapping) or not offer or set(offer) - set(OFFER_KEYS):
        raise ProtocolError(f"not an offer: {offer!r}")
    if (WANT_DATA in offer) == (WANT_TOMBSTONE in offer):
        raise ProtocolError("an offer names either data or a tombstone")
    if WANT_META in offer and WANT_DATA not in offer:
        raise ProtocolError("an offered .meta needs its data")
    try:
        return {key: Timestamp.parse(value) for key, value in offer.items()}
    except (TypeError, ValueError):
        raise ProtocolError(f"bad timestamp in offer {offer!r}") from None


def decide(offered: Mapping[str, Timestamp], local: ObjectFiles | None) -> tuple[list[str], bool]:
    """``(wanted parts, receiver holds something newer)`` for one object."""
    ld = local.data.timestamp if local and local.data else None
    lm = local.meta.timestamp if local and local.meta else None
    lts = local.tombstone.timestamp if local and local.tombstone else None
    current = max((t for t in (ld, lts) if t is not None), default=None)
    od, om, ots = offered.get(WANT_DATA), offered.get(WANT_META), offered.get(WANT_TOMBSTONE)
    wants = []
    if ots is not None and (current is None or ots > current):
        wants.append(WANT_TOMBSTONE)
    if od is not None and (current is None or od > current):
        wants.append(WANT_DATA)
    if om is not None:
        data_after = od if WANT_DATA in wants else (ld if ld is not None and lts is None else None)
        if data_after is not None and om > data_after and (lm is None or om > lm):
            wants.append(WANT_META)
    theirs = max(offered.values())
    mine = max((t for t in (ld, lm, lts) if t is not None), default=None)
    return wants, mine is not None and mine > theirs
