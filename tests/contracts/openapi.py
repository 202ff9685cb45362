"""Check recorded HTTP exchanges against a published OpenAPI 3.0 or Swagger 2.0 document.

Written once for every platform with a spec. A :class:`Spec` finds the operation of a request by
its method and path template, then reports every way the request and the answer differ from what
the document declares (:meth:`Spec.check`): no such operation, a missing required parameter, a
parameter or body the schema refuses, an undeclared query parameter, an undeclared success
status, a JSON answer its schema refuses. Schemas are checked with ``jsonschema`` (Draft 4, the
dialect both OpenAPI 3.0 and Swagger 2.0 schema objects extend), ``$ref`` resolved inside the
document with ``referencing``.

An answer an injected fault made (``RecordedRequest.fault``: a status, a dropped or cut
connection) is the test's, not the emulator's: only its request is checked.

Deliberately lenient in one place: an error status (4xx/5xx) the document does not list is
allowed (the Adobe gateway answers 400/403/429 that no Adobe spec lists, and the tests inject
faults); a listed one is checked against its schema when it has one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import yaml
from jsonschema import Draft4Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from airflow_provider_querytasks.testing.server import RecordedRequest

SPECS = Path(__file__).resolve().parent / "specs"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch")
BINARY = ("application/octet-stream",)


@dataclass
class Operation:
    """One operation of a spec: where it is and what it declares."""

    operation_id: str
    method: str
    template: str
    pattern: re.Pattern[str]
    parameters: list[dict[str, Any]]
    body: dict[str, Any] | None  # the request body's schema (JSON), when declared
    body_required: bool
    responses: dict[str, dict[str, Any]]  # status -> {"schemas": {media type: schema | None}}


@dataclass
class Spec:
    """An OpenAPI 3.0 or Swagger 2.0 document, and the path prefix it is served under.

    :param file: the document's file name in ``tests/contracts/specs``.
    :param base_path: where the API's paths start on the emulator's site (Adobe's servers
        entry ``/data/foundation/query``...; Swagger's ``basePath``).
    """

    file: str
    base_path: str = ""
    document: dict[str, Any] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        text = (SPECS / self.file).read_text()
        self.document = json.loads(text) if self.file.endswith(".json") else yaml.safe_load(text)

    @property
    def swagger(self) -> bool:
        return str(self.document.get("swagger", "")).startswith("2")

    @cached_property
    def registry(self) -> Registry:  # type: ignore[type-arg]
        resource = Resource.from_contents(self.document, default_specification=DRAFT4)
        return Registry().with_resource(f"urn:spec:{self.file}", resource)

    def validator(self, schema: dict[str, Any]) -> Draft4Validator:
        """A validator of ``schema``, its ``#/...`` references read in this document."""
        rooted = _root_refs(schema, f"urn:spec:{self.file}")
        return Draft4Validator(rooted, registry=self.registry)

    def resolve(self, node: Any) -> Any:
        """``node`` with a top-level ``$ref`` followed (parameters, responses)."""
        while isinstance(node, dict) and "$ref" in node:
            pointer = node["$ref"].lstrip("#/").split("/")
            node = self.document
            for part in pointer:
                node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    @cached_property
    def operations(self) -> list[Operation]:
        found = []
        for template, item in (self.document.get("paths") or {}).items():
            shared = [self.resolve(p) for p in item.get("parameters") or []]
            for method in METHODS:
                op = item.get(method)
                if not isinstance(op, dict):
                    continue
                params = shared + [self.resolve(p) for p in op.get("parameters") or []]
                body, required = self._request_body(op, params)
                found.append(
                    Operation(
                        operation_id=str(op.get("operationId")),
                        method=method.upper(),
                        template=template,
                        pattern=_template_pattern(self.base_path + template),
                        parameters=[p for p in params if p.get("in") != "body"],
                        body=body,
                        body_required=required,
                        responses=self._responses(op),
                    )
                )
        # Literal segments first: /query-templates/count before /query-templates/{id}.
        found.sort(key=lambda o: o.template.count("{"))
        return found

    def _request_body(self, op: dict[str, Any], params: list[dict[str, Any]]) -> tuple[Any, bool]:
        if self.swagger:
            for param in params:
                if param.get("in") == "body":
                    return param.get("schema"), bool(param.get("required"))
            return None, False
        body = self.resolve(op.get("requestBody"))
        if not isinstance(body, dict):
            return None, False
        content = body.get("content") or {}
        media = content.get("application/json") or {}
        return media.get("schema"), bool(body.get("required"))

    def _responses(self, op: dict[str, Any]) -> dict[str, dict[str, Any]]:
        answers: dict[str, dict[str, Any]] = {}
        for status, response in (op.get("responses") or {}).items():
            response = self.resolve(response)
            if self.swagger:
                schema = response.get("schema")
                produces = op.get("produces") or self.document.get("produces") or ["application/json"]
                schemas = {media: schema for media in produces} if schema else {}
            else:
                schemas = {
                    media: (spec or {}).get("schema")
                    for media, spec in (response.get("content") or {}).items()
                }
            answers[str(status)] = {"schemas": schemas}
        return answers

    # -- matching and checking ----------------------------------------------------------------
    def serves(self, path: str) -> bool:
        return path.startswith(self.base_path + "/") if self.base_path else True

    def operation(self, method: str, path: str) -> Operation | None:
        for op in self.operations:
            if op.method == method.upper() and op.pattern.match(path):
                return op
        return None

    def check(self, exchange: RecordedRequest) -> tuple[Operation | None, list[str]]:
        """The operation of ``exchange`` and every difference from the document (empty: valid)."""
        op = self.operation(exchange.method, exchange.path)
        if op is None:
            return None, [f"{exchange.method} {exchange.path}: no operation of {self.file} has this path"]
        problems = [f"request: {p}" for p in self._check_request(op, exchange)]
        if exchange.fault in (None, "delay", "expire_token"):  # else the answer is the test's
            problems += [f"answer {exchange.status}: {p}" for p in self._check_response(op, exchange)]
        where = f"{op.operation_id} ({exchange.method} {exchange.path})"
        return op, [f"{where}: {p}" for p in problems]

    def _check_request(self, op: Operation, exchange: RecordedRequest) -> list[str]:
        problems = []
        path_values = op.pattern.match(exchange.path)
        declared_query = set()
        for param in op.parameters:
            name, where = str(param.get("name")), param.get("in")
            schema = self._param_schema(param)
            if where == "query":
                declared_query.add(name)
                values = exchange.query.get(name)
                if not values:
                    if param.get("required"):
                        problems.append(f"required query parameter {name!r} is missing")
                    continue
                problems += self._check_value(name, values, schema, param)
            elif where == "header":
                value = exchange.header(name)
                if value is None:
                    # Content-Type is declared on bodiless PATCHes too; a body carries its own.
                    if param.get("required") and not (name.lower() == "content-type" and not exchange.body):
                        problems.append(f"required header {name!r} is missing")
                    continue
                problems += self._check_value(name, [value], schema, param)
            elif where == "path" and path_values is not None:
                value = unquote(path_values.group(_group(name)) or "")
                problems += self._check_value(name, [value], schema, param)
        undeclared = sorted(set(exchange.query) - declared_query)
        if undeclared:
            problems.append(f"query parameters the spec does not declare: {', '.join(undeclared)}")
        if op.body is not None and exchange.body:
            try:
                body = json.loads(exchange.body)
            except ValueError:
                problems.append("the body is not JSON")
            else:
                problems += [f"body: {e}" for e in _errors(self.validator(op.body), body)]
        elif op.body_required and not exchange.body and exchange.method in ("POST", "PUT", "PATCH"):
            problems.append("the required body is missing")
        return problems

    def _param_schema(self, param: dict[str, Any]) -> dict[str, Any]:
        if self.swagger:
            return {
                k: v
                for k, v in param.items()
                if k in ("type", "items", "enum", "minimum", "maximum", "format")
            }
        return dict(param.get("schema") or {})

    def _check_value(
        self, name: str, values: list[str], schema: dict[str, Any], param: dict[str, Any]
    ) -> list[str]:
        kind = schema.get("type")
        if kind == "array":
            style = param.get("collectionFormat", "csv") if self.swagger else "form"
            explode = param.get("explode", True) if not self.swagger else style == "multi"
            if not explode or style == "csv":
                values = [item for value in values for item in value.split(",")]
            items = self.resolve(schema.get("items") or {})
            return [p for value in values for p in self._check_value(name, [value], items, {})]
        problems = []
        for value in values:
            parsed: Any = value
            if kind == "integer":
                if not re.fullmatch(r"-?\d+", value):
                    problems.append(f"{name}={value!r} is not an integer")
                    continue
                parsed = int(value)
            elif kind == "number":
                try:
                    parsed = float(value)
                except ValueError:
                    problems.append(f"{name}={value!r} is not a number")
                    continue
            elif kind == "boolean":
                if value not in ("true", "false"):
                    problems.append(f"{name}={value!r} is not a boolean")
                    continue
                parsed = value == "true"
            problems += [f"{name}: {e}" for e in _errors(self.validator(schema), parsed)]
        return problems

    def _check_response(self, op: Operation, exchange: RecordedRequest) -> list[str]:
        status = str(exchange.status)
        declared = op.responses.get(status) or op.responses.get("default")
        if declared is None:
            if exchange.status >= 400 or exchange.status == 0:
                return []  # see the module's docstring
            return [f"status {status} is not declared (declared: {', '.join(op.responses)})"]
        schemas: dict[str, Any] = declared["schemas"]
        media = (exchange.response_header("Content-Type") or "").split(";")[0].strip()
        if not schemas:
            return []  # no content declared (`content: {}`): nothing to hold the body to
        if media and media not in schemas:
            return [f"Content-Type {media!r} is not declared (declared: {', '.join(schemas)})"]
        schema = schemas.get(media or "application/json")
        if schema is None or media in BINARY or exchange.response_body is None:
            return []
        if not exchange.response_body.strip():
            return ["the body is empty where a JSON body is declared"]
        try:
            body = json.loads(exchange.response_body)
        except ValueError:
            return ["the body is not JSON"]
        return [f"body: {e}" for e in _errors(self.validator(schema), body)]


def _errors(validator: Draft4Validator, value: Any) -> list[str]:
    found = []
    for error in sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path)):
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        found.append(f"{where}: {error.message[:300]}")
    return found


def _root_refs(node: Any, base: str) -> Any:
    """``node`` with every local ``#/...`` reference made absolute (into the registry's document)."""
    if isinstance(node, dict):
        return {
            key: (
                f"{base}{value}"
                if key == "$ref" and isinstance(value, str) and value.startswith("#")
                else _root_refs(value, base)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_root_refs(item, base) for item in node]
    return node


def _group(name: str) -> str:
    return "p_" + re.sub(r"\W", "_", name)


def _template_pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    regex = "".join(
        f"(?P<{_group(part[1:-1])}>[^/]+)" if part.startswith("{") else re.escape(part) for part in parts
    )
    return re.compile(f"^{regex}/?$")


def json_schema(file: str) -> Draft4Validator:
    """A validator of a plain JSON schema file in ``tests/contracts/specs`` (its own dialect)."""
    from jsonschema.validators import validator_for

    schema = json.loads((SPECS / file).read_text())
    cls = validator_for(schema, default=Draft4Validator)
    return cls(schema)  # type: ignore[no-any-return]
