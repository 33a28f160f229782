"""A hypothesis-driven fuzzer over /openapi.json: requests built from the documented
schemas (and mutations of them) must never get a 5xx, and every response must have a
documented status and a body that matches the documented schema for it.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ADMIN = {"X-API-Key": "fuzz-admin-key"}
EXAMPLES_PER_OPERATION = 60

SETTINGS = settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def fuzz_app(serve_bundle, serve_model, tmp_path_factory):
    from serve.app import create_app
    from serve.config import Config

    db = tmp_path_factory.mktemp("fuzz") / "feedback.sqlite3"
    config = Config(model_path=str(serve_bundle), database_url=f"sqlite:///{db}", max_batch=8,
                    api_keys={"fuzz-admin-key": "admin"})
    app = create_app(config, model=serve_model)
    yield app
    app.extensions["triage"].close()


@pytest.fixture(scope="module")
def doc(fuzz_app):
    return fuzz_app.test_client().get("/openapi.json", headers=ADMIN).get_json()


def resolve(schema: dict, doc: dict) -> dict:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = doc["components"]["schemas"][name]
    return schema


# -- generation -------------------------------------------------------------------------------------
def interesting_strings(model) -> st.SearchStrategy:
    heads = list(model.labels)
    labels = [lb for lbs in model.labels.values() for lb in lbs]
    pool = heads + labels + ["", " ", "\u3000\n", "停水了", "小区里闻到煤气味，有人受伤，要找媒体曝光", "\ud800", "a\udfffb",
                             "2026-03-02T10:00:00", "2026-03-02T10:00:00Z", "9999-12-31T23:59:59+00:00", "0001-01-01",
                             "not a time", "../../etc", "\x00", "😀投诉", "x" * 6000, "停" * 5000]
    return st.one_of(st.sampled_from(pool), st.text(max_size=40))


def from_schema(schema: dict, doc: dict, strings, depth: int = 0) -> st.SearchStrategy:
    schema = resolve(schema, doc)
    if "oneOf" in schema:
        return st.one_of([from_schema(s, doc, strings, depth) for s in schema["oneOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([from_schema({**schema, "type": k}, doc, strings, depth) for k in kind])
    if kind == "object":
        props = schema.get("properties", {})
        required = {k: from_schema(v, doc, strings, depth + 1) for k, v in props.items()
                    if k in schema.get("required", [])}
        optional = {k: from_schema(v, doc, strings, depth + 1) for k, v in props.items() if k not in required}
        base = st.fixed_dictionaries(required, optional=optional)
        extra = schema.get("additionalProperties", True)
        if isinstance(extra, dict):
            return st.dictionaries(strings, from_schema(extra, doc, strings, depth + 1), max_size=4)
        if extra and depth < 2:
            unknown = st.dictionaries(st.text(min_size=1, max_size=8).map(lambda k: "zz_" + k), any_json(), max_size=2)
            return st.tuples(base, unknown).map(lambda p: {**p[1], **p[0]})
        return base
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {}), doc, strings, depth + 1),
                        max_size=min(schema.get("maxItems", 6), 6) + 1)
    if kind == "string":
        if schema.get("format") == "date-time":
            return st.one_of(st.datetimes().map(lambda d: d.isoformat()), strings)
        return strings
    if kind == "integer":
        return st.one_of(st.integers(-10, 10), st.integers())
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return any_json()


def any_json() -> st.SearchStrategy:
    return st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                        | st.text(max_size=20), lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


CONTENT_TYPES = ["application/json", "application/json; charset=utf-8", "text/plain", "", "application/xml",
                 "application/json; charset=latin-1", "multipart/form-data; boundary=x"]


def bodies(schema: dict, doc: dict, strings) -> st.SearchStrategy:
    """(raw body, content type): mostly schema-shaped JSON, sometimes anything at all."""
    shaped = from_schema(schema, doc, strings).map(lambda v: (json.dumps(v).encode(), "application/json"))
    anything = any_json().map(lambda v: (json.dumps(v).encode(), "application/json"))
    raw = st.tuples(st.binary(max_size=64), st.sampled_from(CONTENT_TYPES))
    wrong_type = st.tuples(from_schema(schema, doc, strings).map(lambda v: json.dumps(v).encode()),
                           st.sampled_from(CONTENT_TYPES))
    return st.one_of(shaped, shaped, shaped, anything, raw, wrong_type)


# -- checking -------------------------------------------------------------------------------------
def conforms(value, schema: dict, doc: dict, path: str = "$") -> list[str]:
    """Problems of ``value`` against the subset of JSON Schema the document uses."""
    schema = resolve(schema, doc)
    if "oneOf" in schema:
        matches = [s for s in schema["oneOf"] if not conforms(value, s, doc, path)]
        return [] if len(matches) == 1 else [f"{path}: matches {len(matches)} of oneOf"]
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind else []
    py = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None),
          "integer": int, "number": (int, float)}
    if kinds and not any(isinstance(value, py[k]) and not (k in ("integer", "number") and isinstance(value, bool))
                         for k in kinds):
        return [f"{path}: {type(value).__name__} is not {kinds}"]
    problems = []
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{path}: {value!r} not in enum")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                problems.append(f"{path}: missing {key}")
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, v in value.items():
            if key in props:
                problems += conforms(v, props[key], doc, f"{path}.{key}")
            elif isinstance(extra, dict):
                problems += conforms(v, extra, doc, f"{path}.{key}")
            elif extra is False:
                problems.append(f"{path}: unexpected {key}")
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            problems.append(f"{path}: too many items")
        for i, item in enumerate(value):
            problems += conforms(item, schema.get("items", {}), doc, f"{path}[{i}]")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            problems.append(f"{path}: below minimum")
        if "maximum" in schema and value > schema["maximum"]:
            problems.append(f"{path}: above maximum")
    return problems


def check(resp, operation: dict, doc: dict) -> None:
    status = str(resp.status_code)
    assert resp.status_code < 500, resp.get_data(as_text=True)
    assert status in operation["responses"], f"undocumented status {status}: {resp.get_data(as_text=True)[:300]}"
    spec = operation["responses"][status]
    content = spec.get("content", {})
    if "application/json" in content:
        assert resp.mimetype == "application/json", resp.mimetype
        body = json.loads(resp.get_data())
        problems = conforms(body, content["application/json"]["schema"], doc)
        assert not problems, (problems, body)
    elif content:
        assert resp.mimetype in content, (resp.mimetype, list(content))
    assert resp.headers.get("X-Request-ID")


def operations(doc: dict):
    return [(path, method, op) for path, ops in doc["paths"].items() for method, op in ops.items()]


OPERATIONS = ["POST /v1/score", "POST /v1/score/batch", "POST /v1/feedback", "POST /v1/admin/reload",
              "GET /v1/model", "GET /v1/feedback/export", "GET /healthz", "GET /readyz", "GET /metrics",
              "GET /openapi.json", "GET /"]


def test_every_documented_operation_is_fuzzed(doc):
    assert sorted(f"{m.upper()} {p}" for p, m, _ in operations(doc)) == sorted(OPERATIONS)


@pytest.mark.parametrize("name", OPERATIONS)
def test_fuzz_operation(fuzz_app, doc, serve_model, name):
    method, path = name.split(" ", 1)
    operation = doc["paths"][path][method.lower()]
    client = fuzz_app.test_client()
    strings = interesting_strings(serve_model)

    if "requestBody" in operation:
        schema = operation["requestBody"]["content"]["application/json"]["schema"]

        @SETTINGS
        @given(body=bodies(schema, doc, strings), with_key=st.sampled_from([True, True, True, False]))
        def run(body, with_key):
            data, ctype = body
            headers = dict(ADMIN) if with_key else {}
            if ctype:
                headers["Content-Type"] = ctype
            check(client.open(path, method=method, data=data, headers=headers), operation, doc)
    else:
        params = {p["name"]: p for p in operation.get("parameters", [])}
        url_safe = st.one_of(from_schema(p["schema"], doc, strings) for p in params.values()) if params else None
        query = st.fixed_dictionaries({}, optional={  # a URL cannot carry lone surrogates
            k: st.one_of(url_safe, strings).filter(lambda v: not any(0xD800 <= ord(c) <= 0xDFFF for c in v))
            for k in params})

        @SETTINGS
        @given(query=query, with_key=st.sampled_from([True, True, True, False]))
        def run(query, with_key):
            headers = dict(ADMIN) if with_key else {}
            check(client.open(path, method=method, query_string=query, headers=headers), operation, doc)

    run()
