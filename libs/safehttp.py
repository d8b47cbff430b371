"""Outbound HTTP that cannot be pointed at our own network (SSRF protection).

Only http and https. Every host name is resolved here and every address it resolves to is
checked (loopback, private, link-local, shared, multicast, reserved, unspecified, IPv6 ULA and
site-local, IPv4 embedded in IPv6, cloud metadata endpoints are refused) before any connection
is made, and the connection then goes to exactly the address that was checked, so a DNS answer
that changes between check and connect (DNS rebinding) cannot slip through. Used by the media
service's downloads and the gateway's webhooks.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from typing import Any, Iterable

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Stable error codes; clients and the gateway match on these.
URL_SCHEME = "url_scheme"
URL_FORBIDDEN_ADDRESS = "url_forbidden_address"
URL_TOO_LARGE = "url_too_large"
URL_TIMEOUT = "url_timeout"
URL_HTTP_ERROR = "url_http_error"
URL_UNRESOLVABLE = "url_unresolvable"

DEFAULT_PORTS = {"http": 80, "https": 443}

# Instance metadata services hand out cloud credentials. They sit in ranges refused
# anyway (link-local, ULA, shared), but are refused even where an allow-list covers
# them, so a broad allow-list cannot open them by accident.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, …
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
    )
)

# NAT64 (RFC 6052) carries an IPv4 address in its last 32 bits.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class FetchError(Exception):
    """A URL could not or may not be fetched; `code` is one of the URL_* constants."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class AddressPolicy:
    """Decides which addresses may be connected to."""

    def __init__(self, allow_networks: Iterable[str] = ()):
        self.allow: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(n, strict=False) for n in allow_networks)

    def refusal(self, address: IPAddress) -> str | None:
        """Why `address` is refused, or None when it may be connected to."""
        for candidate in _embedded(address):
            if candidate in METADATA_ADDRESSES:
                return "cloud metadata endpoint"
        if any(candidate in net for candidate in _embedded(address) for net in self.allow):
            return None
        for candidate in _embedded(address):
            reason = _non_public(candidate)
            if reason:
                return reason
        return None


def _embedded(address: IPAddress) -> list[IPAddress]:
    """The addresses a connection to `address` really reaches, to be judged.

    IPv4-mapped and NAT64 addresses are IPv4 addresses in IPv6 form: only the IPv4
    address counts. 6to4, Teredo and IPv4-compatible ones are judged on both parts.
    """
    if not isinstance(address, ipaddress.IPv6Address):
        return [address]
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    if address in _NAT64:
        return [ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)]
    found: list[IPAddress] = [address]
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    if int(address) >> 32 == 0 and int(address) > 1:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def _non_public(address: IPAddress) -> str | None:
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("site-local", isinstance(address, ipaddress.IPv6Address) and address.is_site_local),
        # Catches what is neither private nor global, e.g. CGNAT 100.64.0.0/10.
        ("not globally routable", not address.is_global),
    )
    for name, hit in checks:
        if hit:
            return name
    return None


def resolve(host: str, port: int, timeout: float) -> list[IPAddress]:
    """Addresses of `host`, resolved within `timeout` seconds (IP literals are not looked up)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    box: dict[str, Any] = {}

    def lookup() -> None:
        try:
            box["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except BaseException as exc:  # handed to the waiting thread
            box["error"] = exc

    # getaddrinfo has no timeout of its own; a stuck lookup is left to finish alone.
    worker = threading.Thread(target=lookup, name="safehttp-resolve", daemon=True)
    worker.start()
    worker.join(max(0.0, timeout))
    if worker.is_alive():
        raise FetchError(URL_TIMEOUT, f"resolving {host} took too long")
    if "error" in box:
        raise FetchError(URL_UNRESOLVABLE, f"cannot resolve {host}: {box['error']}")
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in box["infos"]:
        # Zone ids ("fe80::1%eth0") are cut; the address part decides.
        address = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise FetchError(URL_UNRESOLVABLE, f"{host} has no address")
    return addresses


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read, write and handshake ends by the fetch's deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: float):
        self._inner = inner
        self._deadline = deadline

    def _timeout(self, timeout: float | None, error: type[Exception]) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise error("the fetch's time limit was reached")
        return left if timeout is None else min(timeout, left)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._timeout(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._timeout(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context, server_hostname: str | None = None, timeout: float | None = None):
        tls = self._inner.start_tls(ssl_context, server_hostname, self._timeout(timeout, httpcore.ConnectTimeout))
        return _DeadlineStream(tls, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class GuardedBackend(httpcore.NetworkBackend):
    """Resolves, checks and connects in one step, to the very address that passed the check."""

    def __init__(self, policy: AddressPolicy, deadline: float, connect_timeout: float):
        self._inner = httpcore.SyncBackend()
        self._policy = policy
        self._deadline = deadline
        self._connect_timeout = connect_timeout

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        addresses = resolve(host, port, self._deadline - time.monotonic())
        for address in addresses:
            reason = self._policy.refusal(address)
            if reason:
                # One bad answer refuses the host: its other answers are not to be trusted.
                raise FetchError(URL_FORBIDDEN_ADDRESS, f"{host} resolves to {address} ({reason}), which is not fetched")
        last: Exception | None = None
        for address in addresses:
            left = self._deadline - time.monotonic()
            if left <= 0:
                raise httpcore.ConnectTimeout("the fetch's time limit was reached")
            try:
                stream = self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=min(self._connect_timeout, left),
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
                continue
            return _DeadlineStream(stream, self._deadline)
        assert last is not None
        raise last

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise FetchError(URL_SCHEME, "unix sockets are not fetched")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def check_url(url: str) -> httpx.URL:
    """Parse `url` and refuse anything but http(s) with a host."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise FetchError(URL_SCHEME, f"not a valid URL: {exc}") from exc
    if parsed.scheme not in DEFAULT_PORTS:
        raise FetchError(URL_SCHEME, f"only http and https URLs are fetched, not {parsed.scheme or 'a relative URL'}")
    if not parsed.host:
        raise FetchError(URL_SCHEME, "the URL names no host")
    return parsed


def redact(url: httpx.URL) -> str:
    # Query strings often carry signatures or tokens: keep them out of logs and errors.
    return str(url.copy_with(query=None, fragment=None, username=None, password=None))
