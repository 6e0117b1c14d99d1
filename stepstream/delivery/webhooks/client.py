"""The webhooks' HTTP client (aiohttp), imported only once a webhook is delivered.

Most servers never have a webhook, so `serve` starts without aiohttp loaded
(its import is a tenth of a second of CPU and some megabytes in every worker).
"""

import errno
import socket

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from stepstream.delivery.webhooks.addresses import allow_private, refusal


class GuardedResolver(AbstractResolver):
    """The HTTP client's resolver: refuses a host when any of its addresses is not public.

    aiohttp connects to the addresses its resolver returns, so the address
    checked is the address used (no second lookup for a rebinding DNS server
    to answer differently). A URL with a literal IP address skips resolvers:
    `literal_refused` checks those.
    """

    def __init__(self) -> None:
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        if not allow_private():
            bad = sorted({why for r in found if (why := refusal(r["host"])) is not None})
            if bad or not found:
                raise OSError(  # (errno, text): aiohttp keeps only these two
                    errno.EPERM,
                    f"{host} resolves to a non-public address ({'; '.join(bad)}); "
                    "refused at connect time",
                )
        return found

    async def close(self) -> None:
        await self._inner.close()


def session(concurrency: int, timeout: float) -> aiohttp.ClientSession:
    """aiohttp: about a tenth of httpx's CPU per request (docs/performance-history.md)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=concurrency, resolver=GuardedResolver(), ttl_dns_cache=10
        ),
        timeout=aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 5.0)),
        trust_env=False,  # no proxies from the environment
        auto_decompress=False,
    )


async def post(
    client: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], most: int
) -> tuple[int | None, str | None]:
    """POSTs once, no redirects: (status, None) on a 2xx, else (status or None, why).

    At most `most` bytes of the answer are read (and dropped) so the connection
    is reused."""
    try:
        async with client.post(url, data=body, headers=headers, allow_redirects=False) as r:
            read = 0
            while read <= most:
                chunk = await r.content.read(most)
                if not chunk:
                    break
                read += len(chunk)
            status = r.status
    except TimeoutError:
        return None, "timeout"
    except (aiohttp.ClientError, OSError) as e:
        return None, (f"{type(e).__name__}: {e}".rstrip(": "))[:500]
    if 200 <= status < 300:
        return status, None
    return status, f"HTTP {status}"
