"""
txstore's own proxy middlewares, one module each; `BUILTIN` is what ``egg:txstore#NAME`` names.
Third-party middlewares register in the ``txstore.proxy_middleware`` entry-point group.
"""

from __future__ import annotations

from txstore.middleware import (
    account_quotas, bulk, catch_errors, console, container_quotas, copy, cors, crossdomain, dlo, domain_remap, etag_quoter,
    formpost, gatekeeper, healthcheck, listing_formats, memcache, name_check, proxy_logging, qos, ratelimit, slo, staticweb, symlink,
    tempauth, tempurl, versioned_writes,
)
from txstore.middleware import s3api  # the S3 API: the filter of its own package, txstore/s3/

BUILTIN = {
    module.middleware.name: module.middleware
    for module in (catch_errors, gatekeeper, name_check, healthcheck, proxy_logging, memcache, domain_remap, cors, etag_quoter,
                   listing_formats, bulk, tempurl, formpost, ratelimit, crossdomain, s3api, tempauth, console, staticweb, copy,
                   container_quotas, account_quotas, qos, slo, dlo, versioned_writes, symlink)
}
BUILTIN["cache"] = memcache.middleware  # Swift's section name: [filter:cache] use = egg:swift#memcache
