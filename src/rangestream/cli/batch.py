"""Several downloads at once (``get URL URL...``, ``-i FILE``, a playlist): ``-j N`` jobs at a time on
one shared client, each with its share of ``--max-connections``; one failing job never stops the
others; the exit code is the worst job's (exits.worst_code) and the summary names every failure."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from ..output import DownloadArchive, human_bytes
from ..redact import redact_text, redact_url
from .args import make_client
from .exits import EXIT_OK, PROG, classify, worst_code
from .jobs import Job, NameOrder, archived, record
from .progress import MultiDisplay
from .proxies import job_lease, release_command_lease
from .runner import Context
from .ui import MB, Summary


@dataclass
class Result:
    job: Job
    code: int
    summary: Summary
    skipped: bool = False


RunJob = Callable[[Context, Job], Awaitable[int]]
Place = Callable[[dict[str, object], str], Awaitable[str]]


async def run_batch(ctx: Context, jobs: list[Job], archive: DownloadArchive | None, run_job: RunJob) -> int:
    args, summary = ctx.args, ctx.summary
    multi = MultiDisplay(ctx.display, len(jobs))
    share = max(1, args.max_connections // min(args.jobs, len(jobs)))
    gate = asyncio.Semaphore(args.jobs)
    results: list[Result] = []
    saved: list[str] = []
    started = time.monotonic()
    summary.window = args.window
    width = len(str(len(jobs)))
    for n, job in enumerate(jobs, 1):
        job.label = f"[{n:>{width}}/{len(jobs)}]"
    # Names in list order, waited for only inside place (pages resolve side by side); proxy leases
    # in list order too, so later jobs waiting for their name never hold every proxy slot an
    # earlier job still needs. The gate lets jobs in in list order (asyncio.Semaphore is FIFO).
    order, leases = NameOrder(len(jobs)), NameOrder(len(jobs))

    async def one(index: int, job: Job) -> None:
        try:
            async with gate:
                jargs = argparse.Namespace(**vars(args))
                jargs._connections = share
                jd = multi.job(job.label)
                jctx = Context(jargs, jd, Summary(command="get"), client=client,
                               place=_placing(ctx, order, index))
                try:
                    results.append(await _job(jctx, job, archive, run_job,
                                              lambda: _ordered_lease(jargs, leases, index)))
                except BaseException:
                    if jctx.interrupt_note:
                        saved.append(jctx.interrupt_note)
                    raise
                finally:
                    last = results[-1] if results and results[-1].job is job else None
                    multi.finish(jd.line, "failed" if last is None or last.code else
                                 "skipped" if last.skipped else "done")
        finally:
            order.done(index)
            leases.done(index)
        if args.json:
            _print_job_json(job, results[-1])

    await release_command_lease(args)  # each job holds its own proxy (_job)
    try:
        # The budget is also a hard cap per host: a split or an early next request never goes beyond it.
        async with make_client(args, limit_per_host=args.max_connections) as client, multi.running():
            async with asyncio.TaskGroup() as tg:
                for index, job in enumerate(jobs):
                    tg.create_task(one(index, job), name=f"rangestream-job-{job.label}")
    finally:
        summary.seconds = time.monotonic() - started
        if saved:
            ctx.interrupt_note = (f"{len(saved)} partial download{'s' if len(saved) != 1 else ''} saved; "
                                  f"run the same command again to resume")
    return _report(ctx, multi, results)


def _placing(ctx: Context, order: NameOrder, index: int) -> Place | None:
    """``ctx.place`` for job ``index``: it waits until every earlier job has its name (or has
    ended); the next job may take its name once this one has its own."""
    place = ctx.place
    if place is None:
        return None

    async def placed(fields: dict[str, object], default_name: str) -> str:
        try:
            await order.turn(index)
            return await place(fields, default_name)
        finally:
            order.done(index)

    return placed


@contextlib.asynccontextmanager
async def _ordered_lease(args: argparse.Namespace, leases: NameOrder, index: int) -> AsyncIterator[None]:
    """Job ``index``'s proxy (``--proxy-file``, proxies.job_lease), taken after every earlier job's."""
    async with contextlib.AsyncExitStack() as stack:
        try:
            await leases.turn(index)
            await stack.enter_async_context(job_lease(args))
        finally:
            leases.done(index)
        yield


async def _job(jctx: Context, job: Job, archive: DownloadArchive | None, run_job: RunJob,
               lease: Callable[[], contextlib.AbstractAsyncContextManager[None]]) -> Result:
    display = jctx.display
    if archived(job, archive):
        display.note(f"{job.key}: in the download archive, skipped")
        jctx.summary.ok, jctx.summary.exit_code = True, EXIT_OK
        jctx.summary.extra["skipped"] = "archive"
        return Result(job, EXIT_OK, jctx.summary, skipped=True)
    try:
        # --proxy-file: this download's own proxy, sticky from its page resolution to its last byte;
        # no usable proxy is this job's failure (exit 7), not the batch's.
        async with lease():
            code = await run_job(jctx, job)
        if jctx.summary.ok:
            await record(job, archive)
    except Exception as e:  # noqa: BLE001 - one failing job never stops the others
        code, message, hint = classify(e)
        message = redact_text(message)
        jctx.summary.error = message
        display.error(f"{job.label} {redact_url(job.url)}: {message}")
        for extra in (jctx.hint, hint):
            if extra:
                display.note(f"{PROG}: {redact_text(extra)}")
    jctx.summary.exit_code = code
    return Result(job, code, jctx.summary, skipped=bool(jctx.summary.extra.get("skipped")))


def _print_job_json(job: Job, result: Result) -> None:
    line = {"job": job.label.strip("[]"), **result.summary.as_json(), "url": redact_url(job.url)}
    if result.skipped:
        line["skipped"] = result.summary.extra.get("skipped")
    sys.stderr.write(json.dumps(line) + "\n")
    sys.stderr.flush()


def _report(ctx: Context, multi: MultiDisplay, results: list[Result]) -> int:
    summary, display = ctx.summary, ctx.display
    failed = [r for r in results if r.code != EXIT_OK]
    skipped = sum(1 for r in results if r.skipped and not r.code)
    summary.ok = not failed
    summary.bytes = sum(r.summary.bytes for r in results)
    for key in ("requests", "retries", "refreshes", "splits"):
        setattr(summary, key, sum(getattr(r.summary, key) for r in results))
    summary.connections_max = max((r.summary.connections_max for r in results), default=0)
    summary.extra.update({
        "jobs": len(results), "done": len(results) - len(failed) - skipped, "skipped": skipped,
        "failed": len(failed),
        "failures": [{"url": redact_url(r.job.url), "exit_code": r.code, "error": r.summary.error}
                     for r in failed]})
    rate = summary.bytes / summary.seconds / MB if summary.seconds > 0 else 0.0
    if not ctx.args.json:
        display.note(f"Done: {len(results) - len(failed) - skipped} saved, {skipped} skipped, {len(failed)} "
                     f"failed of {len(results)} · {human_bytes(summary.bytes)} fetched in {summary.seconds:.2f} s "
                     f"at {rate:.1f} MB/s")
    for r in failed:
        display.error(f"failed: {redact_url(r.job.url)}: {r.summary.error} (exit {r.code})")
    return worst_code([r.code for r in results])
