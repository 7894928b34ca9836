"""Ingestion's per-row data on disk (pipelines.spill): the external sort, the spilled
columns, the folder listing sorted in runs, the exact- and near-duplicate passes a
partition at a time. Each is checked against the in-memory computation it replaces,
with run and partition sizes small enough that a few hundred rows take many runs."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from pipelines import contamination, sources, spill
from pipelines.paths import Roots, ScenarioPaths
from pipelines.scenario import parse_scenario
from pipelines.spill import Column, SortedRecords
from pipelines.steps import ingest as ingest_mod
from pipelines.steps.ingest import duplicate_column, first_copies, ingest


@pytest.mark.parametrize("n, run, chunk", [(0, 16, 7), (5, 16, 7), (1000, 64, 50), (5000, 333, 1000), (3000, 1, 4096)])
def test_sorted_records_equal_a_lexicographic_sort(tmp_path, n, run, chunk):
    rng = np.random.default_rng(n)
    records = rng.integers(-20, 30, (n, 2))  # many equal records and equal first fields
    s = SortedRecords(tmp_path, 2, run_records=run)
    for start in range(0, n, 37):
        s.add(records[start : start + 37])
    parts = list(s.sorted_chunks(chunk))
    s.close()
    got = np.concatenate(parts) if parts else np.zeros((0, 2), np.int64)
    assert got.tolist() == records[np.lexsort(records.T[::-1])].tolist()
    assert all(len(p) == chunk for p in parts[:-1])
    assert len(s.runs) == (0 if n <= run else -(-n // run))


def test_grouped_chunks_never_split_equal_records():
    rng = np.random.default_rng(4)
    records = np.sort(rng.integers(0, 40, (1000, 2)), axis=0)
    records[100:400, 0] = 7  # a group larger than a chunk
    records = records[np.lexsort(records.T[::-1])]
    parts = list(spill.grouped((records[a : a + 64] for a in range(0, len(records), 64)), 1))
    assert np.array_equal(np.concatenate(parts), records)
    firsts = [p[0, 0] for p in parts]
    assert len(set(firsts)) == len(firsts) and all(p[0, 0] != q[-1, 0] for q, p in zip(parts, parts[1:]))
    assert max(len(p) for p in parts) >= 300


def test_column_reads_back_in_chunks_and_by_rows(tmp_path):
    x = np.random.default_rng(0).integers(0, 255, (100, 32)).astype(np.uint8)
    c = Column(tmp_path, np.uint8, width=32)
    c.append(x[:40])
    c.append(x[40:])
    assert len(c) == 100
    assert np.array_equal(np.concatenate([p for _, p in c.chunks(33)]), x)
    assert [s for s, _ in c.chunks(33)] == [0, 33, 66, 99]
    assert np.array_equal(c.take([5, 99, 0]), x[[5, 99, 0]])
    with pytest.raises(IndexError, match="row 100"):
        c.take([100])
    assert list(tmp_path.iterdir()) == []  # an unnamed file: nothing to clean up, nothing to consume
    c.close()


def test_listing_sorted_in_runs_equals_the_sorted_list(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    names = [bytes(rng.integers(33, 127, rng.integers(1, 12)).astype(np.uint8)) + b"\0file" for _ in range(500)]
    names += [b"a/b\0file", b"a\0dirlink", b"a b\0error:Permission denied", "é/ü".encode() + b"\0file"]
    monkeypatch.setattr(sources, "LISTING_RUN", 7)
    listing = sources._Listing(tmp_path)
    for name in names:
        listing.add(name)
    listing.finish()
    assert len(listing.runs) == -(-len(names) // 7) and len(listing) == len(names)
    assert list(listing) == sorted(names)
    listing.close()


def test_exact_duplicates_on_disk_equal_those_in_memory(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    distinct = rng.integers(0, 256, (60, 32)).astype(np.uint8)
    distinct[10:20, :8] = distinct[0, :8]  # same first 8 bytes, different digests
    digests = distinct[rng.integers(0, len(distinct), 700)]
    expected = first_copies(digests)
    assert (expected >= 0).sum() > 600
    monkeypatch.setattr(spill, "RUN_RECORDS", 32)
    col = Column(tmp_path, np.uint8, width=32)
    col.append(digests)
    dup, n_dup = duplicate_column(col, tmp_path)
    assert dup.read(0, len(digests)).tolist() == expected.tolist() and n_dup == int((expected >= 0).sum())


def _hashes(rng: np.random.Generator, n: int) -> np.ndarray:
    """Hashes in clusters of a few flipped bits; the top bits are nearly always set, like a
    DCT hash's low frequencies, so partitions by the wrong bits would be uneven."""
    base = rng.integers(0, 2**63, n // 8, dtype=np.int64).astype(np.uint64) | np.uint64(0xF000_0000_0000_0000)
    h = base[rng.integers(0, len(base), n)]
    for _ in range(5):
        flip = rng.random(n) < 0.5
        h[flip] ^= np.uint64(1) << rng.integers(0, 60, int(flip.sum())).astype(np.uint64)
    h[: n // 10] = h[0]  # a crowded bucket: only its earliest MAX_BUCKET rows are kept
    return h


@pytest.mark.parametrize("partition_rows", [4096, 400, 60])
def test_close_pairs_by_partitions_equal_those_in_memory(tmp_path, monkeypatch, partition_rows):
    monkeypatch.setattr(contamination, "MAX_BUCKET", 20)
    rng = np.random.default_rng(partition_rows)
    hashes = _hashes(rng, 1500)
    exact_of = np.where(rng.random(len(hashes)) < 0.1, 0, -1)
    expected = contamination._close_pairs(hashes, exact_of < 0)
    assert len(expected) > 1000
    h, e = Column(tmp_path, np.uint64), Column(tmp_path, np.int64)
    h.append(hashes)
    e.append(exact_of)
    out = SortedRecords(tmp_path, 2, run_records=256)
    contamination.close_pair_records(h, e, out, tmp_path, partition_rows=partition_rows)
    got = np.unique(np.concatenate(list(out.sorted_chunks())), axis=0)
    assert got.tolist() == expected.tolist()


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def test_ingestion_with_everything_on_disk_is_byte_identical(tmp_path, monkeypatch):
    """A folder of nested and flat files, exact copies, brightened copies and bad files,
    ingested with the default sizes (everything fits one run and one partition) and with
    sizes that force dozens of listing runs, record runs and hash partitions."""
    from pipelines import builtin_data

    faces = builtin_data.faces(32)
    roots = Roots.under(tmp_path / "a")
    raw = roots.data / "faces" / "raw"
    for i in range(90):
        folder = raw / f"p{i % 4}" if i % 3 else raw
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:03d}.png").write_bytes(_png(faces[i][:, :, 0]))
    for i in range(0, 30, 3):
        (raw / f"copy_{i:03d}.png").write_bytes(_png(faces[i][:, :, 0]))
        brighter = ImageEnhance.Brightness(Image.fromarray(faces[i + 1][:, :, 0])).enhance(1.08)
        (raw / f"brighter_{i:03d}.png").write_bytes(_png(np.asarray(brighter)))
    (raw / "broken.png").write_bytes(b"\x89PNG not really")
    (raw / "empty.png").write_bytes(b"")
    sc = parse_scenario({"name": "faces", "data": {"source": "folder"}, "image": {"size": 32, "channels": 1}})
    names = ("table.csv", "quarantine.json", "manifest.json")

    first = ingest(sc, ScenarioPaths("faces", roots))
    before = {name: (first.manifest_path.parent / name).read_bytes() for name in names}
    monkeypatch.setattr(sources, "LISTING_RUN", 5)
    monkeypatch.setattr(spill, "RUN_RECORDS", 8)
    monkeypatch.setattr(contamination, "PARTITION_ROWS", 6)
    second = ingest(sc, ScenarioPaths("faces", roots))
    assert (first.n_images, first.n_duplicates, first.n_near_duplicates, first.n_quarantined) == (110, 10, 10, 2)
    for name in names:
        assert (second.manifest_path.parent / name).read_bytes() == before[name], name

    # Outlier scores from two worker processes, 16 rows per task, beside the near-duplicate
    # pass; then the same workers compare the near-duplicate candidates (batches of 3 pairs).
    pools = []
    real_wait = ingest_mod._CompareWorkers.wait

    def wait(self):
        pools.append(self.pool is not None)
        real_wait(self)
        pools.extend([self.here, self.confirmed_here, self.confirmed_there > 0])

    monkeypatch.setattr(ingest_mod._CompareWorkers, "wait", wait)
    monkeypatch.setattr(ingest_mod, "PARALLEL_SCORE_ROWS", 1)
    monkeypatch.setattr(contamination, "SCORE_CHUNK", 16)
    monkeypatch.setattr(contamination, "_PAIR_BATCH_BYTES", 3 * 32 * 32 * 32)
    monkeypatch.setenv("SCENARIO_GAN_DECODE_WORKERS", "2")
    third = ingest(sc, ScenarioPaths("faces", roots))
    assert pools == [True, 0, 0, True]  # every score chunk and every candidate batch computed by the workers
    for name in names:
        assert (third.manifest_path.parent / name).read_bytes() == before[name], name

    # Workers that die (killed as soon as they start): the ingesting process compares the
    # candidates, and scores what they did not, and nothing changes.
    real_init = ingest_mod._CompareWorkers.__init__

    def dying_workers(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        for proc in list(self.pool._processes.values()):
            proc.kill()

    monkeypatch.setattr(ingest_mod._CompareWorkers, "__init__", dying_workers)
    pools.clear()
    fourth = ingest(sc, ScenarioPaths("faces", roots))
    assert pools[0] is True and pools[2] > 0 and pools[3] is False  # every candidate batch compared here
    for name in names:
        assert (fourth.manifest_path.parent / name).read_bytes() == before[name], name

    # No workers, the scores from a thread of this process beside the near-duplicate pass.
    monkeypatch.setattr(ingest_mod._CompareWorkers, "__init__", real_init)
    monkeypatch.setattr(ingest_mod, "PARALLEL_SCORE_ROWS", 10**9)
    monkeypatch.setattr(ingest_mod, "THREAD_SCORE_ROWS", 1)
    threads = []
    real_confirm = ingest_mod._CompareWorkers.confirm

    def confirm(self, batches):
        threads.append(self.thread is not None)  # started before the candidates are compared
        yield from real_confirm(self, batches)

    monkeypatch.setattr(ingest_mod._CompareWorkers, "confirm", confirm)
    pools.clear()
    fifth = ingest(sc, ScenarioPaths("faces", roots))
    assert threads == [True] and pools[0] is False and pools[1] >= 1 and pools[2] > 0 and pools[3] is False
    for name in names:
        assert (fifth.manifest_path.parent / name).read_bytes() == before[name], name
    # Only the outputs are left: every spilled file was unnamed.
    assert sorted(p.name for p in second.manifest_path.parent.iterdir()) == ["images", "manifest.json", "quarantine.json", "table.csv"]


def test_json_lines_and_streamed_reports_are_the_bytes_of_json_bytes(tmp_path):
    """A report with lists kept in temporary files is written piece by piece with the
    same bytes as the report built in memory (indent 2, sorted keys, non-ASCII kept)."""
    from pipelines.io import Streamed, json_bytes, write_json
    from pipelines.spill import JsonLines

    values = ["a\nb", "é ü", 1.5, None, True, {"z": [1, 2], "a": "x"}, [], "\\x00"] * 3000  # > one 1 MB read
    spilled = JsonLines(tmp_path)
    for start in range(0, len(values), 7):
        spilled.extend(values[start : start + 7])
    spilled.extend([])
    assert len(spilled) == len(values) and list(spilled) == values and list(spilled) == values  # read again
    assert spilled.head(3) == values[:3]
    obj = {"b": Streamed(spilled, len(spilled)), "a": [], "c": Streamed([], 0), "d": {"e": Streamed(spilled, len(spilled)), "f": 1}}
    write_json(tmp_path / "report.json", obj)
    materialized = {"b": values, "a": [], "c": [], "d": {"e": values, "f": 1}}
    assert (tmp_path / "report.json").read_bytes() == json_bytes(materialized)
    spilled.close()
