"""Every key a scenario file may hold, generated from the schema itself
(:class:`pipelines.scenario.Scenario`, and :class:`gan_core.config.GANConfig` for
``gan:`` and ``gpu:``), so the reference cannot drift from what is accepted:

    python -m pipelines.reference > docs/SCENARIO_KEYS.md

``tests/test_reference.py`` fails when the file differs from this output.
"""

from __future__ import annotations

import sys
import types
import typing
from typing import Any, Iterator, Literal, Union

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from gan_core.config import GANConfig
from pipelines.scenario import FROM_IMAGE_GAN_KEYS, ROUTED_GAN_KEYS, Scenario

HEADER = """# Scenario file keys

Every key a `scenarios/<name>.yaml` may hold: its type or allowed values, its default
and what it does. Generated from the schema the pipeline validates with
(`python -m pipelines.reference > docs/SCENARIO_KEYS.md`; a test keeps it current).
A key that is not listed is an error naming the file and the key. `[]` marks a list
of mappings; `gan:` and `gpu:` take the same keys (`gpu:` is laid over `gan:` when
`profile: gpu` is set in scenarios/_project.yaml). The defaults here are the schema's;
`scenarios/_defaults.yaml` lays the project's own under every scenario file (mappings
merge key by key), and `data/<name>/params.yaml` shows what a scenario resolved to.
"""


def _models(tp: Any) -> list[type[BaseModel]]:
    """The pydantic models inside an annotation (``X``, ``X | None``, ``list[X]``, ``tuple[X | Y, ...]``)."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    return [m for a in typing.get_args(tp) for m in _models(a)]


def _type(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _type(typing.get_args(tp)[0])
    if origin is Literal:
        return "one of " + ", ".join(f"`{v}`" for v in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        rest = [_type(a) for a in args if a is not type(None)]
        return " or ".join(rest) + (" or null" if len(rest) < len(args) else "")
    if origin in (list, tuple):
        inner = [a for a in typing.get_args(tp) if a is not Ellipsis]
        kinds = " or ".join(_type(a) for a in inner) if inner else "values"
        return ("list, each " + kinds) if kinds.startswith("one of") else "list of " + kinds.replace("mapping", "mappings")
    if origin is dict:
        return "mapping"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _bounds(f: FieldInfo) -> str:
    out = []
    for m in f.metadata:
        for cls, sym in ((at.Ge, ">="), (at.Gt, ">"), (at.Le, "<="), (at.Lt, "<")):
            if isinstance(m, cls):
                out.append(f"{sym} {getattr(m, cls.__name__.lower())}")
    return ", ".join(out)


def _default(f: FieldInfo) -> str:
    if f.is_required():
        return "required"
    d = f.get_default(call_default_factory=True)
    if isinstance(d, BaseModel):
        return "(keys below)"
    if d in ((), [], {}, ""):
        return "empty"
    return f"`{d}`" if d is not None else "none"


def _text(f: FieldInfo) -> str:
    return " ".join((f.description or "").split()).replace("|", "\\|")


def rows(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, str, str, str]]:
    """(key, type and bounds, default, description) for every key under ``model``."""
    for name, f in model.model_fields.items():
        key = f"{prefix}{name}"
        kind = _type(f.annotation)
        bounds = _bounds(f)
        yield key, kind + (f" ({bounds})" if bounds else ""), _default(f), _text(f)
        nested = _models(f.annotation)
        is_list = typing.get_origin(f.annotation) in (list, tuple)
        if len(nested) == 1:
            yield from rows(nested[0], f"{key}{'[]' if is_list else ''}.")


def reference() -> str:
    lines = [HEADER]
    for title, model, prefix, note in (
        ("The scenario", Scenario, "", ""),
        ("`gan:` and `gpu:`: the GAN", GANConfig, "gan.", f"Refused in a scenario file: {', '.join(f'`gan.train.{k}`' for k in ROUTED_GAN_KEYS)} (the `augmentation:` block sets them) and {', '.join(f'`gan.model.{k}`' for k in FROM_IMAGE_GAN_KEYS)} (from `image:`)."),
    ):
        lines += ["", f"## {title}", ""]
        if note:
            lines += [note, ""]
        lines += ["| key | type | default | what it does |", "|---|---|---|---|"]
        refused = {f"gan.train.{k}" for k in ROUTED_GAN_KEYS} | {f"gan.model.{k}" for k in FROM_IMAGE_GAN_KEYS}
        for key, kind, default, text in rows(model, prefix):
            if key in refused:
                continue
            if model is Scenario and key in ("gan", "gpu"):
                text = text or "the GAN's model and training (next section)"
            lines.append(f"| `{key}` | {kind} | {default} | {text} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    sys.stdout.write(reference())
    return 0


if __name__ == "__main__":
    sys.exit(main())
