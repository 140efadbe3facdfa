"""Commands with parsers of their own, handed their arguments untouched: ``serve`` and ``sign``
(``rangestream.service``) and ``origin`` (the emulated CDN). Each imports its module only when run."""

from __future__ import annotations

from collections.abc import Callable


def _origin(argv: list[str]) -> int:
    from ..testing.origin import main as origin_main

    return origin_main(argv)


def _serve(argv: list[str]) -> int:
    from ..service import main as serve_main

    return serve_main(argv)


def _sign(argv: list[str]) -> int:
    from ..service import sign_main

    return sign_main(argv)


PASSTHROUGH: dict[str, Callable[[list[str]], int]] = {"origin": _origin, "serve": _serve, "sign": _sign}
