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
