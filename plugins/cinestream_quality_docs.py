"""Airflow 3 plugin: the latest Great Expectations Data Docs of cinestream inside the Airflow UI.

A FastAPI app mounted by the api-server at /cinestream-quality, and a navigation link to it, so
the data-quality report is one click from the `cinestream_quality` DAG.
"""

from __future__ import annotations

from pathlib import Path

from airflow.plugins_manager import AirflowPlugin
from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse

from cinestream.quality import docs_dir
from cinestream.settings import Settings

PREFIX = "/cinestream-quality"


def create_docs_app(root: Path | None = None) -> FastAPI:
    app = FastAPI(title="cinestream data quality", docs_url=None, redoc_url=None)

    def site() -> Path:
        return root or docs_dir(Settings())

    @app.get("/", response_model=None)
    def index() -> HTMLResponse | FileResponse:
        page = site() / "index.html"
        if page.exists():
            return FileResponse(page)
        return HTMLResponse(
            "<h1>No data-quality report yet</h1><p>Run the <code>cinestream_quality</code> DAG "
            "or <code>cinestream validate</code> to build it.</p>"
        )

    @app.get("/{path:path}", response_model=None)
    def asset(path: str) -> FileResponse:
        base = site().resolve()
        target = (base / path).resolve()
        if base not in target.parents or not target.is_file():
            raise HTTPException(status_code=404, detail=f"{path} is not part of the Data Docs")
        return FileResponse(target)

    return app


class CinestreamQualityDocsPlugin(AirflowPlugin):
    name = "cinestream_quality_docs"
    fastapi_apps = [
        {"app": create_docs_app(), "url_prefix": PREFIX, "name": "cinestream Data Docs"}
    ]
    external_views = [
        {
            "name": "Data quality (cinestream)",
            "href": f"{PREFIX}/",
            "destination": "nav",
            "category": "browse",
        }
    ]
