"""Property-based: any answer and any spec end in a typed result or our typed error, quickly."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from altcraft.api.errors import AltcraftError
from altcraft.api.models import BatchResult, Database, DatabaseField, Page, ProfileResult, Scenario
from altcraft.api.protocol import parse_answer, parse_response, scenario_of, task_id_of, task_status_of
from altcraft.pipelines.spec import PipelineSpec, SpecError, read_spec

FAST = settings(max_examples=60, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
SECRET = "TOKEN-prop-3e1f"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=30,
)


def _items(*keys: str) -> st.SearchStrategy:
    return st.lists(st.dictionaries(st.sampled_from(keys), json_values), max_size=4)


#: Answers shaped like the API's, with any value in any place.
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "error": json_values | st.sampled_from([0, "0", 400, "invalid token"]),
        "error_text": json_values | st.just(f"echo {SECRET} anna@example.org"),
        "result": json_values | _items("error", "error_text", "profile_id"),
        "data": json_values | _items("id", "name", "is_active", "list_id"),
        "next_from_id": json_values,
        "task_id": json_values,
    },
)
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    envelopes.map(lambda v: json.dumps(v).encode()),
)
PARSERS = [
    ProfileResult.model_validate,
    BatchResult.model_validate,
    Page.model_validate,
    task_id_of,
    lambda answer: task_status_of(answer, "t1").profile_results(),
    lambda answer: scenario_of(answer, 12),
    lambda answer: [DatabaseField.model_validate(item) for item in answer.get("data") or []],
    lambda answer: [Database.model_validate(item) for item in Page.model_validate(answer).data],
    lambda answer: [Scenario.model_validate(item) for item in Page.model_validate(answer).data],
]


@FAST
@given(
    status=st.integers(100, 599),
    headers=st.dictionaries(st.sampled_from(["Retry-After", "Location"]), st.text(max_size=40)),
    body=bodies,
)
def test_any_answer_is_a_typed_result_or_a_typed_error(status, headers, body):
    for parse in PARSERS:
        try:
            answer = parse_response("workflows/x", status, headers, body, secret=SECRET)
            result = parse_answer("workflows/x", parse, answer)
        except AltcraftError as error:
            assert SECRET not in str(error)
        else:
            assert SECRET not in repr(result)


spec_keys = st.sampled_from(
    ["id", "schedule", "timezone", "start_date", "source", "mapping", "scenario", "type", "params", "fields"]
)
yaml_documents = st.recursive(
    json_values,
    lambda inner: st.dictionaries(spec_keys | st.text(max_size=8), inner, max_size=6),
    max_leaves=40,
)
ANCHORED = [
    "a: &a [1, 2]\nb: [*a, *a]\n",
    "a: &a {x: *a}\n",
    "&a [*a]\n",
    "a: *undefined\n",
    "!!python/object:os.system {}\n",
    "a: !!binary AAAA\nb: !!timestamp 2001-12-14\n",
    "--- 1\n--- 2\n",
    "\ufeffid: x\n",
]


def _read(text: str) -> PipelineSpec | SpecError:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "spec.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        return read_spec(path)


@FAST
@given(st.one_of(st.text(max_size=300), yaml_documents.map(yaml.safe_dump), st.sampled_from(ANCHORED)))
def test_any_yaml_is_a_spec_or_a_spec_error(text):
    result = _read(text)
    assert isinstance(result, PipelineSpec | SpecError)
    if isinstance(result, SpecError):
        assert str(result).startswith("Pipeline spec spec.yaml is invalid:")
