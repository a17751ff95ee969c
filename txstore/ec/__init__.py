"""
Erasure coding: pyeclib behind a small codec (`codec`), and the arithmetic of segments,
fragments and fragment archives (`layout`). Pure and blocking: the proxy and the
reconstructor call the codec from a thread pool, never on the reactor.
"""
