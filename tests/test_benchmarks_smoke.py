"""The benchmark scripts still run (tiny settings); their numbers live in docs/BENCHMARKS.md."""

import json

import pytest


@pytest.mark.slow
def test_bench_train_quick(tmp_path):
    from benchmarks import bench_train

    out = tmp_path / "train.json"
    assert bench_train.main(["--quick", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result and "machine" in json.dumps(result)


@pytest.mark.slow
def test_bench_quality_tiny(tmp_path):
    from benchmarks import bench_quality

    out = tmp_path / "quality.json"
    assert bench_quality.main(["--budgets", "3", "--variants", "seed-dcgan", "recipe", "--n-fake", "60", "--threads", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["variant"] for r in result["rows"]] == ["seed-dcgan", "recipe"]
    assert result["noise"]["fd"] > result["floor_50_vs_50"]["fd"]  # the ruler tells noise from real faces
