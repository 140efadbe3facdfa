from hypothesis import given, strategies as st

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
