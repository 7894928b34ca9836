"""The benchmark scripts still run (tiny settings); their numbers live in docs/BENCHMARKS.md."""

import json
import os

import pytest

from .conftest import require


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


@pytest.mark.slow  # one subprocess per variant (it measures peak memory per process)
def test_bench_ingest_quick(tmp_path):
    from benchmarks import bench_ingest

    out = tmp_path / "ingest.json"
    assert bench_ingest.main(["--quick", "--sizes", "60", "150", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["benchmark"] == "bench_ingest" and result["settings"]["sizes"] == [60, 150]
    for n, s in result["sizes"].items():
        p, q = s["pipeline"], s["pil"]
        assert p["n_images"] == int(n) and p["n_quarantined"] == 0 and p["validation_passed"]
        fresh = s["validate_fresh_process"]  # validation alone, in its own process, both expectation sets
        assert fresh["benchmark"]["passed"] and fresh["passing"]["passed"] and fresh["passing"]["n_kept"] == int(n)
        assert fresh["benchmark"]["validate_s"] > 0 and fresh["passing"]["validate_peak_growth_mb"] >= 0
        assert p["ingest_images_per_s"] > 0 and p["ingest_plus_validate_images_per_s"] > 0 and q["images_per_s"] > 0
        assert p["ingest_decode_s"] > 0 and p["ingest_after_decode_s"] > 0  # the decoding pass timed apart from the rest
        assert 0 < s["ratio_ingest_vs_pil"] < 100 and s["cpu_ratio_ingest_vs_pil"] > 0
        # a process's peak growth is part of its peak RSS (the median of each over the reps too)
        assert 0 <= p["ingest_peak_growth_mb"] < p["worker_peak_rss_mb"] and 0 <= q["peak_growth_mb"] < q["worker_peak_rss_mb"]
        assert s["pixels_identical"]  # both sides decode the same files to the same pixels
    sc = result["scaling"]
    assert sc["sizes"] == [60, 150] and sc["ingest_cpu_per_image_largest_over_smallest"] > 0 and "ingest_cost_linear" in sc
    assert result["machine"]["cpu_count"] == os.cpu_count()


def test_bench_augment_quick(tmp_path):
    from benchmarks import bench_augment

    out = tmp_path / "augment.json"
    assert bench_augment.main(["--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["benchmark"] == "bench_augment" and set(result["policies"]) == set(bench_augment.QUICK["policies"])
    for r in result["policies"].values():
        for v in bench_augment.VARIANTS:
            assert r[v]["images_per_s"] > 0 and r[v]["cpu_us_per_image"] > 0
        assert 0 < r["ratio_augment_batch_vs_bare"] < 100 and 0 < r["ratio_augment_step_vs_bare"] < 100
        assert r["transforms"] and len(r["reps_wall_cpu_s"]) == result["settings"]["reps"]
    assert result["machine"]["albumentations"]


def test_bench_gpu_cpu_smoke(tmp_path):
    from benchmarks import bench_gpu

    out = tmp_path / "gpu.json"
    assert bench_gpu.main(["--device", "cpu", "--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    st = result["settings"]
    assert result["benchmark"] == "bench_gpu" and st["resolution"] == 64 and st["channels_last"] and st["device"] == "cpu"
    assert set(result["results"]) == set(bench_gpu.VARIANTS) and st["variants"]["bf16"]["amp"] == "bf16"
    for per_batch in result["results"].values():
        for e in per_batch.values():
            assert e["images_per_s"] > 0 and e["s_per_step"] > 0
    assert set(result["ratios"]) == {"bf16_vs_fp32", "recipe_vs_plain_bf16"}
    assert all(r > 0 for per_b in result["ratios"].values() for r in per_b.values())
    import torch

    assert result["machine"]["torch"] == torch.__version__ and result["machine"]["cuda_available"] is torch.cuda.is_available()


def test_bench_gpu_without_cuda_says_so(capsys, monkeypatch):
    import torch

    from benchmarks import bench_gpu

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also where a GPU is present
    assert bench_gpu.main(["--quick"]) == bench_gpu.NO_CUDA_EXIT
    err = capsys.readouterr().err
    assert "no CUDA device" in err and "--device cpu" in err


@pytest.mark.slow  # starts the benchmark in a subprocess
def test_run_all_collects_results(tmp_path):
    from benchmarks import run_all

    assert run_all.main(["--out-dir", str(tmp_path), "--quick", "--only", "gpu"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    b = summary["benchmarks"]
    assert b["gpu"]["status"] == "ok" and b["gpu"]["exit_code"] == 0
    assert json.loads((tmp_path / b["gpu"]["json"]).read_text())["benchmark"] == "bench_gpu"
    assert {b[n]["status"] for n in run_all.ORDER if n != "gpu"} == {"skipped"}


def test_bench_scale_quick(tmp_path):
    from benchmarks import bench_scale

    out = tmp_path / "scale.json"
    assert bench_scale.main(["--quick", "--tmp", str(tmp_path), "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    t = r["train"]
    assert set(t["variants"]) == {"memory@300", "shards@300", "shards@3000"}
    assert all(v["images_per_s"] > 0 and v["peak_growth_mb"] >= 0 for v in t["variants"].values())
    assert t["ratio_largest_over_smallest"] > 0 and t["shard_bytes_largest"] > 3000 * 32 * 32 * 3
    assert {int(n): a["n_written"] for n, a in r["augment"].items()} == {500: 1000, 2000: 4000}  # one copy of every image
    d = r["dvc"]
    require("skipped" not in d, f"DVC's tool environment for the shard test ({d.get('skipped')})", "python3 -m venv .dvc-venv && .dvc-venv/bin/pip install 'dvc==3.67.1'", flag="SCENARIO_GAN_REQUIRE_DVC")
    # 10 images inserted in the middle: one or two shards change, not all of them
    assert d["shards_before"] >= 2 and 1 <= d["shards_changed"] <= 2 and d["dvc_new_cache_bytes"] < d["dataset_bytes"]


@pytest.mark.slow
def test_bench_orchestration_quick(tmp_path):
    from benchmarks.bench_orchestration import main

    out = tmp_path / "orch.json"
    assert main(["--quick", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert {"direct", "direct_cold", "dagster"} <= set(r["seconds_median"]) and "stages" not in r["seconds_median"]  # --quick: dvc runs the stages
    assert all(v > 0 for v in r["seconds_median"].values())
    procs = r["stage_processes"]  # --quick: params and validate under -X importtime
    assert set(procs) == {"stage params", "stage validate", "record validate"}
    assert procs["stage params"]["heavy_imports"] == [] and "great_expectations" in procs["stage validate"]["heavy_imports"]
    assert "dagster" not in procs["stage validate"]["heavy_imports"] and "dagster" in procs["record validate"]["heavy_imports"]
    assert all(0 < v["import_s"] < v["process_s"] for v in procs.values())
    dvc_venv = "create it: python3 -m venv .dvc-venv && .dvc-venv/bin/pip install 'dvc==3.67.1'"
    require("dvc" in r["seconds_median"], f"DVC's tool environment for the DVC variants ({r.get('note')})", dvc_venv, flag="SCENARIO_GAN_REQUIRE_DVC")
    assert r["dvc_noop_seconds_median"] > 0 and r["ratio_to_direct_median"]["dvc"] > 0
    # the chain's later stages ran forked from the warm server its first asset stage started
    assert min(r["dvc_stages_served_warm"]) >= 4, r["dvc_stages_served_warm"]


@pytest.mark.slow  # ingests and validates the four shipped scenarios
def test_bench_contamination_quick(tmp_path):
    from benchmarks import bench_contamination

    out = tmp_path / "contamination.json"
    assert bench_contamination.main(["--quick", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["benchmark"] == "bench_contamination" and r["settings"]["outlier_threshold"] > 0
    for name in ("nonfaces_among_faces", "photo_patches_among_faces", "histology_among_textures"):
        assert 0 <= r["cases"][name]["false_positive_mean"] <= r["cases"][name]["flagged_mean"] <= 1
    assert set(r["clean"]) == {"faces", "textures", "histology", "digits"} and all(c["passed"] for c in r["clean"].values())
    # no distinct images paired, JPEG q90 copies caught, 1 px shifts not (docs/BENCHMARKS.md)
    near = {name: (c["distinct_images_paired"], c["edited_copies_caught"]["jpeg90"], c["edited_copies_caught"]["shift1"]) for name, c in r["near_duplicates"].items()}
    assert near == {name: (0, 1.0, 0.0) for name in ("faces", "digits", "textures", "histology")}, near
    assert all(row["total"] > 0 for c in r["cost"].values() for row in c["cpu_s_per_1k_images"].values())


def test_bench_train_augment_quick(tmp_path):
    from benchmarks import bench_train_augment

    out = tmp_path / "train_augment.json"
    assert bench_train_augment.main(["--quick", "--scenarios", "faces", "digits", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    faces, digits = result["scenarios"]["faces"], result["scenarios"]["digits"]
    assert faces["applies"]["reals"] == "HorizontalFlip" and "affine" in faces["applies"]["reals+d"]
    assert digits["applies"]["reals"].startswith("nothing")  # digits declare no symmetry
    for r in (faces, digits):
        assert r["ratio_to_plain"]["plain"] == 1.0 and all(ms > 0 for ms in r["ms_per_step"].values())


@pytest.mark.slow  # the real steps of one scenario, twice
def test_bench_ablation_quick(tmp_path):
    from benchmarks import bench_ablation

    out = tmp_path / "ablation.json"
    assert bench_ablation.main(["--quick", "--scenarios", "faces", "--variants", "none", "both", "--threads", "1", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["scenarios"]["faces"]
    assert rows["none"]["transforms"] == [] and rows["none"]["ada_p"] is None
    assert rows["both"]["ada"] is True and "HorizontalFlip" in rows["both"]["transforms"] and rows["both"]["ada_p"] is not None
    assert all(r["steps"] == 4 and r["fid_over_floor"] > 0 for r in rows.values())


def test_ablation_variants_change_only_the_augmentation():
    from benchmarks.bench_ablation import TRANSLATION, variant_augmentation

    faces = {"invariances": ["horizontal_flip"], "transforms": [{"name": "HorizontalFlip"}, {"name": "Affine", "params": {}}]}
    assert variant_augmentation(faces, "none")["transforms"] == []
    assert variant_augmentation(faces, "albumentations") == {**faces, "ada": False}
    assert [t["name"] for t in variant_augmentation(faces, "ada")["transforms"]] == ["Affine"]
    histology = {"invariances": ["horizontal_flip"], "transforms": [{"name": "HorizontalFlip"}]}
    assert variant_augmentation(histology, "ada")["transforms"] == [TRANSLATION]  # something for ADA to adapt
    assert variant_augmentation(histology, "both") == {**histology, "transforms": [{"name": "HorizontalFlip"}, TRANSLATION], "ada": True}


@pytest.mark.slow  # the real steps of one scenario, twice
def test_bench_privacy_quick(tmp_path):
    from benchmarks import bench_privacy

    out = tmp_path / "privacy.json"
    assert bench_privacy.main(["--quick", "--scenario", "histology", "--epsilons", "inf", "8", "--threads", "1", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert rows["inf"]["epsilon_spent"] is None and rows["inf"]["noise_multiplier"] is None
    assert 0 < rows["8"]["epsilon_spent"] <= 8 and rows["8"]["noise_multiplier"] > 0 and rows["8"]["delta"] == 1e-5
    assert all(r["steps"] == 4 and 0 <= r["membership_auc"] <= 1 for r in rows.values())


def test_privacy_rows_change_only_the_discriminator_and_the_budget():
    from benchmarks.bench_privacy import variant_gan

    gan = {"model": {"arch": "dcgan", "width": 48}, "train": {"steps": 6000}}
    assert variant_gan(gan, "default", 1e-5) == gan
    assert variant_gan(gan, "inf", 1e-5) == {"model": {"arch": "dcgan", "width": 48, "d_norm": "group"}, "train": {"steps": 6000}}
    assert variant_gan(gan, "3", 1e-5)["train"] == {"steps": 6000, "privacy": {"epsilon": 3.0, "delta": 1e-5}}
