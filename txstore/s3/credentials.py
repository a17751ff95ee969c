# -*- test-case-name: txstore.test.unit.test_s3_middleware -*-
"""
Where S3 access keys come from: an `ICredentialSource` maps an access key to its secret, the
account it works in, and who it is for the authorizer that judges its Swift requests.

The default is tempauth's users, as Swift's s3api with tempauth: access key
``<account>:<user>``, secret the user's key, account ``AUTH_<account>``, and every request
judged by tempauth's own rules (owner, ACLs) for that user. Another source (a key file, a
keystone-style service) plugs in by providing the same two methods.
"""

from __future__ import annotations

from typing import Any, Protocol

from attrs import frozen

from txstore.proxy.account_acl import SYSMETA_NAME, stored_account_acl
from txstore.proxy.acl import stored_acl


@frozen
class S3User:
    """An access key's owner: ``secret`` signs, ``account`` holds the buckets, ``identity`` is judged."""

    access_key: str
    secret: str
    account: str
    identity: Any


class ICredentialSource(Protocol):
    def lookup(self, access_key: str) -> S3User | None:
        """The user of ``access_key``, None when there is none."""

    async def grants(self, user: S3User, request) -> Any:
        """What the authorizer needs looked up once per request (tempauth: the account's ACL)."""

    def authorize(self, user: S3User, request, account: str, container: str | None, obj: str | None, info,
                  grants: Any = None) -> Any:
        """A ``Decision`` for a Swift request made for ``user`` (``info``: the container's, or None)."""


class TempAuthCredentials:
    """
    tempauth's users (`txstore.proxy.tempauth.TempAuth`) as S3 credentials, judged as tempauth
    judges them, the account's ACL (``X-Account-Access-Control``) included for a user who does
    not own the account (looked up once per request through ``account_info``, cached as
    tempauth's is).
    """

    def __init__(self, auth, account_info=None) -> None:
        self.auth = auth
        self.account_info = account_info  # (request, account) -> Awaitable[AccountInfo], or None
        self._users = {f"{u.account}:{u.user}": u for u in auth.users}
        self._found: dict[str, S3User] = {}  # tempauth's users are fixed by its config: each made once

    async def grants(self, user: S3User, request) -> Any:
        identity = user.identity
        if self.account_info is None or identity.is_reseller_admin or identity.is_admin:
            return None
        info = await self.account_info(request, user.account)
        return stored_account_acl(info.sysmeta.get(SYSMETA_NAME))

    def lookup(self, access_key: str) -> S3User | None:
        found = self._found.get(access_key)
        if found is not None:
            return found
        user = self._users.get(access_key)
        if user is None:
            return None
        identity = self.auth.identity_of(user)
        found = self._found[access_key] = S3User(access_key, user.key, identity.account, identity)
        return found

    def authorize(self, user: S3User, request, account: str, container: str | None, obj: str | None, info,
                  grants: Any = None) -> Any:
        return self.auth.authorize(user.identity, request.method, account, container, obj,
                                   stored_acl(info.read_acl if info else None),
                                   stored_acl(info.write_acl if info else None, write=True),
                                   request.header("Referer"), grants)

