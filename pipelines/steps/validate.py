"""Validation: great-expectations 1.x over the ingested per-image table.

    from pipelines.steps.validate import validate, require_passed
    result = validate(scenario, paths)    # writes paths.validated/report.json (+ images/ when passed)
    require_passed(result)                # raises ValidationFailed naming expectations and files

Each entry of ``scenario.validation.expectations`` becomes one GX Expectation object
(``expect_column_values_to_be_between`` -> ``gx.expectations.ExpectColumnValuesToBeBetween``),
run in an ephemeral context against a pandas data source over ``table.csv`` with a
whole-dataframe batch definition: one batch per chunk of rows for expectations that judge
each row alone (their counts and failing rows added up, success by great-expectations'
own ``mostly`` rule), one per group of equal digests for ``sha256`` uniqueness, one of
every row otherwise (see :func:`validate`, "Memory"). Each entry's ``on_failure`` says
what a failure does:

- ``set_aside`` — entries run first, over every ingested row; the rows any of them
  fails are removed from the validated dataset and listed in ``set_aside.json``
  (``index``, ``file``, ``sha256``, the check names, each offending value and, for a
  copy set aside by a ``duplicate_of``/``near_duplicate_of`` check, ``copy_of``: the
  earlier file it repeats), never dropped silently. Only expectations that name failing rows qualify (column-map ones
  such as ``expect_column_values_to_be_between`` or ``expect_column_values_to_be_null``);
  an entry whose run errors blocks instead, since its rows are unknown;
- ``block`` and ``warn`` — entries run over the rows that remain (the dataset training
  will see); a failed ``block`` entry stops training, a ``warn`` entry only reports.

Two built-in blocking checks judge the dataset after setting aside:

- ``min_images`` — ``ExpectTableRowCountToBeBetween(min_value=validation.min_images)``
  over the kept rows: training needs that many real images, whatever was removed;
- ``max_quarantined_share`` — (quarantined files + set-aside images) / all source files
  <= the bound: setting aside can never quietly shrink a scenario by more than the share
  that counts as a broken source (a plain check with the same result shape: the
  quarantine is not part of the table).

Every result carries a stable ``name`` that is a valid Dagster asset-check name, e.g.
``expect_column_values_to_be_between__std`` (a ``__2``, ``__3``, ... suffix keeps
repeated expectations on the same column apart, in file order), and lists **every**
failing file in ``report.json``; one-line summaries and the Dagster UI show the first
:data:`MAX_FILES` and say how many more there are and where the full list is.

Outputs in ``paths.validated`` (stale ones are removed first, so training can never read
data that did not pass):

- ``images/`` — the kept images, in ingested order (:mod:`gan_core.shards`; the
  ingested shard files as they are when nothing is set aside), and ``table.csv`` — their rows of the ingested table
  (row i of one is row i of the other; ``index`` is the ingested row): both only when
  every blocking check passes;
- ``set_aside.json`` — the set-aside images (an empty list when none), in both cases;
- ``report.json`` — in both cases, last.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.paths import ScenarioPaths
from pipelines.scenario import Scenario

FORMAT = "scenario-gan.validate/2"
MAX_FILES = 20
"""At most this many file names per result in one-line summaries and the Dagster UI;
``report.json`` lists every one."""
SET_ASIDE_FILE = "set_aside.json"


class ValidationConfigError(ValueError):
    """The scenario's expectations cannot be built (unknown name, bad kwargs, missing column)."""


class ValidationFailed(Exception):
    """A blocking expectation failed; the message names the expectations and the files."""

    def __init__(self, result: "ValidationResult"):
        self.result = result
        super().__init__(result.summary())


def capped_files(files: list[str], total: int | None = None, full_list: Path | str | None = None, limit: int = MAX_FILES) -> str:
    """``a, b, c and 12 more; full list in <full_list>``: the first ``limit`` of ``files``
    (``total`` of them in all, default ``len(files)``) for one-line summaries."""
    total = len(files) if total is None else total
    text = ", ".join(files[:limit])
    more = total - min(len(files), limit)
    if more > 0:
        text += f" and {more} more" + (f"; full list in {full_list}" if full_list else "")
    return text


@dataclass(frozen=True)
class ValidationResult:
    scenario: str
    passed: bool
    """True when every blocking check succeeded."""
    results: list[dict[str, Any]]
    """One dict per check: name, expectation, kwargs, on_failure, blocking (on_failure is
    ``block``), rows (``ingested`` or ``kept``: the rows it ran on), success,
    unexpected_count, unexpected_files (every one), observed_value (+ unexpected_values,
    set_aside_count, detail, error where applicable)."""
    n_rows: int
    """Rows of the ingested table."""
    content_hash: str | None
    """The validated dataset's content hash when passed, else None: a Dagster data
    version. sha256 over the kept rows' ``sha256`` values, one per line: the ingest
    ``content_hash`` when nothing is set aside."""
    ingest_content_hash: str
    report_path: Path
    images_path: Path | None
    """``validated/images/`` when passed, else None (and it holds no ``index.json``)."""
    set_aside: list[dict[str, Any]] = field(default_factory=list)
    """Every set-aside image: index, file, sha256, checks, values (as in set_aside.json)."""
    set_aside_path: Path | None = None
    table_path: Path | None = None
    """``validated/table.csv`` (the kept rows) when passed, else None."""

    @property
    def n_set_aside(self) -> int:
        return len(self.set_aside)

    @property
    def n_kept(self) -> int:
        return self.n_rows - len(self.set_aside)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.results if not r["success"]]

    @property
    def failed_blocking(self) -> list[dict[str, Any]]:
        return [r for r in self.results if blocks(r)]

    def summary(self) -> str:
        if self.passed and not self.failed:
            return f"scenario {self.scenario}: all {len(self.results)} checks passed on {self.n_rows} images"
        lines = [f"scenario {self.scenario}: " + ("passed" if self.passed else "validation FAILED; training is blocked")]
        label = {"block": "BLOCKING", "set_aside": "set aside", "warn": "warning"}
        for r in self.failed:
            n = r["unexpected_count"]
            files = capped_files(r["unexpected_files"], max(n, len(r["unexpected_files"])), self.report_path)
            lines.append(
                f"  {'BLOCKING' if blocks(r) else label[r['on_failure']]} {r['name']} ({r['expectation']} {json.dumps(r['kwargs'], sort_keys=True)}): "
                + (f"{n} unexpected rows" if n else f"observed {r['observed_value']!r}")
                + (
                    f" (share {r['observed_value']}: {r['detail']['quarantined']} quarantined + {r['detail']['set_aside']} set aside "
                    f"of {r['detail']['source_files']} source files)" if r.get("detail") else ""
                )
                + (f"; files: {files}" if files else "")
                + (f"; error: {r['error']}" if r.get("error") else "")
            )
        if self.set_aside:
            lines.append(
                f"  set aside {len(self.set_aside)} of {self.n_rows} images, kept {self.n_kept}: "
                + capped_files([e["file"] for e in self.set_aside], full_list=self.set_aside_path)
            )
        lines.append(f"  report: {self.report_path}")
        return "\n".join(lines)


def blocks(result: dict[str, Any]) -> bool:
    """Whether a failed check stops training: a failed ``block`` check, or a
    ``set_aside`` check whose failing rows could not be named (its run errored)."""
    if result["success"]:
        return False
    return result["on_failure"] == "block" or (result["on_failure"] == "set_aside" and bool(result.get("error")))


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


def _is_missing(v: Any) -> bool:
    try:
        import pandas as pd

        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _columns_in(kwargs: dict[str, Any]) -> list[str]:
    cols = [kwargs[k] for k in ("column", "column_A", "column_B") if isinstance(kwargs.get(k), str)]
    for k in ("column_list", "column_set"):
        if isinstance(kwargs.get(k), (list, tuple)):
            cols += [c for c in kwargs[k] if isinstance(c, str)]
    return cols


def _names_rows(cls: type) -> bool:
    """Whether a GX expectation class judges rows one by one (and so names failing rows)."""
    from great_expectations.expectations.expectation import ColumnMapExpectation, ColumnPairMapExpectation, MulticolumnMapExpectation

    return issubclass(cls, (ColumnMapExpectation, ColumnPairMapExpectation, MulticolumnMapExpectation))


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
        if exp.action == "set_aside" and not _names_rows(cls):
            raise ValidationConfigError(
                f"{where}: {key}.on_failure: set_aside needs an expectation that judges each row and so names the failing "
                f"images (e.g. expect_column_values_to_be_between, expect_column_values_to_be_null); {exp.expectation} "
                "judges the table as a whole: use on_failure: block or warn"
            )
        missing = [c for c in _columns_in(exp.kwargs) if c not in columns]
        if missing:
            raise ValidationConfigError(f"{where}: {key}.kwargs: column(s) {missing} are not in the ingested table; columns are {columns}")
        try:
            obj = cls(**exp.kwargs)
        except Exception as e:  # noqa: BLE001 - pydantic errors from GX
            raise ValidationConfigError(f"{where}: {key}.kwargs are not valid for {exp.expectation}: {e}") from None
        meta = {"expectation": exp.expectation, "kwargs": dict(exp.kwargs), "on_failure": exp.action, "blocking": exp.action == "block"}
        built.append((meta, obj))
    return built


def _from_gx(meta: dict[str, Any], res: Any, index_of: Any) -> tuple[dict[str, Any], list[int]]:
    """(result entry, ingested ``index`` of every failing row, in the order GX reports
    them) from a GX validation result. ``index_of`` maps a batch position to its
    ingested index (GX names rows by the ``index`` column; positions are a fallback).
    The entry's ``unexpected_files`` are filled in from those rows by
    :func:`_name_files` (one pass over the table for all checks)."""
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
    rows: list[int] = []
    for item in idx:
        if isinstance(item, dict) and item.get("index") is not None:
            rows.append(int(item["index"]))
        elif isinstance(item, int) and 0 <= item < len(index_of):
            rows.append(int(index_of[item]))
    unexpected_count = r.get("unexpected_count")
    observed = r.get("observed_value")
    if observed is None and "unexpected_percent" in r:
        observed = {"unexpected_percent": r.get("unexpected_percent"), "element_count": r.get("element_count")}
    out = {
        **meta,
        "success": bool(res.success) and err is None,
        "unexpected_count": int(unexpected_count) if unexpected_count is not None else 0,
        "unexpected_files": [],
        "observed_value": _jsonable(observed),
        "_rows": list(dict.fromkeys(rows)),  # keep order, drop repeats
    }
    values = r.get("unexpected_list") or r.get("partial_unexpected_list")
    if values:
        out["unexpected_values"] = _jsonable(values)
    if err:
        out["error"] = str(err)
    elif meta.get("on_failure") == "set_aside" and len(set(rows)) < out["unexpected_count"]:
        out["error"] = f"great-expectations named {len(set(rows))} of the {out['unexpected_count']} failing rows, so they cannot be set aside"
    return out, sorted(set(rows))


_CHUNK_ROWS = 65536
"""Rows per chunk when validation streams ``table.csv`` (and per great-expectations run of
a row-by-row expectation)."""

ROW_BY_ROW = frozenset({
    "expect_column_values_to_be_between", "expect_column_values_to_be_null", "expect_column_values_to_not_be_null",
    "expect_column_values_to_be_in_set", "expect_column_values_to_not_be_in_set",
    "expect_column_values_to_match_regex", "expect_column_values_to_not_match_regex",
    "expect_column_values_to_match_regex_list", "expect_column_values_to_not_match_regex_list",
    "expect_column_values_to_match_like_pattern", "expect_column_values_to_not_match_like_pattern",
    "expect_column_values_to_match_like_pattern_list", "expect_column_values_to_not_match_like_pattern_list",
    "expect_column_value_lengths_to_be_between", "expect_column_value_lengths_to_equal",
    "expect_column_values_to_match_strftime_format", "expect_column_values_to_be_dateutil_parseable",
    "expect_column_values_to_be_json_parseable", "expect_column_values_to_match_json_schema",
    "expect_column_pair_values_a_to_be_greater_than_b", "expect_column_pair_values_to_be_equal",
    "expect_column_pair_values_to_be_in_set", "expect_multicolumn_sum_to_equal",
    "expect_select_column_values_to_be_unique_within_record",
})
"""Expectations that judge each row by its own values alone: great-expectations runs them
on one chunk of rows at a time and the chunks' counts and failing rows are added up
(:func:`_merge`). Not in it: uniqueness (see :data:`DIGEST`), expectations that compare a
row with others (increasing values, z-scores) or describe the column (mean, quantiles,
types), which get the whole column."""

DIGEST = "sha256"
"""A uniqueness expectation on this column (alone, at most with ``mostly``) runs on groups
of rows with equal digests (:func:`_digest_groups`), since equal digests are all that
can make a row fail it."""


def _kind(meta: dict[str, Any]) -> str:
    """How an expectation is run: ``chunks`` (:data:`ROW_BY_ROW`), ``digests``
    (:data:`DIGEST`) or ``whole`` (its columns of every row at once)."""
    if meta["expectation"] in ROW_BY_ROW:
        return "chunks"
    kwargs = meta["kwargs"]
    if meta["expectation"] == "expect_column_values_to_be_unique" and kwargs.get("column") == DIGEST and set(kwargs) <= {"column", "mostly"}:
        return "digests"
    return "whole"


class _Merged:
    """What :func:`_from_gx` reads of a great-expectations result, added up over chunks."""

    def __init__(self, success: bool, result: dict[str, Any]):
        self.success, self.result, self.exception_info = success, result, {}


def _gx_error(res: Any) -> bool:
    info = res.exception_info or {}
    if info.get("raised_exception"):
        return True
    return any(isinstance(v, dict) and v.get("raised_exception") for v in info.values())


def _merge(obj: Any, parts: list[Any], by_index: bool = False) -> Any:
    """One result from great-expectations' results on disjoint chunks of rows of a
    row-by-row (or digest-group) expectation: counts added, failing rows and values
    concatenated (for digest groups, ``by_index``: ordered by ``index``, each with its
    digest as the value), success decided by
    great-expectations' own ``mostly`` rule on the totals. A chunk whose run raised is
    the result (its error is reported)."""
    from great_expectations.expectations.expectation import _mostly_success

    for part in parts:
        if _gx_error(part):
            return part
    results = [part.result or {} for part in parts]
    element = sum(r.get("element_count") or 0 for r in results)
    missing = sum(r.get("missing_count") or 0 for r in results)
    unexpected = sum(r.get("unexpected_count") or 0 for r in results)
    nonnull = element - missing
    rows = [i for r in results for i in (r.get("unexpected_index_list") or [])]
    values = [v for r in results for v in (r.get("unexpected_list") or [])]
    if by_index and rows and all(isinstance(r, dict) and DIGEST in r for r in rows):
        # Digest groups: every failing row, in row order, with its digest (great-expectations
        # lists at most 200 values per run, the rows in full).
        rows = sorted(rows, key=lambda r: r["index"])
        values = [r[DIGEST] for r in rows]
    mostly = getattr(obj, "mostly", None)
    success = True if element == 0 or nonnull == 0 else _mostly_success(nonnull, unexpected, 1.0 if mostly is None else mostly)
    return _Merged(success, {
        "element_count": element, "missing_count": missing, "unexpected_count": unexpected,
        "unexpected_percent": unexpected / nonnull * 100 if nonnull else None,
        "unexpected_index_list": rows, "unexpected_list": values,
    })


def _chunks(table_path: Path, columns: list[str], keep: Any = None) -> Iterator[Any]:
    """``table.csv``'s ``columns`` (``index`` among them) a chunk of rows at a time, only
    the rows ``keep`` (a boolean array over the rows) marks when given; at least one
    chunk, empty if no row is left."""
    from pipelines.io import read_table

    last = None
    for part in read_table(table_path, columns=columns, chunksize=_CHUNK_ROWS):
        if keep is not None:
            part = part[keep[part["index"].to_numpy()]]
        last = part
        if len(part):
            yield part
            last = None
    if last is not None:
        yield last.reset_index(drop=True)


def _digest_groups(table_path: Path, scratch: Path, keep: Any = None) -> Iterator[Any] | None:
    """DataFrames of ``index`` and ``sha256`` in which rows with equal digests always fall
    in the same frame (one chunk of about :data:`_CHUNK_ROWS` rows, grown to end at a
    change of digest): a uniqueness check run on each frame fails exactly the rows it
    fails on the whole column. The digests (four 64-bit words each) and rows are sorted
    on disk (:class:`pipelines.spill.SortedRecords`), so memory holds one chunk. None
    when a value is not 64 hex digits (then the column goes to great-expectations whole)."""
    import numpy as np
    import pandas as pd

    from pipelines.io import read_table
    from pipelines.spill import SortedRecords, digest_words, grouped

    records = SortedRecords(scratch, fields=5)
    try:
        for part in read_table(table_path, columns=["index", DIGEST], chunksize=_CHUNK_ROWS):
            if keep is not None:
                part = part[keep[part["index"].to_numpy()]]
            values = part[DIGEST].tolist()
            if any(len(v) != 64 for v in values):
                records.close()
                return None
            try:
                raw = np.frombuffer(bytes.fromhex("".join(values)), np.uint8).reshape(-1, 32)
            except ValueError:
                records.close()
                return None
            records.add(np.column_stack([digest_words(raw), part["index"].to_numpy(np.int64)]))
    except BaseException:
        records.close()
        raise

    def frame(rec: Any) -> Any:
        text = np.ascontiguousarray(rec[:, :4]).tobytes().hex()
        return pd.DataFrame({"index": rec[:, 4], DIGEST: [text[64 * k : 64 * (k + 1)] for k in range(len(rec))]})

    def frames() -> Iterator[Any]:
        try:
            if records.n == 0:
                yield pd.DataFrame({"index": np.zeros(0, np.int64), DIGEST: np.array([], dtype=object)})
            for part in grouped(records.sorted_chunks(_CHUNK_ROWS), 4):
                yield frame(part)
        finally:
            records.close()

    return frames()


def _values_of(table_path: Path, wanted: dict[int, set[str]]) -> dict[int, dict[str, Any]]:
    """For each wanted row, its values in the wanted columns (one pass in chunks)."""
    import numpy as np

    from pipelines.io import read_table

    values: dict[int, dict[str, Any]] = {}
    columns = sorted({c for cols in wanted.values() for c in cols} - {"index"})
    if not wanted or not columns:
        return {row: {} for row in wanted}
    rows = np.fromiter(wanted, np.int64, len(wanted))
    for part in read_table(table_path, columns=["index", *columns], chunksize=_CHUNK_ROWS):
        idx = part["index"].to_numpy()
        for pos in np.flatnonzero(np.isin(idx, rows)).tolist():
            row = int(idx[pos])
            values[row] = {c: part[c].iat[pos] for c in wanted[row] if c != "index"}
    return values


def _name_files(table_path: Path, wanted: set[int], keep: Any) -> tuple[dict[int, str], dict[int, str], str]:
    """One pass over ``table.csv`` in chunks: (file of every ``wanted`` row, sha256 of
    every ``wanted`` row, sha256 over the kept rows' ``sha256`` values one per line).
    ``keep`` is a boolean array over the ingested rows. Memory: one chunk plus the
    wanted rows."""
    import hashlib

    import numpy as np

    from pipelines.io import read_table

    files: dict[int, str] = {}
    digests: dict[int, str] = {}
    h = hashlib.sha256()
    first = True
    for part in read_table(table_path, columns=["index", "file", "sha256"], chunksize=_CHUNK_ROWS):
        idx = part["index"].to_numpy()
        hit = np.flatnonzero(np.isin(idx, np.fromiter(wanted, np.int64, len(wanted)))) if wanted else []
        for pos in hit:
            files[int(idx[pos])] = part["file"].iat[pos]
            digests[int(idx[pos])] = part["sha256"].iat[pos]
        kept = part["sha256"].to_numpy()[keep[idx]]
        if len(kept):
            h.update((b"" if first else b"\n") + "\n".join(kept).encode("ascii"))
            first = False
    return files, digests, h.hexdigest()


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


def _write_kept_table(table_path: Path, out: Path, keep: Any, n_rows: int) -> None:
    """Write the header and the ``keep`` rows (a boolean array over the rows) of
    ``table.csv`` to ``out``, byte for byte, streaming line by line and atomically.
    Ingestion writes one line per row (file names are printable: no raw newlines)."""
    from gan_core.atomic import atomic_writer

    with atomic_writer(out) as dst, open(table_path, "rb") as src:
        dst.write(src.readline())
        n = 0
        block: list[bytes] = []
        for line in src:
            if n < n_rows and keep[n]:
                block.append(line)
                if len(block) == 8192:
                    dst.write(b"".join(block))
                    block.clear()
            n += 1
        dst.write(b"".join(block))
        if n != n_rows:
            raise RuntimeError(f"{table_path} has {n} lines for {n_rows} rows; rerun the ingest step")


def validate(scenario: Scenario, paths: ScenarioPaths) -> ValidationResult:
    """Run the scenario's expectations (plus ``min_images`` and ``max_quarantined_share``)
    over ``paths.ingested/table.csv``, setting aside the rows that ``set_aside``
    expectations fail; write ``set_aside.json`` and ``report.json`` to
    ``paths.validated`` and, only when every blocking check passed, the kept rows'
    ``images/`` and ``table.csv``. Returns the result either way; raises
    :class:`ValidationConfigError` for a broken scenario configuration and
    FileNotFoundError when ingestion has not completed (RuntimeError when its outputs
    disagree with each other).

    Memory does not grow with the rows for the expectations the scenarios use:
    great-expectations runs a row-by-row expectation (:data:`ROW_BY_ROW`) on one chunk
    of :data:`_CHUNK_ROWS` rows at a time and a ``sha256`` uniqueness check on groups of
    equal digests sorted on disk (:func:`_digest_groups`); the kept row count is checked
    on a frame with no column. Any other expectation (a column mean, quantiles, ...) gets
    its columns of every row at once (8 bytes per row and column). File names, hashes
    and failing values are read in chunks for the rows a report names, and the kept
    table is streamed; what remains per row is the keep mask (1 byte)."""
    import numpy as np
    import pandas as pd

    from pipelines.io import IMAGES_DIR, LEGACY_IMAGES_FILE, atomic_write, json_bytes, read_table, table_columns
    from gan_core.shards import INDEX_FILE, remove_dataset

    ing, out_dir = paths.ingested, paths.validated
    manifest_path, table_path = ing / "manifest.json", ing / "table.csv"
    images_in, quarantine_path = ing / IMAGES_DIR, ing / "quarantine.json"
    report_path, images_out, table_out = out_dir / "report.json", out_dir / IMAGES_DIR, out_dir / "table.csv"
    set_aside_path = out_dir / SET_ASIDE_FILE

    # Nothing stale may survive a failed or crashed validation (the shards stay until a
    # pass rewrites the index, so unchanged ones are not written again).
    for stale in (images_out / INDEX_FILE, out_dir / LEGACY_IMAGES_FILE, table_out, set_aside_path, report_path):
        stale.unlink(missing_ok=True)

    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"scenario {scenario.name}: {manifest_path} is missing, so ingestion has not completed; run the ingest step first"
        )
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    header = table_columns(table_path)
    built = _build(scenario, header)  # config errors before any GX run
    if "index" not in header:
        raise RuntimeError(f"scenario {scenario.name}: {table_path} has no column 'index'; rerun the ingest step")
    quarantine = json.loads(quarantine_path.read_text(encoding="utf-8")) if quarantine_path.is_file() else []
    kinds = [_kind(meta) for meta, _ in built]

    import great_expectations as gx

    spec = scenario.validation
    ctx = _quiet_context()
    ds = ctx.data_sources.add_pandas(name=f"scenario_{scenario.name}")
    asset = ds.add_dataframe_asset(name="ingested_table")
    batch_def = asset.add_batch_definition_whole_dataframe("whole_table")
    fmt = {"result_format": "COMPLETE", "unexpected_index_column_names": ["index"]}

    def on(frame: Any) -> Any:
        return batch_def.get_batch(batch_parameters={"dataframe": frame})

    def columns_of(positions: list[int]) -> list[str]:
        return ["index", *dict.fromkeys(c for p in positions for c in _columns_in(built[p][0]["kwargs"]) if c != "index")]

    def run(positions: list[int], rows: str, keep: Any) -> dict[int, tuple[dict[str, Any], list[int]]]:
        """Each entry at ``positions`` over the ingested rows (``keep`` None) or the kept
        ones: (result entry, ingested index of every failing row)."""
        out: dict[int, tuple[dict[str, Any], list[int]]] = {}
        chunked = [p for p in positions if kinds[p] == "chunks"]
        if chunked:
            parts: dict[int, list[Any]] = {p: [] for p in chunked}
            for frame in _chunks(table_path, columns_of(chunked), keep):
                batch = on(frame.reset_index(drop=True))
                for p in chunked:
                    parts[p].append(batch.validate(built[p][1], result_format=fmt))
            for p in chunked:
                out[p] = _from_gx({**built[p][0], "rows": rows}, _merge(built[p][1], parts[p]), ())
        rest = []
        for p in positions:
            if kinds[p] == "digests":
                groups = _digest_groups(table_path, out_dir, keep)
                if groups is not None:
                    res = _merge(built[p][1], [on(g).validate(built[p][1], result_format=fmt) for g in groups], by_index=True)
                    out[p] = _from_gx({**built[p][0], "rows": rows}, res, ())
                    continue
            if kinds[p] != "chunks":
                rest.append(p)
        if rest:  # every row of the columns these entries read
            df = read_table(table_path, columns=columns_of(rest))
            if keep is not None:
                df = df[keep[df["index"].to_numpy()]].reset_index(drop=True)
            batch = on(df)
            for p in rest:
                out[p] = _from_gx({**built[p][0], "rows": rows}, batch.validate(built[p][1], result_format=fmt), df["index"].to_numpy())
        return out

    # The rows: numbered 0..N-1, as many as the manifest says (one pass in chunks).
    n_rows = 0
    for part in read_table(table_path, columns=["index"], chunksize=_CHUNK_ROWS):
        if not np.array_equal(part["index"].to_numpy(), np.arange(n_rows, n_rows + len(part))):
            raise RuntimeError(f"scenario {scenario.name}: {table_path}: column 'index' must number the rows 0..N-1; rerun the ingest step")
        n_rows += len(part)
    if n_rows != manifest.get("n_images"):
        raise RuntimeError(f"scenario {scenario.name}: {table_path} has {n_rows} rows but the manifest says {manifest.get('n_images')}; rerun the ingest step")

    # 1. set_aside entries over every ingested row; 2. the rest over the kept rows. One
    # validation per expectation: results map to scenario entries by position, and
    # identical entries (which an ExpectationSuite would merge) stay separate.
    entries: dict[int, dict[str, Any]] = {}
    failing: dict[int, list[int]] = {}  # ingested row -> positions of the entries it failed
    aside_entries = [p for p, (meta, _) in enumerate(built) if meta["on_failure"] == "set_aside"]
    for pos, (entry, rows) in sorted(run(aside_entries, "ingested", None).items()):
        entries[pos] = entry
        if not entry.get("error"):
            for row in rows:
                failing.setdefault(row, []).append(pos)
            entry["set_aside_count"] = len(rows)
    aside_rows = sorted(failing)
    keep_mask = np.ones(n_rows, bool)
    keep_mask[aside_rows] = False
    n_kept = n_rows - len(aside_rows)
    kept_entries = [p for p in range(len(built)) if p not in entries]
    for pos, (entry, _) in run(kept_entries, "kept", keep_mask if aside_rows else None).items():
        entries[pos] = entry
    # The row count of the kept rows: a frame of that many rows and no column.
    row_count = gx.expectations.ExpectTableRowCountToBeBetween(min_value=spec.min_images)
    row_count_result = on(pd.DataFrame(index=pd.RangeIndex(n_kept))).validate(row_count, result_format=fmt)

    # The values each set-aside row failed on and the earlier image a set-aside copy
    # repeats, then every row a report names: their file names (and the set-aside rows'
    # sha256) in passes over the table.
    cols_of_row = {row: {c for p in failing[row] for c in _columns_in(built[p][0]["kwargs"])} for row in aside_rows}
    row_values = _values_of(table_path, cols_of_row)
    copy_of: dict[int, int] = {}
    for row in aside_rows:
        for col in ("duplicate_of", "near_duplicate_of"):
            if col in cols_of_row[row] and not _is_missing(row_values[row][col]):
                copy_of.setdefault(row, int(row_values[row][col]))
    wanted = {*aside_rows, *copy_of.values(), *(r for e in entries.values() for r in e["_rows"])}
    files, digests, kept_hash = _name_files(table_path, wanted, keep_mask)

    results: list[dict[str, Any]] = []
    names = iter(check_names(scenario))
    keys = ("name", "expectation", "kwargs", "on_failure", "blocking", "rows", "success", "unexpected_count", "unexpected_files", "observed_value")

    def add(entry: dict[str, Any]) -> None:  # in check_names() order
        entry["name"] = next(names)
        if "_rows" in entry:
            entry["unexpected_files"] = [files[r] for r in entry.pop("_rows")]
        results.append({k: entry[k] for k in keys} | {k: v for k, v in entry.items() if k in ("unexpected_values", "set_aside_count", "detail", "error")})

    builtin = {"on_failure": "block", "blocking": True, "rows": "kept"}
    add(_from_gx({"expectation": "expect_table_row_count_to_be_between", "kwargs": {"min_value": spec.min_images}, **builtin}, row_count_result, ())[0])
    n_q, n_aside, total = len(quarantine), len(aside_rows), n_rows + len(quarantine)
    share = (n_q + n_aside) / total if total else 0.0
    over = share > spec.max_quarantined_share
    add({
        "expectation": "max_quarantined_share", "kwargs": {"max_value": spec.max_quarantined_share}, **builtin, "rows": "ingested",
        "success": not over, "unexpected_count": n_q + n_aside if over else 0,
        "unexpected_files": [q["file"] for q in quarantine] + [files[i] for i in aside_rows] if over else [],
        "observed_value": round(share, 6), "detail": {"quarantined": n_q, "set_aside": n_aside, "source_files": total},
    })
    for pos in range(len(built)):
        add(entries[pos])

    # Which check set each row aside, and the value it objected to.
    check_of = {pos: results[len(BUILTIN_CHECKS) + pos]["name"] for pos in range(len(built))}
    set_aside: list[dict[str, Any]] = []
    for row in aside_rows:
        values = {}
        for pos in failing[row]:
            cols = _columns_in(built[pos][0]["kwargs"])
            vals = {c: _jsonable(row_values[row][c]) if c != "index" else row for c in cols}
            values[check_of[pos]] = vals[cols[0]] if len(cols) == 1 else vals
        entry = {"index": row, "file": files[row], "sha256": digests[row], "checks": [check_of[p] for p in failing[row]], "values": values}
        if row in copy_of:  # name the earlier image a copy repeats
            entry["copy_of"] = files[copy_of[row]]
        set_aside.append(entry)

    passed = not any(blocks(r) for r in results)
    content_hash = kept_hash if passed else None
    report = {
        "format": FORMAT,
        "scenario": scenario.name,
        "passed": passed,
        "n_rows": n_rows,
        "n_kept": n_rows - n_aside,
        "n_set_aside": n_aside,
        "n_quarantined": n_q,
        "set_aside": {"file": SET_ASIDE_FILE, "count": n_aside, "by_check": {check_of[p]: entries[p].get("set_aside_count", 0) for p in range(len(built)) if built[p][0]["on_failure"] == "set_aside"}},
        "ingest_content_hash": manifest.get("content_hash"),
        "content_hash": content_hash,
        "great_expectations": gx.__version__,
        "results": results,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(set_aside_path, json_bytes(_jsonable(set_aside)))
    if not passed:
        remove_dataset(images_out)
    else:
        from gan_core.shards import ShardError, copy_dataset, open_images

        # Unchanged images: the shard files are copied as they are; otherwise the kept
        # rows are streamed into new shards (memory: one chunk of images).
        try:
            n_images = len(open_images(images_in))
        except ShardError as e:
            raise RuntimeError(f"scenario {scenario.name}: {e}; rerun the ingest step") from None
        if n_images != n_rows:
            raise RuntimeError(f"scenario {scenario.name}: {images_in} holds {n_images} images but {table_path} has {n_rows} rows; rerun the ingest step")
        copy_dataset(images_in, images_out, np.flatnonzero(keep_mask) if aside_rows else None)
        _write_kept_table(table_path, table_out, keep_mask, n_rows)
    atomic_write(report_path, json_bytes(_jsonable(report)))
    return ValidationResult(
        scenario=scenario.name, passed=passed, results=results, n_rows=n_rows,
        content_hash=content_hash, ingest_content_hash=manifest.get("content_hash"),
        report_path=report_path, images_path=images_out if passed else None,
        set_aside=set_aside, set_aside_path=set_aside_path, table_path=table_out if passed else None,
    )
