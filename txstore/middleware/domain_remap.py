# -*- test-case-name: txstore.test.unit.test_domain_remap -*-
"""
domain_remap: the account and container named by the request's host, Swift's API.

With ``storage_domain = example.com``, a request to ``<container>.<account>.example.com/<object>``
goes on as ``/v1/<account>/<container>/<object>``, and one to ``<account>.example.com/<rest>`` as
``/v1/<account>/<rest>`` (``path_root`` is the ``v1``): a container served as a web site
(staticweb) gets a host name of its own. Host names cannot hold ``_`` well, so the account's
first ``-`` becomes ``_`` (``auth-test`` is ``AUTH_test``) and its reseller prefix is given the
case of the configured one (browsers lower-case host names). An account whose prefix is none of
``reseller_prefixes`` gets ``default_reseller_prefix`` put before it, or, without one, the request
is left as it came. A host under a storage domain with more than two names before it is a 400.

The path after the host is kept whole (an object may be called ``v1/…``), unless
``mangle_client_paths`` (Swift's legacy behaviour) drops a leading ``path_root``. Answers that
point at the rewritten path (``Location``, ``Content-Location``: staticweb's redirects) are
rewritten back to the path the client asked, so a browser stays on the host name.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from attrs import evolve
from zope.interface import implementer

from txstore.common import config as c
from txstore.interfaces import IApp
from txstore.middleware.base import Middleware
from txstore.proxy.messages import SwiftRequest, SwiftResponse

POINTING = ("Location", "Content-Location")


def names(raw: str, _base: Any) -> tuple[str, ...]:
    """A comma-separated list (Swift's ``list_from_csv``): blanks dropped."""
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def domains(raw: str, base: Any) -> tuple[str, ...]:
    """Storage domains as suffixes that start with a dot."""
    return tuple(domain if domain.startswith(".") else "." + domain for domain in names(raw, base))


def path_root(raw: str, _base: Any) -> str:
    root = raw.strip().strip("/")
    if not root or "/" in root:
        raise c.BadValue("give one path segment, such as v1")
    return root


def prefix(raw: str, _base: Any) -> str:
    value = raw.strip()
    if "/" in value or "." in value:
        raise c.BadValue("a reseller prefix is a word such as AUTH")
    return value


OPTIONS = (
    c.Option("storage_domain", domains, (".example.com",),
             doc="The domains whose subdomains name accounts and containers, comma-separated."),
    c.Option("path_root", path_root, "v1", doc="The first segment of the paths made."),
    c.Option("reseller_prefixes", names, ("AUTH",),
             doc="Account prefixes recognised in host names (in their configured case), comma-separated."),
    c.Option("default_reseller_prefix", prefix, "",
             doc="The prefix given to an account whose prefix is none of reseller_prefixes; empty: leave "
                 "such requests as they are."),
    c.Option("mangle_client_paths", c.boolean, False,
             doc="Swift's legacy behaviour: drop a leading path_root from the client's path."),
)


@implementer(IApp)
class DomainRemap:
    def __init__(self, app, settings) -> None:
        self.app = app
        self.domains = tuple(settings["storage_domain"])
        self.root = settings["path_root"]
        self.prefixes = {p.lower(): p for p in settings["reseller_prefixes"]}
        self.default_prefix = settings["default_reseller_prefix"]
        self.mangle = settings["mangle_client_paths"]

    def __call__(self, request: SwiftRequest):
        # A host under none of the domains is the next stage's call itself: no coroutine of its own.
        host = _without_port(request.host or "")
        domain = next((d for d in self.domains if host.lower().endswith(d.lower())), None)
        if domain is None:
            return self.app(request)
        labels = host[:-len(domain)].strip(".").split(".")
        if len(labels) == 2:
            container, account = labels
        elif len(labels) == 1:
            container, account = None, labels[0]
        else:
            request.discard_body()
            return _answer(SwiftResponse.text(400, "Bad domain in host header"))
        account = self._account(account)
        if account is None:
            return self.app(request)
        rest = request.path[1:]
        if self.mangle and (rest + "/").startswith(self.root + "/"):
            rest = rest[len(self.root) + 1:]
        segments = [self.root, account] + ([container] if container else [])
        # the Host header's bytes are Latin-1 characters here: quote the bytes (a UTF-8 container)
        new_path = "/" + "/".join(quote(s.encode("latin-1", "replace"), safe="") for s in segments) + "/" + rest
        return self._remapped(evolve(request, path=new_path), request.path, new_path)

    def _account(self, account: str) -> str | None:
        """The account a host label names, with the configured prefix's case; None: not ours."""
        if not self.prefixes:
            return account
        if "_" not in account and "-" in account:
            account = account.replace("-", "_", 1)
        found = account.split("_", 1)[0].lower()
        if found in self.prefixes:
            real = self.prefixes[found]
            return real + account[len(real):]
        if self.default_prefix:
            return f"{self.default_prefix}_{account}"
        return None

    async def _remapped(self, request: SwiftRequest, asked: str, new_path: str) -> SwiftResponse:
        response = await self.app(request)
        pattern = re.compile(r"^(https?://[^/]+)" + re.escape(new_path))
        for name in POINTING:
            value = response.headers.get(name)
            if value:
                response.headers[name] = pattern.sub(lambda m: m.group(1) + asked, value, count=1)
        return response


def _without_port(host: str) -> str:
    if host.startswith("["):  # [v6]:port
        return host.partition("]")[0] + "]"
    return host.rsplit(":", 1)[0] if ":" in host else host


async def _answer(response: SwiftResponse) -> SwiftResponse:
    return response


def _build(app, settings: dict[str, Any], proxy) -> DomainRemap:
    proxy.info.register("domain_remap", default_reseller_prefix=settings["default_reseller_prefix"] or None)
    return DomainRemap(app, settings)


middleware = Middleware("domain_remap", _build, options=OPTIONS)
