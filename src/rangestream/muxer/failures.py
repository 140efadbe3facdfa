"""Where a mux's failures become one :class:`~rangestream.errors.MuxError`.

The parts of a mux report a failure as it happened, tagged with where: an
input's pump or the demuxer raises :class:`InputFailed`, the sink's writes
:class:`SinkFailed`. :func:`first_failure` picks the failure that stopped the
mux out of everything its task group collected, and :func:`as_mux_error` turns
it into the :class:`MuxError` the caller sees, chained from the original.
"""

from __future__ import annotations

from ..errors import MuxError, StreamError
from .channels import Aborted
from .progress import Progress
from .sinks import Sink


class InputFailed(Exception):
    """Input ``name`` failed: its iterator raised, or its data could not be demuxed."""

    def __init__(self, name: str, error: BaseException) -> None:
        super().__init__(name, error)
        self.name = name
        self.error = error


class SinkFailed(Exception):
    """The sink's write (or seek, or flush) raised."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


def first_failure(group: BaseExceptionGroup[Exception]) -> BaseException:
    """The failure that stopped the mux: the first one that is not the teardown it caused."""
    failures = group.exceptions
    return next((e for e in failures if not isinstance(e, Aborted)), failures[0])


def as_mux_error(failure: BaseException, progress: Progress, sink: Sink) -> MuxError:
    """The :class:`MuxError` for ``failure``, its ``__cause__`` set to the original error."""
    cause: BaseException = failure
    if isinstance(failure, InputFailed):
        cause = failure.error
        error = _input_error(failure.name, cause, progress)
        if error is cause:  # already a MuxError naming this input (the sniffer's, the worker's)
            return error
    elif isinstance(failure, SinkFailed):
        cause = failure.error
        error = MuxError(
            f"the sink ({sink.description}) failed after {sink.out.size} bytes "
            f"({progress.packets['video']} video, {progress.packets['audio']} audio packets muxed): "
            f"{type(cause).__name__}: {cause}"
        )
    elif isinstance(failure, MuxError):
        return failure
    elif isinstance(failure, Aborted):
        error = MuxError("mux aborted")
    else:
        error = MuxError(f"muxing failed: {type(failure).__name__}: {failure}")
    error.__cause__ = cause
    return error


def _input_error(name: str, error: BaseException, progress: Progress) -> MuxError:
    """Which input failed and how far it got: bytes arrived, packets and media seconds muxed."""
    if isinstance(error, MuxError) and error.input == name:
        return error
    got = progress.bytes_in[name]
    if isinstance(error, StreamError) and error.offset is not None:
        got = error.offset
    done = progress.packets[name]
    reached = progress.reached[name]
    reason = str(error) or type(error).__name__
    if isinstance(error, MuxError) and error.input:
        reason = reason[len(error.input) + 2 :]
    return MuxError(
        f"input failed after {got} bytes ({done} packets, {reached:.2f} s muxed): {reason}",
        input=name,
    )
