"""Where webhooks may go (SSRF guard): http(s) URLs whose host resolves to public addresses only.

Checked when a subscription is written and again before every attempt (DNS can change between
the two); the sender then connects to the very address it checked, so a second lookup can't
swap in another one (DNS rebinding). `AUDIENCE_WEBHOOK_ALLOW_PRIVATE=true` turns the address
check off, not the scheme check.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# (host, port) -> the addresses it resolves to, in the order to try them.
Resolver = Callable[[str, int], list[IPAddress]]


class Refused(Exception):
    """A URL that webhooks may not reach; the message says why."""


def system_resolve(host: str, port: int) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError) as exc:
        raise Refused(f"host {host!r} does not resolve ({exc})") from None
    found: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).partition("%")[0])
        if address not in found:
            found.append(address)
    if not found:
        raise Refused(f"host {host!r} does not resolve")
    return found


def _embedded(address: IPAddress) -> IPAddress | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, Teredo), which is where it leads."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address.teredo is not None:
            return address.teredo[1]
    return None


def blocked(address: IPAddress) -> str | None:
    """Why webhooks may not go to `address` (loopback, private, …), or None when it's public."""
    for candidate in (address, _embedded(address)):
        if candidate is None:
            continue
        for reason, flag in (
            ("loopback", candidate.is_loopback),
            ("unspecified", candidate.is_unspecified),
            ("link-local", candidate.is_link_local),
            ("multicast", candidate.is_multicast),
            ("private", candidate.is_private),
            ("reserved", candidate.is_reserved),
        ):
            if flag:
                return reason
        if not candidate.is_global:  # e.g. 100.64.0.0/10, shared address space
            return "non-public"
    return None


def parse(url: str) -> httpx.URL:
    """`url` as an absolute http(s) URL with a host, or Refused."""
    if any(ord(char) < 33 or ord(char) == 127 for char in url):
        raise Refused("must not contain spaces or control characters")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise Refused(f"is not a valid URL ({exc})") from None
    if parsed.scheme not in ("http", "https"):
        raise Refused("must be an http or https URL")
    if not parsed.host:
        raise Refused("must name a host")
    return parsed


def port_of(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


def addresses(url: httpx.URL, *, allow_private: bool, resolve: Resolver) -> list[IPAddress]:
    """The addresses to connect to for `url`; Refused when any of them is not public.

    Every address must pass, not just one: a host that also resolves to 10.0.0.1 could be
    reached there by the next lookup.
    """
    found = resolve(url.host, port_of(url))
    if not allow_private:
        for address in found:
            reason = blocked(address)
            if reason is not None:
                raise Refused(
                    f"host {url.host!r} resolves to {address}, a {reason} address "
                    "(set AUDIENCE_WEBHOOK_ALLOW_PRIVATE=true to allow it)"
                )
    return found


def check(url: str, *, allow_private: bool, resolve: Resolver = system_resolve) -> None:
    """Refused unless webhooks may be sent to `url` now."""
    parsed = parse(url)
    if not allow_private:
        addresses(parsed, allow_private=False, resolve=resolve)
