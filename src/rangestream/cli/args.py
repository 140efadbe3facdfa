"""The command line's parser, the value parsers its flags share, the environment defaults, and
the flags turned into the engine's options."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import unicodedata
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..errors import (
    InvalidURLError,
    RangestreamError,
)
from ..plan import DEFAULT_CHUNK_SIZE, parse_size
from ..proxypool import add_pool_arguments
from ..redact import redact_text, redact_url
from .exits import BATCH_EXIT_RULE, EXIT_CODES, PROG, UsageError
from .proxies import client_options as pool_client_options
from .ui import MB, Display

if TYPE_CHECKING:
    from ..client import Client

ENV_VARS = {
    "RANGESTREAM_PROXY": "default for --proxy",
    "RANGESTREAM_CHUNK_SIZE": "default for --chunk-size",
    "RANGESTREAM_WINDOW": "default for --window",
    "RANGESTREAM_RETRIES": "default for --retries",
    "RANGESTREAM_TIMEOUT": "default for --timeout",
    "RANGESTREAM_COOKIES": "default for --cookies",
    "RANGESTREAM_CACERT": "default for --cacert",
    "NO_COLOR": "disables colours in the progress display",
}


def check_url(url: str) -> str:
    """Reject what can never be fetched before any connection is made."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a bad port
    except ValueError as e:
        raise UsageError(f"bad URL {redact_url(url)}: {e}") from None
    if parts.scheme.lower() not in ("http", "https"):
        what = f"{parts.scheme}://" if parts.scheme else "no scheme"
        raise UsageError(f"bad URL {redact_url(url)}: only http:// and https:// URLs can be fetched ({what})")
    if not parts.hostname:
        raise UsageError(f"bad URL {redact_url(url)}: no host")
    if port == 0:
        raise UsageError(f"bad URL {redact_url(url)}: port 0")
    if any(c.isspace() for c in url):
        raise UsageError(f"bad URL {redact_url(url)}: contains whitespace (quote it, or encode spaces as %20)")
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in url):  # NUL, ESC, U+202E...: never a real URL
        raise UsageError(f"bad URL {redact_url(url)}: contains control characters")
    return url


PROXY_SCHEMES = ("http", "https", "socks5", "socks5h", "socks4", "socks4a")


def check_proxy(proxy: str | None) -> str | None:
    if not proxy:
        return None
    try:
        parts = urlsplit(proxy)
        _ = parts.port  # raises ValueError for a bad port
    except ValueError as e:
        raise UsageError(f"bad proxy URL {redact_url(proxy)}: {e}") from None
    if parts.scheme.lower() not in PROXY_SCHEMES or not parts.hostname:
        raise UsageError(f"bad proxy URL {redact_url(proxy)}: use SCHEME://[user:pass@]host:port with "
                         f"SCHEME one of {', '.join(PROXY_SCHEMES)}")
    return proxy


def _size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


MAX_WINDOW = 64  # requests in flight: more only hurts a CDN (and the per-host limit caps it anyway)


MIN_RATE, MAX_RATE = 0.01, 10_000.0  # --requests-per-second: one request per 100 s .. no real limit


def _int_in(text: str, least: int, most: int | None, not_int: str, out_of_range: str) -> int:
    """``text`` as an int in ``[least, most]``; the messages name what was wrong (``{text}``, ``{n}``)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(not_int.format(text=repr(text))) from None
    if n < least or (most is not None and n > most):
        raise argparse.ArgumentTypeError(out_of_range.format(n=n))
    return n


def _window_arg(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    return _int_in(text, 1, MAX_WINDOW, f"not a window: {{text}} (an integer 1..{MAX_WINDOW}, or 'auto')",
                   f"window must be 1..{MAX_WINDOW} or 'auto', not {{n}}")


def _max_window_arg(text: str) -> int:
    return _int_in(text, 1, MAX_WINDOW, "not an integer: {text}", f"must be 1..{MAX_WINDOW}, not {{n}}")


MAX_CONNECTIONS = 256


def _connections_arg(text: str) -> int:
    return _int_in(text, 1, MAX_CONNECTIONS, "not an integer: {text}", f"must be 1..{MAX_CONNECTIONS}, not {{n}}")


def _jobs_arg(text: str) -> int:
    return _int_in(text, 1, 64, "not an integer: {text}", "must be 1..64, not {n}")


def _count_arg(text: str) -> int:
    return _int_in(text, 0, None, "not an integer: {text}", "must be >= 0, not {n}")


def _positive_int_arg(text: str) -> int:
    return _int_in(text, 1, None, "not an integer: {text}", "must be >= 1, not {n}")


def _seconds_arg(text: str, *, allow_zero: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value != value or value < 0 or (value == 0 and not allow_zero) or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be {'>= 0' if allow_zero else '> 0'} seconds, not {text!r}")
    return value


def _rate_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not MIN_RATE <= value <= MAX_RATE:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"must be {MIN_RATE:g}..{MAX_RATE:g} requests per second, not {text!r}")
    return value


def _backoff_arg(text: str) -> float:
    return _seconds_arg(text, allow_zero=True)


def _header_arg(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not name or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
        raise argparse.ArgumentTypeError(f"not a header: {text!r} (use 'Name: value')")
    if "\r" in value or "\n" in value:
        raise argparse.ArgumentTypeError("header values cannot contain line breaks")
    return name, value.strip()


def _from_env(args: argparse.Namespace, dest: str, env: str, conv: Callable[[str], Any], default: Any) -> None:
    """Fill ``args.dest`` from ``env`` when the flag was not given; a bad value is a usage error."""
    if getattr(args, dest, None) is not None:
        return
    raw = os.environ.get(env)
    if raw is None or raw.strip() == "":
        setattr(args, dest, default)
        return
    try:
        setattr(args, dest, conv(raw))
    except (argparse.ArgumentTypeError, ValueError) as e:
        raise UsageError(f"environment variable {env}={raw!r}: {e}") from None


def apply_env(args: argparse.Namespace) -> None:
    _from_env(args, "chunk_size", "RANGESTREAM_CHUNK_SIZE", _size_arg, DEFAULT_CHUNK_SIZE)
    _from_env(args, "window", "RANGESTREAM_WINDOW", _window_arg, "auto")
    _from_env(args, "retries", "RANGESTREAM_RETRIES", _count_arg, 3)
    _from_env(args, "timeout", "RANGESTREAM_TIMEOUT", _seconds_arg, 30.0)
    _from_env(args, "proxy", "RANGESTREAM_PROXY", str, None)
    _from_env(args, "cookies", "RANGESTREAM_COOKIES", str, None)
    _from_env(args, "cacert", "RANGESTREAM_CACERT", str, None)
    args.proxy = check_proxy(args.proxy)
    args.cacert = check_cacert(args.cacert)


def check_cacert(path: str | None) -> str | None:
    """``--cacert FILE`` must be a readable file (PEM certificates), found before any connection."""
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:
        raise UsageError(f"--cacert {path}: cannot read it ({e.strerror or e})") from None
    return path


def stream_options(args: argparse.Namespace) -> dict[str, Any]:
    from ..retry import Retry, Timeouts

    opts: dict[str, Any] = {
        "chunk_size": args.chunk_size,
        "window": args.window,
        "retry": Retry(attempts=args.retries, backoff=args.backoff),
        "timeouts": Timeouts(request=args.timeout, idle=args.idle_timeout, prefetch=args.prefetch_timeout),
    }
    share = getattr(args, "_connections", None) or getattr(args, "max_connections", None)
    if args.window == "auto":
        opts["ceiling"] = min(args.max_window, share) if share else args.max_window
    elif share and args.window > share:
        opts["window"] = share  # the --max-connections budget is shared by the running downloads
    if args.max_buffer is not None:
        opts["max_buffer"] = args.max_buffer
    if args.range_mode != "header":
        opts["range_mode"] = args.range_mode
    if getattr(args, "_refresh", None) is not None:
        opts["refresh"] = args._refresh
    if getattr(args, "_lease", None) is not None:
        opts["lease"] = args._lease  # --proxy-file: this job's proxy, for all its streams
    if getattr(args, "_headers", None):
        opts["headers"] = dict(args._headers)
    return opts


def make_client(args: argparse.Namespace, *, limit_per_host: int = 0) -> Client:
    """The engine's Client from the flags; configuration it refuses is a usage error (exit 2)."""
    from ..client import Client

    kw: dict[str, Any] = {"headers": dict(args.header or []), "proxy": args.proxy}
    if limit_per_host:
        kw["limit_per_host"] = limit_per_host
    if getattr(args, "cookies", None):
        kw["cookies_file"] = args.cookies
    if getattr(args, "requests_per_second", None):
        kw["requests_per_second"] = args.requests_per_second
    if getattr(args, "impersonate", None):
        kw["impersonate"] = args.impersonate
    # Passed only when given, so the defaults stay the Client's own (verify with the system's CAs).
    if getattr(args, "cacert", None):
        kw["cacert"] = args.cacert
    if getattr(args, "insecure", False):
        kw["insecure"] = True
    kw.update(pool_client_options(args))  # --proxy-file: the pool and this job's lease
    try:
        return Client(**kw)
    except (InvalidURLError, ValueError) as e:
        raise UsageError(str(e)) from None
    except RangestreamError as e:  # an unreadable cookies file, SOCKS support not installed
        raise UsageError(str(e)) from None


def refresh_hook(command: str | None, display: Display) -> Callable[[str], Awaitable[str]] | None:
    """``--refresh-command``: a shell command printing a fresh URL (e.g. ``yt-dlp -g -f 137 ID``),
    run when the CDN says the URL expired (401/403)."""
    if not command:
        return None

    async def refresh(old_url: str) -> str:
        display.note(f"{PROG}: the URL expired; running --refresh-command for a fresh one")
        env = {**os.environ, "RANGESTREAM_EXPIRED_URL": old_url}
        proc = await asyncio.create_subprocess_shell(
            command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 120)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise RangestreamError("--refresh-command timed out after 120 s") from None
        if proc.returncode != 0:
            # Its last stderr line says why; such tools print the URLs they failed on, signatures and all.
            tail = redact_text(err.decode(errors="replace").strip()).splitlines()[-1:]
            raise RangestreamError(f"--refresh-command exited with {proc.returncode}"
                                   + (f": {tail[0][:200]}" if tail else ""))
        for line in out.decode(errors="replace").splitlines():
            line = line.strip()
            if line.lower().startswith(("http://", "https://")):
                return line
        raise RangestreamError("--refresh-command printed no http(s) URL")

    return refresh


def _epilog() -> str:
    codes = "\n".join(f"  {code:>3}  {text}" for code, text in EXIT_CODES.items()) + f"\n  {BATCH_EXIT_RULE}"
    env = "\n".join(f"  {name:<24}{text}" for name, text in ENV_VARS.items())
    return (f"exit codes:\n{codes}\n\nenvironment:\n{env}\n\n"
            "examples:\n"
            "  rangestream get 'https://…/videoplayback?…' -o video.mp4\n"
            "  rangestream get URL -o - | ffplay -\n"
            "  rangestream get URL -o - --quiet | sha256sum\n"
            "  rangestream get 'https://www.youtube.com/watch?v=ID' --max-height 1080\n"
            "  rangestream demo\n")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30, width=_help_width())


def _help_width() -> int:
    """argparse's own width (``shutil.get_terminal_size().columns - 2``: $COLUMNS, else stdout's
    terminal, else 80), found without shutil: argparse makes a formatter for every flag added, and
    shutil would bring zlib, bz2 and lzma into every command's start-up."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        stdout = sys.__stdout__
        try:
            columns = (os.get_terminal_size(stdout.fileno()).columns if stdout else 0) or 80
        except (ValueError, OSError):
            columns = 80
    return columns - 2


def _network_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("transfer")
    g.add_argument("--chunk-size", type=_size_arg, metavar="SIZE",
                   help="bytes per Range request: 9.5M, 10MiB, 65536 (default 9.5M; $RANGESTREAM_CHUNK_SIZE). "
                        "googlevideo throttles requests over ~10 MB")
    g.add_argument("--window", type=_window_arg, metavar="N|auto",
                   help=f"Range requests in flight (1..{MAX_WINDOW}): 1 = sequential, 2 = next-request prefetch, "
                        "auto = adapt to the link (default auto; $RANGESTREAM_WINDOW)")
    g.add_argument("--max-window", type=_max_window_arg, default=8, metavar="N",
                   help=f"the most requests --window auto may use (1..{MAX_WINDOW}, default 8)")
    g.add_argument("--max-connections", type=_connections_arg, default=16, metavar="N",
                   help=f"connections open at once across every download of this command (1..{MAX_CONNECTIONS}, "
                        "default 16): each running download's window gets its share")
    g.add_argument("--max-buffer", type=_size_arg, metavar="SIZE",
                   help="bytes chunks after the current one may read ahead (default: the engine's choice)")
    g.add_argument("--range-mode", choices=["header", "query"], default="header",
                   help="how to ask for a range: a Range header (default), or googlevideo's range=a-b "
                        "query parameter sent as a POST, as YouTube's web player does (needs clen in the URL)")
    g.add_argument("--retries", type=_count_arg, metavar="N",
                   help="retries per chunk after its first request (default 3; $RANGESTREAM_RETRIES)")
    g.add_argument("--backoff", type=_backoff_arg, default=1.0, metavar="SECONDS",
                   help="retry backoff base: retry n waits SECONDS * 2^(n-1), +-10%% (default 1)")
    g.add_argument("--timeout", type=_seconds_arg, metavar="SECONDS",
                   help="connect + response-headers timeout per request (default 30; $RANGESTREAM_TIMEOUT)")
    g.add_argument("--idle-timeout", type=_seconds_arg, default=20.0, metavar="SECONDS",
                   help="longest silence while reading a body before it is retried (default 20)")
    g.add_argument("--prefetch-timeout", type=_seconds_arg, default=5.0, metavar="SECONDS",
                   help="how long a prefetched request may still wait for headers once it is needed (default 5)")
    g.add_argument("-H", "--header", type=_header_arg, action="append", metavar="'NAME: VALUE'",
                   help="extra request header (repeatable)")
    g.add_argument("--proxy", metavar="URL",
                   help="proxy: http://, https://, socks5://, socks5h://, socks4://, socks4a:// "
                        "[user:pass@]host:port ($RANGESTREAM_PROXY)")
    g.add_argument("--cookies", metavar="FILE",
                   help="Netscape-format cookies file, as yt-dlp --cookies or curl -c write ($RANGESTREAM_COOKIES)")
    g.add_argument("--requests-per-second", type=_rate_arg, metavar="N",
                   help=f"at most N request starts per second per host ({MIN_RATE:g}..{MAX_RATE:g}; "
                        "default: no limit)")
    g.add_argument("--cacert", metavar="FILE",
                   help="trust the CA certificates in FILE (PEM) for https:// URLs, as curl --cacert "
                        "($RANGESTREAM_CACERT; SSL_CERT_FILE also works)")
    g.add_argument("-k", "--insecure", action="store_true",
                   help="do not verify TLS certificates (as curl -k): anyone on the path can read and "
                        "change the bytes")
    g.add_argument("--impersonate", metavar="BROWSER",
                   help="present a real browser's TLS and HTTP/2 fingerprint (chrome, safari, firefox, "
                        "or a version like chrome131); needs pip install 'rangestream[impersonate]'")
    g.add_argument("--refresh-command", metavar="CMD",
                   help="shell command that prints a fresh URL when the CDN says the URL expired (401/403), "
                        "e.g. 'yt-dlp -g -f 137 https://youtu.be/ID'; the old one is in $RANGESTREAM_EXPIRED_URL")
    add_pool_arguments(p, each="download")


def _output_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress, no summary (errors are still shown)")
    g.add_argument("--json", action="store_true",
                   help="print a machine-readable summary (one JSON line) last on stderr: bytes, seconds, "
                        "mb_per_s, requests, retries, refreshes, window, sha256...")
    g.add_argument("--json-file", metavar="PATH", help="write the JSON summary to PATH")
    g.add_argument("-v", "--verbose", action="store_true", help="also show the engine's informational messages")
    g.add_argument("--debug", action="store_true", help="show a traceback with errors")


Command = Callable[[argparse.Namespace, Any, Any], int]  # (args, Display, Summary) -> exit code


def build_parser(commands: Mapping[str, Command] | None = None) -> argparse.ArgumentParser:
    """The whole parser; each subcommand's ``run`` default is ``commands[name]`` when given."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=_Formatter,
        description="Stream large files from Range-capable CDNs (YouTube's googlevideo first) as a window "
                    "of ~9.5 MB Range requests, in order, with retries and resume.",
        epilog=_epilog())
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    subs = {"get": _get_parser(sub), "mux": _mux_parser(sub)}
    sub.add_parser("serve", help="HTTP service: /stream?url= (a Range-capable proxy) and /mux?video=&audio= "
                                 "(rangestream serve --help for its flags)", add_help=False)
    # Listed here for --help only: sign runs its own parser (rangestream.service.signing).
    sub.add_parser("sign", help="print a signed link to a `serve --signing-key` service "
                                "(rangestream sign --help for its flags)", add_help=False)
    sub.add_parser("origin", help="run the emulated CDN (rangestream origin --help for its flags)",
                   add_help=False)
    subs["demo"] = _demo_parser(sub)
    for name, run in (commands or {}).items():
        subs[name].set_defaults(run=run)
    return parser


def _get_parser(sub: Any) -> argparse.ArgumentParser:
    get: argparse.ArgumentParser = sub.add_parser(
        "get", help="download one object to a file (resumable) or to stdout", formatter_class=_Formatter,
        description="Download URL to FILE (via FILE.part and a sidecar FILE.part.json; run again after a "
                    "crash, Ctrl-C or a network loss to resume) or, with -o -, stream it to stdout in order.",
        epilog=_epilog())
    get.add_argument("urls", metavar="URL", nargs="*", help="one or more URLs (or -i FILE)")
    get.add_argument("-o", "--output", metavar="FILE|DIR/|TEMPLATE|-",
                     help="where to save; '-' streams to stdout; a directory (DIR/) keeps the URL's name; a "
                          "template like '%%(title)s.%%(ext)s' names each file from yt-dlp's fields (title, id, "
                          "ext, playlist_index...; for a direct URL, title and id are its file name) "
                          "(default: the last part of the URL's path)")
    _batch_options(get)
    get.add_argument("--force", action="store_true",
                     help="download again even if FILE exists (it is replaced only once the new copy is "
                          "complete); ignore a FILE.part; allow binary output to a terminal")
    get.add_argument("--sha256", action="store_true", help="print the SHA-256 of what was downloaded")
    page = get.add_argument_group(
        "page URLs (yt-dlp: pip install 'rangestream[youtube]')",
        "A YouTube page URL (youtube.com, youtu.be), or any URL with --resolve, is resolved with yt-dlp "
        "into stream URLs: separate video and audio are muxed into one file (named after the title), a "
        "combined format is downloaded as is. A stream URL that expires mid-download is re-resolved "
        "from the page and the download continues from the byte reached, in the same format.")
    page.add_argument("--resolve", action="store_true",
                      help="resolve URL with yt-dlp even if it is not a YouTube page (any site or manifest "
                           "yt-dlp's extractors know, its generic extractor included)")
    page.add_argument("-f", "--format", dest="ytdl_format", metavar="SELECTOR",
                      help="yt-dlp format selector (default 'bv*+ba/b': best video + best audio, else the "
                           "best combined format); only plain http(s) formats are chosen, never HLS/DASH "
                           "manifests")
    page.add_argument("--max-height", type=_positive_int_arg, metavar="N",
                      help="video no taller than N pixels (adds [height<=?N] to the selector's video part)")
    _network_options(get)
    _output_options(get)
    return get


def _batch_options(get: argparse.ArgumentParser) -> None:
    g = get.add_argument_group(
        "several downloads",
        "Several URLs download at once, sharing one connection pool, --requests-per-second and the "
        "--max-connections budget; each resumes on its own (its FILE.part and sidecar). One failing download "
        "never stops the others: the exit code is the highest of the failed ones' codes (see exit codes), "
        "and the summary names each failed URL and why.")
    g.add_argument("-i", "--input-file", metavar="FILE",
                   help="read URLs from FILE ('-' for stdin): one a line; blank lines and '#' comments skipped")
    g.add_argument("-j", "--jobs", type=_jobs_arg, default=3, metavar="N",
                   help="downloads at once (1..64, default 3)")
    g.add_argument("--download-archive", metavar="FILE",
                   help="skip URLs (or a page's video id) listed in FILE, without a request; append each "
                        "completed download to it (several runs may share it)")
    g.add_argument("--playlist-items", metavar="SPEC",
                   help="of a playlist or channel page, only these entries: 1-5,8,12- (1-based)")


def _mux_parser(sub: Any) -> argparse.ArgumentParser:
    mux: argparse.ArgumentParser = sub.add_parser(
        "mux", help="fetch a video and an audio URL and mux them into one file", formatter_class=_Formatter,
        description="Fetch VIDEO_URL and AUDIO_URL at once and stream-copy them into one container "
                    "(fragmented MP4, MKV or WebM), never re-encoding.", epilog=_epilog())
    mux.add_argument("video_url", metavar="VIDEO_URL")
    mux.add_argument("audio_url", metavar="AUDIO_URL")
    mux.add_argument("-o", "--output", metavar="FILE|-", help="out.mp4, out.mkv, out.webm, or - for stdout")
    mux.add_argument("--format", choices=["mp4", "mkv", "webm"],
                     help="container (default: from FILE's extension; mp4 for -)")
    mux.add_argument("--force", action="store_true", help="overwrite FILE; allow binary output to a terminal")
    _network_options(mux)
    _output_options(mux)
    return mux


def _demo_parser(sub: Any) -> argparse.ArgumentParser:
    demo: argparse.ArgumentParser = sub.add_parser(
        "demo", help="the offline demo: sequential vs prefetch vs auto window on an emulated YouTube CDN",
        formatter_class=_Formatter,
        description="Start the emulated CDN (YouTube-like profile) on a free loopback port, download one "
                    "object with window 1, 2 and auto, verify each SHA-256, and compare their time and "
                    "throughput with the link limit. Then mux a generated video and audio into demo.mp4. "
                    "Needs no network.")
    demo.add_argument("--size", type=_size_arg, default=200 * MB, metavar="SIZE", help="object size (default 200M)")
    demo.add_argument("--chunk-size", type=_size_arg, default=DEFAULT_CHUNK_SIZE, metavar="SIZE",
                      help="Range request size (default 9.5M)")
    demo.add_argument("--out", default="demo.mp4", metavar="FILE",
                      help="where to write the muxed clip (default demo.mp4)")
    demo.add_argument("--no-mux", action="store_true", help="skip the muxing part")
    demo.add_argument("--debug", action="store_true", help="show a traceback with errors")
    return demo
