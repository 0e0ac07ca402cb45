"""Fuzz `sandbox serve`'s OpenAPI spec with schemathesis: valid and invalid requests generated from /openapi.json,
bounded in count and time, against the app over a local-backend Sandbox with 2 s programs.

No answer may be a 5xx, and each must be one the spec declares, with the declared content type and schema; invalid
data must be refused and a request without the token must get 401.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from sandbox import Limits, Sandbox
from sandbox.server import create_app
from sandbox.server_settings import ServerSettings

TOKEN = "fuzz-token-0123456789abcdef"
SETTINGS = ServerSettings(max_body_bytes=64 * 1024, max_jobs_per_request=3, max_program_bytes=2048, max_timeout_s=2.0,
                          max_queue_jobs=6, token=TOKEN)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection, ignored_auth]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the local backend's isolation warning
        with Sandbox(backend="local", workers=2, limits=Limits().with_timeout(2.0)) as sb:
            yield sb


@pytest.fixture(scope="module")
def api(sandbox: Sandbox) -> schemathesis.schemas.BaseSchema:
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(sandbox, SETTINGS))


schema = schemathesis.pytest.from_fixture("api")


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_spec_fuzzed_gets_no_5xx_and_only_declared_answers(case: schemathesis.Case) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=CHECKS)


def test_the_fuzzed_spec_holds_every_route(sandbox: Sandbox) -> None:
    """Fuzzing covers what the spec lists, so every route a client can call must be in it."""
    assert set(create_app(sandbox, SETTINGS).openapi()["paths"]) == {"/v1/grade", "/run_code", "/healthz", "/metrics"}
