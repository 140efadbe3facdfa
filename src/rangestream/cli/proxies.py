"""``--proxy-file FILE`` and its companions for ``get`` and ``mux``: a pool of proxies, and one
lease from it per download (its page resolution and every one of its streams): the command's for
a single download or a mux, each job's own in a batch (several URLs, ``-i``, a playlist).

The flags build a :class:`~rangestream.ProxyPool`; a file that cannot be used is a usage error
(exit 2, the line named, never its text: it may hold a password); no usable proxy ends the job
with the proxy exit code (7). ``serve`` takes the same flags (``rangestream.service.main``).
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .. import proxypool
from .exits import UsageError

if TYPE_CHECKING:
    from ..proxypool import Lease, ProxyPool


class _Job(Protocol):  # runner.Context, named by what is used (runner imports args, which imports us)
    args: argparse.Namespace


J = TypeVar("J", bound=_Job)


def build_pool(args: argparse.Namespace) -> ProxyPool | None:
    """The pool the flags describe (None without --proxy-file); bad input is a usage error."""
    if proxypool.pool_file(args) is None:
        return None
    if getattr(args, "proxy", None):
        raise UsageError("--proxy and --proxy-file (or $RANGESTREAM_PROXY_FILE) exclude each other: "
                         "give one proxy or a pool")
    try:
        return proxypool.pool_from_args(args)
    except (proxypool.ProxyListError, ValueError) as e:
        raise UsageError(f"--proxy-file: {e}") from None


def with_proxy_pool(runner: Callable[[J], Awaitable[int]]) -> Callable[[J], Awaitable[int]]:
    """``runner`` with the flags' pool (if there is one) and one lease of it for the command.

    A single download or mux keeps that lease from start to end. Whether a ``get`` is a batch is
    known only once its URLs are collected (``-i -`` reads stdin, a playlist is listed first), so
    a batch gives the command's lease back when it starts (:func:`release_command_lease`) and
    each of its jobs holds its own (:func:`job_lease`)."""

    async def run(ctx: J) -> int:
        pool = build_pool(ctx.args)
        if pool is None:
            return await runner(ctx)
        ctx.args._proxy_pool = pool
        async with job_lease(ctx.args):
            return await runner(ctx)

    return run


@contextlib.asynccontextmanager
async def job_lease(args: argparse.Namespace) -> AsyncIterator[Lease | None]:
    """One job's lease (``args._lease``, read by ``stream_options`` and the page resolver) while
    the block runs; nothing without a pool. A batch takes one per job (on each job's args)."""
    from ..client import checked_lease

    pool = getattr(args, "_proxy_pool", None)
    if pool is None:
        yield None
        return
    async with checked_lease(pool) as lease:
        args._lease = lease
        try:
            yield lease
        finally:
            args._lease = None


async def release_command_lease(args: argparse.Namespace) -> None:
    """Give back the lease :func:`with_proxy_pool` holds for the command: a batch's jobs each
    take their own, spread over the proxies least-loaded first, at most --max-per-proxy each
    (kept, it would hold a slot all along and have every job share its proxy)."""
    lease: Lease | None = getattr(args, "_lease", None)
    if lease is None:
        return
    args._lease = None
    # Lease.__aexit__ releases only what it still holds: leaving job_lease later is a no-op.
    await lease.__aexit__(None, None, None)


def client_options(args: argparse.Namespace) -> dict[str, Any]:
    """What ``make_client`` adds for a pool (``stream_options`` adds the job's lease)."""
    pool = getattr(args, "_proxy_pool", None)
    if pool is None:
        return {}
    return {"proxies": pool, "proxy": None}


def resolver_proxy(args: argparse.Namespace) -> str | Lease | None:
    """What the page resolver goes through: the job's lease, or --proxy."""
    lease: Lease | None = getattr(args, "_lease", None)
    return lease if lease is not None else args.proxy
