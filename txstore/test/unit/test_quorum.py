"""Tests for quorum arithmetic and transaction ids."""


from twisted.trial.unittest import SynchronousTestCase

from txstore.common.quorum import best_status, quorum_size
from txstore.proxy.transaction import new_trans_id


class QuorumTests(SynchronousTestCase):
    def test_sizes(self) -> None:
        self.assertEqual([quorum_size(n) for n in (1, 2, 3, 4, 5, 6)], [1, 2, 2, 3, 3, 4])

    def test_best_status(self) -> None:
        self.assertEqual(best_status([201, 201, 201], 3), 201)
        self.assertEqual(best_status([201, 201, 503], 3), 201)
        self.assertEqual(best_status([201, 503, 503], 3), 503)
        self.assertEqual(best_status([201, 404, 503], 3), 503)
        self.assertEqual(best_status([404, 404, 201], 3), 404)
        self.assertEqual(best_status([204, 204, 404], 3), 204)
        self.assertEqual(best_status([409, 412, 409], 3), 409)
        self.assertEqual(best_status([201, 201], 3), 201)
        self.assertEqual(best_status([201], 3), 503)
        self.assertEqual(best_status([201, 201, 503, 503], 4), 503)


class TransIdTests(SynchronousTestCase):
    def test_format(self) -> None:
        trans = new_trans_id(clock=lambda: 1700000000)
        self.assertRegex(trans, r"^tx[0-9a-f]{21}-[0-9a-f]{10}$")
        self.assertTrue(trans.endswith("-006553f100"))
        self.assertNotEqual(new_trans_id(), new_trans_id())
