# -*- test-case-name: txstore.test.unit.test_replication_frames -*-
"""
The session's state machine: which frame may come next, from which side.

Both sides run the same machine and feed it every frame they send and every frame they
receive, so a peer that skips a step, answers twice or talks out of turn is caught at the
frame that breaks the rules (a `ProtocolError`) instead of confusing the code that follows.
No I/O here: the sender and the receiver protocols drive it.
"""

from __future__ import annotations

from enum import Enum

from txstore.replication.frames import FrameType, ProtocolError, Record

S = "sender"
R = "receiver"


class State(Enum):
    START = "start"
    HELLO_SENT = "hello sent"
    OPEN = "open"
    HASHES_ASKED = "hashes asked"
    HASHED = "hashed"
    SURVEYING = "surveying"
    OFFERING = "offering"
    OFFERED = "offered"
    UPDATING = "updating"
    IN_PUT = "receiving a PUT body"
    DB_ASKED = "database state asked"
    DB_UPDATING = "sending database rows"
    IN_DB_FILE = "receiving a database file"
    UPDATES_DONE = "updates done"
    RECEIVER_ENDED = "receiver ended"
    CLOSED = "closed"


F = FrameType
_TRANSITIONS: dict[tuple[State, str, FrameType], State] = {
    (State.START, S, F.HELLO): State.HELLO_SENT,
    (State.HELLO_SENT, R, F.READY): State.OPEN,
    (State.OPEN, S, F.GET_HASHES): State.HASHES_ASKED,
    (State.HASHES_ASKED, R, F.HASHES): State.HASHED,
    (State.OPEN, S, F.SURVEY): State.SURVEYING,
    (State.SURVEYING, R, F.SURVEYED): State.SURVEYING,
    (State.SURVEYING, R, F.SURVEY_END): State.OPEN,
    (State.OPEN, S, F.DB_SYNC): State.DB_ASKED,
    (State.DB_ASKED, R, F.DB_STATE): State.DB_UPDATING,
    (State.DB_UPDATING, S, F.DB_ROWS): State.DB_UPDATING,
    (State.DB_UPDATING, S, F.DB_FILE): State.IN_DB_FILE,
    (State.IN_DB_FILE, S, F.DATA): State.IN_DB_FILE,
    (State.IN_DB_FILE, S, F.DB_FILE_END): State.DB_UPDATING,
    (State.DB_UPDATING, S, F.UPDATES_END): State.UPDATES_DONE,
    (State.UPDATING, S, F.PUT): State.IN_PUT,
    (State.IN_PUT, S, F.DATA): State.IN_PUT,
    (State.IN_PUT, S, F.PUT_END): State.UPDATING,
    (State.UPDATING, S, F.POST): State.UPDATING,
    (State.UPDATING, S, F.DELETE): State.UPDATING,
    (State.UPDATING, S, F.UPDATES_END): State.UPDATES_DONE,
    (State.UPDATES_DONE, R, F.END): State.RECEIVER_ENDED,
    (State.RECEIVER_ENDED, S, F.END): State.CLOSED,
}
for _state in (State.OPEN, State.HASHED):
    _TRANSITIONS[(_state, S, F.OFFER)] = State.OFFERING
    _TRANSITIONS[(_state, S, F.OFFER_END)] = State.OFFERED
    _TRANSITIONS[(_state, S, F.END)] = State.CLOSED
_TRANSITIONS[(State.DB_UPDATING, S, F.END)] = State.CLOSED
_TRANSITIONS[(State.OFFERING, S, F.OFFER)] = State.OFFERING
_TRANSITIONS[(State.OFFERING, S, F.OFFER_END)] = State.OFFERED


class SessionMachine:
    """Feed it ``(side, record)`` for every frame, sent or received, in order."""

    def __init__(self) -> None:
        self.state = State.START
        self._unanswered_offers = 0

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    def step(self, side: str, item: Record) -> State:
        kind = item.type
        if self.state is State.CLOSED:
            raise ProtocolError(f"{kind.name} from the {side} after the session ended")
        if kind is F.ERROR:
            self.state = State.CLOSED
            return self.state
        if kind in (F.WANT, F.WANT_END) and side == R:
            return self._answer(kind)
        following = _TRANSITIONS.get((self.state, side, kind))
        if following is None:
            raise ProtocolError(f"{kind.name} from the {side} is not allowed when {self.state.value}")
        if kind is F.OFFER:
            self._unanswered_offers += 1
        self.state = following
        return self.state

    def _answer(self, kind: FrameType) -> State:
        if self.state not in (State.OFFERING, State.OFFERED):
            raise ProtocolError(f"{kind.name} from the receiver is not allowed when {self.state.value}")
        if kind is F.WANT:
            if not self._unanswered_offers:
                raise ProtocolError("WANT without an OFFER to answer")
            self._unanswered_offers -= 1
            return self.state
        if self.state is not State.OFFERED or self._unanswered_offers:
            raise ProtocolError("WANT_END before every OFFER was answered")
        self.state = State.UPDATING
        return self.state
