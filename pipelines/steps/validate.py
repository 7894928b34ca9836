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
- ``summary.json`` — ``report.json`` with each list cut to its first :data:`MAX_FILES`
  (:data:`pipelines.io.VALIDATION_SUMMARY_FILE`), in both cases;
- ``report.json`` — in both cases, last.

Memory does not grow with the failing rows: great-expectations' result for each chunk
is reduced at once to counts and failing row numbers (8 bytes each) and the first 200
failing values (great-expectations' own limit per run, kept whatever the chunking); one
pass over the table names the rows and writes the set-aside entries, each list to a
temporary file; ``report.json`` and ``set_aside.json`` are written from those files a
piece at a time (:func:`pipelines.io.write_json`). What :func:`validate` returns holds
the first :data:`MAX_FILES` of each list.
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
    unexpected_count, unexpected_files (the first :data:`MAX_FILES`; ``report.json``
    lists every one), observed_value (+ unexpected_values, the first :data:`MAX_FILES`
    too, set_aside_count, detail, error where applicable)."""
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
    """The first :data:`MAX_FILES` set-aside images: index, file, sha256, checks, values
    (``set_aside.json`` lists every one)."""
    set_aside_path: Path | None = None
    table_path: Path | None = None
    """``validated/table.csv`` (the kept rows) when passed, else None."""
    set_aside_count: int = -1
    """How many images were set aside (-1: ``len(set_aside)``)."""

    @property
    def n_set_aside(self) -> int:
        return len(self.set_aside) if self.set_aside_count < 0 else self.set_aside_count

    @property
    def n_kept(self) -> int:
        return self.n_rows - self.n_set_aside

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
        if self.n_set_aside:
            lines.append(
                f"  set aside {self.n_set_aside} of {self.n_rows} images, kept {self.n_kept}: "
                + capped_files([e["file"] for e in self.set_aside], self.n_set_aside, full_list=self.set_aside_path)
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
    from pipelines.io import Streamed

    if isinstance(v, Streamed):  # its items are JSON values already, read when written
        return v
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


def _index_rows(items: Any, index_of: Any) -> list[int]:
    """The ingested ``index`` of each failing row great-expectations lists: by the
    ``index`` column it names rows by, or by batch position through ``index_of``."""
    rows: list[int] = []
    for item in items:
        if isinstance(item, dict) and item.get("index") is not None:
            rows.append(int(item["index"]))
        elif isinstance(item, int) and 0 <= item < len(index_of):
            rows.append(int(index_of[item]))
    return rows


def _from_gx(meta: dict[str, Any], res: Any, index_of: Any, rows: Any = None, values: Any = None) -> tuple[dict[str, Any], Any]:
    """(result entry, the sorted ingested ``index`` of every failing row, int64) from a
    GX validation result. ``index_of`` maps a batch position to its ingested index (GX
    names rows by the ``index`` column; positions are a fallback). ``rows`` and ``values``
    (a :class:`pipelines.spill.JsonLines`), when given, are the failing rows and values
    a :class:`_Tally` collected, instead of the lists in ``res``. The entry's ``_rows``
    are the failing rows in the order GX reported them (repeats dropped): the naming
    pass (:func:`_name_rows`) turns them into ``unexpected_files``."""
    import numpy as np

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
    if rows is None:
        rows = np.asarray(_index_rows(r.get("unexpected_index_list") or r.get("partial_unexpected_index_list") or [], index_of), np.int64)
        values = r.get("unexpected_list") or r.get("partial_unexpected_list")
        values = _jsonable(values) if values else None
    named, first = np.unique(rows, return_index=True)
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
        "_rows": rows[np.sort(first)],  # keep order, drop repeats
    }
    if values is not None and len(values):
        out["unexpected_values"] = values
    elif hasattr(values, "close"):
        values.close()
    if err:
        out["error"] = str(err)
    elif meta.get("on_failure") == "set_aside" and len(named) < out["unexpected_count"]:
        out["error"] = f"great-expectations named {len(named)} of the {out['unexpected_count']} failing rows, so they cannot be set aside"
    return out, named


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
(:class:`_Tally`). Not in it: uniqueness (see :data:`DIGEST`), expectations that compare a
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


def _max_values() -> int:
    """How many failing values great-expectations lists per run (200 in 1.x): a check run
    in chunks lists the first that many of all its chunks, as one run over the whole
    column would (the failing rows and files are listed in full)."""
    try:
        from great_expectations.constants import MAX_RESULT_RECORDS
    except ImportError:  # pragma: no cover - a version without the constant
        return 200
    return int(MAX_RESULT_RECORDS)


class _Tally:
    """One expectation's great-expectations results, reduced as each one arrives (a
    chunk of rows, a digest group, or the whole column): counts added up, the failing
    rows kept as int64 (8 bytes each), their values (the first :func:`_max_values`, as
    great-expectations lists them) appended to a temporary file, and
    the result dropped. :meth:`result` is then one result over every part: with
    ``merged`` (row-by-row or digest-group parts), success by great-expectations' own
    ``mostly`` rule on the totals; otherwise the one part's own success and observed
    value. A part whose run raised is the result (its error is reported). With
    ``by_index`` (digest groups) the failing rows are put in row order, each with its
    digest as the value (great-expectations lists at most 200 values per run, the rows
    in full): 40 bytes per failing row until then."""

    def __init__(self, scratch: Path, *, merged: bool = True, by_index: bool = False):
        from pipelines.spill import JsonLines

        self.scratch, self.merged, self.by_index = scratch, merged, by_index
        self.element = self.missing = self.unexpected = 0
        self.rows: list[Any] = []
        self.digests: list[bytes] = []
        self.indexed = True  # every failing row of every part came with its digest
        self.values = JsonLines(scratch)
        self.error: Any = None
        self.last: Any = None

    def add(self, res: Any, index_of: Any = ()) -> None:
        import numpy as np

        if self.error is not None:
            return
        if _gx_error(res):
            self.error = res
            return
        r = res.result or {}
        self.element += r.get("element_count") or 0
        self.missing += r.get("missing_count") or 0
        self.unexpected += r.get("unexpected_count") or 0
        items = r.get("unexpected_index_list") or r.get("partial_unexpected_index_list") or []
        self.rows.append(np.asarray(_index_rows(items, index_of), np.int64))
        if self.by_index and items:
            if all(isinstance(i, dict) and isinstance(i.get(DIGEST), str) and len(i[DIGEST]) == 64 for i in items):
                self.digests.append(bytes.fromhex("".join(i[DIGEST] for i in items)))
            else:
                self.indexed = False
        values = r.get("unexpected_list") or r.get("partial_unexpected_list") or []
        room = _max_values() - len(self.values)  # as one run over the whole column lists them
        if room > 0:
            self.values.extend(_jsonable(values[:room]))
        self.last = res if not self.merged else None

    def result(self, obj: Any) -> tuple[Any, Any, Any]:
        """(a result for :func:`_from_gx`, failing rows, their values)."""
        import numpy as np

        from great_expectations.expectations.expectation import _mostly_success

        from pipelines.spill import JsonLines

        if self.error is not None:
            self.values.close()
            return self.error, None, None
        rows = np.concatenate(self.rows) if self.rows else np.zeros(0, np.int64)
        self.rows = []
        values = self.values
        if self.by_index and self.indexed and len(rows):
            digests = np.frombuffer(b"".join(self.digests), np.uint8).reshape(-1, 32)
            order = np.argsort(rows, kind="stable")
            rows = rows[order]
            values.close()
            values = JsonLines(self.scratch)
            for start in range(0, len(rows), _CHUNK_ROWS):
                text = digests[order[start : start + _CHUNK_ROWS]].tobytes().hex()
                values.extend(text[k : k + 64] for k in range(0, len(text), 64))
        if not self.merged and self.last is not None:
            return self.last, rows, values
        nonnull = self.element - self.missing
        mostly = getattr(obj, "mostly", None)
        success = True if self.element == 0 or nonnull == 0 else _mostly_success(nonnull, self.unexpected, 1.0 if mostly is None else mostly)
        return _Merged(success, {
            "element_count": self.element, "missing_count": self.missing, "unexpected_count": self.unexpected,
            "unexpected_percent": self.unexpected / nonnull * 100 if nonnull else None,
        }), rows, values


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


class _Names:
    """Every row's file name, appended in row order to an unnamed temporary file (and
    each one's end to a spilled column), for looking up a few by row: the earlier image
    a set-aside copy repeats."""

    def __init__(self, scratch: Path):
        import tempfile

        import numpy as np

        from pipelines.spill import Column

        self.text = tempfile.TemporaryFile(dir=scratch)
        self.ends = Column(scratch, np.int64)
        self.size = 0

    def extend(self, names: list[str]) -> None:
        import numpy as np

        data = [n.encode("utf-8") for n in names]
        ends = self.size + np.cumsum(np.fromiter(map(len, data), np.int64, len(data)))
        self.ends.append(ends)
        self.text.write(b"".join(data))
        self.size = int(ends[-1]) if len(data) else self.size

    def __getitem__(self, row: int) -> str:
        import os

        self.text.flush()
        bounds = self.ends.take([row - 1, row] if row else [row])
        start, end = (int(bounds[0]), int(bounds[1])) if row else (0, int(bounds[0]))
        return os.pread(self.text.fileno(), end - start, start).decode("utf-8")

    def close(self) -> None:
        self.text.close()
        self.ends.close()


@dataclass
class _Aside:
    """What the naming pass needs to list the set-aside images: their rows (sorted), and
    for each ``set_aside`` check its position, name, columns and failing rows (sorted)."""

    rows: Any
    checks: list[tuple[int, str, list[str], Any]]

    @property
    def columns(self) -> list[str]:
        return list(dict.fromkeys(c for _, _, cols, _ in self.checks for c in cols if c != "index"))


class _Chain:
    """The quarantined files, then the set-aside ones: one list, read again each time."""

    def __init__(self, first: list[str], entries: Any):
        self.first, self.entries = first, entries

    def __len__(self) -> int:
        return len(self.first) + len(self.entries)

    def __iter__(self) -> Iterator[str]:
        yield from self.first
        for entry in self.entries:
            yield entry["file"]


COPY_COLUMNS = ("duplicate_of", "near_duplicate_of")
"""A set-aside image that failed a check on one of these columns is a copy: its entry
names the earlier image it repeats (``copy_of``)."""


def _name_rows(table_path: Path, scratch: Path, keep: Any, named: list[Any], aside: _Aside) -> tuple[list[Any], Any, str]:
    """One pass over ``table.csv`` in chunks: (for each int64 row array of ``named``, the
    file of each of its rows in that order; every set-aside image's entry, in row order:
    index, file, sha256, the checks it failed, the value each objected to and, for a
    copy, ``copy_of``; sha256 over the kept rows' ``sha256`` values one per line).
    ``keep`` is a boolean array over the ingested rows. The lists go to temporary files
    (:class:`pipelines.spill.JsonLines`) as the pass reaches their rows, so memory holds
    one chunk, whatever the number of failing rows: only the rows of an array that is not
    in row order (an expectation run on the whole column) are named in memory."""
    import hashlib

    import numpy as np

    from pipelines.io import read_table
    from pipelines.spill import JsonLines

    outputs = [JsonLines(scratch) for _ in named]
    entries = JsonLines(scratch)
    plans = []  # (sorted rows, their positions in the array or None when already sorted, names so far)
    for rows in named:
        ordered = bool(len(rows) < 2 or (np.diff(rows) > 0).all())
        order = None if ordered else np.argsort(rows, kind="stable")
        plans.append((rows if ordered else rows[order], order, [] if order is not None else None))
    copies = any(c in COPY_COLUMNS for c in aside.columns) and len(aside.rows)
    names = _Names(scratch) if copies else None
    h = hashlib.sha256()
    first = True
    try:
        for part in read_table(table_path, columns=["index", "file", "sha256", *aside.columns], chunksize=_CHUNK_ROWS):
            idx = part["index"].to_numpy(np.int64)
            lo, hi = int(idx[0]), int(idx[-1]) + 1  # the table numbers its rows 0..N-1 (checked before)
            files = part["file"].to_numpy(object)
            digests = part["sha256"].to_numpy(object)
            if names is not None:
                names.extend(files.tolist())
            kept = digests[keep[idx]]
            if len(kept):
                h.update((b"" if first else b"\n") + "\n".join(kept).encode("ascii"))
                first = False
            for out, (rows, order, held) in zip(outputs, plans):
                a, b = np.searchsorted(rows, [lo, hi])
                here = files[rows[a:b] - lo].tolist()
                if held is None:
                    out.extend(here)
                else:
                    held.extend(here)
            a, b = np.searchsorted(aside.rows, [lo, hi])
            rows_here = aside.rows[a:b]
            if not len(rows_here):
                continue
            values_of = {c: part[c].to_numpy(object) for c in aside.columns}
            failed_by = [(name, cols, np.isin(rows_here, rows, assume_unique=True)) for _, name, cols, rows in aside.checks]
            batch = []
            for k, row in enumerate(rows_here.tolist()):
                i = row - lo
                entry: dict[str, Any] = {"index": row, "file": files[i], "sha256": digests[i], "checks": [], "values": {}}
                columns: set[str] = set()
                for name, cols, failed in failed_by:
                    if failed[k]:
                        vals = {c: _jsonable(values_of[c][i]) if c != "index" else row for c in cols}
                        entry["checks"].append(name)
                        entry["values"][name] = vals[cols[0]] if len(cols) == 1 else vals
                        columns.update(cols)
                for col in COPY_COLUMNS:  # name the earlier image a copy repeats
                    if col in columns and not _is_missing(values_of[col][i]):
                        target = int(values_of[col][i])
                        if not 0 <= target < row:
                            raise RuntimeError(f"{table_path}: row {row}: {col} is {target}, not an earlier row; rerun the ingest step")
                        entry["copy_of"] = names[target]
                        break
                batch.append(entry)
            entries.extend(batch)
        for out, (rows, order, held) in zip(outputs, plans):
            if held is not None:  # back to the order great-expectations reported them in
                placed = np.empty(len(held), object)
                placed[order] = held
                out.extend(placed.tolist())
        return outputs, entries, h.hexdigest()
    except BaseException:
        for out in (*outputs, entries):
            out.close()
        raise
    finally:
        if names is not None:
            names.close()


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
    its columns of every row at once (8 bytes per row and column). Nor with the failing
    rows: each result is reduced as it comes to failing row numbers (8 bytes per failing
    row and check) and its first 200 values (:class:`_Tally`), one pass over the table in
    chunks names the rows and writes the set-aside entries to another
    (:func:`_name_rows`), the reports are written from those files a piece at a time,
    and the kept table is streamed. What remains per row is the keep mask (1 byte)."""
    import itertools

    import numpy as np
    import pandas as pd

    from pipelines.io import IMAGES_DIR, LEGACY_IMAGES_FILE, VALIDATION_SUMMARY_FILE, Streamed, atomic_write, json_bytes, read_table, table_columns, write_json
    from pipelines.spill import JsonLines
    from gan_core.shards import INDEX_FILE, remove_dataset

    ing, out_dir = paths.ingested, paths.validated
    manifest_path, table_path = ing / "manifest.json", ing / "table.csv"
    images_in, quarantine_path = ing / IMAGES_DIR, ing / "quarantine.json"
    report_path, images_out, table_out = out_dir / "report.json", out_dir / IMAGES_DIR, out_dir / "table.csv"
    set_aside_path = out_dir / SET_ASIDE_FILE

    # Nothing stale may survive a failed or crashed validation (the shards stay until a
    # pass rewrites the index, so unchanged ones are not written again).
    summary_path = out_dir / VALIDATION_SUMMARY_FILE
    for stale in (images_out / INDEX_FILE, out_dir / LEGACY_IMAGES_FILE, table_out, set_aside_path, summary_path, report_path):
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

    def run(positions: list[int], rows: str, keep: Any) -> dict[int, tuple[dict[str, Any], Any]]:
        """Each entry at ``positions`` over the ingested rows (``keep`` None) or the kept
        ones: (result entry, sorted ingested index of every failing row). Each
        great-expectations result is reduced as it comes (:class:`_Tally`)."""
        out: dict[int, tuple[dict[str, Any], Any]] = {}

        def finish(p: int, tally: _Tally) -> None:
            res, failing, values = tally.result(built[p][1])
            out[p] = _from_gx({**built[p][0], "rows": rows}, res, (), failing, values)

        chunked = [p for p in positions if kinds[p] == "chunks"]
        if chunked:
            tallies = {p: _Tally(out_dir) for p in chunked}
            for frame in _chunks(table_path, columns_of(chunked), keep):
                batch = on(frame.reset_index(drop=True))
                for p in chunked:
                    tallies[p].add(batch.validate(built[p][1], result_format=fmt))
            for p in chunked:
                finish(p, tallies[p])
        rest = []
        for p in positions:
            if kinds[p] == "digests":
                groups = _digest_groups(table_path, out_dir, keep)
                if groups is not None:
                    tally = _Tally(out_dir, by_index=True)
                    for g in groups:
                        tally.add(on(g).validate(built[p][1], result_format=fmt))
                    finish(p, tally)
                    continue
            if kinds[p] != "chunks":
                rest.append(p)
        if rest:  # every row of the columns these entries read
            df = read_table(table_path, columns=columns_of(rest))
            if keep is not None:
                df = df[keep[df["index"].to_numpy()]].reset_index(drop=True)
            batch = on(df)
            for p in rest:
                tally = _Tally(out_dir, merged=False)
                tally.add(batch.validate(built[p][1], result_format=fmt), df["index"].to_numpy())
                finish(p, tally)
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
    check_of = dict(enumerate(check_names(scenario)[len(BUILTIN_CHECKS) :]))
    entries: dict[int, dict[str, Any]] = {}
    aside = _Aside(np.zeros(0, np.int64), [])
    aside_entries = [p for p, (meta, _) in enumerate(built) if meta["on_failure"] == "set_aside"]
    for pos, (entry, rows) in sorted(run(aside_entries, "ingested", None).items()):
        entries[pos] = entry
        if not entry.get("error"):
            aside.checks.append((pos, check_of[pos], _columns_in(built[pos][0]["kwargs"]), rows))
            entry["set_aside_count"] = len(rows)
    aside.rows = np.unique(np.concatenate([rows for *_, rows in aside.checks])) if aside.checks else aside.rows
    n_aside = len(aside.rows)
    keep_mask = np.ones(n_rows, bool)
    keep_mask[aside.rows] = False
    n_kept = n_rows - n_aside
    kept_entries = [p for p in range(len(built)) if p not in entries]
    for pos, (entry, _) in run(kept_entries, "kept", keep_mask if n_aside else None).items():
        entries[pos] = entry
    # The row count of the kept rows: a frame of that many rows and no column.
    row_count = gx.expectations.ExpectTableRowCountToBeBetween(min_value=spec.min_images)
    row_count_result = on(pd.DataFrame(index=pd.RangeIndex(n_kept))).validate(row_count, result_format=fmt)

    # One pass over the table names every row a report lists and writes the set-aside
    # entries (with the values they failed on and the image a copy repeats), each list
    # to a temporary file; the reports are then written from those files.
    ordered = [entries[p] for p in range(len(built))]
    named, aside_list, kept_hash = _name_rows(table_path, out_dir, keep_mask, [e.pop("_rows") for e in ordered], aside)
    lists = [*named, aside_list, *(e["unexpected_values"] for e in ordered if isinstance(e.get("unexpected_values"), JsonLines))]
    try:
        results: list[dict[str, Any]] = []  # as report.json has them: every file and value
        previews: list[dict[str, Any]] = []  # as ValidationResult has them: the first MAX_FILES
        names = iter(check_names(scenario))
        keys = ("name", "expectation", "kwargs", "on_failure", "blocking", "rows", "success", "unexpected_count", "unexpected_files", "observed_value")

        def add(entry: dict[str, Any], files: Any = None) -> None:  # in check_names() order
            entry["name"] = next(names)
            if files is not None:
                entry["unexpected_files"] = files
            full = {k: entry[k] for k in keys} | {k: v for k, v in entry.items() if k in ("unexpected_values", "set_aside_count", "detail", "error")}
            results.append({k: Streamed(v, len(v)) if isinstance(v, (JsonLines, _Chain)) else v for k, v in full.items()})
            previews.append({k: list(itertools.islice(v, MAX_FILES)) if isinstance(v, (JsonLines, _Chain)) else v for k, v in full.items()})

        builtin = {"on_failure": "block", "blocking": True, "rows": "kept"}
        count_entry, _ = _from_gx({"expectation": "expect_table_row_count_to_be_between", "kwargs": {"min_value": spec.min_images}, **builtin}, row_count_result, ())
        count_entry.pop("_rows")
        add(count_entry)
        n_q, total = len(quarantine), n_rows + len(quarantine)
        share = (n_q + n_aside) / total if total else 0.0
        over = share > spec.max_quarantined_share
        add({
            "expectation": "max_quarantined_share", "kwargs": {"max_value": spec.max_quarantined_share}, **builtin, "rows": "ingested",
            "success": not over, "unexpected_count": n_q + n_aside if over else 0,
            "unexpected_files": _Chain([q["file"] for q in quarantine], aside_list) if over else [],
            "observed_value": round(share, 6), "detail": {"quarantined": n_q, "set_aside": n_aside, "source_files": total},
        })
        for entry, files in zip(ordered, named):
            add(entry, files)

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
        write_json(set_aside_path, Streamed(aside_list, n_aside))
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
            copy_dataset(images_in, images_out, np.flatnonzero(keep_mask) if n_aside else None)
            _write_kept_table(table_path, table_out, keep_mask, n_rows)
        set_aside = aside_list.head(MAX_FILES)
        summary = {**report, "results": previews, "set_aside": {**report["set_aside"], "first_files": [e["file"] for e in set_aside]}}
        atomic_write(summary_path, json_bytes(_jsonable(summary)))
        write_json(report_path, _jsonable(report))  # last: its presence marks a finished validation
    finally:
        for spilled in lists:
            spilled.close()
    return ValidationResult(
        scenario=scenario.name, passed=passed, results=previews, n_rows=n_rows,
        content_hash=content_hash, ingest_content_hash=manifest.get("content_hash"),
        report_path=report_path, images_path=images_out if passed else None,
        set_aside=set_aside, set_aside_path=set_aside_path, table_path=table_out if passed else None,
        set_aside_count=n_aside,
    )
