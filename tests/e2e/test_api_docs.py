"""/docs and /openapi.json describe the API; DOCS=false turns both off."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import httpx2
import pytest
from chatkit.types import ChatKitReq
from pydantic import TypeAdapter
from pydantic.json_schema import PydanticJsonSchemaWarning

from app.main import create_app
from app.settings import Settings


def _client(tmp_path: Path, **overrides: Any) -> httpx2.AsyncClient:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'd.db'}", data_dir=tmp_path, **overrides
    )
    return httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=create_app(settings)), base_url="http://test"
    )


def _resolve(spec: dict[str, Any], ref: str) -> dict[str, Any]:
    assert ref.startswith("#/components/schemas/"), ref
    schema: dict[str, Any] = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return schema


async def test_openapi_describes_the_chatkit_union_errors_bearer_and_health(
    tmp_path: Path,
) -> None:
    async with _client(tmp_path) as http:
        response = await http.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    operation = spec["paths"]["/api/chatkit"]["post"]
    assert operation["security"] == [{"bearer": []}]
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"

    union = _resolve(
        spec, operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    )
    documented_ops = set(union["discriminator"]["mapping"])
    # Every op of the installed SDK's request union, nothing invented.
    with warnings.catch_warnings():  # the SDK's Action has a default JSON cannot hold
        warnings.simplefilter("ignore", PydanticJsonSchemaWarning)
        sdk_ops = set(TypeAdapter(ChatKitReq).json_schema()["discriminator"]["mapping"])
    assert documented_ops == sdk_ops
    assert {"threads.create", "threads.add_user_message", "items.list"} <= documented_ops
    for ref in union["discriminator"]["mapping"].values():
        _resolve(spec, ref)  # every member is defined

    error = _resolve(spec, "#/components/schemas/Error")
    assert error["required"] == ["type", "message", "status_code"]
    for status in ("400", "401", "404", "413", "429", "503"):
        content = operation["responses"][status]["content"]["application/json"]
        assert content["schema"]["$ref"].endswith("/Error")
    stream = operation["responses"]["200"]["content"]["text/event-stream"]["schema"]
    assert "thread.created" in _resolve(spec, stream["$ref"])["discriminator"]["mapping"]
    assert "/health" in spec["paths"] and "/ready" in spec["paths"]
    # Generated clients name a method per operation id: two operations must not share one.
    ids = [op["operationId"] for path in spec["paths"].values() for op in path.values()]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


async def test_docs_page_loads_only_its_own_files(tmp_path: Path) -> None:
    async with _client(tmp_path) as http:
        page = await http.get("/docs")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert assets and all(a.startswith("/") and not a.startswith("//") for a in assets)
        for asset in assets:
            loaded = await http.get(asset)
            assert loaded.status_code == 200, asset
            assert "http://" not in loaded.text.replace("http://test", "")
            assert "https://" not in loaded.text
        assert (await http.get("/docs/../main.py")).status_code == 404
        assert (await http.get("/docs/other.js")).status_code == 404


@pytest.mark.parametrize("path", ["/docs", "/openapi.json", "/docs/docs.js"])
async def test_docs_off(tmp_path: Path, path: str) -> None:
    async with _client(tmp_path, docs=False) as http:
        response = await http.get(path)
    assert response.status_code == 404
    assert response.json()["status_code"] == 404


def test_docs_setting_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCS", "false")
    assert Settings().docs is False
