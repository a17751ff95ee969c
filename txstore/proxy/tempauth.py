# -*- test-case-name: txstore.test.unit.test_tempauth -*-
"""
TempAuth: Swift's built-in auth system, as pure decisions the HTTP layer turns into responses.

Users come from ``[filter:tempauth]`` in ``proxy.conf`` (`TempAuthUser`). ``GET /auth/v1.0`` with a
user's ``<account>:<user>`` and key hands out a bearer token that lasts ``token_life`` seconds;
every other request is judged by `TempAuth.authorize` from the token's `Identity`, the path and
the container's ACLs (`txstore.proxy.acl`), with Swift's rules:

- accounts outside the reseller prefix (``AUTH_…``) are not ours: denied;
- a ``.reseller_admin`` may do anything in any of our accounts, PUT and DELETE of accounts too
  (except accounts whose name starts with ``.`` after the prefix, kept for the system);
- an ``.admin`` owns its account: anything but PUT or DELETE of the account itself;
- a user the account's ACL (`txstore.proxy.account_acl`) names gets its level there: ``admin``
  as an owner, ``read-write`` anything in its containers and reads of the account,
  ``read-only`` reads;
- everyone else, with or without a token, gets only what the container ACLs grant.

Denials are 401 when there is no identity (log in and try again) and 403 when there is one
(logging in again will not help). Tokens live in a store: this proxy's memory
(`InMemoryTokenStore`), the tokens themselves (`SignedTokenStore`) or memcached
(`MemcachedTokenStore`, the one store that talks to the network, through the injected
memcached client); time comes from an injected ``clock`` so tests can move it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from attrs import define, field, frozen
from twisted.internet.defer import Deferred, FirstError, gatherResults
from zope.interface import implementer

from txstore.interfaces import IAuthorizer, IMemcache, ISharedTokenStore, ITokenStore
from txstore.proxy.account_acl import AccountACL
from txstore.proxy.acl import EMPTY_ACL, ContainerACL, referrer_allowed
from txstore.proxy.config import TempAuthUser, tempauth_users

READ_METHODS = frozenset({"GET", "HEAD"})
WRITE_METHODS = frozenset({"PUT", "POST", "DELETE", "COPY"})
ADMIN = ".admin"
RESELLER_ADMIN = ".reseller_admin"


@frozen
class Identity:
    """
    Who a token belongs to. ``groups`` are the names container ACLs can grant to: the user
    (``test:tester``) and its account (``test``), then ``.admin`` / ``.reseller_admin``.
    """

    account: str
    user: str
    groups: tuple[str, ...]

    @property
    def is_admin(self) -> bool:
        """Owns ``account`` (a reseller admin owns its own account too)."""
        return ADMIN in self.groups or self.is_reseller_admin

    @property
    def is_reseller_admin(self) -> bool:
        return RESELLER_ADMIN in self.groups


@frozen
class AuthResult:
    """The answer to an auth request: what to send back, and whom it was for."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    identity: Identity | None = None

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None


@frozen
class Decision:
    """
    Whether a request may go ahead. A denial carries the status (401 or 403) and a reason for
    the body. ``is_owner`` is Swift's "swift_owner": only an owner may see and set privileged
    headers (``X-Container-Read``/``-Write``, sync keys); strip them from anyone else's view.
    """

    allowed: bool
    status: int | None = None
    reason: str = ""
    is_owner: bool = False


# The answer when a request carries a token that `TempAuth.identify` does not know: Swift
# refuses it outright, even on a public container, so a client learns its token went stale.
BAD_TOKEN = Decision(False, 401, "the token is unknown or has expired")


@implementer(ITokenStore)
@define
class InMemoryTokenStore:
    """
    Tokens in a dict. Expired entries go when looked up, in a sweep each time the dict has
    doubled since the last one, and, past ``max_tokens``, the entries nearest expiry (the
    expired ones first) are dropped, so memory stays bounded whatever clients do.
    """

    max_tokens: int = 100_000
    token_prefix: str = "AUTH_tk"
    sweep_above: int = 1024
    _tokens: dict[str, tuple[float, Identity]] = field(factory=dict, init=False)
    _sweep_mark: int = field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        self._sweep_mark = self.sweep_above

    def issue(self, identity: Identity, expires_at: float) -> str:
        if len(self._tokens) >= self.max_tokens:
            self._evict()
        token = self.token_prefix + secrets.token_hex(16)
        while token in self._tokens:  # pragma: no cover - 128 random bits
            token = self.token_prefix + secrets.token_hex(16)
        self._tokens[token] = (expires_at, identity)
        return token

    def lookup(self, token: str, now: float) -> Identity | None:
        if len(self._tokens) >= self._sweep_mark:
            self.prune(now)
            self._sweep_mark = max(self.sweep_above, 2 * len(self._tokens))
        entry = self._tokens.get(token)
        if entry is None:
            return None
        expires_at, identity = entry
        if now >= expires_at:
            del self._tokens[token]
            return None
        return identity

    def revoke(self, token: str) -> None:
        self._tokens.pop(token, None)

    def prune(self, now: float) -> int:
        """Forget every token expired at ``now``; return how many went."""
        expired = [t for t, (expires_at, _) in self._tokens.items() if now >= expires_at]
        for token in expired:
            del self._tokens[token]
        return len(expired)

    def __len__(self) -> int:
        return len(self._tokens)

    def _evict(self) -> None:
        keep = self.max_tokens * 3 // 4
        latest = sorted(self._tokens.items(), key=lambda item: item[1][0], reverse=True)
        self._tokens = dict(latest[:keep])


@implementer(ITokenStore)
@define
class SignedTokenStore:
    """
    Tokens that carry their identity and expiry, signed with a key every proxy of the cluster
    derives from the cluster's hash secret: any proxy (or worker) validates a token another
    issued, with no shared store and nothing to lose at a restart. A token is the prefix, the
    identity and expiry as base64url JSON, a dot, and 32 characters of HMAC-SHA256 over both.

    What a signature cannot do: forget a token before it expires. `revoke` forgets it on this
    proxy only (kept until its expiry); a user's groups changed in the config apply to its
    next token, not to those already out (as with any bearer token).
    """

    key: bytes
    token_prefix: str = "AUTH_tk"
    _revoked: dict[str, float] = field(factory=dict, init=False)

    @classmethod
    def for_cluster(cls, hasher: Any, token_prefix: str = "AUTH_tk") -> SignedTokenStore:
        """The store whose key every proxy of the cluster with ``hasher``'s secret derives alike."""
        secret = hasher.prefix + b"\0" + hasher.suffix
        return cls(hmac.new(secret, b"txstore tempauth token key v1", hashlib.sha256).digest(), token_prefix)

    def issue(self, identity: Identity, expires_at: float) -> str:
        claims = {"a": identity.account, "u": identity.user, "g": list(identity.groups), "e": int(expires_at),
                  "n": secrets.token_hex(8)}
        body = base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode()).rstrip(b"=").decode()
        return f"{self.token_prefix}{body}.{self._mac(body)}"

    def lookup(self, token: str, now: float) -> Identity | None:
        if not token.startswith(self.token_prefix) or token in self._revoked:
            return None
        body, dot, mac = token[len(self.token_prefix):].rpartition(".")
        if not dot or not hmac.compare_digest(mac, self._mac(body)):
            return None
        try:
            claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            identity = Identity(claims["a"], claims["u"], tuple(claims["g"]))
            expires_at = float(claims["e"])
        except (ValueError, KeyError, TypeError):
            return None  # signed by us, so never expected; refused all the same
        return identity if now < expires_at else None

    def revoke(self, token: str) -> None:
        if self.lookup(token, 0.0) is not None:
            self._revoked[token] = 0.0

    def _mac(self, body: str) -> str:
        digest = hmac.new(self.key, (self.token_prefix + body).encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode()[:32]


UNREACHABLE = object()  # what the memcached client answers when no server could be asked


@implementer(ISharedTokenStore)
@define
class MemcachedTokenStore:
    """
    Tokens in memcached, shared by every proxy of the cluster, as Swift's tempauth keeps them:
    ``tempauth/token/<token>`` holds the identity and expiry for the token's life, and
    ``tempauth/user/<user>`` the user's current token, so a login through any proxy hands back
    the one already out. A token forgotten in memcached (`revoke`, a flushed or restarted
    memcached) is forgotten by every proxy.

    Each proxy also keeps the tokens it issued or found in memcached in its memory (at most
    ``max_tokens``, the least recently used dropped first):

    - a token memcached confirmed less than ``local_ttl`` seconds ago is taken without asking
      again, so a busy client costs one memcached round trip a second per proxy, not one per
      request (and a revocation reaches every proxy within ``local_ttl``);
    - while memcached cannot be reached, a token this proxy knows is taken until it expires, so
      an outage of memcached logs nobody out of the proxies that had seen their tokens. A token
      issued during the outage is known only to the proxy that issued it.
    """

    memcache: IMemcache
    clock: Callable[[], float]
    token_prefix: str = "AUTH_tk"
    local_ttl: float = 1.0
    max_tokens: int = 100_000
    # token -> (expires_at, identity, when memcached last confirmed it)
    _seen: OrderedDict[str, tuple[float, Identity, float]] = field(factory=OrderedDict, init=False)

    def issue(self, identity: Identity, expires_at: float) -> Deferred:
        return Deferred.fromCoroutine(self._issue(identity, expires_at))

    def lookup(self, token: str, now: float) -> Deferred:
        return Deferred.fromCoroutine(self._lookup(token, now))

    def revoke(self, token: str) -> Deferred:
        self._seen.pop(token, None)
        return self.memcache.delete(_token_key(token)).addCallback(lambda _: None)

    def current(self, user: str, now: float) -> Deferred:
        return self.memcache.get(_user_key(user)).addCallback(_current_of, now)

    async def _issue(self, identity: Identity, expires_at: float) -> str:
        token = self.token_prefix + secrets.token_hex(16)
        now = self.clock()
        ttl = max(1.0, expires_at - now)
        claims = {"a": identity.account, "u": identity.user, "g": list(identity.groups), "e": expires_at}
        try:  # both at once; the writes never fail, but a login given up cancels both
            await gatherResults([self.memcache.set(_token_key(token), claims, ttl),
                                 self.memcache.set(_user_key(identity.user), {"t": token, "e": expires_at}, ttl)],
                                consumeErrors=True)
        except FirstError as err:
            err.subFailure.raiseException()  # the cancellation itself, not gatherResults' wrapper
        self._remember(token, expires_at, identity, now)
        return token

    async def _lookup(self, token: str, now: float) -> Identity | None:
        if not token.startswith(self.token_prefix):
            return None
        seen = self._seen.get(token)
        if seen is not None and now >= seen[0]:
            del self._seen[token]
            seen = None
        if seen is not None and now - seen[2] < self.local_ttl:
            self._seen.move_to_end(token)
            return seen[1]
        claims = await self.memcache.get(_token_key(token), unreachable=UNREACHABLE)
        if claims is UNREACHABLE:
            return seen[1] if seen is not None else None
        try:
            identity = Identity(claims["a"], claims["u"], tuple(claims["g"]))
            expires_at = float(claims["e"])
        except (TypeError, KeyError, ValueError):  # absent (None), or not one of ours
            self._seen.pop(token, None)
            return None
        if now >= expires_at:
            self._seen.pop(token, None)
            return None
        self._remember(token, expires_at, identity, now)
        return identity

    def _remember(self, token: str, expires_at: float, identity: Identity, now: float) -> None:
        self._seen[token] = (expires_at, identity, now)
        self._seen.move_to_end(token)
        while len(self._seen) > self.max_tokens:
            self._seen.popitem(last=False)


def _token_key(token: str) -> str:
    return f"tempauth/token/{token}"


def _user_key(user: str) -> str:
    return f"tempauth/user/{user}"


def _current_of(data: Any, now: float) -> tuple[str, float] | None:
    try:
        token, expires_at = str(data["t"]), float(data["e"])
    except (TypeError, KeyError, ValueError):
        return None
    return (token, expires_at) if now < expires_at else None


@implementer(IAuthorizer)
@define
class TempAuth:
    """
    Authentication (`authenticate`, `identify`) and authorization (`authorize`) for the users
    of ``[tempauth]``.

    A second login within a token's life returns the same token with its remaining life, as
    Swift does, so clients that log in per command do not pile up tokens.
    """

    users: tuple[TempAuthUser, ...]
    store: ITokenStore | ISharedTokenStore
    token_life: int
    reseller_prefix: str
    clock: Callable[[], float]
    _by_name: dict[str, TempAuthUser] = field(init=False)
    _current: dict[str, tuple[str, float]] = field(factory=dict, init=False)
    _shared: bool = field(init=False)  # the store answers with Deferreds

    def __attrs_post_init__(self) -> None:
        self._by_name = {f"{u.account}:{u.user}": u for u in self.users}
        self._shared = ISharedTokenStore.providedBy(self.store)

    @classmethod
    def from_filter(
        cls, settings: Mapping[str, Any], clock: Callable[[], float], store: ITokenStore | None = None,
        hasher: Any = None, memcache: IMemcache | None = None,
    ) -> TempAuth:
        """
        From the parsed options of ``[filter:tempauth]`` (`txstore.proxy.config`); ``hasher``
        (the cluster's secret) is what ``token_store = signed`` derives its key from, and
        ``memcache`` (the proxy's memcached client) where ``token_store = memcached`` keeps tokens.
        """
        prefix = _account_prefix(settings["reseller_prefix"])
        if store is None and settings.get("token_store") == "signed":
            if hasher is None:
                raise ValueError("token_store = signed needs the cluster's hash secret")
            store = SignedTokenStore.for_cluster(hasher, token_prefix=prefix + "tk")
        if store is None and settings.get("token_store") == "memcached":
            if memcache is None:
                raise ValueError("token_store = memcached needs memcache_servers in [filter:cache]")
            store = MemcachedTokenStore(memcache, clock, token_prefix=prefix + "tk")
        return cls(
            users=tempauth_users(settings),
            store=store if store is not None else InMemoryTokenStore(token_prefix=prefix + "tk"),
            token_life=settings["token_life"],
            reseller_prefix=settings["reseller_prefix"],
            clock=clock,
        )

    @property
    def account_prefix(self) -> str:
        """What our account names start with: ``AUTH_``."""
        return _account_prefix(self.reseller_prefix)

    # -- authentication --------------------------------------------------------------------

    async def authenticate(
        self, headers: Mapping[str, str], request_host: str, scheme: str, method: str = "GET"
    ) -> AuthResult:
        """
        Answer ``GET /auth/v1.0`` (also ``/auth/v1.0/`` and ``/v1.0``). Credentials come from
        ``X-Auth-User``/``X-Auth-Key``, or ``X-Storage-User``/``X-Storage-Pass``; missing,
        malformed or wrong ones are a 401, as in Swift. Another method is a 400, as in Swift.
        """
        if method.upper() != "GET":
            return _text_result(400, "the auth endpoint answers GET only")
        lowered = {k.lower(): v for k, v in headers.items()}
        name = lowered.get("x-auth-user") or lowered.get("x-storage-user")
        key = lowered.get("x-auth-key") or lowered.get("x-storage-pass")
        if not name or not key:
            return _unauthorized("send X-Auth-User: <account>:<user> and X-Auth-Key: <key>")
        account, colon, user = name.partition(":")
        if not (account and colon and user):
            return _unauthorized("X-Auth-User must be <account>:<user>")
        configured = self._by_name.get(name)
        if configured is None or not hmac.compare_digest(
            configured.key.encode("utf-8"), key.encode("utf-8", "surrogateescape")
        ):
            return _unauthorized("unknown user or wrong key")
        identity = self.identity_of(configured)
        token, expires_at, now = await self._token_for(name, identity)
        url = self.storage_url(configured, request_host, scheme)
        body = json.dumps({"storage": {"default": "local", "local": url}}).encode("utf-8")
        return AuthResult(
            status=200,
            headers=(
                ("X-Auth-Token", token),
                ("X-Storage-Token", token),
                ("X-Storage-Url", url),
                ("X-Auth-Token-Expires", str(max(0, int(expires_at - now)))),
                ("Content-Type", "application/json; charset=utf-8"),
            ),
            body=body,
            identity=identity,
        )

    async def identify(self, token: str | None) -> Identity | None:
        """
        The identity of an ``X-Auth-Token`` (or ``X-Storage-Token``) value; None for no token
        and for an unknown or expired one. The caller tells those apart: a request that sent a
        token which comes back None should get `BAD_TOKEN`, not anonymous access.
        """
        if not token or not token.strip():
            return None
        found = self.store.lookup(token.strip(), self.clock())
        return (await found) if self._shared else found

    def identity_of(self, user: TempAuthUser) -> Identity:
        groups = [f"{user.account}:{user.user}", user.account]
        groups += [g for g in (ADMIN, RESELLER_ADMIN) if g in user.groups]
        return Identity(self._account_id(user), f"{user.account}:{user.user}", tuple(groups))

    def storage_url(self, user: TempAuthUser, request_host: str, scheme: str) -> str:
        """The user's configured storage URL, else one on the host the client asked."""
        if user.storage_url:
            return user.storage_url
        return f"{scheme}://{request_host}/v1/{quote(self.account_prefix + user.account)}"

    def _account_id(self, user: TempAuthUser) -> str:
        # As in Swift, a configured storage URL names the account the user owns.
        if user.storage_url:
            last = urlsplit(user.storage_url).path.rstrip("/").rsplit("/", 1)[-1]
            if last:
                return unquote(last)
        return self.account_prefix + user.account

    async def _token_for(self, name: str, identity: Identity) -> tuple[str, float, float]:
        now = self.clock()
        current = self._current.get(name)
        if current is None and self._shared:
            current = await self.store.current(name, now)  # one another proxy handed out
        if current is not None:
            token, expires_at = current
            found = self.store.lookup(token, now)
            if now < expires_at and ((await found) if self._shared else found) == identity:
                self._current[name] = current
                return token, expires_at, now
        expires_at = now + self.token_life
        token = self.store.issue(identity, expires_at)
        token = (await token) if self._shared else token
        self._current[name] = (token, expires_at)
        return token, expires_at, now

    # -- authorization ---------------------------------------------------------------------

    def authorize(
        self,
        identity: Identity | None,
        method: str,
        account: str,
        container: str | None,
        obj: str | None,
        container_read_acl: ContainerACL | None,
        container_write_acl: ContainerACL | None,
        referer: str | None,
        account_acl: AccountACL | None = None,
    ) -> Decision:
        """
        May ``identity`` (None: no token) make this request? Pass the container's ACLs for
        container and object requests (None when there are none), and the account's ACL when
        it has one. For COPY, Swift authorizes a GET of the source and a PUT of the destination;
        do the same, each with its own ACLs.
        """
        method = method.upper()
        container = container or None
        obj = obj or None
        prefix = self.account_prefix
        if not account or not account.startswith(prefix) or account == prefix:
            return _deny(identity, f"account {account!r} is not served by this auth")
        if identity is not None:
            if identity.is_reseller_admin and not account[len(prefix):].startswith("."):
                return Decision(True, reason="reseller admin", is_owner=True)
            if identity.is_admin and identity.account == account:
                if container is not None or method not in ("PUT", "DELETE"):
                    return Decision(True, reason="account admin", is_owner=True)
                return _deny(identity, "only a reseller admin may create or delete accounts")
            level = account_acl.level(identity.groups) if account_acl is not None else None
            if level == "admin":
                if container is not None or method not in ("PUT", "DELETE"):
                    return Decision(True, reason="admin by X-Account-Access-Control", is_owner=True)
                return _deny(identity, "only a reseller admin may create or delete accounts")
            if level == "read-write" and (container is not None or method in READ_METHODS):
                return Decision(True, reason="read-write by X-Account-Access-Control")
            if level == "read-only" and method in READ_METHODS:
                return Decision(True, reason="read-only by X-Account-Access-Control")
        if method == "OPTIONS":
            # CORS preflight carries no credentials; the proxy answers it from the container.
            return Decision(True, reason="preflight")
        if container is None:
            return _deny(identity, "account requests need the account's admin")
        if method in READ_METHODS:
            acl = container_read_acl or EMPTY_ACL
            if referrer_allowed(acl, referer) and (obj is not None or acl.listings):
                return Decision(True, reason="referrer allowed by X-Container-Read")
            if _group_granted(identity, acl):
                return Decision(True, reason="user allowed by X-Container-Read")
            return _deny(identity, "not allowed by X-Container-Read")
        if obj is not None and method in WRITE_METHODS:
            if _group_granted(identity, container_write_acl):
                return Decision(True, reason="user allowed by X-Container-Write")
            return _deny(identity, "not allowed by X-Container-Write")
        return _deny(identity, f"{method} of a container needs the account's admin")


def _account_prefix(reseller_prefix: str) -> str:
    if not reseller_prefix or reseller_prefix.endswith("_"):
        return reseller_prefix
    return reseller_prefix + "_"


def _group_granted(identity: Identity | None, acl: ContainerACL | None) -> bool:
    """
    Whether a group element of ``acl`` names the user or its account. TempAuth has no
    wildcards (``acct:*``, ``*:*`` grant nothing, per Swift's docs) and the ``.admin`` style
    groups never come from an ACL.
    """
    if identity is None or not acl:
        return False
    granted = set(acl.groups)
    return any(g in granted for g in identity.groups if not g.startswith(".") and "*" not in g)


def _deny(identity: Identity | None, reason: str) -> Decision:
    return Decision(False, 401 if identity is None else 403, reason)


def _text_result(status: int, reason: str, *extra: tuple[str, str]) -> AuthResult:
    return AuthResult(
        status=status,
        headers=(("Content-Type", "text/plain; charset=utf-8"), *extra),
        body=(reason + "\n").encode("utf-8"),
    )


def _unauthorized(reason: str) -> AuthResult:
    return _text_result(401, reason, ("WWW-Authenticate", 'Swift realm="unknown"'))
