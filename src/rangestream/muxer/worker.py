"""The worker thread: all of FFmpeg's work (PyAV), which blocks.

It opens both inputs' demuxers on their channels' :class:`ThreadReader`, checks
the codecs against the container, writes the header (held back until it is
good, so a refused mux writes nothing), then copies packets, never
re-encoding, in order of decoding time, and writes the trailer.

:func:`run_worker` owns the thread: it starts it, awaits its result on the
event loop, and on cancellation stops it (:class:`Abort`) and waits for it
to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

from ..errors import MuxError
from .channels import Abort, Aborted, ThreadReader
from .failures import InputFailed, SinkFailed
from .formats import Format
from .progress import INPUTS, MuxResult, Progress
from .sinks import Sink

THREAD_NAME = "rangestream-mux"


def codec_name(stream: Any) -> str:
    """FFmpeg's name of the codec ("av1", not the decoder's "libdav1d")."""
    ctx = stream.codec_context
    if ctx is None:
        return str(stream.type)
    try:
        return str(ctx.codec.canonical_name)
    except Exception:  # pragma: no cover - very old PyAV
        return str(ctx.name)


class Worker:
    """One mux's FFmpeg side; :meth:`run` runs in the worker thread."""

    def __init__(self, fmt: Format, readers: dict[str, ThreadReader], sink: Sink, progress: Progress,
                 abort: Abort, read_size: int) -> None:
        self.fmt = fmt
        self.readers = readers
        self.sink = sink
        self.progress = progress
        self.abort = abort
        self.read_size = read_size

    def _check(self) -> None:
        """Raise if the mux was aborted or the sink failed (FFmpeg may have hidden either)."""
        if self.abort.is_set():
            raise Aborted()
        if self.sink.out.error is not None:
            raise SinkFailed(self.sink.out.error)

    def run(self) -> MuxResult:
        inputs: dict[str, tuple[Any, Any]] = {}
        out: Any = None
        try:
            for name in INPUTS:
                inputs[name] = self._open_input(name)
            streams = {name: stream for name, (_, stream) in inputs.items()}
            self.fmt.check_codecs({name: codec_name(s) for name, s in streams.items()})
            out = self._open_output()
            ostreams = self._add_streams(out, streams)
            self._write_header(out, streams)
            self._merge(inputs, ostreams, out)
            try:
                out.close()  # the trailer
            finally:
                out = None
            self._check()
            self.sink.out.finish()
            self._check()
        except (Aborted, SinkFailed, InputFailed, MuxError):
            raise
        except Exception:
            self._check()  # an FFmpeg error caused by the abort or the sink: report that instead
            raise
        finally:
            self._close(out, [container for container, _ in inputs.values()])
        return MuxResult(
            format=self.fmt.name,
            bytes_written=self.sink.out.size,
            packets=dict(self.progress.packets),
            seconds=0.0,
            codecs=dict(self.progress.codecs),
            duration=max(self.progress.reached.values()),
        )

    def _close(self, out: Any, containers: list[Any]) -> None:
        if out is not None:
            # The trailer would write to the sink; after a failure it must not.
            self.sink.out.discard = True
            with contextlib.suppress(Exception):
                out.close()
        for c in containers:
            with contextlib.suppress(Exception):
                c.close()
        with contextlib.suppress(Exception):
            self.sink.out.finish()

    def _open_input(self, name: str) -> tuple[Any, Any]:
        import av

        try:
            container = av.open(self.readers[name], mode="r", buffer_size=self.read_size)
        except Exception as e:
            self._check()
            raise InputFailed(name, e) from e
        self._check()
        streams = container.streams.video if name == "video" else container.streams.audio
        if not streams:
            found = ", ".join(f"{s.type} {codec_name(s)}" for s in container.streams)
            container.close()
            if found:
                why = f"the {name} input has no {name} stream (it has: {found})"
            else:
                why = (f"no stream found in the {name} input ({self.progress.bytes_in[name]} bytes): "
                       "truncated, or not a media file")
            raise InputFailed(name, MuxError(why, input=name))
        stream = streams[0]
        self.progress.codecs[name] = codec_name(stream)
        return container, stream

    def _open_output(self) -> Any:
        import av

        return av.open(self.sink.out, mode="w", format=self.fmt.name, options=dict(self.fmt.options),
                       buffer_size=self.read_size)

    def _add_streams(self, out: Any, streams: dict[str, Any]) -> dict[str, Any]:
        ostreams = {}
        for name, s in streams.items():
            try:
                # opaque: keep the input's codec (a decoder, e.g. libdav1d); no encoder is needed.
                ostreams[name] = out.add_stream_from_template(s, opaque=True)
            except ValueError as e:
                raise MuxError(f"{self.fmt.name} cannot hold {codec_name(s)} {name}: {e}; "
                               "use format='mkv'", input=name) from e
        return ostreams

    def _write_header(self, out: Any, streams: dict[str, Any]) -> None:
        try:
            out.start_encoding()
        except Exception as e:
            self._check()
            raise MuxError(f"cannot write a {self.fmt.name} header for {codec_name(streams['video'])} video "
                           f"+ {codec_name(streams['audio'])} audio: {e}") from e
        self.sink.out.release()  # the header is good: from here on bytes go to the sink
        self._check()
        self.progress.header_written = True

    def _merge(self, inputs: dict[str, tuple[Any, Any]], ostreams: dict[str, Any], out: Any) -> None:
        """Write the packets of both inputs in order of decoding time."""
        iters = {name: c.demux(s) for name, (c, s) in inputs.items()}
        tbs = {name: float(s.time_base) for name, (c, s) in inputs.items()}
        last = dict.fromkeys(INPUTS, float("-inf"))
        abort = self.abort
        progress = self.progress
        sink_out = self.sink.out
        reached = progress.reached

        def pull(name: str) -> tuple[Any, float]:
            it = iters[name]
            while True:
                try:
                    p = next(it)
                except StopIteration:
                    self._check()  # an abort reads as end of data
                    return None, 0.0
                except Exception as e:
                    self._check()
                    raise InputFailed(name, e) from e
                if p.size == 0:  # the demuxer's flush packet
                    continue
                ts = p.dts if p.dts is not None else p.pts
                key = ts * tbs[name] if ts is not None else last[name]
                return p, key

        heads = {name: pull(name) for name in INPUTS}
        while True:
            if abort.is_set():
                raise Aborted()
            v, vkey = heads["video"]
            a, akey = heads["audio"]
            if v is None and a is None:
                return
            name = "video" if a is None or (v is not None and vkey <= akey) else "audio"
            packet, key = heads[name]
            last[name] = key
            pts = packet.pts
            if pts is not None:
                end = (pts + packet.duration) * tbs[name]  # floats: Fractions cost more than the rest
                if end > reached[name]:
                    reached[name] = end
            packet.stream = ostreams[name]
            try:
                out.mux_one(packet)
            except Exception as e:
                self._check()
                raise InputFailed(name, MuxError(f"the muxer rejected a {name} packet: {e}", input=name)) from e
            if sink_out.error is not None:
                raise SinkFailed(sink_out.error)
            progress.packets[name] += 1
            heads[name] = pull(name)


async def run_worker(worker: Worker) -> MuxResult:
    """Run ``worker`` in its own thread and return its result, or raise its error.

    Whatever way this ends (result, error, cancellation), the thread has ended
    before it returns; on cancellation the worker is aborted first, then
    waited for even if cancelled again, and ``CancelledError`` is re-raised.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[MuxResult] = loop.create_future()

    def settle(result: MuxResult | None, error: BaseException | None) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def target() -> None:
        try:
            result = worker.run()
        except BaseException as e:  # handed to the loop
            loop.call_soon_threadsafe(settle, None, e)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    thread = threading.Thread(target=target, name=THREAD_NAME, daemon=True)
    thread.start()
    try:
        return await asyncio.shield(done)
    except BaseException:
        worker.abort.set()  # wakes the worker wherever it waits, and every pump and drain
        await _wait_for_thread(done)
        raise
    finally:
        thread.join(timeout=5)  # it has settled ``done``: it is returning, this is immediate


async def _wait_for_thread(done: asyncio.Future[Any]) -> None:
    """Wait until the thread has settled ``done``, even if cancelled again meanwhile."""
    while not done.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait([done])
    if not done.cancelled():
        done.exception()  # retrieved: the error that stopped the mux is reported by whoever caused it
