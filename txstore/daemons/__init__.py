"""The consistency daemons of a storage node: Twisted services on timers."""
