"""Data Docs that work without internet access.

Great Expectations writes Data Docs pages that load bootstrap, jQuery, bootstrap-table, popper,
font-awesome, bootstrap-datepicker and vega from public CDNs, and a logo from a public bucket.
``make install`` fetches those packages from the npm registry once
(``infra/docs-assets/fetch.sh`` into ``<venv>/share/cinestream/docs-assets``); after every build
:func:`make_offline` copies the files the pages need under the site's ``static/vendor/`` and
points every page at them, so the site works from disk, from the Airflow UI and on a cluster
without a way out.
"""

from __future__ import annotations

import logging
import re
import shutil
import sys
from pathlib import Path

log = logging.getLogger("cinestream.quality")

# CDN address (as GX writes it) -> file in the fetched npm packages.
CDN_FILES = {
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery@3.7.1/dist/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": (
        "popper.js@1.12.9/dist/umd/popper.min.js"
    ),
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": (
        "bootstrap@4.3.1/dist/js/bootstrap.min.js"
    ),
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": (
        "bootstrap@4.3.1/dist/css/bootstrap.min.css"
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": (
        "bootstrap-table@1.19.1/dist/bootstrap-table.min.js"
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": (
        "bootstrap-table@1.19.1/dist/bootstrap-table.min.css"
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/"
    "bootstrap-table-filter-control.min.js": (
        "bootstrap-table@1.19.1/dist/extensions/filter-control/"
        "bootstrap-table-filter-control.min.js"
    ),
    # GX links the 1.19.0 stylesheets of the extension; 1.19.1's are the same files.
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/"
    "bootstrap-table-filter-control.css": (
        "bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.css"
    ),
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/"
    "bootstrap-table-filter-control.min.css": (
        "bootstrap-table@1.19.1/dist/extensions/filter-control/"
        "bootstrap-table-filter-control.min.css"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/"
    "bootstrap-datepicker.min.js": (
        "bootstrap-datepicker@1.9.0/dist/js/bootstrap-datepicker.min.js"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/"
    "bootstrap-datepicker.min.css": (
        "bootstrap-datepicker@1.9.0/dist/css/bootstrap-datepicker.min.css"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": (
        "@fortawesome/fontawesome-free@6.6.0/css/all.min.css"
    ),
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/"
    "bootstrap-prefers-dark.css": (
        "@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css"
    ),
    "https://cdn.jsdelivr.net/npm/vega@5": "vega@5.33.1/build/vega.min.js",
    "https://cdn.jsdelivr.net/npm/vega-lite@5": "vega-lite@5.23.0/build/vega-lite.min.js",
    "https://cdn.jsdelivr.net/npm/vega-embed@6": "vega-embed@6.29.0/build/vega-embed.min.js",
}
# Directories a stylesheet reaches by relative URL (font-awesome's fonts).
CDN_DIRS = ["@fortawesome/fontawesome-free@6.6.0/webfonts"]
# The GX logo comes from a public bucket with a tracking query; the site ships the same image.
LOGO = re.compile(r"https://great-expectations-web-assets\.s3[^\"']*/logo-long\.png[^\"']*")
# Any address a page still loads from outside (src= or a stylesheet href=).
EXTERNAL = re.compile(r"""(?:src|<link[^>]*href)=["'](https?://[^"']+)["']""")


def assets_dir() -> Path:
    """Where ``make install`` put the fetched packages (``CINESTREAM_DOCS_ASSETS`` overrides)."""
    from cinestream.settings import Settings

    override = Settings().docs_assets
    return Path(override) if override else Path(sys.prefix) / "share" / "cinestream" / "docs-assets"


def rewrite_page(html: str, prefix: str) -> str:
    """``html`` with every known CDN address replaced by ``prefix`` + the vendored file."""
    for url, local in CDN_FILES.items():
        html = html.replace(f'"{url}"', f'"{prefix}vendor/{local}"')
    return LOGO.sub(f"{prefix}images/logo-long.png", html)


def external_resources(html: str) -> list[str]:
    """The resources a page would still load from outside the site."""
    return EXTERNAL.findall(html)


def make_offline(site: Path, assets: Path | None = None) -> bool:
    """Vendor the assets into ``site/static/vendor`` and point every page of ``site`` at them.

    False (with a warning) when the assets were not fetched: the pages then keep their CDN links.
    """
    assets = assets or assets_dir()
    missing = [f for f in CDN_FILES.values() if not (assets / f).is_file()]
    if missing:
        log.warning(
            "Data Docs keep their CDN links (they need internet access to render): %d asset "
            "files missing under %s, e.g. %s; `make install` fetches them",
            len(missing),
            assets,
            missing[0],
        )
        return False
    vendor = site / "static" / "vendor"
    for rel in sorted(set(CDN_FILES.values())):
        target = vendor / rel
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(assets / rel, target)
    for rel in CDN_DIRS:
        if not (vendor / rel).exists():
            shutil.copytree(assets / rel, vendor / rel)
    for page in site.rglob("*.html"):
        depth = len(page.relative_to(site).parts) - 1
        html = page.read_text()
        rewritten = rewrite_page(html, "../" * depth + "static/")
        if rewritten != html:
            page.write_text(rewritten)
    return True
