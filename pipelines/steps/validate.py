"""Validation: great-expectations 1.x over the ingested per-image table.

    from pipelines.steps.validate import validate, require_passed
    result = validate(scenario, paths)    # writes paths.validated/report.json (+ images.npz when passed)
    require_passed(result)                # raises ValidationFailed naming expectations and files

Each entry of ``scenario.validation.expectations`` becomes one GX Expectation object
(``expect_column_values_to_be_between`` -> ``gx.expectations.ExpectColumnValuesToBeBetween``),
run in an ephemeral context against a pandas data source over ``table.csv`` with a
whole-dataframe batch definition. Two built-in blocking checks run beside them:

- ``min_images`` — ``ExpectTableRowCountToBeBetween(min_value=validation.min_images)``;
- ``max_quarantined_share`` — quarantined files / all source files <= the bound
  (a plain check with the same result shape: the quarantine is not part of the table).

Every result carries a stable ``name`` that is a valid Dagster asset-check name, e.g.
``expect_column_values_to_be_between__std`` (a ``__2``, ``__3``, ... suffix keeps
repeated expectations on the same column apart, in file order).

``validated/images.npz`` (the ingested images, unchanged: rows that fail only
non-blocking expectations are kept) is written only when every blocking check passes;
a stale one is removed first, so training can never read data that did not pass.
``report.json`` is written in both cases, last.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.paths import ScenarioPaths
from pipelines.scenario import Scenario

FORMAT = "scenario-gan.validate/1"
MAX_FILES = 20
"""At most this many unexpected file names per result."""


class ValidationConfigError(ValueError):
    """The scenario's expectations cannot be built (unknown name, bad kwargs, missing column)."""


class ValidationFailed(Exception):
    """A blocking expectation failed; the message names the expectations and the files."""

    def __init__(self, result: "ValidationResult"):
        self.result = result
        super().__init__(result.summary())


@dataclass(frozen=True)
class ValidationResult:
    scenario: str
    passed: bool
    """True when every blocking check succeeded."""
    results: list[dict[str, Any]]
    """One dict per check: name, expectation, kwargs, blocking, success,
    unexpected_count, unexpected_files (<= 20), observed_value (+ unexpected_values,
    error where applicable)."""
    n_rows: int
    content_hash: str | None
    """The validated dataset's content hash (= the ingest ``content_hash``; the images
    pass through unchanged) when passed, else None: a Dagster data version."""
    ingest_content_hash: str
    report_path: Path
    images_path: Path | None
    """``validated/images.npz`` when passed, else None (and the file does not exist)."""

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.results if not r["success"]]

    @property
    def failed_blocking(self) -> list[dict[str, Any]]:
        return [r for r in self.results if r["blocking"] and not r["success"]]

    def summary(self) -> str:
        if self.passed and not self.failed:
            return f"scenario {self.scenario}: all {len(self.results)} checks passed on {self.n_rows} images"
        lines = [f"scenario {self.scenario}: " + ("passed" if self.passed else "validation FAILED; training is blocked")]
        for r in self.failed:
            files = ", ".join(r["unexpected_files"])
            more = r["unexpected_count"] - len(r["unexpected_files"]) if r["unexpected_count"] else 0
            lines.append(
                f"  {'BLOCKING' if r['blocking'] else 'warning'} {r['name']} ({r['expectation']} {json.dumps(r['kwargs'], sort_keys=True)}): "
                + (f"{r['unexpected_count']} unexpected rows" if r["unexpected_count"] else f"observed {r['observed_value']!r}")
                + (f"; files: {files}" + (f" and {more} more" if more > 0 else "") if files else "")
                + (f"; error: {r['error']}" if r.get("error") else "")
            )
        lines.append(f"  report: {self.report_path}")
        return "\n".join(lines)


def require_passed(result: ValidationResult) -> ValidationResult:
    """Raise :class:`ValidationFailed` unless every blocking check passed."""
    if not result.passed:
        raise ValidationFailed(result)
    return result


# ----------------------------------------------------------------------------- GX helpers


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def expectation_classes() -> dict[str, type]:
    """snake_case name -> GX 1.x Expectation class, from ``gx.expectations``."""
    import great_expectations as gx
    from great_expectations.expectations.expectation import Expectation

    out: dict[str, type] = {}
    for attr in dir(gx.expectations):
        cls = getattr(gx.expectations, attr)
        if isinstance(cls, type) and issubclass(cls, Expectation) and attr.startswith("Expect"):
            name = getattr(cls, "expectation_type", None)
            out[name if isinstance(name, str) and name else _snake(attr)] = cls
    return out


def check_name(expectation: str, kwargs: dict[str, Any]) -> str:
    """A Dagster asset-check name: ``<expectation>[__<column(s)>]``, letters/digits/_ only."""
    cols: list[str] = []
    for key in ("column", "column_A", "column_B"):
        if isinstance(kwargs.get(key), str):
            cols.append(kwargs[key])
    for key in ("column_list", "column_set"):
        if isinstance(kwargs.get(key), (list, tuple)):
            cols.extend(str(c) for c in kwargs[key])
    name = expectation + ("__" + "_".join(cols) if cols else "")
    return re.sub(r"_{3,}", "__", re.sub(r"[^A-Za-z0-9_]", "_", name)).strip("_") or "expectation"


BUILTIN_CHECKS = ("min_images", "max_quarantined_share")


def _dedupe(bases: list[str]) -> list[str]:
    used: dict[str, int] = {}
    out = []
    for b in bases:
        used[b] = used.get(b, 0) + 1
        out.append(b if used[b] == 1 else f"{b}__{used[b]}")
    return out


def check_names(scenario: Scenario) -> list[str]:
    """The ``name`` of every result :func:`validate` returns for ``scenario``, in order,
    without running anything (no great-expectations import): for declaring Dagster
    asset checks when definitions load."""
    return _dedupe([*BUILTIN_CHECKS, *(check_name(e.expectation, e.kwargs) for e in scenario.validation.expectations)])


def _jsonable(v: Any) -> Any:
    """numpy/pandas scalars and containers -> plain JSON values (NaN -> None)."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        np = None
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set)):
        return [_jsonable(x) for x in v]
    if np is not None and isinstance(v, np.generic):
        v = v.item()
    if np is not None and isinstance(v, np.ndarray):
        return [_jsonable(x) for x in v.tolist()]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


def _columns_in(kwargs: dict[str, Any]) -> list[str]:
    cols = [kwargs[k] for k in ("column", "column_A", "column_B") if isinstance(kwargs.get(k), str)]
    for k in ("column_list", "column_set"):
        if isinstance(kwargs.get(k), (list, tuple)):
            cols += [c for c in kwargs[k] if isinstance(c, str)]
    return cols


def _build(scenario: Scenario, columns: list[str]) -> list[tuple[dict[str, Any], Any]]:
    """(meta, GX Expectation object) for every scenario expectation; config errors raise."""
    classes = expectation_classes()
    where = f"scenarios/{scenario.name}.yaml"
    built = []
    for i, exp in enumerate(scenario.validation.expectations):
        key = f"validation.expectations[{i}]"
        cls = classes.get(exp.expectation)
        if cls is None:
            close = difflib.get_close_matches(exp.expectation, list(classes), n=3, cutoff=0.5)
            examples = close or ["expect_column_values_to_be_between", "expect_column_values_to_be_unique", "expect_table_row_count_to_be_between"]
            raise ValidationConfigError(
                f"{where}: {key}.expectation: {exp.expectation!r} is not a great-expectations 1.x expectation; "
                f"did you mean one of {examples}? ({len(classes)} are available, e.g. expect_column_mean_to_be_between)"
            )
        missing = [c for c in _columns_in(exp.kwargs) if c not in columns]
        if missing:
            raise ValidationConfigError(f"{where}: {key}.kwargs: column(s) {missing} are not in the ingested table; columns are {columns}")
        try:
            obj = cls(**exp.kwargs)
        except Exception as e:  # noqa: BLE001 - pydantic errors from GX
            raise ValidationConfigError(f"{where}: {key}.kwargs are not valid for {exp.expectation}: {e}") from None
        built.append(({"expectation": exp.expectation, "kwargs": dict(exp.kwargs), "blocking": exp.blocking}, obj))
    return built


def _from_gx(meta: dict[str, Any], res: Any, files: Any) -> dict[str, Any]:
    r = res.result or {}
    err = None
    info = res.exception_info or {}
    if info.get("raised_exception"):
        err = info.get("exception_message")
    else:  # a dict of per-metric exception infos
        for v in info.values() if isinstance(info, dict) else []:
            if isinstance(v, dict) and v.get("raised_exception"):
                err = v.get("exception_message")
                break
    idx = r.get("unexpected_index_list") or r.get("partial_unexpected_index_list") or []
    names: list[str] = []
    for item in idx:
        if isinstance(item, dict) and "file" in item:
            names.append(str(item["file"]))
        elif isinstance(item, int) and 0 <= item < len(files):
            names.append(str(files[item]))
    seen: list[str] = []
    for n in names:  # keep order, drop repeats
        if n not in seen:
            seen.append(n)
    unexpected_count = r.get("unexpected_count")
    observed = r.get("observed_value")
    if observed is None and "unexpected_percent" in r:
        observed = {"unexpected_percent": r.get("unexpected_percent"), "element_count": r.get("element_count")}
    out = {
        **meta,
        "success": bool(res.success) and err is None,
        "unexpected_count": int(unexpected_count) if unexpected_count is not None else 0,
        "unexpected_files": seen[:MAX_FILES],
        "observed_value": _jsonable(observed),
    }
    if r.get("partial_unexpected_list"):
        out["unexpected_values"] = _jsonable(r["partial_unexpected_list"][:MAX_FILES])
    if err:
        out["error"] = str(err)
    return out


def _quiet_context():
    import great_expectations as gx

    ctx = gx.get_context(mode="ephemeral")
    try:
        from great_expectations.data_context.types.base import ProgressBarsConfig

        ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    except Exception:  # noqa: BLE001 - cosmetic only
        pass
    return ctx


# ----------------------------------------------------------------------------- the step


def validate(scenario: Scenario, paths: ScenarioPaths) -> ValidationResult:
    """Run the scenario's expectations (plus ``min_images`` and ``max_quarantined_share``)
    over ``paths.ingested/table.csv``; write ``paths.validated/report.json`` and, only when
    every blocking check passed, ``paths.validated/images.npz``. Returns the result either
    way; raises :class:`ValidationConfigError` for a broken scenario configuration and
    FileNotFoundError when ingestion has not completed (RuntimeError when its outputs
    disagree with each other)."""
    from pipelines.steps.ingest import _atomic_write, _json_bytes, read_table

    ing, out_dir = paths.ingested, paths.validated
    manifest_path, table_path = ing / "manifest.json", ing / "table.csv"
    images_in, quarantine_path = ing / "images.npz", ing / "quarantine.json"
    report_path, images_out = out_dir / "report.json", out_dir / "images.npz"

    # Nothing stale may survive a failed or crashed validation.
    images_out.unlink(missing_ok=True)
    report_path.unlink(missing_ok=True)

    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"scenario {scenario.name}: {manifest_path} is missing, so ingestion has not completed; run the ingest step first"
        )
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    df = read_table(table_path)
    quarantine = json.loads(quarantine_path.read_text(encoding="utf-8")) if quarantine_path.is_file() else []
    if len(df) != manifest.get("n_images"):
        raise RuntimeError(f"scenario {scenario.name}: {table_path} has {len(df)} rows but the manifest says {manifest.get('n_images')}; rerun the ingest step")

    built = _build(scenario, list(df.columns))  # config errors before any GX run

    import great_expectations as gx

    spec = scenario.validation
    row_count = gx.expectations.ExpectTableRowCountToBeBetween(min_value=spec.min_images)
    ctx = _quiet_context()
    ds = ctx.data_sources.add_pandas(name=f"scenario_{scenario.name}")
    asset = ds.add_dataframe_asset(name="ingested_table")
    batch_def = asset.add_batch_definition_whole_dataframe("whole_table")
    batch = batch_def.get_batch(batch_parameters={"dataframe": df})
    # One validation per expectation: results map to scenario entries by position, and
    # identical entries (which an ExpectationSuite would merge) stay separate.
    fmt = {"result_format": "COMPLETE", "unexpected_index_column_names": ["file"]}
    gx_results = [batch.validate(obj, result_format=fmt) for _, obj in built]
    row_count_result = batch.validate(row_count, result_format=fmt)
    files = df["file"].tolist()

    results: list[dict[str, Any]] = []
    names = iter(check_names(scenario))

    def add(entry: dict[str, Any]) -> None:  # in check_names() order
        entry["name"] = next(names)
        results.append({k: entry[k] for k in ("name", "expectation", "kwargs", "blocking", "success", "unexpected_count", "unexpected_files", "observed_value")} | {k: v for k, v in entry.items() if k in ("unexpected_values", "error")})

    rc = _from_gx({"expectation": "expect_table_row_count_to_be_between", "kwargs": {"min_value": spec.min_images}, "blocking": True}, row_count_result, files)
    add(rc)
    n_q, total = len(quarantine), len(df) + len(quarantine)
    share = n_q / total if total else 0.0
    add({
        "expectation": "max_quarantined_share", "kwargs": {"max_value": spec.max_quarantined_share}, "blocking": True,
        "success": share <= spec.max_quarantined_share, "unexpected_count": n_q if share > spec.max_quarantined_share else 0,
        "unexpected_files": [q["file"] for q in quarantine][:MAX_FILES] if share > spec.max_quarantined_share else [],
        "observed_value": round(share, 6),
    })
    for (meta, _), res in zip(built, gx_results):
        add(_from_gx(meta, res, files))

    passed = all(r["success"] for r in results if r["blocking"])
    report = {
        "format": FORMAT,
        "scenario": scenario.name,
        "passed": passed,
        "n_rows": len(df),
        "n_quarantined": n_q,
        "ingest_content_hash": manifest.get("content_hash"),
        "great_expectations": gx.__version__,
        "results": results,
    }
    if passed:
        data = images_in.read_bytes()
        import io

        import numpy as np

        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            n_images = len(npz["images"])
        if n_images != len(df):
            raise RuntimeError(f"scenario {scenario.name}: {images_in} holds {n_images} images but {table_path} has {len(df)} rows; rerun the ingest step")
        _atomic_write(images_out, data)
    _atomic_write(report_path, _json_bytes(_jsonable(report)))
    return ValidationResult(
        scenario=scenario.name, passed=passed, results=results, n_rows=len(df),
        content_hash=manifest.get("content_hash") if passed else None, ingest_content_hash=manifest.get("content_hash"),
        report_path=report_path, images_path=images_out if passed else None,
    )
