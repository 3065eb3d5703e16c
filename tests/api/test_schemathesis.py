"""Property-based API test (schemathesis, generated from /openapi.json) against a live
device: no server errors, every response matches the documented status codes, content
types, headers and schemas, and schema-invalid requests are rejected.  Bounded by
MAX_EXAMPLES per operation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from .conftest import ADMIN_TOKEN, ApiDevice

MAX_EXAMPLES = 60
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
    checks.negative_data_rejection,
]


@pytest.fixture
def api_schema(make_api: Any, tmp_path: Path) -> Any:
    api: ApiDevice = make_api(config_path=tmp_path / "device.json", data_dir=tmp_path)
    return schemathesis.openapi.from_url(f"{api.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_api_conforms_to_its_schema(case: Any) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, checks=CHECKS)
