# -*- test-case-name: txstore.test.unit.test_acl -*-
"""
Container ACLs: the ``X-Container-Read`` / ``X-Container-Write`` syntax Swift calls "V1".

A header holds comma-separated elements, with any whitespace around elements and colons:

``.r:<host>``
    A grant by the request's ``Referer`` header, without a token: ``*`` is anyone (even a request
    with no Referer), ``example.com`` that host, ``.example.com`` (or ``*.example.com``) any host
    *under* that domain — not ``example.com`` itself, as in Swift. ``.r:-<host>`` denies.
    Rules apply in the order written and the last one that matches decides, which is Swift's
    documented rule: ``.r:*,.r:-bad.com`` lets in everyone but ``bad.com``. ``.ref:``,
    ``.referer:`` and ``.referrer:`` are other spellings of ``.r:``. Read ACLs only.
``.rlistings``
    Requests granted by a referrer rule may also list the container (GET/HEAD on it).
``<account>:<user>`` / ``<account>``
    A group: one user, or every user of an account. The auth system decides who is in a group.

Parsing is stricter than Swift's where strictness costs nothing: an unknown ``.xyz`` directive,
an empty or URL-shaped referrer, or a name with spaces in it is an `InvalidACL` (so the proxy
answers 400 to the POST or PUT that sets it) rather than a group nobody can ever be in.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from attrs import frozen

REFERRER_DIRECTIVES = (".r", ".ref", ".referer", ".referrer")
LISTINGS = ".rlistings"


class InvalidACL(ValueError):
    """An ACL header the proxy refuses to store; ``str()`` says why, for the 400 body."""


@frozen
class ReferrerRule:
    """One ``.r:`` element: ``host`` is ``*``, a host name, or ``.domain`` for a suffix."""

    host: str
    deny: bool = False

    def matches(self, referer_host: str) -> bool:
        """Whether this rule speaks about ``referer_host`` (``""`` when there was no Referer)."""
        if self.host == "*":
            return True
        if not referer_host:
            return False
        if self.host.startswith("."):
            return referer_host.endswith(self.host)
        return referer_host == self.host

    def element(self) -> str:
        return ".r:" + ("-" if self.deny else "") + self.host


@frozen
class ContainerACL:
    """
    A parsed ACL header, kept as its normalised elements in the order they were written, so
    that the header a client reads back is the one it wrote, tidied.
    """

    elements: tuple[str, ...] = ()

    @property
    def referrers(self) -> tuple[ReferrerRule, ...]:
        return tuple(
            ReferrerRule(e[4:], deny=True) if e.startswith(".r:-") else ReferrerRule(e[3:])
            for e in self.elements
            if e.startswith(".r:")
        )

    @property
    def listings(self) -> bool:
        return LISTINGS in self.elements

    @property
    def groups(self) -> tuple[str, ...]:
        """The group elements (``account:user``, ``account``), in order."""
        return tuple(e for e in self.elements if not e.startswith("."))

    def __bool__(self) -> bool:
        return bool(self.elements)


EMPTY_ACL = ContainerACL()


def parse_acl(header_value: str | None, *, write: bool = False) -> ContainerACL:
    """
    Parse an ``X-Container-Read`` (or, with ``write=True``, ``X-Container-Write``) value.

    ``None`` and blank values are the empty ACL, which grants nothing. Raise `InvalidACL` for an
    element the proxy should refuse to store; referrer rules in a write ACL are such elements,
    because Swift never lets an anonymous request write.
    """
    if header_value is None:
        return EMPTY_ACL
    elements = []
    for raw in header_value.split(","):
        item = raw.strip()
        if not item:
            continue
        if item.startswith("."):
            elements.append(_directive(item, write))
        else:
            elements.append(_group(item))
    return ContainerACL(tuple(elements))


def format_acl(acl: ContainerACL) -> str:
    """The normalised header value of ``acl`` (what the container should store)."""
    return ",".join(acl.elements)


def normalise_acl(header_value: str, *, write: bool = False) -> str:
    """Validate and tidy a header a client is setting; raise `InvalidACL` when it is wrong."""
    return format_acl(parse_acl(header_value, write=write))


def referrer_allowed(acl: ContainerACL | None, referer_header: str | None) -> bool:
    """
    Whether the referrer rules of ``acl`` let a request with this ``Referer`` read objects.

    Only the host of the Referer URL counts; a missing or unparseable Referer matches nothing
    but ``*``. The last matching rule decides; no matching rule means no.
    """
    if not acl:
        return False
    host = referer_host(referer_header)
    allowed = False
    for rule in acl.referrers:
        if rule.matches(host):
            allowed = not rule.deny
    return allowed


def referer_host(referer_header: str | None) -> str:
    """The lower-case host of a Referer URL, or ``""`` when there is none to be had."""
    if not referer_header:
        return ""
    try:
        return urlsplit(referer_header.strip()).hostname or ""
    except ValueError:
        return ""


def _directive(item: str, write: bool) -> str:
    name, colon, value = item.partition(":")
    name = name.strip()
    if name in REFERRER_DIRECTIVES:
        if write:
            raise InvalidACL(f"referrer element {item!r} is not allowed in a write ACL")
        if not colon:
            raise InvalidACL(f"referrer element {item!r} needs a host: .r:<host>")
        return _referrer(item, value.strip()).element()
    if name == LISTINGS and not colon:
        return LISTINGS
    raise InvalidACL(
        f"unknown ACL element {item!r} (known: .r:<host>, .r:-<host>, .rlistings,"
        " <account>, <account>:<user>)"
    )


def _referrer(item: str, value: str) -> ReferrerRule:
    deny = value.startswith("-")
    host = value[1:].strip() if deny else value
    if host.startswith("*."):
        host = host[1:]
    host = host.lower()
    if not host or host == ".":
        raise InvalidACL(f"referrer element {item!r} has no host")
    if host != "*" and "*" in host:
        raise InvalidACL(f"referrer element {item!r}: '*' is only allowed alone or as '*.domain'")
    if any(c.isspace() for c in host) or "/" in host or ":" in host:
        raise InvalidACL(f"referrer element {item!r} must name a host, not a URL")
    return ReferrerRule(host, deny)


def _group(item: str) -> str:
    account, colon, user = item.partition(":")
    parts = [account.strip()] + ([user.strip()] if colon else [])
    for part in parts:
        if not part:
            raise InvalidACL(f"ACL element {item!r} has an empty account or user name")
        if any(c.isspace() for c in part):
            raise InvalidACL(f"ACL element {item!r} has a space inside a name")
    return ":".join(parts)


def stored_acl(value: str | None, *, write: bool = False) -> ContainerACL | None:
    """A container's stored ACL header, parsed; None when absent, and one that no longer parses grants nothing."""
    if not value:
        return None
    try:
        return parse_acl(value, write=write)
    except ValueError:
        return None

