"""The event-loop side of a mux: :func:`mux` and :func:`mux_urls`.

:func:`mux` runs one task group: a pump per input (async iterator -> input
channel), a drain for an async sink (output channel -> sink), and, in its
body, :func:`~.worker.run_worker`, which owns the worker thread. The first
failure of any of them cancels the others and stops the thread; it is then
turned into one :class:`MuxError` (:mod:`.failures`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

from ..errors import MuxError, RangestreamError
from .channels import DEFAULT_READ_SIZE, Abort, Aborted, LoopSender, input_channel
from .failures import InputFailed, SinkFailed, as_mux_error, first_failure
from .formats import resolve_format
from .progress import INPUTS, MuxResult, Progress
from .sinks import Sink, make_sink
from .sniff import IndexSniffer
from .worker import Worker, run_worker

DEFAULT_QUEUE_BYTES = 4 * 1024 * 1024


async def mux(
    video: AsyncIterable[bytes],
    audio: AsyncIterable[bytes],
    sink: Any,
    format: str | None = None,
    *,
    queue_bytes: int = DEFAULT_QUEUE_BYTES,
    read_size: int = DEFAULT_READ_SIZE,
) -> MuxResult:
    """Mux two in-order byte streams (video, audio) into one container written to ``sink``.

    ``video`` and ``audio`` are async iterables of ``bytes`` (an engine
    stream, or any async generator) holding one container each: fragmented
    MP4, WebM/Matroska, or MP4 with ``moov`` first. A plain MP4 with its
    ``moov`` index at the end is refused early with :class:`MuxError` (a stream
    cannot seek to read it).

    ``sink``: a file path (created at the first byte), ``"-"`` for stdout, a
    binary file-like object (written from the worker thread), or an async
    writer (anything with ``async def write(bytes)``, e.g. an aiohttp
    ``StreamResponse``, or an ``asyncio.StreamWriter``).

    ``format``: ``"mp4"`` (fragmented), ``"mkv"`` or ``"webm"``; by default
    from the sink's file extension. A codec pair the container cannot hold
    raises :class:`MuxError` before any byte is written.

    ``queue_bytes`` bounds each of the queues (per input, and to an async
    sink); ``read_size`` is the block size the demuxers read. Memory is
    about three ``queue_bytes`` plus one incoming piece per input plus
    FFmpeg's own read-ahead (its probe reads at most a few MB per input).

    Packets are copied (never re-encoded) in order of decoding time. On an
    input failure, a sink failure or cancellation, both inputs are cancelled
    and closed and the worker thread ends before this returns; see the package
    doc for the errors. (A blocking file-like sink whose ``write`` never
    returns, e.g. a pipe nobody reads, holds the worker thread and so this
    cleanup until it does; async sinks have no such problem.)
    """
    fmt = resolve_format(format, sink)
    if queue_bytes <= 0 or read_size <= 0:
        raise ValueError("queue_bytes and read_size must be positive")
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    abort = Abort()
    out = make_sink(sink, loop, queue_bytes, abort)
    progress = Progress()
    channels = {name: input_channel(loop, queue_bytes, abort, read_size) for name in INPUTS}
    senders = {name: sender for name, (sender, _) in channels.items()}
    worker = Worker(fmt, {name: reader for name, (_, reader) in channels.items()}, out, progress, abort, read_size)
    result = await _run(worker, {"video": video, "audio": audio}, senders, out, progress, read_size)
    result.seconds = time.monotonic() - started
    result.input_bytes = dict(progress.bytes_in)
    return result


async def _run(worker: Worker, sources: dict[str, AsyncIterable[bytes]], senders: dict[str, LoopSender],
               sink: Sink, progress: Progress, block: int) -> MuxResult:
    """The pumps, the drain and the worker thread as one task group: the first failure stops them all."""
    failure: BaseException | None = None
    try:
        async with asyncio.TaskGroup() as tg:
            pumps = [tg.create_task(_pump(name, sources[name], senders[name], progress, block)) for name in INPUTS]
            parts = list(pumps)
            if sink.receiver is not None:
                parts.append(tg.create_task(_drain(sink)))
            result = await run_worker(worker)
            # The demuxers have stopped: a pump still running holds only trailing bytes they did not want.
            for pump in pumps:
                pump.cancel()
            # Wait for the drain in here, not in the group's exit: a failure then cancels this body,
            # which Python 3.11's TaskGroup accounts for (uncancel) only when it happens before its exit.
            await asyncio.wait(parts)
    except* Exception as group:
        failure = first_failure(group)
    if failure is None:
        return result
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()  # cancelled from outside meanwhile: that comes first, as for any task
    raise as_mux_error(failure, progress, sink)


async def _pump(name: str, source: AsyncIterable[bytes], sender: LoopSender, progress: Progress,
                block: int) -> None:
    """Feed one input into its channel, coalescing small pieces into blocks (FFmpeg reads far faster so)."""
    it: AsyncIterator[bytes] | None = None
    try:
        it = aiter(source)
        sniffer = IndexSniffer(name)
        buf = bytearray()
        async for data in it:
            if not data:
                continue
            progress.bytes_in[name] += len(data)
            if not sniffer.done:
                sniffer.feed(data)
            if not buf and len(data) >= block:
                await sender.send(bytes(data))
                continue
            buf += data
            if len(buf) >= block or sender.reader_waiting:
                await sender.send(bytes(buf))
                buf.clear()
        if buf:
            await sender.send(bytes(buf))
        sender.close()
    except Aborted:
        return  # torn down: whoever failed first reports it
    except Exception as e:
        raise InputFailed(name, e) from e
    finally:
        if it is not None:
            await _aclose(it)


async def _drain(sink: Sink) -> None:
    try:
        await sink.drain()
    except Aborted:
        return  # torn down: whoever failed first reports it
    except Exception as e:
        raise SinkFailed(e) from e


async def _aclose(it: Any) -> None:
    aclose = getattr(it, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


async def mux_urls(
    video_url: str,
    audio_url: str,
    sink: Any,
    format: str | None = None,
    *,
    client: Any = None,
    queue_bytes: int = DEFAULT_QUEUE_BYTES,
    **stream_options: Any,
) -> MuxResult:
    """Fetch two URLs with the engine and :func:`mux` them into ``sink``.

    ``client``: a :class:`rangestream.Client` to share (its connection pool,
    headers, proxy); by default a private one is made and closed.
    ``stream_options`` go to ``open_stream`` for both (``chunk_size``,
    ``window``, ``retry``, ...). A URL that fails (404, retries exhausted...)
    raises :class:`MuxError` naming its input, chained from the engine's
    :class:`~rangestream.errors.StreamError`.
    """
    from ..client import Client

    fmt = resolve_format(format, sink)  # fail before any request
    async with contextlib.AsyncExitStack() as stack:
        if client is None:
            client = await stack.enter_async_context(Client())
        streams = {}
        for name, url in (("video", video_url), ("audio", audio_url)):
            try:
                streams[name] = await stack.enter_async_context(client.open_stream(url, **stream_options))
            except RangestreamError as e:
                if isinstance(e, MuxError):
                    raise
                raise MuxError(f"cannot open: {e}", input=name) from e
        return await mux(streams["video"], streams["audio"], sink, fmt.name if format is None else format,
                         queue_bytes=queue_bytes)
