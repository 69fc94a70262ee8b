"""docs/serving.md's endpoint table agrees with the OpenAPI schema: the same operations, and for
each the same answer statuses (with a token set, when every endpoint exists)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")

from recfunnel.serving import create_app  # noqa: E402

DOCS = Path(__file__).resolve().parents[2] / "docs" / "serving.md"
ROW = re.compile(r"^\| `(GET|POST|PUT|DELETE) ([^`?]+)[^`]*` \| ([0-9, ]+) \|")


def documented() -> dict[tuple[str, str], list[str]]:
    rows = {}
    for line in DOCS.read_text(encoding="utf-8").splitlines():
        m = ROW.match(line)
        if m:
            rows[(m.group(1).lower(), m.group(2))] = [s.strip() for s in m.group(3).split(",")]
    return rows


def test_the_endpoint_table_matches_the_schema(run_dir):
    schema = create_app(run_dir, token="t").openapi()
    want = {
        (method, path): sorted(op["responses"])
        for path, ops in schema["paths"].items()
        for method, op in ops.items()
    }
    got = documented()
    assert set(got) == set(want), "docs/serving.md's endpoint table lists other operations"
    for key, statuses in want.items():
        assert sorted(got[key]) == statuses, f"{key}: docs say {got[key]}, schema {statuses}"
