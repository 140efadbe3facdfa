"""``rangestream get URL [URL...]``: a page URL goes to ``page`` (yt-dlp), a direct URL to
``download``; a playlist page becomes one job per entry; several jobs run in ``batch``.

A single direct URL imports neither ``batch`` nor the page side (``page``, ``playlist``,
``refresh``, the muxer): a command's start-up is paid for by every download."""

from __future__ import annotations

from ..headers import is_page_url
from ..output import DownloadArchive, default_output_name
from ..redact import redact_url
from .download import get_url
from .exits import EXIT_OK, UsageError
from .jobs import Job, Placer, archive_key, archived, collect_urls, direct_fields, record
from .runner import Context


async def run_get(ctx: Context) -> int:
    args = ctx.args
    urls = collect_urls(args)
    archive = DownloadArchive(args.download_archive).load() if args.download_archive else None
    jobs, listed = await _jobs(ctx, urls)
    if not jobs:
        ctx.display.note("nothing to download")
        ctx.summary.ok = True
        return EXIT_OK
    several = len(jobs) > 1 or listed or bool(args.input_file)
    ctx.place = Placer(args.output, several=len(jobs) > 1)
    if several:
        from .batch import run_batch

        return await run_batch(ctx, jobs, archive, run_job)
    job = jobs[0]
    if archived(job, archive):
        ctx.display.note(f"{job.key}: in the download archive {args.download_archive}, skipped")
        ctx.summary.ok, ctx.summary.url = True, redact_url(job.url)
        ctx.summary.extra["skipped"] = "archive"
        return EXIT_OK
    code = await run_job(ctx, job)
    if ctx.summary.ok:
        await record(job, archive)
    return code


async def _jobs(ctx: Context, urls: list[str]) -> tuple[list[Job], bool]:
    """A job per URL, a playlist's selected entries for a playlist; and whether one was a playlist."""
    args = ctx.args
    jobs: list[Job] = []
    listed = False
    for url in urls:
        page = bool(args.resolve) or is_page_url(url)
        entries = await _playlist(ctx, url) if page else None
        if entries is not None:
            listed = True
            jobs += [e for e in entries if all(e.url != j.url for j in jobs)]
        elif all(url != j.url for j in jobs):
            jobs.append(Job(url=url, page=page, key=archive_key(url, page)))
    return jobs, listed


async def _playlist(ctx: Context, url: str) -> list[Job] | None:
    """A page URL's selected entries as jobs if it is a playlist; None for one video."""
    from .playlist import may_be_playlist, playlist_jobs

    return await playlist_jobs(ctx.args, url, ctx.display) if may_be_playlist(url, ctx.args) else None


async def run_job(ctx: Context, job: Job) -> int:
    """One download: a page URL resolved with yt-dlp, or a direct URL."""
    args = ctx.args
    ctx.summary.url = redact_url(job.url)
    ctx.summary.window = args.window
    if job.page:
        from .page import run_get_page

        return await run_get_page(ctx, job.url, job.fields)
    if args.ytdl_format is not None or args.max_height is not None:
        raise UsageError("--format and --max-height choose among the formats of a page URL (YouTube, or "
                         "any URL with --resolve); this is a direct URL")
    return await get_url(ctx, job.url, default_output_name(job.url), {**direct_fields(job.url), **job.fields})
