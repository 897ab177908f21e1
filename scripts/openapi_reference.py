#!/usr/bin/env python3
"""Writes the docs book's API reference (docs/src/reference/) from the services' OpenAPI documents.

DOCS_DIR holds the documents each listener serves at `GET /openapi.json`, as printed by
`<service> openapi <listener>` (scripts/docs.sh makes it): gateway-public.json,
gateway-admin.json, consumer-api-public.json. OUT_DIR gets one page per listener, listing each
operation under a `METHOD /path` heading (its anchor stays put while the route does),
schemas.md with every component schema, and README.md listing them; a `$ref` becomes a link to
the schema's heading.

The output depends only on the documents: operations sorted by tag, path and method, schemas by
name. Every page opens with a comment naming this script and its document. The gateway's two
documents share their components; a schema named alike in two documents must be the same schema,
and a `$ref` must name a schema the document defines: otherwise it fails, naming them.

Usage:
  scripts/openapi_reference.py DOCS_DIR OUT_DIR

Python 3 standard library only.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from check_docs_links import slug

SCRIPT = "scripts/openapi_reference.py"
SCHEMAS_PAGE = "schemas.md"
INDEX_PAGE = "README.md"
REF_PREFIX = "#/components/schemas/"
METHODS = ["get", "put", "post", "patch", "delete", "head", "options", "trace"]


@dataclass(frozen=True)
class Listener:
    name: str  # the document's file name and the page's, without .json / .md
    title: str
    command: str  # what prints the document
    served: str  # where the listener is

    @property
    def page(self) -> str:
        return f"{self.name}.md"


LISTENERS = [
    Listener("gateway-public", "Gateway, public listener", "gateway openapi public",
             "`gateway.listen` (:8081)"),
    Listener("gateway-admin", "Gateway, admin listener", "gateway openapi admin",
             "`gateway.admin_listen` (:9081)"),
    Listener("consumer-api-public", "consumer-api, public listener", "consumer-api openapi public",
             "`consumer_api.listen` (:8084)"),
]


class DocumentError(Exception):
    """A document the reference cannot be written from."""


# ---- Markdown pieces ----------------------------------------------------------------------------

def code(text: object) -> str:
    """`text` as a code span, whatever backticks it holds."""
    text = str(text)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def cell(text: str) -> str:
    """`text` fit for a table cell: one line, pipes escaped (in code spans too, as GFM wants)."""
    text = " ".join(text.split())
    return text.replace("|", "\\|") if text else "—"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines


def operation_heading(method: str, path: str) -> str:
    return f"{method.upper()} {path}"


def operation_anchor(method: str, path: str) -> str:
    return slug(operation_heading(method, path))


def schema_linker(from_page: str):
    """How a page links a schema: to its heading on the schemas page."""
    page = "" if from_page == SCHEMAS_PAGE else SCHEMAS_PAGE
    return lambda name: f"[{name}]({page}#{slug(name)})"


# ---- Schemas as text ----------------------------------------------------------------------------

def ref_name(ref: str) -> str:
    if not ref.startswith(REF_PREFIX):
        raise DocumentError(f"{ref}: only references to {REF_PREFIX}… are supported")
    return ref[len(REF_PREFIX):]


def type_text(schema: dict, link) -> str:
    """What a schema is, in a few words: `string (date-time) or null`, `array of [Key](…)`."""
    if "$ref" in schema:
        return link(ref_name(schema["$ref"]))
    for key, joiner in (("oneOf", " or "), ("anyOf", " or "), ("allOf", " and ")):
        if key in schema:
            return joiner.join(type_text(part, link) for part in schema[key])
    if "const" in schema:
        return code(json_value(schema["const"]))
    if "enum" in schema:
        return "one of " + ", ".join(code(json_value(v)) for v in schema["enum"])
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    if not types:
        return "any"
    return " or ".join(single_type_text(t, schema, link) for t in types)


def single_type_text(name: str, schema: dict, link) -> str:
    if name == "array":
        return "array of " + type_text(schema.get("items", {}), link)
    if name == "object" and isinstance(schema.get("additionalProperties"), dict):
        return "object of " + type_text(schema["additionalProperties"], link)
    if name != "null" and "format" in schema:
        return f"{name} ({schema['format']})"
    return name


def json_value(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def limits_text(schema: dict) -> str:
    """The schema's constraints: `1–256 characters; pattern …`; empty when it has none."""
    limits = []
    limits += range_text(schema.get("minLength"), schema.get("maxLength"), "characters")
    limits += range_text(schema.get("minItems"), schema.get("maxItems"), "items")
    for key, sign in (("minimum", "≥"), ("exclusiveMinimum", ">"),
                      ("maximum", "≤"), ("exclusiveMaximum", "<")):
        if key in schema:
            limits.append(f"{sign} {json_value(schema[key])}")
    if "pattern" in schema:
        limits.append("pattern " + code(schema["pattern"]))
    if "default" in schema:
        limits.append("default " + code(json_value(schema["default"])))
    return "; ".join(limits)


def range_text(low: int | None, high: int | None, unit: str) -> list[str]:
    if low is not None and high is not None:
        return [f"{low}–{high} {unit}"]
    if low is not None:
        return [f"at least {low} {unit}"]
    if high is not None:
        return [f"at most {high} {unit}"]
    return []


def type_and_limits(schema: dict, link) -> str:
    limits = limits_text(schema)
    return type_text(schema, link) + (f"; {limits}" if limits else "")


def refs_in(value: object) -> set[str]:
    """Every schema name a `$ref` anywhere inside `value` points at."""
    if isinstance(value, dict):
        found = {ref_name(value["$ref"])} if isinstance(value.get("$ref"), str) else set()
        for item in value.values():
            found |= refs_in(item)
        return found
    if isinstance(value, list):
        return set().union(*(refs_in(item) for item in value)) if value else set()
    return set()


# ---- Reading the documents ----------------------------------------------------------------------

@dataclass(frozen=True)
class Operation:
    listener: Listener
    method: str
    path: str
    spec: dict

    @property
    def tag(self) -> str:
        return (self.spec.get("tags") or ["other"])[0]

    def link(self, from_page: str) -> str:
        """A link to the operation's heading, from `from_page`."""
        page = "" if from_page == self.listener.page else self.listener.page
        anchor = operation_anchor(self.method, self.path)
        return f"[{code(operation_heading(self.method, self.path))}]({page}#{anchor})"


def operations_of(listener: Listener, document: dict) -> list[Operation]:
    operations = []
    for path, item in document.get("paths", {}).items():
        for method in METHODS:
            if method in item:
                operations.append(Operation(listener, method, path, item[method]))
    return sorted(operations, key=lambda op: (op.tag, op.path, METHODS.index(op.method)))


def merged_schemas(documents: dict[str, dict]) -> dict[str, dict]:
    """Every component schema of every document; a name defined twice must mean one schema."""
    schemas: dict[str, dict] = {}
    defined_in: dict[str, str] = {}
    for name, document in documents.items():
        for schema_name, schema in document.get("components", {}).get("schemas", {}).items():
            if schema_name in schemas and schemas[schema_name] != schema:
                raise DocumentError(
                    f"schema {schema_name} differs between {defined_in[schema_name]}.json and "
                    f"{name}.json, and a name must mean one schema on every listener: is one "
                    f"binary older? Else rename one with #[schema(as = …)]")
            schemas[schema_name] = schema
            defined_in.setdefault(schema_name, name)
    return schemas


def check_references(name: str, document: dict) -> None:
    defined = set(document.get("components", {}).get("schemas", {}))
    missing = sorted(refs_in(document) - defined)
    if missing:
        raise DocumentError(
            f"{name}.json refers to schemas it does not define: {', '.join(missing)} "
            f"(register them in the document's components)")


# ---- A listener's page --------------------------------------------------------------------------

def header_comment(source: str) -> list[str]:
    return [
        f"<!-- Generated by {SCRIPT} from {source}.",
        "     Do not edit by hand: change the handlers' OpenAPI annotations (utoipa), then run",
        "     scripts/docs.sh reference. make test fails while this page differs from what the",
        "     document gives. -->",
        "",
    ]


def listener_page(listener: Listener, document: dict, operations: list[Operation]) -> str:
    info = document.get("info", {})
    lines = header_comment(f"the output of `{listener.command}`")
    lines += [f"# {listener.title}", ""]
    lines += [f"Every operation of {listener.served}, from the OpenAPI document it serves at",
              f"`GET /openapi.json`: {info.get('title', '')} {info.get('version', '')}.",
              f"{info.get('description', '')}", "",
              "Bodies are described under [Schemas](schemas.md). The other chapters of this part",
              "say what a document cannot: examples, semantics, guarantees.", ""]
    lines += operations_table(operations)
    lines += security_section(document, operations)
    for tag in sorted({op.tag for op in operations}):
        lines += [f"## Tag {code(tag)}", ""]
        for op in (op for op in operations if op.tag == tag):
            lines += operation_section(op)
    return "\n".join(lines).rstrip() + "\n"


def operations_table(operations: list[Operation]) -> list[str]:
    rows = [[op.link(from_page=op.listener.page),
             first_sentence(op.spec.get("description") or op.spec.get("summary", ""))]
            for op in operations]
    return table(["operation", "what it does"], rows) + [""]


def first_sentence(text: str) -> str:
    text = " ".join(text.split())
    end = text.find(". ")
    return text if end < 0 else text[:end + 1]


def security_section(document: dict, operations: list[Operation]) -> list[str]:
    """The security schemes the page's operations use."""
    schemes = document.get("components", {}).get("securitySchemes", {})
    used = {name for op in operations for requirement in op.spec.get("security") or []
            for name in requirement}
    if not used:
        return []
    undefined = sorted(used - set(schemes))
    if undefined:
        raise DocumentError(f"security schemes used but not defined: {', '.join(undefined)}")
    lines = ["## Security schemes", ""]
    rows = [[code(name), scheme_kind(schemes[name]), schemes[name].get("description", "")]
            for name in sorted(used)]
    return lines + table(["scheme", "kind", "description"], rows) + [""]


def scheme_kind(scheme: dict) -> str:
    if scheme.get("type") == "http":
        return f"HTTP {scheme.get('scheme', '')}".strip()
    if scheme.get("type") == "apiKey":
        return f"{code(scheme.get('name', ''))} {scheme.get('in', '')}".strip()
    return scheme.get("type", "")


def operation_section(op: Operation) -> list[str]:
    spec = op.spec
    link = schema_linker(from_page=op.listener.page)
    lines = [f"### {code(operation_heading(op.method, op.path))}", ""]
    for text in (spec.get("summary"), spec.get("description")):
        if text:
            lines += [text.strip(), ""]
    lines += [f"Operation id {code(spec.get('operationId', '—'))}; security: "
              f"{security_text(spec.get('security'))}.", ""]
    if spec.get("parameters"):
        lines += ["**Parameters**", ""]
        rows = [[code(p["name"]), p.get("in", ""), "yes" if p.get("required") else "no",
                 type_and_limits(p.get("schema", {}), link), p.get("description", "")]
                for p in spec["parameters"]]
        lines += table(["name", "in", "required", "type", "description"], rows) + [""]
    if "requestBody" in spec:
        lines += request_body_lines(spec["requestBody"], link)
    lines += ["**Responses**", ""]
    rows = [[status, answer.get("description", ""), content_text(answer.get("content"), link),
             headers_text(answer.get("headers"), link)]
            for status, answer in sorted(spec.get("responses", {}).items())]
    lines += table(["status", "description", "body", "headers"], rows) + [""]
    return lines


def security_text(requirements: list[dict] | None) -> str:
    """`none`, or the schemes (with their scopes, where the document names any) that let a request
    in: alternatives joined with `or`."""
    if not requirements:
        return "none"
    alternatives = []
    for requirement in requirements:
        parts = []
        for scheme, scopes in sorted(requirement.items()):
            scope_text = f" ({', '.join(code(s) for s in scopes)})" if scopes else ""
            parts.append(f"[{code(scheme)}](#security-schemes){scope_text}")
        alternatives.append(" and ".join(parts) if parts else "none")
    return " or ".join(alternatives)


def request_body_lines(body: dict, link) -> list[str]:
    required = "required" if body.get("required") else "optional"
    lines = [f"**Request body** ({required})", ""]
    if body.get("description"):
        lines += [body["description"].strip(), ""]
    for media_type, content in sorted(body.get("content", {}).items()):
        lines.append(f"- {code(media_type)}: {type_and_limits(content.get('schema', {}), link)}")
    return lines + [""]


def content_text(content: dict | None, link) -> str:
    if not content:
        return ""
    return "; ".join(f"{code(media_type)} {type_text(item.get('schema', {}), link)}"
                     for media_type, item in sorted(content.items()))


def headers_text(headers: dict | None, link) -> str:
    if not headers:
        return ""
    parts = []
    for name, header in sorted(headers.items()):
        about = header.get("description") or type_text(header.get("schema", {}), link)
        parts.append(f"{code(name)}: {about}")
    return "; ".join(parts)


# ---- The index page ----------------------------------------------------------------------------

def index_page(operations: list[Operation], schemas: dict[str, dict]) -> str:
    lines = header_comment("the listeners' OpenAPI documents")
    lines += ["# Generated reference", ""]
    lines += ["Every operation and schema of the HTTP API, generated from the OpenAPI 3.1",
              "document each listener serves at `GET /openapi.json` (utoipa, from the handlers).",
              "`make test` regenerates these pages from the built services and fails when the",
              "committed ones differ (`scripts/docs.sh check`).", ""]
    rows = [[f"[{listener.title}]({listener.page})", listener.served, code(listener.command),
             str(sum(1 for op in operations if op.listener == listener))]
            for listener in LISTENERS]
    lines += table(["page", "listener", "document printed by", "operations"], rows) + [""]
    lines += [f"[Schemas](schemas.md): every schema they name ({len(schemas)}).", ""]
    return "\n".join(lines).rstrip() + "\n"


# ---- The schemas page ---------------------------------------------------------------------------

def schemas_page(schemas: dict[str, dict], operations: list[Operation]) -> str:
    commands = ", ".join(f"`{listener.command}`" for listener in LISTENERS)
    lines = header_comment(f"the component schemas of {commands}")
    lines += ["# Schemas", ""]
    lines += ["Every schema the listeners' OpenAPI documents define, by name. A name means one",
              "schema on every listener (the generator checks it).", ""]
    used_by = schema_users(operations)
    for name in sorted(schemas, key=lambda n: (n.lower(), n)):
        lines += schema_section(name, schemas[name], used_by.get(name, []))
    return "\n".join(lines).rstrip() + "\n"


def schema_users(operations: list[Operation]) -> dict[str, list[Operation]]:
    """Schema name → the operations that name it in a parameter, the request body or a 2xx
    answer (every error answer is a `Problem`, so 4xx and 5xx are left out)."""
    users: dict[str, list[Operation]] = {}
    for op in operations:
        spec = op.spec
        successes = [a for s, a in spec.get("responses", {}).items() if s.startswith("2")]
        taken = [spec.get("parameters", []), spec.get("requestBody", {})]
        for name in sorted(refs_in(taken + successes)):
            users.setdefault(name, []).append(op)
    return users


def used_by_text(operations: list[Operation]) -> str:
    """`Used by` and the operations, listener by listener."""
    groups = []
    for listener in LISTENERS:
        links = [op.link(from_page=SCHEMAS_PAGE) for op in operations if op.listener == listener]
        if links:
            groups.append(f"{listener.title}: " + ", ".join(links))
    return "**Used by** " + "; ".join(groups) + "."


def schema_section(name: str, schema: dict, used_by: list[Operation]) -> list[str]:
    link = schema_linker(from_page=SCHEMAS_PAGE)
    lines = [f"## {name}", ""]
    if schema.get("description"):
        lines += [schema["description"].strip(), ""]
    lines += schema_body(schema, link)
    if used_by:
        lines += [used_by_text(used_by), ""]
    return lines


def schema_body(schema: dict, link) -> list[str]:
    if "allOf" in schema:
        return all_of_lines(schema["allOf"], link)
    if "properties" in schema or schema.get("type") == "object":
        return object_lines(schema, link)
    return [capitalized(type_and_limits(schema, link)) + ".", ""]


def capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def all_of_lines(parts: list[dict], link) -> list[str]:
    """Every field of each referenced schema, and the table of each part written out."""
    bases = [link(ref_name(part["$ref"])) for part in parts if "$ref" in part]
    own = [part for part in parts if "$ref" not in part]
    lines = []
    if bases:
        below = ", and the fields below" if own else ""
        lines += [f"Every field of {', '.join(bases)}{below}.", ""]
    for part in own:
        lines += object_lines(part, link)
    return lines


def object_lines(schema: dict, link) -> list[str]:
    properties = schema.get("properties", {})
    if not properties:
        return ["An object.", ""]
    required = set(schema.get("required", []))
    rows = [[code(field), type_and_limits(spec, link), "yes" if field in required else "no",
             spec.get("description", "")]
            for field, spec in properties.items()]
    lines = table(["field", "type", "required", "description"], rows) + [""]
    if schema.get("additionalProperties") is False:
        lines += ["Other fields are refused.", ""]
    return lines


# ---- Main ---------------------------------------------------------------------------------------

def write_reference(docs_dir: Path, out_dir: Path) -> list[Path]:
    documents = {}
    for listener in LISTENERS:
        path = docs_dir / f"{listener.name}.json"
        if not path.exists():
            raise DocumentError(f"{path}: missing (`{listener.command}` prints it)")
        documents[listener.name] = json.loads(path.read_text(encoding="utf-8"))
        check_references(listener.name, documents[listener.name])
    schemas = merged_schemas(documents)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    every_operation = []
    for listener in LISTENERS:
        operations = operations_of(listener, documents[listener.name])
        every_operation += operations
        page = out_dir / listener.page
        text = listener_page(listener, documents[listener.name], operations)
        page.write_text(text, encoding="utf-8")
        written.append(page)
    for name, text in ((SCHEMAS_PAGE, schemas_page(schemas, every_operation)),
                       (INDEX_PAGE, index_page(every_operation, schemas))):
        page = out_dir / name
        page.write_text(text, encoding="utf-8")
        written.append(page)
    return written


def main(argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        written = write_reference(Path(argv[0]), Path(argv[1]))
    except (DocumentError, json.JSONDecodeError) as err:
        print(f"openapi_reference: {err}", file=sys.stderr)
        return 1
    print(f"wrote {len(written)} pages in {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
