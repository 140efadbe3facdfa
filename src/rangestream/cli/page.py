"""``rangestream get PAGE_URL``: yt-dlp picks the format(s); one is downloaded like any URL, a
video+audio pair is muxed."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..output import human_bytes, is_stream_target, safe_file_name
from ..redact import redact_url
from .args import stream_options
from .download import get_url
from .exits import EXIT_OK, PROG
from .mux import container_of, mux_into
from .proxies import resolver_proxy
from .runner import Context

if TYPE_CHECKING:
    from ..refresh import StreamFormat


async def run_get_page(ctx: Context, page_url: str, fields: dict[str, object] | None = None) -> int:
    """``get`` of a page URL: yt-dlp picks the format(s); one is downloaded like any URL, a
    video+audio pair is muxed into one file. Expired stream URLs are re-resolved from the page."""
    from ..headers import merge_headers
    from ..refresh import Resolver, output_name

    args, display, summary = ctx.args, ctx.display, ctx.summary
    resolver = Resolver(args.ytdl_format, max_height=args.max_height, proxy=resolver_proxy(args),
                        cookies_file=args.cookies)
    display.note(f"{PROG}: resolving {redact_url(page_url)} with yt-dlp")
    res = await resolver.resolve(page_url)
    summary.extra.update({"page_url": redact_url(page_url), "title": res.title,
                          "formats": [f.format_id for f in res.formats]})
    display.note(f"{PROG}: {res.title}: " + " + ".join(f.describe() for f in res.formats))
    user_headers = dict(args.header or [])

    def options_for(f: StreamFormat) -> dict[str, Any]:
        opts = stream_options(args)  # --refresh-command, if given, replaces the built-in re-resolve
        opts.setdefault("refresh", resolver.hook(page_url, f))
        headers = merge_headers(f.http_headers, user_headers)
        if headers:
            opts["headers"] = headers
        return opts

    if not res.needs_mux:
        f = res.video
        summary.url = redact_url(f.url)
        opts = options_for(f)
        args._refresh, args._headers = opts["refresh"], opts.get("headers")
        return await get_url(ctx, f.url, output_name(res.title, f.ext, res.id or "download"),
                             {"title": res.title, "id": res.id, **(fields or {}), "ext": f.ext})

    video, audio = res.formats
    summary.url = redact_url(video.url)
    summary.extra["audio_url"] = redact_url(audio.url)
    out = args.output
    container = res.ext if res.ext in ("mp4", "webm", "mkv") else "mkv"
    if out != "-":
        name = output_name(res.title, container, res.id or "download")
        if ctx.place is not None:
            out = await ctx.place({"title": res.title, "id": res.id, **(fields or {}), "ext": container}, name)
        else:
            out = out or safe_file_name(name)
            if os.path.isdir(out):
                out = os.path.join(out, safe_file_name(name, directory=out))
        container = container_of(out) or container
        if os.path.exists(out) and not args.force and not is_stream_target(out):
            display.note(f"{out} already exists ({human_bytes(os.path.getsize(out))}); nothing to do "
                         f"(--force downloads it again)")
            summary.ok, summary.output = True, out
            summary.size = os.path.getsize(out)
            summary.extra["skipped"] = "exists"
            return EXIT_OK
    return await mux_into(ctx, [("video", video.url, options_for(video)), ("audio", audio.url, options_for(audio))],
                           out, container)
