# -*- test-case-name: txstore.test.unit.test_pipeline -*-
"""
The proxy's middleware pipeline, configured as Swift operators know it::

    [pipeline:main]
    pipeline = catch_errors gatekeeper healthcheck proxy_logging cache domain_remap cors etag_quoter listing_formats bulk tempurl formpost ratelimit crossdomain s3api tempauth console staticweb copy container_quotas account_quotas qos slo dlo versioned_writes symlink proxy_logging proxy-server

    [filter:tempauth]
    use = egg:txstore#tempauth
    user_test_tester = testing .admin

Each name but the last is a ``[filter:NAME]`` section whose ``use`` says which middleware it is:
``egg:txstore#NAME`` for txstore's own, or the name of an entry point in the
``txstore.proxy_middleware`` group (``egg:DIST#NAME`` or a bare ``NAME``), which is how a third
party adds one without touching txstore. The last name is the proxy application,
``proxy-server``. Everything is resolved and checked when the config is loaded, before the
proxy starts: an unknown middleware, a missing section, an unknown or bad option is one line
naming the file, the section and the option.

Without a ``[pipeline:main]`` section the proxy runs `DEFAULT_PIPELINE`; a ``[filter:NAME]``
section then still configures the middleware of that name.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from attrs import frozen

from txstore.common import config as c
from txstore.interfaces import IMiddleware

ENTRY_POINT_GROUP = "txstore.proxy_middleware"
APP_NAME = "proxy-server"
DEFAULT_PIPELINE = (
    "catch_errors", "gatekeeper", "healthcheck", "proxy_logging", "cache", "domain_remap", "cors", "etag_quoter",
    "listing_formats", "bulk", "tempurl", "formpost", "ratelimit", "crossdomain", "s3api", "tempauth", "console",
    "staticweb", "copy", "container_quotas", "account_quotas", "qos", "slo", "dlo", "versioned_writes", "symlink", "proxy_logging",
    APP_NAME,
)
# As Swift's proxy does, these run even when an operator's pipeline leaves them out: without
# catch_errors a failure could leak a traceback, without gatekeeper clients could write sysmeta.
# Each goes right after the last of the filters named with it that the pipeline has (else first).
# listing_formats: without it a client asking for XML would get the nodes' JSON; copy: COPY
# and X-Copy-From are part of the core API.
REQUIRED = (
    ("catch_errors", ()),
    ("gatekeeper", ("catch_errors",)),
    ("listing_formats", ("catch_errors", "gatekeeper", "healthcheck", "proxy_logging")),
    ("copy", ("catch_errors", "gatekeeper", "healthcheck", "proxy_logging", "listing_formats", "tempauth",
              "staticweb")),
)

PIPELINE_SECTION = c.Section("pipeline:main", options=(
    c.Option("pipeline", c.nonempty_string, doc="The filters in order, then proxy-server."),
))
# Filter sections are read raw here; each middleware's own declaration parses them.
RAW_FILTER_SECTION = c.Section("filter", options=(c.Option("use", c.string, "", doc="Which middleware."),),
                               patterns=(c.Pattern(r".+", c.string),))


@frozen
class Stage:
    """One filter of the pipeline: its section's name, the middleware and its parsed options."""

    name: str
    middleware: Any  # IMiddleware
    settings: Mapping[str, Any]


def builtin_middlewares() -> dict[str, Any]:
    from txstore.middleware import BUILTIN  # the middlewares import the proxy: import late

    return BUILTIN


def resolve(use: str, where: c.LoadedConfig, section: str) -> Any:
    """The `IMiddleware` that ``use = …`` names."""
    dist, _, name = use.removeprefix("egg:").rpartition("#")
    if not use.startswith("egg:"):
        dist, name = "", use
    if dist in ("", "txstore") and name in builtin_middlewares():
        return builtin_middlewares()[name]
    if dist == "txstore":
        known = ", ".join(sorted(builtin_middlewares()))
        raise where.error(f"txstore has no middleware {name!r} (it has: {known})", f"filter:{section}", "use")
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name
             and (not dist or ep.dist is None or ep.dist.name in (dist, dist.replace("_", "-")))]
    if not found:
        raise where.error(f"no middleware {use!r}: not txstore's and no entry point {name!r} in the "
                          f"{ENTRY_POINT_GROUP} group", f"filter:{section}", "use")
    try:
        middleware = found[0].load()
    except Exception as err:
        raise where.error(f"middleware {use!r} cannot be loaded: {err}", f"filter:{section}", "use") from None
    if not IMiddleware.providedBy(middleware):
        raise where.error(f"{use!r} is not a txstore middleware (it does not provide IMiddleware)",
                          f"filter:{section}", "use")
    return middleware


def load_pipeline(loaded: c.LoadedConfig) -> tuple[Stage, ...]:
    """The pipeline ``proxy.conf`` describes, outermost filter first, every option checked."""
    filters = {name.removeprefix("filter:"): values for name, values in loaded.values.items()
               if name.startswith("filter:")}
    declared = loaded.section(PIPELINE_SECTION.name)
    if declared:
        names = tuple(declared["pipeline"].split())
        if names[-1] != APP_NAME:
            raise loaded.error(f"must end with the application, {APP_NAME} (it ends with {names[-1]!r})",
                               PIPELINE_SECTION.name, "pipeline")
        if APP_NAME in names[:-1]:
            raise loaded.error(f"{APP_NAME} can only be last", PIPELINE_SECTION.name, "pipeline")
    else:
        names = DEFAULT_PIPELINE
    names = names[:-1]
    names = with_required(names)
    stages = []
    for name in names:
        raw = filters.get(name)
        if raw is None:
            if declared and name not in dict(REQUIRED):
                raise loaded.error(f"the pipeline names {name!r} but there is no [filter:{name}] section",
                                   PIPELINE_SECTION.name, "pipeline")
            raw = {"use": f"egg:txstore#{name}"}
        use = raw.get("use") or ""
        if not use:
            raise loaded.error("required option is missing", f"filter:{name}", "use")
        middleware = resolve(use, loaded, name)
        schema = c.Section(f"filter:{name}", options=(*middleware.options, RAW_FILTER_SECTION.options[0]),
                           patterns=getattr(middleware, "patterns", ()))
        items = [(k, v) for k, v in raw.items() if k != "use"]
        settings = c.parse_section(Path(loaded.path), f"filter:{name}", schema, items)
        settings.pop("use", None)
        stages.append(Stage(name, middleware, settings))
    unused = sorted(set(filters) - set(names))
    if unused:
        raise loaded.error("this filter is not in the pipeline (remove it or add it to [pipeline:main])",
                           f"filter:{unused[0]}")
    return tuple(stages)


def with_required(names: tuple[str, ...]) -> tuple[str, ...]:
    """``names`` with every `REQUIRED` filter it lacks put in where Swift puts it."""
    for required, after in REQUIRED:
        if required not in names:
            at = max((names.index(n) + 1 for n in after if n in names), default=0)
            names = (*names[:at], required, *names[at:])
    return names


# Query parameters of the bulk filter: without it, a write carrying them is refused rather than
# taken as the plain PUT/POST/DELETE it looks like (issue 20: DELETE /v1/<account>?bulk-delete
# by a reseller admin deleted the account).
BULK_PARAMS = ("extract-archive", "bulk-delete")


class WithoutBulk:
    """Innermost when the pipeline has no bulk filter: refuses writes naming bulk's parameters (501)."""

    def __init__(self, app) -> None:
        self.app = app

    def __call__(self, request):
        if (request.method in ("PUT", "POST", "DELETE") and any(p in request.query for p in BULK_PARAMS)
                and any(p in request.params for p in BULK_PARAMS)):
            from twisted.internet.defer import succeed

            from txstore.proxy.messages import SwiftResponse

            request.discard_body()
            return succeed(SwiftResponse.text(501, "Not Implemented: the bulk filter is not in this proxy's pipeline"))
        return self.app(request)


def build_pipeline(stages: tuple[Stage, ...], app, proxy) -> Any:
    """Wrap ``app`` in every stage, innermost last: the result is what the edge calls."""
    if not any(getattr(stage.middleware, "name", None) == "bulk" for stage in stages):
        app = WithoutBulk(app)
    for stage in reversed(stages):
        app = stage.middleware.build(app, stage.settings, proxy)
    return app
