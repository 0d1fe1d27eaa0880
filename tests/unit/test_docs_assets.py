"""Data Docs pages are pointed at vendored assets: nothing loads from outside the site."""

from __future__ import annotations

from pathlib import Path

import pytest

from cinestream.docs_assets import CDN_FILES, external_resources, make_offline, rewrite_page

PAGE = """<html><head>
<link href="https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css" rel="stylesheet">
<script src="https://cdn.jsdelivr.net/npm/vega@5"></script>
<script src="https://code.jquery.com/jquery-3.7.1.min.js"></script>
</head><body>
<img src="https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/logo-long.png?d=1&x=2">
<a href="https://greatexpectations.io/newsletter">a link, not a resource</a>
</body></html>"""


def test_every_cdn_resource_is_rewritten_to_the_vendored_file() -> None:
    assert len(external_resources(PAGE)) == 4
    html = rewrite_page(PAGE, "../static/")
    assert external_resources(html) == []
    assert '"../static/vendor/vega@5.33.1/build/vega.min.js"' in html
    assert '"../static/vendor/bootstrap@4.3.1/dist/css/bootstrap.min.css"' in html
    assert '"../static/images/logo-long.png"' in html
    assert "https://greatexpectations.io/newsletter" in html  # links stay links


def test_an_unknown_cdn_resource_is_reported() -> None:
    page = '<script src="https://cdn.example.org/new-lib.js"></script>'
    assert external_resources(rewrite_page(page, "static/")) == [
        "https://cdn.example.org/new-lib.js"
    ]


def _assets(root: Path) -> Path:
    for rel in [*CDN_FILES.values(), "@fortawesome/fontawesome-free@6.6.0/webfonts/fa.woff2"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"/* {rel} */")
    return root


def test_make_offline_copies_the_assets_and_rewrites_pages_at_every_depth(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "validations" / "suite" / "run").mkdir(parents=True)
    (site / "index.html").write_text(PAGE)
    (site / "validations" / "suite" / "run" / "r.html").write_text(PAGE)
    assert make_offline(site, _assets(tmp_path / "assets"))
    assert '"static/vendor/jquery@3.7.1/dist/jquery.min.js"' in (site / "index.html").read_text()
    deep = (site / "validations" / "suite" / "run" / "r.html").read_text()
    assert '"../../../static/vendor/jquery@3.7.1/dist/jquery.min.js"' in deep
    assert (site / "static/vendor/jquery@3.7.1/dist/jquery.min.js").is_file()
    assert (site / "static/vendor/@fortawesome/fontawesome-free@6.6.0/webfonts/fa.woff2").is_file()


def test_without_fetched_assets_pages_keep_their_links_and_it_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text(PAGE)
    assert not make_offline(site, tmp_path / "nothing")
    assert (site / "index.html").read_text() == PAGE
    assert "make install" in caplog.text
