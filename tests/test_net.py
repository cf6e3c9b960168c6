"""``stcloud.net.Proxies``: which proxy each URL goes through (pure)."""
from __future__ import annotations

import pytest

from stcloud import net

ENV = {"HTTPS_PROXY": "http://secure:3128", "http_proxy": "http://plain:3128", "HTTP_PROXY": "http://ignored:1",
       "NO_PROXY": "localhost, .corp.example,10.0.0.0/8,build:8443,[::1]"}


@pytest.mark.parametrize("url, expected", [
    ("https://api.replicate.com/v1/account", "http://secure:3128"),
    ("http://www.replicatestatus.com/api", "http://plain:3128"),  # lower-case wins over upper-case
    ("http://localhost:8080/x", None),
    ("https://git.corp.example/", None),
    ("https://corp.example/", None),
    ("https://notcorp.example/", "http://secure:3128"),
    ("http://10.20.30.40:9000/bucket", None),
    ("http://11.0.0.1/", "http://plain:3128"),
    ("https://build:8443/", None),
    ("https://build/", "http://secure:3128"),
    ("http://[::1]:80/", None),
    ("http://127.0.0.1:8080/", "http://plain:3128"),  # loopback is not exempt unless listed
    ("ftp://example.com/", None),
])
def test_for_url(url, expected):
    assert net.Proxies.from_env(ENV).for_url(url) == expected


def test_all_proxy_is_the_fallback_and_star_bypasses_everything():
    p = net.Proxies.from_env({"ALL_PROXY": "http://all:1"})
    assert p.for_url("https://x.example") == "http://all:1" and p.for_url("http://x.example") == "http://all:1"
    assert net.Proxies.from_env({"ALL_PROXY": "http://all:1", "NO_PROXY": "*"}).for_url("https://x.example") is None


def test_the_setting_replaces_the_environment():
    env = net.Proxies.from_env(ENV)
    assert env.with_setting(None, "anything") == env
    s = env.with_setting("http://mine:8888", "internal.example")
    assert s.for_url("https://localhost/") == "http://mine:8888"
    assert s.for_url("https://a.internal.example/") is None


@pytest.mark.parametrize("bad", ["proxy:3128", "ftp://p:1", "http://p:99999", "http://p:1/path", "http://"])
def test_validate_proxy_url(bad):
    with pytest.raises(ValueError):
        net.validate_proxy_url(bad)


def test_botocore_proxies():
    p = net.Proxies.from_env(ENV)
    assert net.botocore_proxies(p, None) == {"http": "http://secure:3128", "https": "http://secure:3128"}
    assert net.botocore_proxies(p, "http://10.1.1.1:9000") == {}


class _ClosesKeptConnections:
    """An HTTP/1.1 server on loopback that answers the first request on each connection
    (keep-alive, no ``Connection: close``) and drops the connection when a second one comes
    on it: the instant tinyproxy closes a kept-alive connection, made certain."""

    def __init__(self):
        import socket
        import threading
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.answered: list[str] = []
        self.dropped: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        import threading
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _read_request(self, f) -> str | None:
        line = f.readline().decode()
        if not line:
            return None
        length, chunked = 0, False
        while (header := f.readline()) not in (b"\r\n", b""):
            name, _, value = header.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
            chunked = chunked or (name.lower() == "transfer-encoding" and "chunked" in value)
        f.read(length)
        while chunked and (size := int(f.readline().split(b";")[0], 16)):
            f.read(size + 2)
        if chunked:
            f.readline()
        return line.split()[0]

    def _connection(self, conn):
        with conn, conn.makefile("rb") as f:
            method = self._read_request(f)
            if method is None:
                return
            self.answered.append(method)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            method = self._read_request(f)
            if method is not None:
                self.dropped.append(method)

    def close(self):
        self.sock.close()


@pytest.fixture
def closing_server():
    server = _ClosesKeptConnections()
    yield server
    server.close()


def test_an_idempotent_request_on_a_dropped_kept_connection_is_sent_again(closing_server):
    with net.httpx_client(net.DIRECT) as client:
        assert client.get(closing_server.url + "/a").text == "ok"
        assert client.put(closing_server.url + "/b", content=b"body").text == "ok"
    # The PUT went out on the kept connection, was dropped, and went again on a new one.
    assert closing_server.dropped == ["PUT"]
    assert closing_server.answered == ["GET", "PUT"]


def test_a_post_on_a_dropped_kept_connection_is_not_sent_twice(closing_server):
    import httpx
    with net.httpx_client(net.DIRECT) as client:
        assert client.get(closing_server.url + "/a").text == "ok"
        with pytest.raises(httpx.RemoteProtocolError):
            client.post(closing_server.url + "/b", content=b"body")
    assert closing_server.dropped == ["POST"] and closing_server.answered == ["GET"]


def test_a_streamed_body_is_not_sent_twice(closing_server):
    import httpx
    with net.httpx_client(net.DIRECT) as client:
        client.get(closing_server.url + "/a")
        with pytest.raises(httpx.RemoteProtocolError):
            client.put(closing_server.url + "/b", content=iter([b"part"]))
    assert closing_server.answered == ["GET"]


def test_the_hub_client_sends_an_idempotent_request_again_too(closing_server):
    client = net.hf_client_factory(net.DIRECT)()
    with client:
        assert client.get(closing_server.url + "/a").text == "ok"
        assert client.head(closing_server.url + "/b").status_code == 200
    assert closing_server.dropped == ["HEAD"] and closing_server.answered == ["GET", "HEAD"]


def test_a_requests_session_sends_an_idempotent_request_again_and_not_a_post(closing_server):
    import requests
    with net.requests_session(net.DIRECT) as http:
        assert http.get(closing_server.url + "/a", timeout=5).text == "ok"
        assert http.get(closing_server.url + "/b", timeout=5).text == "ok"
        assert closing_server.dropped == ["GET"] and closing_server.answered == ["GET", "GET"]
        with pytest.raises(requests.ConnectionError):
            http.post(closing_server.url + "/c", data=b"body", timeout=5)
    assert closing_server.dropped == ["GET", "POST"] and closing_server.answered == ["GET", "GET"]


@pytest.mark.parametrize("make", ["routing", "replicate", "replicate_secret"])
def test_every_outbound_transport_sends_a_dropped_get_again(closing_server, make):
    import httpx

    from stcloud.providers import replicate, replicate_webhook
    transport = {
        "routing": lambda: net.RoutingTransport(net.DIRECT),
        "replicate": lambda: replicate._Transport(timeouts={}, retry_after_cap=1),
        "replicate_secret": lambda: replicate_webhook._SingleAttempt(),
    }[make]()
    with httpx.Client(transport=transport) as client:
        assert client.get(closing_server.url + "/a").text == "ok"
        assert client.get(closing_server.url + "/b").text == "ok"
    assert closing_server.dropped == ["GET"] and closing_server.answered == ["GET", "GET"]


def test_closing_a_client_closes_its_connections(closing_server):
    """The routing transport closes each inner transport (its pool of kept connections)."""
    client = net.httpx_client(net.DIRECT)
    assert client.get(closing_server.url + "/a").text == "ok"
    routing = client._transport
    (inner,) = routing._transports.values()
    pool = inner._pool
    assert pool.connections  # the GET's connection is kept
    client.close()
    assert pool.connections == []
