"""mkdocs hooks: the reference pages written from the code when the site is built, so they
cannot drift from it (the settings tree, the served OpenAPI document, the proto), and the
benchmark plots taken from ``benchmarks/results``."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[2]
PLOTS = ["openset.png", "losses.png"]
MARKER = re.compile(r"<!-- generated: (.+?) -->")


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for name in PLOTS:
        files.append(
            File.generated(
                config, f"img/{name}", abs_src_path=str(ROOT / "benchmarks/results" / name)
            )
        )
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    writers = {
        "the settings tree": settings_reference,
        "the OpenAPI document": openapi_reference,
        "the proto": proto_reference,
    }
    return MARKER.sub(lambda m: writers[m.group(1)](), markdown)


def settings_reference() -> str:
    """One table per section: each key, its default (as on a fresh machine) and why."""
    from facegallery.core.config import Settings

    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("FACEGALLERY_")}
    try:
        defaults = Settings()
    finally:
        os.environ.update(saved)
    out = []
    for name, field in Settings.model_fields.items():
        value = getattr(defaults, name)
        if isinstance(value, BaseModel):
            out.append(f"### `{name}`\n\n{_doc(type(value))}\n")
            out.append(_table(name, value))
        else:
            out.append(f"### `{name}`\n\n{field.description or ''}\n")
            out.append(_table("", defaults, only=name))
    return "\n".join(out)


def _table(prefix: str, model: BaseModel, only: str | None = None) -> str:
    rows = ["| key | default | description |", "|---|---|---|"]
    for key, field in type(model).model_fields.items():
        if only is not None and key != only:
            continue
        value = getattr(model, key)
        dotted = f"{prefix}.{key}" if prefix else key
        if isinstance(value, BaseModel):
            for sub, subfield in type(value).model_fields.items():
                rows.append(_row(f"{dotted}.{sub}", getattr(value, sub), subfield.description))
        else:
            rows.append(_row(dotted, value, field.description))
    return "\n".join(rows) + "\n"


def _row(key: str, value: Any, description: str | None) -> str:
    shown = str(value).replace(str(Path.home()), "~")
    shown = re.sub(r"/tmp[^ ]*?/facegallery-metrics", "$TMPDIR/facegallery-metrics", shown)
    text = (description or "").replace("|", "\\|").replace("\n", " ")
    return f"| `{key}` | `{shown}` | {text} |"


def _doc(model: type[BaseModel]) -> str:
    return " ".join((model.__doc__ or "").split())


def openapi_reference() -> str:
    """Each HTTP operation (method, path, what it does, its body and answers), then each
    message's fields."""
    from facegallery.serving.gateway import http

    document = http.openapi()
    out = ["| operation | method and path | body | answer |", "|---|---|---|---|"]
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            request = _ref(body.get("schema", {})) or "-"
            ok = next(iter(op["responses"].items()))
            answer = _ref(ok[1].get("content", {}).get("application/json", {}).get("schema", {}))
            summary = " ".join((op.get("description") or op.get("summary", "")).split())
            out.append(
                f"| `{op.get('operationId', '')}`: {summary} | `{method.upper()} {path}` | "
                f"{request} | {ok[0]} {answer or ''} |"
            )
    out.append("\n### Messages\n")
    for name, schema in sorted(document["components"]["schemas"].items()):
        if "properties" not in schema:
            continue
        out.append(f"#### {name}\n")
        required = set(schema.get("required", []))
        out.append("| field | type | required | description |\n|---|---|---|---|")
        for field, spec in schema["properties"].items():
            text = " ".join(spec.get("description", "").split()).replace("|", "\\|")
            out.append(
                f"| `{field}` | {_type(spec)} | {'yes' if field in required else ''} | {text} |"
            )
        out.append("")
    return "\n".join(out)


def _ref(schema: dict[str, Any]) -> str:
    ref = schema.get("$ref", "")
    return f"`{ref.rsplit('/', 1)[-1]}`" if ref else ""


def _type(spec: dict[str, Any]) -> str:
    if "$ref" in spec:
        return _ref(spec)
    if "anyOf" in spec:
        return " or ".join(_type(s) for s in spec["anyOf"])
    if spec.get("type") == "array":
        return f"list of {_type(spec.get('items', {}))}"
    return str(spec.get("type", "any"))


def proto_reference() -> str:
    """The service's methods with their comments, then the whole contract."""
    proto = (ROOT / "proto/facegallery/v1/facegallery.proto").read_text()
    rows = ["| method | request | answer | what it does |", "|---|---|---|---|"]
    comment: list[str] = []
    for line in proto.splitlines():
        text = line.strip()
        if text.startswith("//"):
            comment.append(text.removeprefix("//").strip())
            continue
        found = re.match(r"rpc (\w+)\((\w+)\) returns \((stream )?(\w+)\);", text)
        if found:
            name, request, stream, answer = found.groups()
            rows.append(
                f"| `{name}` | `{request}` | {stream or ''}`{answer}` | {' '.join(comment)} |"
            )
        comment = []
    return "\n".join(rows) + f"\n\n```protobuf\n{proto}\n```\n"
