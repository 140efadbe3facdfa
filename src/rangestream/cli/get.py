"""``rangestream get URL``: a page URL goes to ``page`` (yt-dlp), a direct URL to ``download``."""

from __future__ import annotations

from ..output import default_output_name
from ..redact import redact_url
from .args import check_url
from .download import get_url
from .exits import UsageError
from .runner import Context


async def run_get(ctx: Context) -> int:
    from ..refresh import is_page_url
    from .page import run_get_page

    args = ctx.args
    url = check_url(args.url)
    ctx.summary.url = redact_url(url)
    ctx.summary.window = args.window
    if args.resolve or is_page_url(url):
        return await run_get_page(ctx, url)
    if args.ytdl_format is not None or args.max_height is not None:
        raise UsageError("--format and --max-height choose among the formats of a page URL (YouTube, or "
                         "any URL with --resolve); this is a direct URL")
    return await get_url(ctx, url, default_output_name(url))
