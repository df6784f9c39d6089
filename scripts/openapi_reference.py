#!/usr/bin/env python3
"""Renders serval's OpenAPI document (GET /api/v1/openapi.json) as the Markdown reference page
docs/admin-api-reference.md. Standard library only.

    scripts/openapi_reference.py http://127.0.0.1:8080/api/v1/openapi.json > docs/admin-api-reference.md
    scripts/openapi_reference.py doc.json > docs/admin-api-reference.md

The test tests/it/admin.rs renders the document of a running server and compares it with the
page (SERVAL_UPDATE_DOCS=1 rewrites the page instead)."""

import json
import sys
import urllib.request

METHODS = ["get", "post", "put", "patch", "delete"]


def load(source):
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source) as response:
            return json.load(response)
    with open(source) as f:
        return json.load(f)


def one_line(text):
    return " ".join((text or "").split())


def type_of(schema):
    """A schema in a few words: `string`, `[Model]`, `Written_Model`, `string | null`."""
    if not schema:
        return "any"
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    for key in ("oneOf", "anyOf", "allOf"):
        if key in schema:
            return " | ".join(type_of(s) for s in schema[key]) if key != "allOf" else " & ".join(
                type_of(s) for s in schema[key]
            )
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        return " \\| ".join(
            type_of({**schema, "type": k}) if k != "null" else "null" for k in kind
        )
    if kind == "array":
        return f"array of {type_of(schema.get('items'))}"
    if kind == "object" and "additionalProperties" in schema:
        return f"map of {type_of(schema['additionalProperties'])}"
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    return kind


def render(doc):
    out = []
    info = doc["info"]
    out.append(f"# {info['title']} — reference")
    out.append("")
    out.append(
        "Generated from the server's OpenAPI "
        f"{doc['openapi']} document (`GET /api/v1/openapi.json`) by "
        "`scripts/openapi_reference.py`; do not edit by hand. The guide is docs/admin-api.md."
    )
    out.append("")
    out.append(one_line(info.get("description")))
    out.append("")
    tags = [t["name"] for t in doc.get("tags", [])]
    by_tag = {t: [] for t in tags}
    for path in sorted(doc["paths"]):
        for method in METHODS:
            op = doc["paths"][path].get(method)
            if op:
                by_tag.setdefault((op.get("tags") or ["other"])[0], []).append((path, method, op))
    descriptions = {t["name"]: t.get("description", "") for t in doc.get("tags", [])}
    for tag, ops in by_tag.items():
        if not ops:
            continue
        out.append(f"## {tag}")
        out.append("")
        if descriptions.get(tag):
            out.append(one_line(descriptions[tag]))
            out.append("")
        for path, method, op in ops:
            out.append(f"### `{method.upper()} {path}`")
            out.append("")
            params = op.get("parameters", [])
            if params:
                out.append("| parameter | in | type | required | description |")
                out.append("|---|---|---|---|---|")
                for p in params:
                    out.append(
                        f"| `{p['name']}` | {p['in']} | {type_of(p.get('schema'))} | "
                        f"{'yes' if p.get('required') else 'no'} | {one_line(p.get('description'))} |"
                    )
                out.append("")
            body = op.get("requestBody")
            if body:
                for content_type, content in body.get("content", {}).items():
                    out.append(
                        f"Body ({content_type}): {type_of(content.get('schema'))}"
                        + (f" — {one_line(body.get('description'))}" if body.get("description") else "")
                    )
                out.append("")
            out.append("| status | answer |")
            out.append("|---|---|")
            for status, response in sorted(op.get("responses", {}).items()):
                schema = next(iter(response.get("content", {}).values()), {}).get("schema")
                shown = type_of(schema) if schema else ""
                answer = one_line(response.get("description"))
                out.append(f"| {status} | {answer}{' — ' + shown if shown else ''} |")
            out.append("")
    out.append("## Schemas")
    out.append("")
    for name, schema in sorted(doc.get("components", {}).get("schemas", {}).items()):
        out.append(f"### {name}")
        out.append("")
        if schema.get("description"):
            out.append(one_line(schema["description"]))
            out.append("")
        props = schema.get("properties")
        if props:
            required = set(schema.get("required", []))
            out.append("| field | type | required | description |")
            out.append("|---|---|---|---|")
            for field, sub in sorted(props.items()):
                out.append(
                    f"| `{field}` | {type_of(sub)} | {'yes' if field in required else 'no'} | "
                    f"{one_line(sub.get('description'))} |"
                )
            out.append("")
        elif "oneOf" in schema or "enum" in schema or "allOf" in schema:
            out.append(f"One of: {type_of(schema)}" if "allOf" not in schema else type_of(schema))
            out.append("")
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: openapi_reference.py URL|FILE > docs/admin-api-reference.md")
    sys.stdout.write(render(load(sys.argv[1])))
