"""Where a webhook may send: public http(s) addresses only, checked twice.

At registration the URL's host is resolved and refused if any address is
loopback, private, link-local or otherwise not global. At every connection
the host is resolved again by `GuardedBackend`, the HTTP client's network
layer, which checks each address and then connects to the checked address
itself, so a DNS answer that changed since registration (DNS rebinding)
cannot reach an internal service. STEPSTREAM_WEBHOOK_ALLOW_PRIVATE=1 lifts
both checks, for development and tests.
"""

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

import httpcore
import httpx
from django.conf import settings

from stepstream.errors import Invalid


def allow_private() -> bool:
    return settings.STEPSTREAM["WEBHOOK_ALLOW_PRIVATE"]


def blocked(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def check_url(url) -> str:
    """The URL if a webhook may use it; else Invalid naming why."""
    if not isinstance(url, str) or not url:
        raise Invalid("url is required and must be a non-empty string.")
    if len(url) > 2000:
        raise Invalid("url must be at most 2000 characters.")
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise Invalid(f"url is not a valid URL: {url!r}.") from None
    if parts.scheme not in ("http", "https"):
        raise Invalid("url must start with http:// or https://.")
    if not parts.hostname:
        raise Invalid("url must name a host.")
    if allow_private():
        return url
    try:
        found = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise Invalid(f"url's host '{parts.hostname}' does not resolve.") from None
    bad = sorted({info[4][0] for info in found if blocked(info[4][0])})
    if bad:
        raise Invalid(
            f"url's host '{parts.hostname}' resolves to a loopback, private or link-local "
            f"address ({', '.join(bad)}); webhooks are sent to public addresses only."
        )
    return url


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves, checks every address, then connects to a checked address (no second lookup)."""

    def __init__(self):
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        if not allow_private():
            loop = asyncio.get_running_loop()
            try:
                found = await asyncio.wait_for(
                    loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout
                )
            except (OSError, TimeoutError) as e:
                raise httpcore.ConnectError(f"cannot resolve {host}: {e}") from None
            addresses = [info[4][0] for info in found]
            if not addresses or any(blocked(a) for a in addresses):
                raise httpcore.ConnectError(
                    f"{host} resolves to a non-public address; refused at connect time"
                )
            host = addresses[0]
        return await self._inner.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )

    async def connect_unix_socket(self, *args, **kwargs):
        raise httpcore.ConnectError("webhooks do not use Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with its connection pool on `GuardedBackend`."""

    def __init__(self, max_connections: int):
        super().__init__(trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=30.0,
            network_backend=GuardedBackend(),
        )
