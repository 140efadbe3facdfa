from hypothesis import given
from hypothesis import strategies as st

from rangestream.redact import MASK, redact_url


def test_googlevideo_signatures_masked():
    url = ("https://rr1.googlevideo.com/videoplayback?expire=1&id=o-abc&itag=137&ip=203.0.113.9"
           "&sig=SECRETSIG&lsig=SECRETLSIG&n=SECRETN&clen=100&lmt=123")
    out = redact_url(url)
    for secret in ("SECRETSIG", "SECRETLSIG", "SECRETN", "203.0.113.9"):
        assert secret not in out
    assert "itag=137" in out and "clen=100" in out and "lmt=123" in out


def test_proxy_credentials_and_token_like_params_masked():
    assert redact_url("socks5://alice:hunter2@127.0.0.1:1080") == f"socks5://{MASK}@127.0.0.1:1080"
    out = redact_url("https://cdn.example/x?X-Amz-Signature=S3CRET1&access_token=S3CRET2&api_key=S3CRET3&part=1")
    assert "S3CRET" not in out and "part=1" in out


@given(secret=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=6, max_size=20))
def test_no_secret_survives(secret):
    for url in (f"https://h/p?sig={secret}", f"http://u:{secret}@h/p", f"https://h/p?a=1&token={secret}&b=2"):
        assert secret not in redact_url(url)


def test_free_text_masks_urls_and_secret_pairs():
    from rangestream.redact import redact_text

    text = "[generic] videoplayback?id=x&clen=1000&sig=SECRET1&lsig=SECRET2: see http://u:SECRET3@h/p?n=SECRET4&itag=1"
    out = redact_text(text)
    assert "SECRET" not in out
    assert "clen=1000" in out and "itag=1" in out and "[generic] videoplayback?id=x" in out


def test_path_style_googlevideo_signatures_masked():
    url = "https://rr3.googlevideo.com/videoplayback/id/abc/itag/137/sig/PATHSECRET1/lsig/PATHSECRET2/clen/100/file/index.m4s"
    out = redact_url(url)
    assert "PATHSECRET" not in out and "/itag/137/" in out and "/clen/100/" in out
    assert redact_url("http://h/data/n/100.bin") == "http://h/data/n/100.bin"  # only googlevideo's form


_SECRETS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=8, max_size=24)


@given(secret=_SECRETS, sep=st.sampled_from(["&", ";"]), first=st.booleans(), name=st.sampled_from(
    ["sig", "lsig", "X-Amz-Signature", "token", "hdnts", "__token__", "hmac"]))
def test_semicolon_separated_and_akamai_query_pairs_masked(secret, sep, first, name):
    pair = f"{name}={secret}"
    query = f"{pair}{sep}itag=137" if first else f"itag=137{sep}{pair}{sep}clen=100"
    url = f"https://cdn.example/v.mp4?{query}"
    from rangestream.redact import redact_text

    for out in (redact_url(url), redact_text(f"failed: {url} (retry)"), redact_text(f"got {query} back")):
        assert secret not in out, out
        assert "itag=137" in out


@given(secret=_SECRETS, where=st.sampled_from(["query", "cookie", "path", "text"]))
def test_akamai_token_hmac_masked_wherever_it_appears(secret, where):
    from rangestream.redact import redact_text

    token = f"exp=1735689600~acl=/video/*~hmac={secret}"
    text = {"query": f"https://a.akamaized.net/v.mp4?hdnts={token}&x=1",
            "cookie": f"Set-Cookie: hdntl={token}; path=/",
            "path": f"https://a.akamaized.net/__token__={token}/v.mp4",
            "text": f"token rejected: {token}"}[where]
    out = redact_text(text)
    assert secret not in out and MASK in out, out
    if where != "text":
        assert secret not in redact_url(text.removeprefix("Set-Cookie: "))
    if where == "path":
        assert redact_url(text).endswith("~hmac=REDACTED/v.mp4")  # only the secret goes


def test_path_parameters_with_secrets_masked():
    assert redact_url("https://h/a/v.mp4;sig=PSECRET1;itag=1/x?a=1") == f"https://h/a/v.mp4;sig={MASK};itag=1/x?a=1"
