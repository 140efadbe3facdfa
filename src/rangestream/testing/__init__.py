"""Test helpers that ship with rangestream (cf. ``trio.testing``).

- :mod:`rangestream.testing.origin`: the emulated CDN (``rangestream origin``, the demo,
  the tests and the benchmarks): Range/416/If-Range/HEAD, throttles, faults, a request log.
- :mod:`rangestream.testing.media`: small generated H.264/VP9/AV1 + AAC/Opus clips (PyAV).
- :mod:`rangestream.testing.servers`: a one-handler loopback server for servers odder than the
  emulated CDN.

Nothing here is imported by the library itself; only the CLI's ``origin`` and ``demo``
commands, the tests and the benchmarks use it.
"""

from ..retry import Retry

#: Retries for tests against loopback servers: one retry, no real waiting.
FAST_RETRY = Retry(attempts=1, backoff=0.001, cap=0.01, jitter=0)

__all__ = ["FAST_RETRY"]
