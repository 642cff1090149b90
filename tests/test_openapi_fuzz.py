"""Schemathesis over the OpenAPI document: no generated request, valid or not, gets a 500.

The operations are drawn with Hypothesis directly (schemathesis' pytest plugin doesn't run on
this pytest), one test per operation.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audience.app import create_app
from audience.config import Settings
from tests.conftest import Tenant
from tests.factories import create_user

_DOCUMENT = create_app(Settings(database_url="sqlite://")).openapi()
OPERATIONS = [
    f"{method.upper()} {path}" for path, methods in _DOCUMENT["paths"].items() for method in methods
]


@pytest.fixture
def operations(app: TestClient, tenant: Tenant) -> dict[str, Any]:
    # A few rows so that generated ids sometimes hit something real.
    for _ in range(3):
        create_user(tenant.client, custom_attributes={"plan": "pro", "seats": 3})
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", app.app)
    found = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        found[f"{operation.method.upper()} {operation.path}"] = operation
    return found


@pytest.mark.parametrize("label", OPERATIONS)
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
@given(data=st.data())
def test_no_request_gets_a_server_error(
    data: st.DataObject, label: str, operations: dict[str, Any], tenant: Tenant
) -> None:
    case = data.draw(operations[label].as_strategy())
    response = case.call(headers={"Authorization": f"Bearer {tenant.api_key}"})
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text}"
