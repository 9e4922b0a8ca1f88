"""The configuration reference, generated from the typed schemas: every key of a run's config.

``python -m symprune.config_reference --out docs/reference/configuration.md`` (``make docs-reference``)
writes it; ``--check`` only compares. It lists every config group with its option files, every field of
the run schema (symprune/config.py; nested ones dotted) and, for every component registered in
``SCORES``, ``PATTERNS``, ``REFINEMENTS`` and ``ALLOCATIONS``, its parameters: type, default, the allowed
values or interval the field declares (symprune/options.py) and its meaning (the field's attribute
docstring). The output depends on the code and ``conf/`` alone, so tests/test_docs.py can regenerate it
and compare it with the committed page.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import re
import sys
import textwrap
import typing
from pathlib import Path
from typing import Any, Union

import yaml
from omegaconf import MISSING

from symprune.config import COMPONENT_REGISTRIES, CONFIG_DIR, LocalTaskConfig, RunConfig, ZeroShotConfig
from symprune.options import allowed_values, checked_when_built, value_range
from symprune.registry import NoParams, Registry

OUTPUT = "docs/reference/configuration.md"
COMMAND = f"python -m symprune.config_reference --out {OUTPUT}"
# Free-form mappings whose entries have a schema of their own: (schema, field) -> the entries' schema.
ENTRY_SCHEMAS: dict[tuple[type, str], type] = {(ZeroShotConfig, "local"): LocalTaskConfig}


def field_docs(schema: type) -> dict[str, str]:
    """Each field's attribute docstring (the string right under it), inherited ones included, on one line."""
    docs: dict[str, str] = {}
    for klass in reversed(schema.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for node, following in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)):
                docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return "any"
    if origin is Union:
        others = [arg for arg in args if arg is not type(None)]
        return " or ".join(type_name(arg) for arg in others) + (" or null" if len(others) < len(args) else "")
    if origin is list:
        return f"list of {type_name(args[0])}"
    if origin is dict:
        return f"mapping {type_name(args[0])} → {type_name(args[1])}"
    if dataclasses.is_dataclass(hint):
        return "group"
    return hint.__name__


def render(value: Any) -> str:
    """A value as YAML would spell it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(render(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {render(item)}" for key, item in value.items()) + "}"
    if isinstance(value, str) and value == "":
        return '""'
    return str(value)


def code(value: Any) -> str:
    return f"`{render(value)}`"


def text(value: str, cell: bool = True) -> str:
    """Markdown showing ``value`` as it is: no HTML, no emphasis, and in a table cell no cell break."""
    value = value.replace("*", "\\*").replace("<", "&lt;").replace(">", "&gt;")
    return value.replace("|", "\\|") if cell else value


def default_of(item: dataclasses.Field) -> Any:
    if item.default_factory is not dataclasses.MISSING:
        return item.default_factory()
    return item.default


def allowed(item: dataclasses.Field, hint: Any) -> str:
    nullable = typing.get_origin(hint) is Union and type(None) in typing.get_args(hint)
    suffix = " or `null`" if nullable else ""
    choices = allowed_values(item)
    if choices is not None:
        plan = "" if checked_when_built(item) else " (checked by the plan)"
        return ", ".join(code(choice) for choice in choices) + suffix + plan
    interval = value_range(item)
    if interval is not None:
        return f"{interval}{suffix}"
    return ""


# --- the config groups and their option files -------------------------------------------------------------

def group_defaults() -> dict[str, str]:
    """The default option of each group, from conf/config.yaml's defaults list (``optional local: default``
    as ``local``)."""
    entries = yaml.safe_load((CONFIG_DIR / "config.yaml").read_text())["defaults"]
    return {key.removeprefix("optional "): value for entry in entries if isinstance(entry, dict)
            for key, value in entry.items() if not key.startswith("override ")}


def groups() -> dict[str, list[Path]]:
    """Every config group under conf/ (nested ones as ``hydra/launcher``) with its option files; of conf/local/
    only the example, the others being a machine's own (untracked)."""
    found: dict[str, list[Path]] = {}
    for path in sorted(CONFIG_DIR.rglob("*.yaml")):
        if path.parent == CONFIG_DIR or (path.parent == CONFIG_DIR / "local" and path.name != "example.yaml"):
            continue
        found.setdefault(path.parent.relative_to(CONFIG_DIR).as_posix(), []).append(path)
    return found


SENTENCE_END = re.compile(r"(?<!al\.)(?<!e\.g\.)(?<!i\.e\.)(?<!\.\.\.)(?<=[.!?])\s+(?=[A-Za-z`])")


def first_sentence(paragraph: str) -> str:
    """A paragraph's first sentence, on one line (a closing colon made a full stop)."""
    paragraph = " ".join(paragraph.split())
    end = SENTENCE_END.search(paragraph)
    sentence = paragraph[:end.start()] if end else paragraph
    return sentence[:-1] + "." if sentence.endswith(":") else sentence


def description(path: Path) -> str:
    """The first sentence of an option file's leading comment."""
    lines: list[str] = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        content = line[1:]
        if content.strip().startswith("@package"):
            continue
        if not content.strip() or content.startswith("   "):  # a blank comment line or an indented list ends it
            if lines:
                break
            continue
        lines.append(content.strip())
    return first_sentence(" ".join(lines))


def flatten(node: dict, prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in node.items():
        if isinstance(value, dict) and value:
            items += flatten(value, f"{prefix}{key}.")
        else:
            items.append((f"{prefix}{key}", value))
    return items


def option_parts(path: Path) -> tuple[str | None, list[tuple[str, Any]]]:
    """What an option file extends (a component's ``<name>_schema`` or another option of its group) and the
    values it sets itself."""
    node = yaml.safe_load(path.read_text()) or {}
    parents = [entry for entry in node.pop("defaults", []) if isinstance(entry, str) and entry != "_self_"]
    return (parents[0] if parents else None), flatten(node)


def component_of(group: str, option: str, registry: Registry) -> str | None:
    """The registered component an option file of a component group selects, following its parents."""
    parent, _ = option_parts(CONFIG_DIR / group / f"{option}.yaml")
    if parent is None:
        return None
    if parent.endswith("_schema") and parent[: -len("_schema")] in registry.names():
        return parent[: -len("_schema")]
    return component_of(group, parent, registry)


def groups_section(lines: list[str]) -> None:
    defaults = group_defaults()
    lines += ["## Config groups", "",
              "Choose an option with `GROUP=OPTION` (`hydra/launcher=parallel`), set a key with `KEY=VALUE`.", ""]
    for group, paths in groups().items():
        lines += [f"### {group}", ""]
        default = defaults.get(group)
        if default:
            lines += [f"Default: `{default}`.", ""]
        else:
            selected = "Hydra's own" if group.startswith("hydra/") else "an experiment selects one"
            lines += [f"Default: none in conf/config.yaml ({selected}).", ""]
        registry = COMPONENT_REGISTRIES.get(group)
        if registry is None:
            lines += ["| option | description |", "|---|---|"]
            lines += [f"| `{path.stem}` | {text(description(path))} |" for path in paths]
        else:
            lines += ["| option | component | sets | description |", "|---|---|---|---|"]
            for path in paths:
                parent, values = option_parts(path)
                component = component_of(group, path.stem, registry)
                based = "" if parent is None or parent.endswith("_schema") else f"on top of `{parent}`: "
                sets = based + ", ".join(f"`{key}={render(value)}`" for key, value in values)
                link = f"[`{component}`](#{group}-{component})" if component else ""
                lines.append(f"| `{path.stem}` | {link} | {sets} | {text(description(path))} |")
        lines.append("")


# --- the run schema ------------------------------------------------------------------------------------

def schema_rows(schema: type, prefix: str, nested: list[tuple[str, type]]) -> list[str]:
    """One table row per field; nested schemas are queued in ``nested`` for sections of their own."""
    hints, docs, defaults = typing.get_type_hints(schema), field_docs(schema), group_defaults()
    registries = {name: registry for name, registry in COMPONENT_REGISTRIES.items()}
    option_names = {group: [path.stem for path in paths] for group, paths in groups().items()}
    rows = []
    for item in dataclasses.fields(schema):
        key, hint = f"{prefix}{item.name}", hints[item.name]
        kind, default, permitted = type_name(hint), default_of(item), allowed(item, hint)
        if not prefix and item.name in option_names:  # a config group
            kind = "component" if item.name in registries else "group"
            default_text = f"option `{defaults[item.name]}`" if item.name in defaults else code(default)
            permitted = "options: " + ", ".join(f"`{name}`" for name in option_names[item.name])
            if dataclasses.is_dataclass(hint):
                nested.append((key, hint))
        elif dataclasses.is_dataclass(hint):
            nested.append((key, hint))
            default_text = ""
        else:
            default_text = "required" if default is dataclasses.MISSING or default == MISSING else code(default)
        entries = ENTRY_SCHEMAS.get((schema, item.name))
        if entries is not None:
            nested.append((f"{key}.<task>", entries))
        rows.append(f"| `{key}` | {kind} | {default_text} | {permitted} | {text(docs.get(item.name, ''))} |")
    return rows


def table(rows: list[str]) -> list[str]:
    return ["| key | type | default | allowed | meaning |", "|---|---|---|---|---|", *rows, ""]


def run_section(lines: list[str]) -> None:
    lines += ["## Run keys", "",
              "The run schema, `RunConfig` (symprune/config.py), and the schemas nested in it.", "",
              "### Top level", ""]
    queue: list[tuple[str, type]] = []
    lines += table(schema_rows(RunConfig, "", queue))
    while queue:
        key, schema = queue.pop(0)
        lines += [f"### `{key}`", "", text(" ".join((inspect.getdoc(schema) or "").split()), cell=False), ""]
        found: list[tuple[str, type]] = []
        lines += table(schema_rows(schema, f"{key}.", found))
        queue = found + queue


# --- the registered components -----------------------------------------------------------------------------

def component_summary(registry: Registry, name: str) -> str:
    """The first sentence of the component's module docstring (of the function's own docstring when the module
    is a package's ``__init__``, which describes the whole kind, or has none)."""
    function = registry.get(name).fn
    module = sys.modules[function.__module__]
    shared = hasattr(module, "__path__")
    doc = (None if shared else module.__doc__) or inspect.getdoc(function) or ""
    return first_sentence(doc.strip().split("\n\n")[0])


def components_section(lines: list[str]) -> None:
    lines += ["## Components", "",
              "Each component is registered by name with a parameter dataclass "
              "([extension points](extension-points.md)); an option file of its group selects it and sets "
              "parameters, and any parameter can be set on the command line (`score.a=0.25`).", ""]
    for group, registry in COMPONENT_REGISTRIES.items():
        key = f"{group}.{registry.config_key}"
        names = registry.names()
        lines += [f"### {group}", "",
                  f"`{key}` selects one of: " + ", ".join(f"[`{name}`](#{group}-{name})"
                                                         for name in names) + ".", ""]
        if registry.options is not None:
            lines += [f"Every {group} also takes these options:", ""]
            lines += table(schema_rows(registry.options, f"{group}.", []))
        for name in names:
            entry = registry.get(name)
            lines += [f"#### {group}: {name}", "", text(component_summary(registry, name), cell=False), ""]
            if entry.params is NoParams or not dataclasses.fields(entry.params):
                lines += ["No parameters.", ""]
                continue
            lines += table(schema_rows(entry.params, f"{group}.", []))


def reference() -> str:
    lines = [
        f"<!-- Generated by `{COMMAND}` (make docs-reference). Do not edit: regenerate. -->",
        "",
        "# Configuration reference",
        "",
        "Every key of a run's config, generated from the typed schemas (symprune/config.py) and the "
        "parameter dataclasses of the registered components (symprune/prune/). Regenerate it with "
        f"`make docs-reference` (`{COMMAND}`); tests/test_docs.py fails when this page differs from what "
        "the code gives. The overview is [Configuration](../configuration.md).",
        "",
        "- **default**: the schema's. An option file may set another value (the component tables below say "
        "which values each option file sets); `symprune --cfg job [overrides]` prints a run's effective values.",
        "- **allowed**: the values or the interval the field declares. They are checked when the config is "
        "built, before anything loads; those marked \"checked by the plan\" are checked by the run's plan, "
        "also before anything loads. Other rules (e.g. N < M) are in the meaning.",
        "",
    ]
    groups_section(lines)
    run_section(lines)
    components_section(lines)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m symprune.config_reference", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help=f"write the reference here (the repository's: {OUTPUT}); "
                                                 "default: stdout")
    parser.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = parser.parse_args(argv)
    generated = reference()
    if args.check:
        if args.out is None or not args.out.exists() or args.out.read_text() != generated:
            print(f"{args.out} is not what the code gives; regenerate it: {COMMAND}", file=sys.stderr)
            return 1
        return 0
    if args.out is None:
        sys.stdout.write(generated)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(generated)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
