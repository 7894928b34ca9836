"""The sharded image datasets every data step writes and training reads
(:mod:`gan_core.shards`): lazy reads equal the array, boundaries follow the content, writes
are atomic, and damage is a clear error naming the file."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest

from gan_core.shards import INDEX_FILE, ShardError, ShardWriter, copy_dataset, dataset_digest, open_images, write_images


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (3000, 8, 8, 3), dtype=np.uint8)


def test_lazy_reads_equal_the_array(images, tmp_path):
    write_images(tmp_path / "d", images, target=256)
    d = open_images(tmp_path / "d")
    assert d.shape == images.shape and len(d) == 3000 and len(d._index["shards"]) > 4
    np.testing.assert_array_equal(d.load(), images)
    rows = np.random.default_rng(1).integers(0, 3000, 500)  # unsorted, repeated, across shards
    np.testing.assert_array_equal(d.take(rows), images[rows])
    np.testing.assert_array_equal(d[-1], images[-1])
    np.testing.assert_array_equal(d[100:900:7], images[100:900:7])
    mask = np.zeros(3000, bool)
    mask[::3] = True
    np.testing.assert_array_equal(d[mask], images[mask])
    sub = d.subset(np.arange(2999, -1, -2)).subset([0, 5, 5, 1])  # a view of a view
    np.testing.assert_array_equal(sub.load(), images[::-1][::2][[0, 5, 5, 1]])
    np.testing.assert_array_equal(np.concatenate(list(d.chunks(700))), images)
    np.testing.assert_array_equal(np.asarray(d), images)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(sub)).load(), sub.load())  # DataLoader workers
    with pytest.raises(IndexError):
        d.take([3000])


def test_boundaries_follow_the_content(images, tmp_path):
    """Inserting 10 images in the middle rewrites the shard that holds them (and at most a
    neighbour); every other shard keeps its name and bytes, so DVC stores and pushes
    only those. Rewriting the same images writes no file at all."""
    write_images(tmp_path / "d", images, target=256)
    before = {s["file"] for s in open_images(tmp_path / "d")._index["shards"]}
    mtimes = {f: os.stat(tmp_path / "d" / f).st_mtime_ns for f in before}
    with ShardWriter(tmp_path / "d", images.shape[1:], target=256) as w:
        w.add(images)
        w.close()
        assert w._new == []  # nothing written
    assert {f: os.stat(tmp_path / "d" / f).st_mtime_ns for f in before} == mtimes
    new = np.random.default_rng(5).integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    grown = np.concatenate([images[:1500], new, images[1500:]])
    write_images(tmp_path / "d", grown, target=256)
    after = {s["file"] for s in open_images(tmp_path / "d")._index["shards"]}
    assert 1 <= len(after - before) <= 2 < len(before)
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == sorted([INDEX_FILE, *after])  # old shards removed
    np.testing.assert_array_equal(open_images(tmp_path / "d").load(), grown)
    # Positional boundaries would have moved every shard after the insertion.
    assert len(before & after) >= len(before) - 2


def _reference_boundaries(digests: list[str], target: int) -> list[int]:
    """Shard sizes by the rule, one image at a time: a shard ends after an image whose
    digest prefix is 0 modulo ``target`` once it holds ``target // 4`` images, or when it
    holds ``4 * target``."""
    sizes, rows = [], 0
    for d in digests:
        rows += 1
        if (rows >= max(1, target // 4) and int(d[:8], 16) % target == 0) or rows >= 4 * target:
            sizes.append(rows)
            rows = 0
    return sizes + ([rows] if rows else [])


@pytest.mark.parametrize("block", [1, 7, 64, 3000])
def test_blocks_of_any_size_give_the_same_shards(images, tmp_path, block):
    """Images added in blocks (as ingestion adds a decode worker's chunk) end the shards
    exactly where one image at a time would; a small target makes both rules (content
    boundary, full buffer) fire many times, some inside a block."""
    import hashlib

    digests = [hashlib.sha256(im.tobytes()).hexdigest() for im in images]
    target = 16
    with ShardWriter(tmp_path / "d", images.shape[1:], target=target) as w:
        for start in range(0, len(images), block):
            w.add(images[start : start + block], digests[start : start + block])
        w.close()
    sizes = [s["rows"] for s in open_images(tmp_path / "d")._index["shards"]]
    expected = _reference_boundaries(digests, target)
    assert sizes == expected and max(expected) == 4 * target and min(expected[:-1]) < target  # both rules fired
    np.testing.assert_array_equal(open_images(tmp_path / "d").load(), images)


def test_a_failed_write_leaves_the_previous_dataset(images, tmp_path):
    write_images(tmp_path / "d", images[:1000], target=128)
    digest, files = dataset_digest(tmp_path / "d"), sorted(os.listdir(tmp_path / "d"))
    with pytest.raises(RuntimeError, match="crash"):
        with ShardWriter(tmp_path / "d", images.shape[1:], target=128) as w:
            w.add(images[1000:])  # several new shards on disk
            raise RuntimeError("crash")
    assert dataset_digest(tmp_path / "d") == digest and sorted(os.listdir(tmp_path / "d")) == files
    np.testing.assert_array_equal(open_images(tmp_path / "d").load(), images[:1000])


def test_copy_whole_keeps_files_and_subset_streams(images, tmp_path):
    write_images(tmp_path / "a", images, target=256, columns={"source_index": np.arange(3000) % 7})
    copy_dataset(tmp_path / "a", tmp_path / "b")
    assert {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()} == {p.name: p.read_bytes() for p in (tmp_path / "b").iterdir()}
    copy_dataset(tmp_path / "a", tmp_path / "c", rows=[7, 3, 2999])
    np.testing.assert_array_equal(open_images(tmp_path / "c").load(), images[[7, 3, 2999]])
    assert open_images(tmp_path / "b").column("source_index").tolist() == (np.arange(3000) % 7).tolist()
    assert open_images(tmp_path / "b").subset([8, 9]).column("source_index").tolist() == [1, 2]


def test_damage_is_a_clear_error_naming_the_file(images, tmp_path):
    with pytest.raises(ShardError, match=r"d/index.json is missing.*rerun"):
        open_images(tmp_path / "d")
    write_images(tmp_path / "d", images, target=256)
    index = json.loads((tmp_path / "d" / INDEX_FILE).read_text())
    first, second = (tmp_path / "d" / s["file"] for s in index["shards"][:2])
    first.unlink()
    with pytest.raises(ShardError, match=f"{first.name} is missing although .*index.json lists it"):
        open_images(tmp_path / "d").load()
    second.write_bytes(second.read_bytes()[:-100])  # cut short
    with pytest.raises(ShardError, match=f"{second.name} is shorter"):
        open_images(tmp_path / "d").take([index["shards"][0]["rows"] + index["shards"][1]["rows"] - 1])
    (tmp_path / "d" / INDEX_FILE).write_text("{not json")
    with pytest.raises(ShardError, match="index.json is not valid JSON"):
        open_images(tmp_path / "d")
    with pytest.raises(ValueError, match=r"uint8 \(8, 8, 3\)"):
        ShardWriter(tmp_path / "e", (8, 8, 3)).add(np.zeros((2, 8, 8, 1), np.uint8))


def test_a_column_given_in_chunks_is_the_same_file_as_from_an_array(images, tmp_path):
    """augment writes its index columns in chunks (never the whole column in memory):
    the files, names and index.json are byte for byte those written from arrays."""
    n = len(images)
    values = np.tile(np.arange(n // 2 + 1, dtype=np.int64), 2)[:n]
    folders = []
    for how in ("array", "chunks"):
        folder = tmp_path / how
        with ShardWriter(folder, images.shape[1:]) as w:
            w.add(images)
            w.close(columns={"source_index": values if how == "array" else (lambda: (values[a : a + 7] for a in range(0, n, 7)))})
        folders.append(folder)
    assert (folders[0] / INDEX_FILE).read_bytes() == (folders[1] / INDEX_FILE).read_bytes()
    assert sorted(p.name for p in folders[0].iterdir()) == sorted(p.name for p in folders[1].iterdir())
    assert np.array_equal(open_images(folders[1]).column("source_index"), values)
    with ShardWriter(tmp_path / "short", images.shape[1:]) as w:
        w.add(images)
        with pytest.raises(ValueError, match="'source_index' has 7 values, expected"):
            w.close(columns={"source_index": lambda: iter([values[:7]])})
        w.abort()
