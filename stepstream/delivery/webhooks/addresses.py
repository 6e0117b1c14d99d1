"""Where a webhook may send: public http(s) addresses only, checked twice.

At registration the URL's host is resolved and refused if any address is
loopback, private, link-local or otherwise not global. At every connection
the host is resolved again by `GuardedResolver`, the HTTP client's resolver,
which checks each address; the client connects to the checked addresses,
so a DNS answer that changed since registration (DNS rebinding) cannot
reach an internal service. STEPSTREAM_WEBHOOK_ALLOW_PRIVATE=1 lifts
both checks, for development and tests.
"""

import errno
import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver
from aiohttp.resolver import ThreadedResolver
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


class GuardedResolver(AbstractResolver):
    """The HTTP client's resolver: refuses a host when any of its addresses is not public.

    aiohttp connects to the addresses its resolver returns, so the address
    checked is the address used (no second lookup for a rebinding DNS server
    to answer differently). A URL with a literal IP address skips resolvers:
    `literal_refused` checks those.
    """

    def __init__(self):
        self._inner = ThreadedResolver()

    async def resolve(self, host, port=0, family=socket.AF_INET):
        found = await self._inner.resolve(host, port, family)
        if not allow_private():
            bad = sorted({r["host"] for r in found if blocked(r["host"])})
            if bad or not found:
                raise OSError(  # (errno, text): aiohttp keeps only these two
                    errno.EPERM,
                    f"{host} resolves to a non-public address ({', '.join(bad)}); "
                    "refused at connect time",
                )
        return found

    async def close(self) -> None:
        await self._inner.close()


def literal_refused(url: str) -> bool:
    """True when the URL's host is an IP address that webhooks may not reach."""
    host = urlsplit(url).hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False  # a name: the resolver checks it
    return not allow_private() and blocked(host)
