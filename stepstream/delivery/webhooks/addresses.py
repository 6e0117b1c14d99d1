"""Where a webhook may send: public http(s) addresses only, checked twice.

At registration the URL's host is resolved and refused if any address is
loopback, private, link-local or otherwise not global. At every connection
the host is resolved again by `GuardedResolver` (client.py), the HTTP client's resolver,
which checks each address; the client connects to the checked addresses,
so a DNS answer that changed since registration (DNS rebinding) cannot
reach an internal service. STEPSTREAM_WEBHOOK_ALLOW_PRIVATE=1 lifts
both checks, for development and tests.

Both checks judge each address with `refusal`. An IPv6 address carrying an
IPv4 address, which the host's stack, a NAT64 translator or a tunnel may
deliver to that IPv4 address, is judged by the IPv4 inside: IPv4-mapped
::ffff:0:0/96, IPv4-compatible ::/96 and NAT64 64:ff9b::/96 by it alone;
6to4 2002::/16 and Teredo 2001::/32 (its server and its client, un-XORed)
by it and by the IPv6 address itself. Any other IPv6 address outside global
unicast 2000::/3 is refused, among them the NAT64 local-use prefix
64:ff9b:1::/48 (where the IPv4 sits at a place only its operator knows)
and SIIT's ::ffff:0:0:0/96.
"""

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings

from stepstream.errors import Invalid


def allow_private() -> bool:
    return settings.STEPSTREAM["WEBHOOK_ALLOW_PRIVATE"]


_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (mapped, compatible, NAT64, 6to4, Teredo)."""
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    if (ip in _IPV4_COMPATIBLE and int(ip) > 1) or ip in _NAT64:  # :: and ::1 are themselves
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    if ip.sixtofour is not None:
        return [ip.sixtofour]
    if ip.teredo is not None:
        return list(ip.teredo)  # (server, client), the client un-XORed
    return []


def _public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return ip.is_global and not ip.is_multicast


def refusal(address: str) -> str | None:
    """None when a webhook may connect to `address`; else the address, named for a message."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv4Address):
        return None if _public(ip) else address
    inside = embedded_ipv4(ip)
    bad = [str(v4) for v4 in inside if not _public(v4)]
    if bad:
        return f"{address}, which embeds {' and '.join(bad)}"
    if inside and ip not in _GLOBAL_UNICAST:
        return None  # mapped, compatible, NAT64: judged by the IPv4 inside alone
    if ip not in _GLOBAL_UNICAST or not _public(ip):
        return address
    return None


def blocked(address: str) -> bool:
    return refusal(address) is not None


def check_url(url: object) -> str:
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
    bad = sorted({why for info in found if (why := refusal(str(info[4][0]))) is not None})
    if bad:
        raise Invalid(
            f"url's host '{parts.hostname}' resolves to a loopback, private or link-local "
            f"address ({'; '.join(bad)}); webhooks are sent to public addresses only. "
            "Use a URL whose host is public; to send to a receiver on your own machine or "
            "network during development, set STEPSTREAM_WEBHOOK_ALLOW_PRIVATE=1 on the server."
        )
    return url


def literal_refused(url: str) -> bool:
    """True when the URL's host is an IP address that webhooks may not reach."""
    host = urlsplit(url).hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False  # a name: the resolver checks it
    return not allow_private() and blocked(host)
