"""/api/v1/docs works offline: Swagger UI's assets come from the package, never a CDN."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

import audience

STATIC = Path(audience.__file__).parent / "static_docs"


def asset_urls(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)


def test_docs_page_references_only_local_assets(app: TestClient) -> None:
    response = app.get("/api/v1/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    urls = asset_urls(html)
    assert len(urls) >= 3  # the script, the stylesheet and the icon
    assert all(url.startswith("/") and not url.startswith("//") for url in urls), urls
    assert "cdn" not in html.lower()
    assert "'/api/v1/openapi.json'" in html
    for url in urls:
        asset = app.get(url)
        assert asset.status_code == 200, url
        assert asset.content


def test_assets_are_the_packaged_files(app: TestClient) -> None:
    for name, kind in (("swagger-ui-bundle.js", "javascript"), ("swagger-ui.css", "text/css")):
        response = app.get(f"/api/v1/docs/static/{name}")
        assert response.status_code == 200
        assert kind in response.headers["content-type"]
        assert response.content == (STATIC / name).read_bytes()
    # The licence and where the files came from travel with them.
    assert app.get("/api/v1/docs/static/LICENSE").status_code == 200
    assert "swagger-ui-dist" in (STATIC / "README.md").read_text()


def test_docs_page_is_not_in_the_openapi(app: TestClient) -> None:
    paths = app.get("/api/v1/openapi.json").json()["paths"]
    assert not any(path.startswith("/api/v1/docs") for path in paths)


def test_unknown_asset_is_404(app: TestClient) -> None:
    assert app.get("/api/v1/docs/static/nope.js").status_code == 404
