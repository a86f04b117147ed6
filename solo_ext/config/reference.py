"""Every config key, as the declared schema states it, written as a markdown page:
``python -m solo_ext.config.reference > docs/config.md``.

Each table is read from a pydantic model of the schema (solo_ext.config.schema and the blocks the
lower layers declare): the key, its type, its default, what it allows (the choices of a literal,
the range of a number) and one line of meaning (the field's description, else the comment above
its declaration in the source). A nested model is flattened into dotted keys; a list, mapping or
tagged union of models gets a table of its own. tests/test_docs.py compares docs/config.md with
this output, so the page cannot fall behind the schema.
"""

from __future__ import annotations

import ast
import inspect
import io
import textwrap
import tokenize
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Annotated, Any, Literal, Union, cast, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from solo_ext.config.compat import MAGMA_FLAT_KEYS, PRECISION_ALIASES
from solo_ext.config.schema import (
    METHOD_KWARGS,
    TRAINER_RESERVED,
    LinearConfig,
    OfflineKNN,
    PretrainConfig,
    SweepFile,
)
from solo_ext.utils.declared import Declared, NumberRange

HEADER = """\
# Config reference

Generated from the declared schema by `python -m solo_ext.config.reference > docs/config.md`; do
not edit by hand (`tests/test_docs.py` fails when this page differs from the command's output).

Columns: the key (dotted for nested sections), its type, its default ("required" when a recipe
must give it; inside an optional block, required when the block is given), what it allows beyond
its type, and the comment or description the schema gives it. A bad value stops the run at
start-up with one line naming the key.
"""


@dataclass
class Row:
    key: str
    type: str
    default: str
    allowed: str
    meaning: str


@dataclass
class Table:
    title: str
    intro: str = ""
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _code(text: Any) -> str:
    return f"`{text}`"


def _literal(value: Any) -> str:
    """A value as a recipe writes it."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return value
    if isinstance(value, tuple):
        return _literal(list(value))
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The declared models an annotation contains, at any depth."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        found += [m for m in _models_in(arg) if m not in found]
    return found


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) < len(get_args(annotation)):
            return (args[0] if len(args) == 1 else Union[tuple(args)]), True  # noqa: UP007
    return annotation, False


def describe(annotation: Any, links: dict[type[BaseModel], str] | None = None) -> tuple[str, str]:
    """(type, allowed) of an annotation: ``int | None`` and ``>= 1``; ``str`` and
    ``cls, mean``; a model by its link in ``links`` (to its own table), else by name."""
    links = links or {}
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        kind, allowed = describe(args[0], links)
        extra = [m.text for m in args[1:] if isinstance(m, NumberRange) and m.text]
        for meta in args[1:]:
            # Field(min_length=n) arrives as annotated_types' MinLen (in a FieldInfo when nested)
            for n in [getattr(m, "min_length", None) for m in getattr(meta, "metadata", [meta])]:
                if isinstance(n, int):
                    unit = "character" if kind == "str" else "item"
                    extra.append(f"at least {n} {unit}{'s' if n > 1 else ''}")
        return kind, "; ".join([a for a in (allowed, *extra) if a])
    if origin in (Union, types.UnionType):
        parts = [describe(arg, links) for arg in args]
        kinds = list(dict.fromkeys(kind for kind, _ in parts))
        return " | ".join(kinds), "; ".join(dict.fromkeys(a for _, a in parts if a))
    if origin is Literal:
        kinds = list(dict.fromkeys(type(v).__name__ for v in args))
        return " | ".join(kinds), "one of " + ", ".join(_code(_literal(v)) for v in args)
    if origin in (list, tuple):
        items = [a for a in args if a is not Ellipsis]
        if origin is tuple and len(items) > 1 and Ellipsis not in args:
            described = [describe(a, links) for a in items]
            allowed = "; ".join(dict.fromkeys(a for _, a in described if a))
            kinds = list(dict.fromkeys(k for k, _ in described))
            shown = f"{kinds[0]}s" if len(kinds) == 1 else f"({', '.join(k for k, _ in described)})"
            return f"list of {len(items)} {shown}", f"each {allowed}" if allowed else ""
        kind, allowed = describe(items[0], links) if items else ("any", "")
        return f"list of {kind}", f"each {allowed}" if allowed else ""
    if origin is dict:
        kind, allowed = describe(args[1], links)
        return ("mapping" if kind == "any" else f"mapping to {kind}"), allowed
    if annotation is Any:
        return "any", ""
    if annotation is type(None):
        return "null", ""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return links.get(annotation, annotation.__name__), ""
    return getattr(annotation, "__name__", str(annotation)), ""


@cache
def _class_comments(cls: type) -> dict[str, str]:
    """Field name -> the comment right above its declaration in ``cls`` (and any comment after it
    on the same line), as one line; {} when the source is not available."""
    try:
        lines, _ = inspect.getsourcelines(cls)
    except (OSError, TypeError):
        return {}
    source = textwrap.dedent("".join(lines))
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    code_lines = source.splitlines()
    found = {}
    for node in cast(ast.ClassDef, ast.parse(source).body[0]).body:  # the source of a class
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above: list[str] = []
        line = node.lineno - 1
        while line >= 1 and line in comments and code_lines[line - 1].lstrip().startswith("#"):
            above.insert(0, comments[line])
            line -= 1
        assert node.end_lineno is not None  # set by ast.parse
        trailing = [comments[n] for n in range(node.lineno, node.end_lineno + 1) if n in comments]
        text = " ".join(above + trailing)
        if text:
            found[node.target.id] = text
    return found


def _annotation(info: FieldInfo) -> Any:
    """The field's annotation with the constraints pydantic moved into ``info.metadata``."""
    return Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation


def _meaning(model: type[BaseModel], name: str, info: FieldInfo) -> str:
    if info.description:
        return " ".join(info.description.split())
    for cls in model.__mro__:
        if name in cls.__dict__.get("__annotations__", {}):
            return _class_comments(cls).get(name, "")
    return ""


def _docstring(model: type) -> str:
    """The first paragraph of the model's own docstring, as one line (reST's double backticks as
    markdown's single ones)."""
    doc = model.__dict__.get("__doc__") or ""
    return " ".join(inspect.cleandoc(doc).split("\n\n")[0].replace("``", "`").split()) if doc else ""


def _default(info: FieldInfo) -> str:
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    if "default_text" in extra:
        return str(extra["default_text"])
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    return _code(_literal(value.model_dump() if isinstance(value, BaseModel) else value))


def _anchor(title: str) -> str:
    """The fragment GitHub gives a heading (lower case, punctuation dropped, spaces as hyphens)."""
    return "#" + "".join(c for c in title.lower() if c.isalnum() or c in " -_").replace(" ", "-")


class Reference:
    """Builds the tables: flattens nested models and queues the ones that need their own table."""

    def __init__(self) -> None:
        self.tables: list[Table] = []
        self.links: dict[type[BaseModel], str] = {}
        self.used_at: dict[type[BaseModel], list[str]] = {}
        self.pending: list[type[BaseModel]] = []

    def block(self, model: type[BaseModel], key: str) -> None:
        """Queue ``model``'s own table on first use and note where it is written."""
        if model not in self.links:
            self.links[model] = f"[{model.__name__}]({_anchor(model.__name__)})"
            self.used_at[model] = []
            self.pending.append(model)
        if key not in self.used_at[model]:
            self.used_at[model].append(key)

    def rows(
        self,
        model: type[BaseModel],
        notes: list[str],
        prefix: str = "",
        skip: frozenset[str] = frozenset(),
        skip_rules: frozenset = frozenset(),
        ignored: bool = True,
        required: str = "required",
        explained: set[type] | None = None,
    ) -> Iterator[Row]:
        explained = set() if explained is None else explained
        for name, info in model.model_fields.items():
            if name in skip:
                continue
            key = f"{prefix}{name}"
            inner, optional = _strip_optional(info.annotation)
            if isinstance(inner, type) and issubclass(inner, Declared):
                # a class's docstring once per table; a field's own comment wherever it is
                meaning = _meaning(model, name, info)
                if not meaning and inner not in explained:
                    meaning = _docstring(inner)
                    explained.add(inner)
                if optional or meaning:
                    shown, default = ("optional block", "absent") if optional else ("block", "")
                    yield Row(key, shown, default, "", meaning)
                yield from self.rows(inner, notes, f"{key}.", required=required, explained=explained)
                continue
            for sub in _models_in(info.annotation):
                self.block(sub, self._pattern(key, info.annotation))
            kind, allowed = describe(_annotation(info), self.links)
            default = _default(info)
            meaning = _meaning(model, name, info)
            yield Row(key, kind, required if default == "required" else default, allowed, meaning)
        if ignored:
            for name in sorted(getattr(model, "ignored", ())):
                yield Row(f"{prefix}{name}", "any", "", "accepted and ignored", "")
        for rule in getattr(model, "rules", ()):
            stated = isinstance(rule.field, str) and isinstance(rule.allowed, str)
            if stated and rule not in skip_rules:
                notes.append(f"- {_code(prefix + rule.field)}: {rule.allowed}")

    @staticmethod
    def _pattern(key: str, annotation: Any) -> str:
        """Where an item of a list (``augmentations[i]``) or a mapping value (``parameters.<key>``)
        is written; the key itself for a member of a union."""
        inner, _ = _strip_optional(annotation)
        while get_origin(inner) is Annotated:
            inner = get_args(inner)[0]
        if get_origin(inner) in (list, tuple):
            return f"{key}[i]"
        if get_origin(inner) is dict:
            return f"{key}.<key>"
        return key

    def table(self, title: str, model: type[BaseModel], intro: str = "", **kwargs: Any) -> Table:
        table = Table(title, intro or _docstring(model))
        table.rows = list(self.rows(model, table.notes, **kwargs))
        if table.notes:
            rules = "\n".join(table.notes)
            head = "Further checks, made once the keys above are valid, each with its error message:"
            table.notes = [f"{head}\n\n{rules}"]
        self.tables.append(table)
        return table

    def queued(self) -> None:
        """The tables of the models met as list items, mapping values or union members."""
        while self.pending:
            model = self.pending.pop(0)
            table = self.table(model.__name__, model)
            tag = model.model_fields.get("name")
            where = ", ".join(_code(key) for key in self.used_at[model])
            if tag is not None and get_origin(tag.annotation) is Literal:
                where += f" with `name: {get_args(tag.annotation)[0]}`"
            table.intro = " ".join(filter(None, [f"A block written at {where}.", table.intro]))


def _shared_fields() -> frozenset[str]:
    """Top-level fields the pretraining and linear configs declare alike."""
    pretrain, linear = PretrainConfig.model_fields, LinearConfig.model_fields
    return frozenset(
        name
        for name in pretrain.keys() & linear.keys()
        if pretrain[name].annotation == linear[name].annotation
        and pretrain[name].default == linear[name].default
    )


def build() -> list[Table]:
    ref = Reference()
    shared = _shared_fields()
    # the rules both top-level models inherit (the same Rule objects)
    shared_rules = frozenset(PretrainConfig.rules) & frozenset(LinearConfig.rules)
    both = ref.table(
        "Keys of both main_pretrain.py and main_linear.py",
        PretrainConfig,
        intro="The run and Trainer keys the pretraining and linear-evaluation configs declare alike.",
        skip=frozenset(PretrainConfig.model_fields) - shared,
        skip_rules=frozenset(PretrainConfig.rules) - shared_rules,
        ignored=PretrainConfig.ignored == LinearConfig.ignored,
    )
    if PretrainConfig.model_config.get("extra") == "allow":
        reserved = ", ".join(_code(k) for k in sorted(TRAINER_RESERVED))
        both.notes.append(
            f"Any other argument of Lightning's `Trainer` is a top-level key too, except {reserved}, "
            "which the runners set themselves."
        )
    pretrain = ref.table(
        "main_pretrain.py",
        PretrainConfig,
        intro="The pretraining config (a recipe under scripts/pretrain/), besides the keys above.",
        skip=shared,
        skip_rules=shared_rules,
        ignored=PretrainConfig.ignored != LinearConfig.ignored,
    )
    aliases = ", ".join(dict.fromkeys(_code(k) for k in PRECISION_ALIASES))
    pretrain.notes.append(
        "Before validation, the compatibility pass (solo_ext/config/compat.py) reads `None` written "
        f"as a string as null, precision aliases ({aliases}) "
        f"as Lightning's names, and MAGMA's flat `method_kwargs` keys "
        f"({', '.join(_code(k) for k in MAGMA_FLAT_KEYS)}) as `regularizers` blocks."
    )
    by_model: dict[type[BaseModel], list[str]] = {}
    for method, kwargs_model in METHOD_KWARGS.items():
        by_model.setdefault(kwargs_model, []).append(method)
    for model, methods in by_model.items():
        ref.table(
            f"method_kwargs of method {', '.join(methods)}",
            model,
            intro=f"`method_kwargs` when `method` is {' or '.join(_code(m) for m in methods)}.",
            prefix="method_kwargs.",
        )
    ref.queued()
    ref.table(
        "main_linear.py",
        LinearConfig,
        intro="The linear-evaluation config (a recipe under scripts/linear/), besides the keys above.",
        skip=shared,
        skip_rules=shared_rules,
        ignored=PretrainConfig.ignored != LinearConfig.ignored,
    )
    ref.queued()
    ref.table(
        "main_knn.py",
        OfflineKNN,
        prefix="--",
        required="its flag's default",
    ).notes.append("Each setting is a command-line flag; `python main_knn.py --help` shows the defaults.")
    ref.table("Sweep files (scripts/sweeps/)", SweepFile)
    ref.queued()
    return ref.tables


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(tables: list[Table]) -> str:
    out = [HEADER]
    for table in tables:
        out.append(f"## {table.title}\n")
        if table.intro:
            out.append(f"{table.intro}\n")
        out.append("| key | type | default | allowed | meaning |\n|---|---|---|---|---|")
        for row in table.rows:
            cells = (_code(row.key), row.type, row.default, row.allowed, row.meaning)
            out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        out.append("")
        out += [f"{note}\n" for note in table.notes]
    return "\n".join(out).rstrip("\n") + "\n"


def main() -> None:
    print(render(build()), end="")


if __name__ == "__main__":
    main()
