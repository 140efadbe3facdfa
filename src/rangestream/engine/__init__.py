"""The engine: one object fetched as a window of Range requests (see :class:`Stream`).

Modules, from the consumer down: ``stream`` (the public :class:`Stream`), ``delivery``
(in order or unordered), ``window`` (planning, the head, the budget, the size as learned),
``control`` (stalls, splits, the auto window), ``chunk`` (one chunk's attempts and body),
``source`` (the URL, its refresh and validators), ``attempts`` (retry accounting as a
value), ``response`` (pure checks of status and headers), ``slot`` and ``stats``.
"""

from .stats import ChunkTrace, Stats
from .stream import Stream

__all__ = ["ChunkTrace", "Stats", "Stream"]
