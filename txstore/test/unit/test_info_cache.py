"""
What several proxies share through memcached, on a Clock with the tests' `FakeMemcache`: the
info cache (one conformance suite for both `IInfoCache` implementations, then two proxies'
controllers over one memcached: a write through one is seen by the other within
``local_ttl``; memcached gone is misses, never errors), tempauth's ``token_store =
memcached`` (a token from one proxy good on another, a revocation seen everywhere, an outage
that logs nobody out), and ``[filter:cache]`` in proxy.conf.
"""

from __future__ import annotations

import gc

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from txstore.common.config import ConfigError
from txstore.common.memcache import MemcacheClient
from txstore.common.policies import DEFAULT_POLICIES
from txstore.interfaces import ISharedTokenStore
from txstore.proxy.config import TempAuthUser, load_proxy_settings
from txstore.proxy.context import ProxyContext
from txstore.proxy.controllers.base import AccountInfo, ContainerInfo, account_info, container_info, forget_info
from txstore.proxy.info_cache import AttrsCodec, IInfoCache, InMemoryInfoCache, SharedInfoCache
from txstore.proxy.tap import shared_state
from txstore.proxy.tempauth import Identity, MemcachedTokenStore, TempAuth
from txstore.test.backend_fake import FakeBackend, reply
from txstore.test.memcache_fake import FakeMemcache
from txstore.test.support import temp_dir, write_file
from txstore.test.unit.test_proxy_controllers import ACCOUNT, NOW, fake_rings

CODEC = AttrsCodec((ContainerInfo, AccountInfo))


def run(coroutine):
    return Deferred.fromCoroutine(coroutine)


class InfoCacheConformance:
    """What every `IInfoCache` does; a subclass sets ``clock`` and ``cache``."""

    clock: Clock
    cache: IInfoCache

    def test_set_get_expire_delete(self) -> None:
        self.assertTrue(verifyObject(IInfoCache, self.cache))
        info = ContainerInfo(204, ".r:*", None, 1, 5, 10, {"versions-location": "v"}, None, {"temp-url-key": "k"})
        self.assertIsNone(self.cache.get("container/a/c"))
        self.assertIsNone(self.successResultOf(self.cache.fetch("container/a/c")))
        self.cache.set("container/a/c", info, 10)
        self.assertEqual(self.cache.get("container/a/c"), info)
        self.cache.delete("container/a/c")
        self.assertIsNone(self.cache.get("container/a/c"))
        self.assertIsNone(self.successResultOf(self.cache.fetch("container/a/c")))
        self.cache.set("account/a", AccountInfo(404), 10)
        self.clock.advance(10)
        self.assertIsNone(self.cache.get("account/a"))
        self.assertIsNone(self.successResultOf(self.cache.fetch("account/a")))


class InMemoryInfoCacheTests(InfoCacheConformance, SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.cache = InMemoryInfoCache(self.clock.seconds)


class SharedInfoCacheTests(InfoCacheConformance, SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.memcache = FakeMemcache(self.clock)
        self.cache = self.proxy()

    def proxy(self) -> SharedInfoCache:
        return SharedInfoCache(self.memcache, InMemoryInfoCache(self.clock.seconds), CODEC, local_ttl=1.0)

    def test_values_travel_as_json(self) -> None:
        info = ContainerInfo(204, "a:b", "c:d", 2, 7, 70, {"versions-mode": "history"}, "old", {"web-index": "i"})
        self.cache.set("container/a/c", info, 10)
        self.assertEqual(self.memcache.values["container/a/c"][1][:6], b'{"t": ')  # JSON, never pickle
        other = self.proxy()
        self.assertIsNone(other.get("container/a/c"))  # nothing in the other proxy's memory yet
        self.assertEqual(self.successResultOf(other.fetch("container/a/c")), info)
        self.assertEqual(other.get("container/a/c"), info)  # kept there for local_ttl
        self.clock.advance(1.0)
        self.assertIsNone(other.get("container/a/c"))

    def test_a_write_through_one_proxy_reaches_the_other_within_local_ttl(self) -> None:
        other = self.proxy()
        self.cache.set("container/a/c", ContainerInfo(204), 10)
        self.successResultOf(other.fetch("container/a/c"))
        self.cache.delete("container/a/c")  # a POST through the first proxy
        self.assertEqual(other.get("container/a/c"), ContainerInfo(204))  # still within local_ttl
        self.clock.advance(1.0)
        self.assertIsNone(other.get("container/a/c"))
        self.assertIsNone(self.successResultOf(other.fetch("container/a/c")))

    def test_memcached_gone_is_misses(self) -> None:
        self.memcache.reachable = False
        self.cache.set("account/a", AccountInfo(204), 10)
        self.assertEqual(self.cache.get("account/a"), AccountInfo(204))  # the local layer still holds it
        self.clock.advance(1.0)
        self.assertIsNone(self.cache.get("account/a"))
        self.assertIsNone(self.successResultOf(self.cache.fetch("account/a")))
        self.cache.delete("account/a")

    def test_an_entry_of_another_shape_is_a_miss(self) -> None:
        for junk in ({"t": "Nope", "v": {}}, {"t": "AccountInfo", "v": {"colour": 1}}, [1], "x"):
            self.memcache.values["k"] = (NOW * 2, __import__("json").dumps(junk).encode())
            self.assertIsNone(self.successResultOf(self.cache.fetch("k")))


class TwoProxiesTests(SynchronousTestCase):
    """The controllers' cached info, two proxies over one memcached and the same nodes."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.backend = FakeBackend()
        self.memcache = FakeMemcache(self.clock)
        rings = fake_rings(temp_dir(self))
        self.a, self.b = [ProxyContext(
            reactor=self.clock, rings=rings, policies=DEFAULT_POLICIES, client=self.backend,
            cache=SharedInfoCache(self.memcache, InMemoryInfoCache(self.clock.seconds), CODEC, 1.0),
            memcache=self.memcache) for _ in range(2)]

    def info(self, context: ProxyContext) -> ContainerInfo:
        return self.successResultOf(run(container_info(context, ACCOUNT, "c")))

    def test_one_proxy_reads_what_the_other_cached_and_sees_its_writes(self) -> None:
        self.backend.default = reply(204, x_container_read="test:tester")
        self.assertEqual(self.info(self.a).read_acl, "test:tester")
        asked = len(self.backend.calls)
        self.assertEqual(self.info(self.b).read_acl, "test:tester")
        self.assertEqual(len(self.backend.calls), asked)  # from memcached, not the nodes
        self.backend.default = reply(204, x_container_read=".r:*")  # an ACL changed through A:
        forget_info(self.a, ACCOUNT, "c")
        self.assertEqual(self.info(self.a).read_acl, ".r:*")
        self.clock.advance(1.0)  # B's own memory holds the old one for local_ttl at most
        self.assertEqual(self.info(self.b).read_acl, ".r:*")

    def test_memcached_gone_asks_the_nodes(self) -> None:
        self.backend.default = reply(204)
        self.memcache.reachable = False
        self.assertTrue(self.info(self.a).exists)
        self.assertTrue(self.info(self.b).exists)
        self.assertEqual(len(self.backend.calls), 2)
        self.assertEqual(self.successResultOf(run(account_info(self.a, ACCOUNT))).status, 204)


USERS = (TempAuthUser("test", "tester", "testing", (".admin",)),)
LOGIN = {"X-Auth-User": "test:tester", "X-Auth-Key": "testing"}


class MemcachedTokensTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.memcache = FakeMemcache(self.clock)
        self.a, self.b = self.proxy(), self.proxy()

    def proxy(self) -> TempAuth:
        store = MemcachedTokenStore(self.memcache, self.clock.seconds)
        return TempAuth(USERS, store, 3600, "AUTH", self.clock.seconds)

    def login(self, auth: TempAuth) -> str:
        return self.successResultOf(run(auth.authenticate(LOGIN, "h", "http"))).header("X-Auth-Token")

    def whom(self, auth: TempAuth, token: str) -> Identity | None:
        return self.successResultOf(run(auth.identify(token)))

    def test_a_token_from_one_proxy_works_on_the_other_until_it_expires(self) -> None:
        self.assertTrue(verifyObject(ISharedTokenStore, self.a.store))
        token = self.login(self.a)
        self.assertRegex(token, r"^AUTH_tk[0-9a-f]{32}$")
        self.assertEqual(self.whom(self.b, token).user, "test:tester")
        self.assertEqual(self.login(self.b), token)  # a login through B hands back the token out
        self.assertIsNone(self.whom(self.b, "AUTH_tk" + "0" * 32))
        self.assertIsNone(self.whom(self.b, "nonsense"))
        self.clock.advance(3600)
        self.assertIsNone(self.whom(self.a, token))
        self.assertIsNone(self.whom(self.b, token))
        self.assertNotEqual(self.login(self.b), token)

    def test_a_revocation_reaches_every_proxy_within_local_ttl(self) -> None:
        token = self.login(self.a)
        self.assertIsNotNone(self.whom(self.b, token))
        calls = len(self.memcache.calls)
        self.assertIsNotNone(self.whom(self.b, token))
        self.assertEqual(len(self.memcache.calls), calls)  # within local_ttl: not asked again
        self.successResultOf(self.a.store.revoke(token))
        self.assertIsNone(self.whom(self.a, token))
        self.clock.advance(1.0)
        self.assertIsNone(self.whom(self.b, token))
        self.assertNotEqual(self.login(self.b), token)

    def test_memcached_gone_logs_nobody_out_of_a_proxy_that_knew_the_token(self) -> None:
        token = self.login(self.a)
        self.whom(self.b, token)
        self.memcache.reachable = False
        self.clock.advance(60)
        self.assertEqual(self.whom(self.a, token).user, "test:tester")
        self.assertEqual(self.whom(self.b, token).user, "test:tester")
        fresh = self.proxy()  # a proxy that never saw it cannot tell
        self.assertIsNone(self.whom(fresh, token))
        during = self.login(fresh)  # a login during the outage: good on the proxy that issued it
        self.assertEqual(self.whom(fresh, during).user, "test:tester")
        self.assertIsNone(self.whom(self.b, during))
        self.clock.advance(3600)
        self.assertIsNone(self.whom(self.a, token))  # expiry still holds


    def test_a_login_given_up_while_memcached_stores_the_token_leaves_no_unhandled_error(self) -> None:
        # Both writes are cancelled with the login: neither failure may be left unhandled.
        class Slow(FakeMemcache):
            def set(self, key, value, ttl):
                return Deferred()

        store = MemcachedTokenStore(Slow(self.clock), self.clock.seconds)
        issuing = store.issue(Identity("AUTH_test", "test:tester", ("test",)), NOW + 60)
        issuing.cancel()
        self.failureResultOf(issuing, CancelledError)
        del issuing
        gc.collect()
        self.assertEqual(self.flushLoggedErrors(CancelledError), [])


class CacheFilterConfigTests(SynchronousTestCase):
    def conf(self, filters: str) -> str:
        directory = temp_dir(self)
        fake_rings(directory)
        write_file(directory, "txstore.conf", "[txstore-hash]\nhash_path_suffix = s\n")
        return str(write_file(directory, "proxy.conf", "[proxy]\nring_dir = .\n" + filters))

    def test_memcache_servers_make_the_info_shared(self) -> None:
        settings = load_proxy_settings(self.conf(
            "[filter:cache]\nuse = egg:txstore#memcache\nmemcache_servers = 127.0.0.1:11211, 127.0.0.1:11212\n"
            "local_ttl = 0.5\nio_timeout = 1\n"
            "[filter:tempauth]\nuse = egg:txstore#tempauth\ntoken_store = memcached\n"))
        memcache, cache = shared_state(settings, Clock())
        self.assertIsInstance(memcache, MemcacheClient)
        self.assertEqual((memcache.servers, memcache.io_timeout), ((("127.0.0.1", 11211), ("127.0.0.1", 11212)), 1.0))
        self.assertIsInstance(cache, SharedInfoCache)
        self.assertEqual(cache.local_ttl, 0.5)

    def test_without_servers_everything_stays_in_the_process(self) -> None:
        for filters in ("", "[filter:cache]\nuse = egg:txstore#memcache\n"):
            memcache, cache = shared_state(load_proxy_settings(self.conf(filters)), Clock())
            self.assertIsNone(memcache)
            self.assertIsInstance(cache, InMemoryInfoCache)

    def test_memcached_tokens_need_the_servers(self) -> None:
        error = self.assertRaises(ConfigError, load_proxy_settings, self.conf(
            "[filter:tempauth]\nuse = egg:txstore#tempauth\ntoken_store = memcached\n"))
        self.assertIn("[filter:tempauth]: token_store: memcached needs a [filter:cache] in the pipeline"
                      " with memcache_servers", str(error))
        self.assertRaises(ConfigError, load_proxy_settings, self.conf(
            "[filter:cache]\nuse = egg:txstore#memcache\nmemcache_servers = nowhere\n"))
