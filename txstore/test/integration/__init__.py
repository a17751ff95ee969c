"""
The slow tier: tests that start processes (twistd, txstore-aio clusters, memcached, Chromium,
rclone, network namespaces) and drive them over real sockets: ``trial txstore.test.integration``.
"""
