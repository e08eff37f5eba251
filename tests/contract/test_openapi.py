"""docs/openapi.yaml describes the whole contract, and every service holds to it under fuzzing.

The first half reads the document. The second half lets schemathesis generate valid and
invalid requests for every operation, sends them to the `stack` (local processes, or
somebody's deployment in conformance mode) with a valid token of a fresh user, and runs
all of schemathesis' checks plus the contract's own rules on every answer: no 5xx, every
status, header and body as documented, every error a problem+json, X-Instance naming the
right service.
"""

from __future__ import annotations

import collections
import copy
import json
import uuid
import zlib
from pathlib import Path
from typing import Any

import hypothesis
import jsonschema_rs
import pytest
import requests
import schemathesis
import yaml
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.core.failures import AcceptedNegativeData
from schemathesis.generation import GenerationMode
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from tests.lib.accounts import register_and_login

DOCUMENT_PATH = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
DOCUMENT = yaml.safe_load(DOCUMENT_PATH.read_text(encoding="utf-8"))

# Every call of the contract tables, by service; /health and /ready belong to every service.
CONTRACT_CALLS = {
    "login": {("POST", "/users"), ("POST", "/login"), ("GET", "/validate"), ("POST", "/logout")},
    "profile": {("GET", "/profiles/{username}"), ("PUT", "/profiles/{username}")},
    "chat": {
        ("GET", "/rooms"),
        ("POST", "/rooms"),
        ("POST", "/rooms/{room}/messages"),
        ("GET", "/rooms/{room}/messages"),
    },
}
EVERY_SERVICE_CALLS = {("GET", "/health"), ("GET", "/ready")}
PUBLIC_CALLS = {("POST", "/users"), ("POST", "/login")} | EVERY_SERVICE_CALLS
DEFAULT_PORTS = {"login": "4100", "profile": "4200", "chat": "5000"}
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")

# Enough examples per operation to reach every branch of the rules, few enough that the
# three services are fuzzed in about a minute on two cores (scrypt and FerretDB are slow).
MAX_EXAMPLES = 50


def operations(document: dict):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield method.upper(), path, operation


def resolve(document: dict, node):
    """Follow local `$ref`s (`#/components/...`) until a node that is not a reference."""
    while isinstance(node, dict) and "$ref" in node:
        reference = node["$ref"]
        assert reference.startswith("#/"), f"only local references are expected, got {reference}"
        node = document
        for part in reference[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


# --- the document ---------------------------------------------------------------------------


def test_schemathesis_loads_the_document_as_valid_openapi():
    schema = schemathesis.openapi.from_path(DOCUMENT_PATH)
    schema.validate()  # against the OpenAPI meta-schema
    loaded = [result.ok() for result in schema.get_all_operations()]  # raises on a broken operation
    assert DOCUMENT["openapi"].startswith("3.1")
    assert len(loaded) == len(set().union(*CONTRACT_CALLS.values())) + len(EVERY_SERVICE_CALLS)


def test_every_reference_in_the_document_resolves():
    def walk(node, where):
        if isinstance(node, dict):
            if "$ref" in node:
                try:
                    resolve(DOCUMENT, node)
                except (KeyError, TypeError):
                    pytest.fail(f"{where}: {node['$ref']} does not resolve")
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}/{index}")

    walk(DOCUMENT, "#")


def test_every_call_of_the_contract_is_documented_under_its_service():
    documented = {(method, path): operation for method, path, operation in operations(DOCUMENT)}
    assert set(documented) == set().union(*CONTRACT_CALLS.values()) | EVERY_SERVICE_CALLS
    for service, calls in CONTRACT_CALLS.items():
        for call in calls | EVERY_SERVICE_CALLS:
            assert service in documented[call].get("tags", []), f"{call} is not tagged {service}"
        for _, path in calls:
            ports = {server["variables"]["port"]["default"] for server in DOCUMENT["paths"][path]["servers"]}
            assert ports == {DEFAULT_PORTS[service]}, f"{path} should be served by {service}"


def test_every_response_is_documented_with_the_contracts_headers_and_problem_bodies():
    for method, path, operation in operations(DOCUMENT):
        public = (method, path) in PUBLIC_CALLS
        security = operation.get("security", DOCUMENT["security"])
        assert (security == []) == public, f"{method} {path}: bearer security is wrong"
        statuses = set(operation["responses"])
        if not public:
            assert "401" in statuses, f"{method} {path} needs a 401"
        if "requestBody" in operation:
            assert {"400", "413", "415"} <= statuses, f"{method} {path} takes a body: 400, 413, 415"
        for status, response in operation["responses"].items():
            response = resolve(DOCUMENT, response)
            headers = {name: resolve(DOCUMENT, header) for name, header in response.get("headers", {}).items()}
            where = f"{method} {path} {status}"
            assert headers.get("X-Instance", {}).get("required"), f"{where}: X-Instance"
            if status == "401":
                assert headers.get("WWW-Authenticate", {}).get("required"), f"{where}: WWW-Authenticate"
            if status == "429":
                assert headers.get("Retry-After", {}).get("required"), f"{where}: Retry-After"
            if int(status) >= 400:
                assert set(response["content"]) == {"application/problem+json"}, where
                schema = resolve(DOCUMENT, response["content"]["application/problem+json"]["schema"])
                base, exact = (resolve(DOCUMENT, part) for part in schema["allOf"])
                assert set(base["required"]) >= {"type", "title", "status", "detail"}, where
                assert exact["properties"]["status"]["const"] == int(status), where


def test_request_bodies_are_closed_objects_with_their_limits():
    schemas = DOCUMENT["components"]["schemas"]
    for name in ("Credentials", "ProfileUpdate", "NewRoom", "NewMessage"):
        assert schemas[name]["additionalProperties"] is False, name
    assert schemas["ProfileUpdate"]["minProperties"] == 1
    assert set(schemas["Credentials"]["required"]) == {"username", "password"}
    assert (schemas["Username"]["minLength"], schemas["Username"]["maxLength"]) == (3, 32)
    assert (schemas["Password"]["minLength"], schemas["Password"]["maxLength"]) == (8, 128)
    assert (schemas["RoomName"]["minLength"], schemas["RoomName"]["maxLength"]) == (1, 64)
    text = schemas["NewMessage"]["properties"]["text"]
    assert (text["minLength"], text["maxLength"]) == (1, 2000)
    limit = next(p for p in DOCUMENT["paths"]["/rooms/{room}/messages"]["get"]["parameters"] if p["name"] == "limit")
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"], limit["schema"]["default"]) == (1, 200, 50)


def _is_valid(schema: dict, instance) -> bool:
    return jsonschema_rs.validator_for({**schema, "components": DOCUMENT["components"]}).is_valid(instance)


def test_every_example_in_the_document_is_valid():
    found = 0
    for method, path, operation in operations(DOCUMENT):
        parameters = DOCUMENT["paths"][path].get("parameters", []) + operation.get("parameters", [])
        for parameter in parameters:
            if "example" in parameter:
                found += 1
                assert _is_valid(parameter["schema"], parameter["example"]), (method, path, parameter["name"])
        body = resolve(DOCUMENT, operation.get("requestBody", {}))
        for media_type in body.get("content", {}).values():
            if "example" in media_type:
                found += 1
                assert _is_valid(media_type["schema"], media_type["example"]), (method, path, media_type["example"])
    assert found >= 6


def test_the_document_accepts_and_refuses_what_the_contract_says():
    def valid(schema_name, instance) -> bool:
        return _is_valid({"$ref": f"#/components/schemas/{schema_name}"}, instance)

    assert valid("Credentials", {"username": "a.b-c_9", "password": "p" * 8})
    assert valid("Credentials", {"username": "x" * 32, "password": "🙂" * 128})  # code points
    for body in (
        {"username": "ab", "password": "p" * 8},
        {"username": "bad name", "password": "p" * 8},
        {"username": "okname", "password": "p" * 129},
        {"username": "okname"},
        {"username": "okname", "password": {"$ne": None}},
        {"username": "okname", "password": "p" * 8, "x": 1},
    ):
        assert not valid("Credentials", body), body
    assert valid("ProfileUpdate", {"bio": ""}) and valid("ProfileUpdate", {"avatar_url": "https://example.org/a.png"})
    for body in (
        {},
        {"display_name": None},
        {"display_name": ""},
        {"avatar_url": "ftp://example.org/a"},
        {"avatar_url": "javascript:alert(1)"},
        {"nickname": "x"},
        {"bio": "nul\u0000"},
    ):
        assert not valid("ProfileUpdate", body), body
    assert valid("NewMessage", {"text": "😀" * 2000}) and not valid("NewMessage", {"text": "x" * 2001})
    assert not valid("NewRoom", {"name": "dot.ted"}) and valid("NewRoom", {"name": "r" * 64})
    assert valid("Timestamp", "2026-01-02T03:04:05.678Z") and not valid("Timestamp", "2026-01-02T03:04:05+00:00")


# --- fuzzing --------------------------------------------------------------------------------

# Named now and registered by the fixtures: the fuzzing copy of the document gives them as
# the examples of the path parameters, and half of the valid generated cases are pointed at
# them, so writes to one's own profile and posts to an existing room are exercised.
FUZZ_USERNAME = f"oa_{uuid.uuid4().hex[:12]}"
FUZZ_ROOM = f"oa-{uuid.uuid4().hex[:12]}"
FUZZ_PASSWORD = "fuzzing password 1"
# Logging out kills the token sent, so every /logout case gets a token of its own, of a
# user whose name no response shows to schemathesis (it reuses names it sees in responses,
# and failed logins with a seen name would lock the account).
LOGOUT_USERNAME = f"oa_{uuid.uuid4().hex[:12]}"


def _fuzzing_document() -> dict:
    document = copy.deepcopy(DOCUMENT)
    for path, name, value in (
        ("/profiles/{username}", "username", FUZZ_USERNAME),
        ("/rooms/{room}/messages", "room", FUZZ_ROOM),
    ):
        for parameter in document["paths"][path]["parameters"]:
            if parameter["name"] == name:
                parameter["example"] = value
    # Without `wait`: OpenAPI cannot say that it needs `after`, and every valid case would
    # hold its request for up to 30 s. tests/contract/v1_1/test_live.py tests it against the contract.
    read = document["paths"]["/rooms/{room}/messages"]["get"]
    read["parameters"] = [parameter for parameter in read["parameters"] if parameter["name"] != "wait"]
    return document


SCHEMA = schemathesis.openapi.from_dict(_fuzzing_document())
SCHEMA.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
FUZZ_SETTINGS = hypothesis.settings(
    max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(hypothesis.HealthCheck)
)

# What every fuzzed operation answered, to show that fuzzing got past authentication.
OUTCOMES: dict[str, set[int]] = collections.defaultdict(set)


# Where the contract leaves a choice, a server may take either side; these two wrappers keep
# schemathesis from failing a server for the side the document does not describe.
JSON_SAFE_INTEGER = 2**53 - 1


def _nul_free(value):
    if isinstance(value, str):
        return value.replace("\x00", "A")
    if isinstance(value, dict):
        return {key: _nul_free(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_nul_free(item) for item in value]
    return value


def _body_is_valid(case, body) -> bool:
    return _is_valid(case.operation.get_body_for_media_type("application/json").definition["schema"], body)


def negative_data_rejection_but_nul_may_be_stored(ctx, response, case):
    """ "A NUL character may be refused with 400": storing it is allowed too."""
    try:
        return negative_data_rejection(ctx, response, case)
    except AcceptedNegativeData:
        if (
            isinstance(case.body, dict)
            and json.dumps(case.body) != json.dumps(_nul_free(case.body))
            and _body_is_valid(case, _nul_free(case.body))
        ):
            return None
        raise


def positive_data_acceptance_but_edges_may_be_refused(ctx, response, case):
    """The contract does not say that avatar_url "" or an `after` past 2^53 must be accepted."""
    try:
        return positive_data_acceptance(ctx, response, case)
    except RejectedPositiveData:
        if response.status_code == 400 and (
            (isinstance(case.body, dict) and case.body.get("avatar_url") == "")
            or int((case.query or {}).get("after") or 0) > JSON_SAFE_INTEGER
        ):
            return None
        raise


def _header(response, name: str) -> str:
    values = response.headers.get(name.lower()) or [""]
    return values[0]


def contract_rules_for(service: str):
    """A check of the contract's rules for every answer of `service`, beyond what the document says."""

    def errors_are_problem_details_from_the_right_service(ctx, response, case):
        instance = _header(response, "X-Instance")
        assert instance.startswith(f"{service}@"), f"X-Instance {instance!r} does not name the {service} service"
        if response.status_code >= 400:
            content_type = _header(response, "Content-Type")
            assert content_type.startswith("application/problem+json"), f"{response.status_code} as {content_type!r}"
            try:
                body = response.json()
            except ValueError:
                raise AssertionError(f"{response.status_code} body is not JSON: {response.text[:200]!r}") from None
            assert isinstance(body, dict), body
            assert body.get("status") == response.status_code, f"problem status {body.get('status')!r}"
            assert all(isinstance(body.get(member), str) for member in ("type", "title", "detail")), body
        if response.status_code == 401:
            challenge = _header(response, "WWW-Authenticate")
            assert challenge.startswith("Bearer"), f"401 with WWW-Authenticate {challenge!r}"

    return errors_are_problem_details_from_the_right_service


load_all_checks()
# Every check schemathesis has, the two above in place of the ones they wrap.
REPLACED: dict[Any, Any] = {
    negative_data_rejection: negative_data_rejection_but_nul_may_be_stored,
    positive_data_acceptance: positive_data_acceptance_but_edges_may_be_refused,
}
ALL_CHECKS = [REPLACED.get(check, check) for check in CHECKS.get_all()]
CONTRACT_RULES = {service: contract_rules_for(service) for service in CONTRACT_CALLS}


TOKENS: dict = {}  # the real tokens, from the fuzz_tokens fixture
# Explicit examples are drawn while pytest collects, before any fixture has run, so the
# provider marks the header and `call_and_validate` puts the real token in just before sending.
TOKEN_PLACEHOLDER = "Bearer fuzz-user-token"


@SCHEMA.auth(refresh_interval=None)
class FuzzUserToken:
    """The bearer token of every generated case, except the cases that test a missing one."""

    def get(self, case, context):
        return None if (case.method, case.path) in PUBLIC_CALLS else TOKEN_PLACEHOLDER

    def set(self, case, header, context):
        case.headers["Authorization"] = header


@pytest.fixture(scope="module")
def fuzz_user(stack):
    user = register_and_login(stack.login_url, FUZZ_USERNAME, FUZZ_PASSWORD)
    # A profile to read, so reads of one's own profile answer 200 rather than 404.
    written = requests.put(
        f"{stack.profile_url}/profiles/{FUZZ_USERNAME}", json={"bio": "fuzzed"}, headers=user.auth, timeout=10
    )
    assert written.status_code == 200, written.text
    return user


@pytest.fixture(scope="module")
def fuzz_room(stack, fuzz_user):
    created = requests.post(f"{stack.chat_url}/rooms", json={"name": FUZZ_ROOM}, headers=fuzz_user.auth, timeout=10)
    assert created.status_code == 201, created.text
    return FUZZ_ROOM


@pytest.fixture(scope="module")
def fuzz_tokens(stack, fuzz_user):
    """Hands the fuzz user's token, and a fresh token for each /logout, to `FuzzUserToken`."""
    register_and_login(stack.login_url, LOGOUT_USERNAME, FUZZ_PASSWORD)

    def fresh_token() -> str:
        credentials = {"username": LOGOUT_USERNAME, "password": FUZZ_PASSWORD}
        response = requests.post(f"{stack.login_url}/login", json=credentials, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()["token"]

    TOKENS.update(user=fuzz_user.token, fresh=fresh_token)
    yield
    TOKENS.clear()


def call_and_validate(case, service: str, base_url: str):
    """Send one generated case and run every check on the answer."""
    if case.meta is not None and case.meta.generation.mode == GenerationMode.POSITIVE:
        # A valid case stays valid with another valid name; half go to the names that exist.
        for name, existing in (("username", FUZZ_USERNAME), ("room", FUZZ_ROOM)):
            generated = (case.path_parameters or {}).get(name)
            if isinstance(generated, str) and zlib.crc32(generated.encode()) % 2 == 0:
                case.path_parameters[name] = existing
    if case.headers and case.headers.get("Authorization") == TOKEN_PLACEHOLDER:
        token = TOKENS["fresh"]() if case.path == "/logout" else TOKENS["user"]
        case.headers["Authorization"] = f"Bearer {token}"
    response = case.call_and_validate(
        base_url=base_url, checks=ALL_CHECKS, additional_checks=[CONTRACT_RULES[service]], timeout=15
    )
    OUTCOMES[f"{service} {case.method} {case.path}"].add(response.status_code)


@SCHEMA.include(tag="login").parametrize()
@FUZZ_SETTINGS
def test_login_service_holds_to_the_document(case, stack, fuzz_tokens):
    call_and_validate(case, "login", stack.login_url)


@SCHEMA.include(tag="profile").parametrize()
@FUZZ_SETTINGS
def test_profile_service_holds_to_the_document(case, stack, fuzz_tokens):
    call_and_validate(case, "profile", stack.profile_url)


@pytest.mark.chat
@SCHEMA.include(tag="chat").parametrize()
@FUZZ_SETTINGS
def test_chat_service_holds_to_the_document(case, stack, fuzz_tokens, fuzz_room):
    call_and_validate(case, "chat", stack.chat_url)


def test_a_successful_login_is_answered_as_documented(stack):
    # Generated logins never succeed: they need a password that was registered, and the
    # coverage phase locks any username it is given with five wrong passwords first.
    credentials = {"username": f"oa_{uuid.uuid4().hex[:12]}", "password": FUZZ_PASSWORD}
    assert requests.post(f"{stack.login_url}/users", json=credentials, timeout=10).status_code == 201
    case = SCHEMA["/login"]["POST"].Case(body=credentials, media_type="application/json")
    response = case.call_and_validate(
        base_url=stack.login_url, checks=ALL_CHECKS, additional_checks=[CONTRACT_RULES["login"]], timeout=15
    )
    assert response.status_code == 200
    OUTCOMES["login POST /login"].add(response.status_code)


def test_fuzzing_got_past_authentication_everywhere():
    # Collected only together with a fuzz test (tests/conftest.py), which records outcomes.
    assert OUTCOMES, "the fuzz tests ran but recorded no outcome"
    for operation, statuses in sorted(OUTCOMES.items()):
        print(f"{operation}: {sorted(statuses)}")  # shown with pytest -s or -rP
    for service, calls in CONTRACT_CALLS.items():
        for method, path in calls:
            seen = OUTCOMES.get(f"{service} {method} {path}")
            if seen is None:
                continue  # that service was deselected or skipped
            assert any(200 <= status < 300 for status in seen), f"{method} {path} never succeeded: {sorted(seen)}"
