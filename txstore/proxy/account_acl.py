# -*- test-case-name: txstore.test.unit.test_tempauth -*-
"""
Account ACLs: ``X-Account-Access-Control``, the JSON form Swift calls "V2".

An account's owner grants users (``<account>:<user>``) or whole accounts (``<account>``) one of
three levels over everything in the account::

    {"admin": ["test:alice"], "read-write": ["other"], "read-only": ["test:bob"]}

``admin``
    As the account's owner: anything but creating or deleting the account, setting ACLs included.
``read-write``
    Create, change and delete containers and objects; read the account (list its containers),
    but not change its metadata.
``read-only``
    GET and HEAD of the account, its containers and objects.

The header is stored as account sysmeta (``X-Account-Sysmeta-Core-Access-Control``, Swift's
name), so clients cannot set it but through tempauth, which checks it first: a JSON object
whose keys are those three and whose values are lists of strings, else a 400 with Swift's
reason. An empty value or ``{}`` removes it. Only owners see it on a HEAD or GET of the account.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from attrs import frozen

from txstore.proxy.acl import InvalidACL

LEVELS = ("admin", "read-write", "read-only")
HEADER = "X-Account-Access-Control"
SYSMETA_HEADER = "X-Account-Sysmeta-Core-Access-Control"
SYSMETA_NAME = "core-access-control"  # its name in the account info's sysmeta


@frozen
class AccountACL:
    """The grantees of each level (user and account names, as written)."""

    admin: frozenset[str] = frozenset()
    read_write: frozenset[str] = frozenset()
    read_only: frozenset[str] = frozenset()

    def level(self, groups: Iterable[str]) -> str | None:
        """The highest level any of ``groups`` is granted, or None."""
        names = {group for group in groups if not group.startswith(".")}
        for level, grantees in (("admin", self.admin), ("read-write", self.read_write),
                                ("read-only", self.read_only)):
            if names & grantees:
                return level
        return None


def parse_account_acl(value: str) -> dict[str, list[str]]:
    """The ACL a client sent, checked as Swift's tempauth checks it; `InvalidACL` says why not."""
    if not value.strip():
        return {}
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise InvalidACL(f"Syntax error in input ({value!r})")
    for key in parsed:
        if key not in LEVELS:
            raise InvalidACL(f"Key {json.dumps(key)} not recognized")
    for key, grantees in parsed.items():
        if not isinstance(grantees, list):
            raise InvalidACL(f"Value for key {json.dumps(key)} must be a list")
        if not all(isinstance(grantee, str) for grantee in grantees):
            raise InvalidACL(f"Elements of {json.dumps(key)} list must be strings")
    return parsed


def format_account_acl(acl: dict[str, list[str]]) -> str:
    """Swift's canonical form: compact JSON, keys sorted, ASCII only."""
    return json.dumps(acl, ensure_ascii=True, separators=(",", ":"), sort_keys=True)


def stored_account_acl(value: str | None) -> AccountACL | None:
    """The ACL kept in sysmeta; none, an empty one, or one that no longer parses grants nothing."""
    if not value:
        return None
    try:
        parsed = parse_account_acl(value)
    except InvalidACL:
        return None
    if not any(parsed.values()):
        return None
    return AccountACL(frozenset(parsed.get("admin", ())), frozenset(parsed.get("read-write", ())),
                      frozenset(parsed.get("read-only", ())))
