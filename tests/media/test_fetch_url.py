"""FetchUrl: what may be fetched, what is refused before any connection, limits on size and time.

Only loopback sites are ever contacted; refusals are checked to happen before a connect
(the `connects` guard records every attempt and refuses non-loopback ones outright).
"""

from __future__ import annotations

import hashlib
import socket
import time

import grpc
import pytest

from libs.grpcutil.errors import error_code_of
from services.media import fetch
from talkserve.media.v1 import media_pb2
from tests.media.conftest import Site

LOCAL = ["127.0.0.0/8"]


def fetch_error(media, url: str, dest, timeout: float = 30, **fields) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        media.stub.FetchUrl(media_pb2.FetchUrlRequest(url=url, destination=dest, **fields), timeout=timeout)
    return caught.value


def assert_not_stored(media, ref) -> None:
    from libs.store.client import NotFound

    with pytest.raises(NotFound):
        media.store.stat(ref.key)


def test_fetch_from_an_allowed_local_site(start_media, site, files, new_ref, tmp_path):
    media = start_media(fetch_allow_networks=LOCAL)
    body = files["tone.mp3"].read_bytes()
    url = site.serve("speech.mp3", body, "audio/mpeg")
    dest = new_ref("speech.mp3")
    reply = media.stub.FetchUrl(
        media_pb2.FetchUrlRequest(url=url, destination=dest, expect=media_pb2.MEDIA_KIND_AUDIO), timeout=30
    )
    assert reply.size_bytes == len(body)
    assert reply.sha256 == hashlib.sha256(body).hexdigest()
    assert reply.content_type == "audio/mpeg"
    assert reply.info.has_audio and reply.info.duration_seconds == pytest.approx(1.3, abs=0.03)
    assert media.get(dest, tmp_path / "got").read_bytes() == body


def test_fetch_follows_a_redirect_within_allowed_addresses(start_media, site, files, new_ref):
    media = start_media(fetch_allow_networks=LOCAL)
    target = site.serve("clip.mp4", files["talk.mp4"].read_bytes(), "video/mp4")
    reply = media.stub.FetchUrl(
        media_pb2.FetchUrlRequest(url=site.url(f"/redirect?to={target}"), destination=new_ref("clip.mp4"),
                                  expect=media_pb2.MEDIA_KIND_VIDEO),
        timeout=30,
    )
    assert reply.info.has_video and reply.info.width == 160
    assert site.requests == [f"/redirect?to={target}", "/file/clip.mp4"]


def test_fetched_body_of_the_wrong_kind_is_refused_and_not_stored(start_media, site, files, new_ref):
    media = start_media(fetch_allow_networks=LOCAL)
    url = site.serve("face.png", files["face.png"].read_bytes(), "image/png")
    dest = new_ref("video.mp4")
    err = fetch_error(media, url, dest, expect=media_pb2.MEDIA_KIND_VIDEO)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_code_of(err) == "wrong_media_kind"
    assert_not_stored(media, dest)


@pytest.mark.parametrize(
    "url_of",
    [
        lambda site: site.url("/file/x"),  # 127.0.0.1, where the site really listens
        lambda site: f"http://localhost:{site.port}/file/x",
        lambda site: f"http://[::1]:{site.port}/file/x",
        lambda site: "http://10.0.0.1/file/x",
        lambda site: "http://169.254.169.254/latest/meta-data/",
        lambda site: "http://[::ffff:169.254.169.254]/latest/meta-data/",
        lambda site: "http://100.64.0.1/x",
        lambda site: "http://0.0.0.0/x",
        lambda site: "http://2130706433/x",  # 127.0.0.1 written as one number
    ],
    ids=["127.0.0.1", "localhost", "ipv6-loopback", "rfc1918", "metadata", "mapped-metadata", "cgnat",
         "unspecified", "decimal-loopback"],
)
def test_default_settings_refuse_private_addresses_before_connecting(media, site, connects, new_ref, url_of):
    url = url_of(site)
    dest = new_ref("x")
    err = fetch_error(media, url, dest)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_code_of(err) == "url_forbidden_address"
    assert site.connections == 0
    assert [c for c in connects.seen if c[1] in (site.port, 80)] == []  # refused before any connect
    assert_not_stored(media, dest)


def test_a_redirect_to_a_forbidden_address_is_refused(start_media, connects, files, new_ref):
    # Only 127.0.0.2 is allowed: the first hop is fetched, the redirect to 127.0.0.1 is not.
    media = start_media(fetch_allow_networks=["127.0.0.2/32"])
    allowed, forbidden = Site("127.0.0.2"), Site("127.0.0.1")
    try:
        target = forbidden.serve("secret", b"internal data", "text/plain")
        err = fetch_error(media, allowed.url(f"/redirect?to={target}"), new_ref("x"))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_code_of(err) == "url_forbidden_address"
        assert allowed.requests == [f"/redirect?to={target}"]
        assert forbidden.connections == 0
        assert connects.to("127.0.0.1", forbidden.port) == []
    finally:
        allowed.close()
        forbidden.close()


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/speech.wav", "file:///etc/passwd", "gopher://127.0.0.1/", "/relative/path"])
def test_only_http_and_https_are_fetched(start_media, connects, new_ref, url):
    media = start_media(fetch_allow_networks=LOCAL)
    err = fetch_error(media, url, new_ref("x"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_code_of(err) == "url_scheme"


@pytest.mark.parametrize("path", ["/big", "/big-unsized"], ids=["content-length", "no-content-length"])
def test_an_oversized_body_is_refused(start_media, site, new_ref, path):
    media = start_media(fetch_allow_networks=LOCAL, fetch_max_bytes=256 * 1024)
    dest = new_ref("big")
    started = time.monotonic()
    err = fetch_error(media, site.url(path), dest)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_code_of(err) == "url_too_large"
    assert time.monotonic() - started < 5
    assert_not_stored(media, dest)


def test_a_request_can_lower_the_size_limit(start_media, site, files, new_ref):
    media = start_media(fetch_allow_networks=LOCAL)
    url = site.serve("speech.mp3", files["tone.mp3"].read_bytes(), "audio/mpeg")
    err = fetch_error(media, url, new_ref("x"), max_bytes=1000)
    assert error_code_of(err) == "url_too_large"


def test_a_slow_server_runs_into_the_time_limit(start_media, site, new_ref):
    media = start_media(fetch_allow_networks=LOCAL, fetch_timeout_seconds=1.0)
    started = time.monotonic()
    err = fetch_error(media, site.url("/slow"), new_ref("slow"))
    elapsed = time.monotonic() - started
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert error_code_of(err) == "url_timeout"
    assert 0.9 < elapsed < 3.0


def test_an_http_error_status_is_reported(start_media, site, new_ref):
    media = start_media(fetch_allow_networks=LOCAL)
    err = fetch_error(media, site.url("/no-such-file"), new_ref("x"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_code_of(err) == "url_http_error"
    assert "404" in err.details()


def test_an_unresolvable_host_is_reported(start_media, monkeypatch, new_ref):
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host == "nowhere.test":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    media = start_media()
    err = fetch_error(media, "http://nowhere.test/speech.wav", new_ref("x"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_code_of(err) == "url_unresolvable"


def test_the_connection_goes_to_the_address_that_was_checked(monkeypatch, tmp_path):
    """DNS rebinding: a second lookup would answer 127.0.0.1; the fetch must not ask again."""
    allowed = Site("127.0.0.2")
    try:
        rebound = Site("127.0.0.1", port=allowed.port)
    except OSError:
        allowed.close()
        pytest.skip("the same port is taken on 127.0.0.1")
    answers = ["127.0.0.2", "127.0.0.1", "127.0.0.1"]
    lookups = []
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host != "rebind.test":
            return real(host, port, *args, **kwargs)
        lookups.append(host)
        ip = answers[min(len(lookups) - 1, 2)]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    try:
        allowed.serve("a", b"from the checked address", "text/plain")
        rebound.serve("a", b"from the rebound address", "text/plain")
        settings = fetch.FetchSettings(fetch_allow_networks=["127.0.0.2/32"])
        result = fetch.fetch_url(f"http://rebind.test:{allowed.port}/file/a", tmp_path / "a", settings)
        assert (tmp_path / "a").read_bytes() == b"from the checked address"
        assert result.size_bytes == len(b"from the checked address")
        assert lookups == ["rebind.test"]
        assert rebound.connections == 0
    finally:
        allowed.close()
        rebound.close()


def test_https_verifies_the_name_while_connecting_to_the_checked_address(monkeypatch, tmp_path, tls_cert):
    cert, key = tls_cert
    site = Site("127.0.0.2", tls=tls_cert)
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host == "tls.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setenv("SSL_CERT_FILE", cert)  # trust the test certificate, and only it
    settings = fetch.FetchSettings(fetch_allow_networks=["127.0.0.2/32"])
    try:
        site.serve("a", b"over tls", "text/plain")
        result = fetch.fetch_url(site.url("/file/a", host="tls.test"), tmp_path / "a", settings)
        assert (tmp_path / "a").read_bytes() == b"over tls" and result.size_bytes == 8
        # The same server by its address: the certificate does not name it, so no body.
        with pytest.raises(fetch.FetchError) as caught:
            fetch.fetch_url(site.url("/file/a"), tmp_path / "b", settings)
        assert caught.value.code == "url_http_error"
        assert not (tmp_path / "b").exists()
    finally:
        site.close()


def test_address_policy_covers_the_forbidden_ranges():
    policy = fetch.AddressPolicy()
    import ipaddress

    refused = ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "224.0.0.1",
               "240.0.0.1", "0.0.0.0", "255.255.255.255", "::1", "::", "fe80::1", "fc00::1", "fd00:ec2::254",
               "::ffff:10.0.0.1", "::ffff:127.0.0.1", "2002:7f00:1::1", "64:ff9b::a00:1", "ff02::1", "fec0::1"]
    allowed = ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"]
    for address in refused:
        assert policy.refusal(ipaddress.ip_address(address)), address
    for address in allowed:
        assert policy.refusal(ipaddress.ip_address(address)) is None, address
    # An allow-list opens private ranges but never the metadata endpoints.
    broad = fetch.AddressPolicy(["169.254.0.0/16", "10.0.0.0/8"])
    assert broad.refusal(ipaddress.ip_address("10.0.0.1")) is None
    assert broad.refusal(ipaddress.ip_address("169.254.169.254"))


def test_allow_networks_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("TALKSERVE_MEDIA_FETCH_ALLOW_NETWORKS", "127.0.0.0/8, 10.0.0.0/8")
    monkeypatch.setenv("TALKSERVE_MEDIA_FETCH_MAX_BYTES", "1234")
    settings = fetch.FetchSettings()
    assert settings.fetch_allow_networks == ["127.0.0.0/8", "10.0.0.0/8"]
    assert settings.fetch_max_bytes == 1234
    assert fetch.FetchSettings(_env_file=None).max_redirects == 5
