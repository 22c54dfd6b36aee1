"""schemathesis against the server's own OpenAPI schema: generated requests, valid and
invalid, get no 5xx and no response the schema does not declare."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

KEY = "schema-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_EXAMPLES = 40
CONFIG = f"""
[llm]
provider = "local-style"
fallback = ["extractive"]
[retrieval]
retriever = "static"
embedder = "hash"
[server]
api_keys = ["{KEY}"]
max_tokens = 512
[providers.extractive]
"""

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
]


@pytest.fixture
def api_schema(running_server, fake_pm):
    base = running_server(CONFIG)
    return schemathesis.openapi.from_url(f"{base}/openapi.json", headers=AUTH)


def operations(loaded) -> list:
    return [result.ok() for result in loaded.get_all_operations()]


# schemathesis's lazy pytest integration (from_fixture) does not run on this pytest, so each
# operation's strategy drives hypothesis directly.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_conforms_to_its_schema(api_schema, mode):
    tested = []
    for operation in operations(api_schema):
        tested.append(operation.label)
        if mode is GenerationMode.NEGATIVE and operation.method.upper() == "GET":
            continue  # no parameters or body: nothing that could be invalid

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case) -> None:
            case.call_and_validate(headers=AUTH, checks=CHECKS, timeout=20)

        run()
    assert set(tested) >= {
        "POST /v1/chat/completions",
        "POST /v1/embeddings",
        "GET /v1/models",
        "POST /v1/generate",
        "GET /health",
    }
