"""Plain keyword-only factories with valid defaults and counter-based unique values."""

from __future__ import annotations

import itertools
from typing import Any

from fastapi.testclient import TestClient

_counter = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_counter)}"


def create_user(api: TestClient, **fields: Any) -> dict[str, Any]:
    n = next(_counter)
    body = {"user_id": f"user-{n}", "email": f"person{n}@example.com", **fields}
    body = {key: value for key, value in body.items() if value is not ...}
    response = api.post("/api/v1/users", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def create_company(api: TestClient, **fields: Any) -> dict[str, Any]:
    body = {"company_id": unique("company"), "name": "Acme", **fields}
    response = api.post("/api/v1/companies", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())
