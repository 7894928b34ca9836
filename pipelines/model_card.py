"""Model card: one Markdown file beside each trained model,
``models/<scenario>/MODEL_CARD.md``, that answers "which raw data, params, code and run
produced this model, and how good is it?".

The evaluation step writes it last, from what the steps wrote before it:

    data/<scenario>/ingested/manifest.json, quarantine.json   source, counts, quarantine reasons
    data/<scenario>/validated/report.json                      expectations and their results
    data/<scenario>/augmented/pipeline.json, policy.json       the real-image pipeline, the ops on D's input
    models/<scenario>/split.json, summary.json                 held-out split, the training run
    models/<scenario>/generator.safetensors                    the config it was trained with, what training saw
    the evaluation's headline, quality and memorization dicts   metrics, audit, promotion

plus DVC's content hashes of the data directories and the model
(:func:`pipelines.dvcio.dvc_hash`, the numbers ``dvc.lock`` records) and the git commit
of the project. The card is a function of those inputs only: no timestamps and no
absolute paths (paths are relative to the project base, the parent of the data root),
so evaluating the same model on the same commit again gives a byte-identical file. An
input that is missing (e.g. data restored only in part) is named in the card instead of
failing the evaluation.

    from pipelines.model_card import write_model_card
    write_model_card(scenario, paths, headline, quality, memorization)   # -> models/<s>/MODEL_CARD.md
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from .dvcio import dvc_hash, stage_name
from .io import atomic_write, validation_summary_path
from .lineage import NOT_A_GIT_CHECKOUT, code_version
from .paths import ScenarioPaths
from .scenario import MEDICAL_MAX_MEMBERSHIP_AUC, Scenario

MODEL_CARD_FILE = "MODEL_CARD.md"
GENERATOR_FILE = "generator.safetensors"
# Files the pipeline itself rewrites: their changes are results, not changes to the code.


class ModelCardError(RuntimeError):
    """An input of the model card exists but cannot be read."""


def model_card_path(paths: ScenarioPaths) -> Path:
    """Where the card of ``paths.name`` lives: ``models/<scenario>/MODEL_CARD.md``."""
    return paths.model / MODEL_CARD_FILE


def project_base(paths: ScenarioPaths) -> Path:
    """The project directory that holds ``data/``, ``models/`` and ``metrics/``."""
    return paths.roots.data.parent


def write_model_card(
    scenario: Scenario,
    paths: ScenarioPaths,
    headline: dict[str, Any],
    quality: dict[str, Any],
    memorization: dict[str, Any],
    verdict: dict[str, Any] | None = None,
    privacy: dict[str, Any] | None = None,
) -> Path:
    """Write ``models/<scenario>/MODEL_CARD.md`` atomically and return its path.

    ``headline`` is what the evaluation step writes to ``metrics/<scenario>.json``;
    ``quality`` and ``memorization`` are :func:`gan_core.evaluate.evaluate_generator`'s
    result, ``verdict`` :meth:`gan_core.verdict.Verdict.to_dict` (every check of the
    promotion bar), ``privacy`` the membership-inference audit
    (:func:`gan_core.privacy.membership_inference_audit`). The card lives beside ``generator.safetensors`` and links the
    sample grids in ``eval/`` relatively, so it renders wherever the model directory
    is copied."""
    text = render_model_card(scenario, paths, headline, quality, memorization, verdict, privacy)
    return atomic_write(model_card_path(paths), text.encode("utf-8"))


def render_model_card(
    scenario: Scenario,
    paths: ScenarioPaths,
    headline: dict[str, Any],
    quality: dict[str, Any],
    memorization: dict[str, Any],
    verdict: dict[str, Any] | None = None,
    privacy: dict[str, Any] | None = None,
) -> str:
    """The Markdown text :func:`write_model_card` writes (see there)."""
    base = project_base(paths)
    card = model_card_path(paths)
    name = scenario.name
    lines = [f"# Model card: {name} ({scenario.domain})", ""]
    if scenario.description:
        lines += [scenario.description, ""]
    lines += [
        f"A GAN generator for the scenario `{name}` (domain `{scenario.domain}`), "
        f"{scenario.image.size}×{scenario.image.size} px, {scenario.image.channels} channel{'s' if scenario.image.channels > 1 else ''}. "
        f"Written by the evaluation step (`{stage_name('evaluate', name)}`); paths are relative to the project directory.",
        "",
    ]
    lines += _promotion_section(headline, verdict)
    lines += _samples_section(paths, card)
    lines += _data_section(scenario, paths, base)
    lines += _validation_section(paths, base)
    lines += _augmentation_section(paths, base)
    lines += _parameters_section(scenario, paths, base)
    lines += _training_section(paths, base)
    lines += _metrics_section(headline, quality, paths, base)
    lines += _memorization_section(headline, memorization)
    lines += _privacy_section(headline, privacy or {}, paths)
    lines += _generator_section(headline, paths, base)
    lines += _reproduce_section(name, paths, base)
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- #
# Reading the steps' files
# --------------------------------------------------------------------------- #
def _rel(path: Path, start: Path) -> str:
    """``path`` relative to ``start``, POSIX style (never an absolute path)."""
    return Path(os.path.relpath(path, start)).as_posix()


def _read_json(path: Path) -> Any | None:
    """The JSON in ``path``, or None when the file does not exist."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelCardError(f"{path} is not valid JSON ({e}); rerun the step that writes it") from None


def _missing(path: Path, base: Path) -> str:
    return f"_Not recorded: `{_rel(path, base)}` is missing (run or `dvc pull` the step that writes it)._"


def _hash(path: Path) -> str:
    try:
        return f"`{dvc_hash(path)}`"
    except FileNotFoundError:
        return "_missing_"


def _num(value: Any, fmt: str = ".4f") -> str:
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return format(value, fmt)


def _inline_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(", ", ": "))


def _cell(text: Any) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


# --------------------------------------------------------------------------- #
# Sections
# --------------------------------------------------------------------------- #
def _data_section(scenario: Scenario, paths: ScenarioPaths, base: Path) -> list[str]:
    out = ["## Data", ""]
    manifest = _read_json(paths.ingested / "manifest.json")
    if manifest is None:
        out += [_missing(paths.ingested / "manifest.json", base), ""]
    else:
        src = manifest.get("source", {})
        kind = src.get("type", scenario.data.source)
        if kind == "builtin":
            where = f"built-in images `{src.get('name', scenario.data.builtin)}`"
        else:
            p = src.get("path")
            where = f"{kind} `{_rel(paths.roots.data / p, base)}`" if p else kind
            if kind == "npz":
                where += f", key `{src.get('key', scenario.data.npz_key)}`"
                if src.get("sha256"):
                    where += f", sha256 `{src['sha256']}`"
        out.append(f"- Source: {where}" + (f" (first {manifest['limit']} images)" if manifest.get("limit") else ""))
        out.append(f"- Images ingested: {manifest.get('n_images')}")
        quarantine = _read_json(paths.ingested / "quarantine.json")
        if quarantine is None:
            out.append(f"- Quarantined: {manifest.get('n_quarantined')} (`{_rel(paths.ingested / 'quarantine.json', base)}` is missing)")
        else:
            reasons = Counter(q.get("reason", "unknown") for q in quarantine)
            detail = f" ({', '.join(f'{r}: {n}' for r, n in sorted(reasons.items()))})" if reasons else ""
            out.append(f"- Quarantined: {len(quarantine)}{detail}; each file and reason in `{_rel(paths.ingested / 'quarantine.json', base)}`")
        out.append(f"- Duplicates (same pixels as an earlier image): {manifest.get('n_duplicates')}")
    aug = _read_json(paths.augmented / "manifest.json")
    if aug is not None:
        copies = aug.get("offline_copies", 0)
        made = f"{aug.get('n_original')} originals + {copies} augmented cop{'y' if copies == 1 else 'ies'} of each" if copies else "the validated images, augmented per batch"
        out.append(f"- Training data: {aug.get('n_images')} rows ({made})")
    split = _read_json(paths.model / "split.json")
    if split is None:
        out.append(f"- Held out for evaluation: unknown (`{_rel(paths.model / 'split.json', base)}` is missing)")
    else:
        held = len(split.get("heldout_originals", []))
        out.append(
            f"- Held out for evaluation: {held} original images ({_num(split.get('fraction'), '.0%')}, seed {split.get('seed')}) "
            f"with their augmented copies; training used {split.get('n_train_rows')} rows"
        )
    out += [
        "",
        "Content hashes (DVC md5, as recorded in `dvc.lock`):",
        "",
        "| data | path | hash |",
        "|---|---|---|",
    ]
    for label, p in (("ingested", paths.ingested), ("validated", paths.validated), ("augmented", paths.augmented)):
        out.append(f"| {label} | `{_rel(p, base)}` | {_hash(p)} |")
    return out + [""]


def _validation_section(paths: ScenarioPaths, base: Path) -> list[str]:
    out = ["## Validation", ""]
    report_path = paths.validated / "report.json"
    report = _read_json(validation_summary_path(paths.validated))
    if report is None:
        return out + [_missing(report_path, base), ""]
    verdict = "**Passed**" if report.get("passed") else "**Failed**"
    set_aside = report.get("n_set_aside") or 0
    aside_file = paths.validated / ((report.get("set_aside") or {}).get("file") or "set_aside.json")
    out += [
        f"{verdict}: training starts only when every blocking expectation passes (great-expectations "
        f"{report.get('great_expectations')}, over the {report.get('n_rows')} rows of the per-image table; "
        f"the failing files of each expectation are in `{_rel(report_path, base)}`). "
        + (f"{set_aside} image(s) were set aside by the expectations marked `set_aside` and are listed, with the "
           f"expectation and the value, in `{_rel(aside_file, base)}`; {report.get('n_kept')} were kept." if set_aside else "No image was set aside."),
        "",
        "| expectation | arguments | on failure | result | unexpected |",
        "|---|---|---|---|---|",
    ]
    for r in report.get("results", []):
        result = "pass" if r.get("success") else ("set aside" if r.get("on_failure") == "set_aside" else "**fail**")
        action = r.get("on_failure") or ("block" if r.get("blocking") else "warn")
        out.append(
            f"| `{_cell(r.get('expectation'))}` | `{_cell(_inline_json(r.get('kwargs', {})))}` | {action} "
            f"| {result} | {r.get('unexpected_count', 0)} |"
        )
    return out + [""]


def _transform_lines(t: dict[str, Any], depth: int) -> list[str]:
    cls = t.get("__class_fullname__", "?")
    children = t.get("transforms")
    params = {k: v for k, v in t.items() if k not in ("__class_fullname__", "transforms", "p")}
    line = f"{'  ' * depth}- `{cls}` (p={_num(t.get('p'), 'g')})"
    if children is None and params:
        line += f": `{_inline_json(params)}`"
    out = [line]
    for c in children or []:
        out += _transform_lines(c, depth + 1)
    return out


def _op_text(op: dict[str, Any]) -> str:
    params = ", ".join(f"{k} {_inline_json(v)}" for k, v in sorted(op.items()) if k not in ("op", "p"))
    return f"`{op.get('op')}` (p={_num(op.get('p'), 'g')}{', ' + params if params else ''})"


def _augmentation_section(paths: ScenarioPaths, base: Path) -> list[str]:
    """What training saw: the real images' transforms (per batch or offline copies) and
    the ops on D's input, as recorded in the generator file (falling back to the
    augment step's ``policy.json``)."""
    from gan_core.checkpoint import CheckpointError, load_tensors

    out = ["## Augmentation: what training saw", ""]
    pipeline_path, policy_path = paths.augmented / "pipeline.json", paths.augmented / "policy.json"
    pipeline, policy = _read_json(pipeline_path), _read_json(policy_path)
    if pipeline is None or policy is None:
        return out + [_missing(pipeline_path if pipeline is None else policy_path, base), ""]
    try:
        _, gen_meta = load_tensors(paths.model / GENERATOR_FILE)
    except CheckpointError:
        gen_meta = {}
    saw = gen_meta.get("real_transform") or {"reals": policy.get("reals", {}), "discriminator": policy.get("discriminator", {})}
    reals, disc = saw.get("reals", {}), saw.get("discriminator", {})
    meta = pipeline.get("scenario_gan", {})
    transform = pipeline.get("transform", {})
    steps = transform.get("transforms", []) if transform.get("__class_fullname__") == "Compose" else [transform]
    out += [
        f"**Real images** ({reals.get('applied', 'none')}): albumentations {pipeline.get('__version__')}, seed {meta.get('seed')}, "
        f"serialized in `{_rel(pipeline_path, base)}`. G learns what these look like, so only symmetries the scenario declares "
        "(`augmentation.invariances`) are applied here.",
        "",
    ]
    out += [line for t in steps for line in _transform_lines(t, 0)] or ["- none"]
    ops = disc.get("ops") or []
    ada = disc.get("ada")
    final_p = gen_meta.get("ada_p")
    out += [
        "",
        "**D's input, real and generated images alike** (differentiable, so G is not taught them"
        + (f"; ADA on: each op fires with p x ada_p, ada_p adapted towards r_t = {_num((gen_meta.get('config') or {}).get('train', {}).get('ada_target'), 'g')}, final ada_p {_num(final_p, '.3f')}" if ada else "")
        + "):",
        "",
    ]
    out += [f"- {_op_text(op)}" for op in ops] or ["- none"]
    routes = policy.get("routes") or []
    if routes:
        out += ["", "Where each listed transform went (`augmentation.transforms`, routed by the augment step):", "", "| # | transform | to | why |", "|---|---|---|---|"]
        out += [f"| {r.get('index')} | `{r.get('name')}` | {r.get('to')} | {_cell(r.get('why'))} |" for r in routes]
    notes = (_read_json(paths.augmented / "manifest.json") or {}).get("notes") or []
    if notes:
        out += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    return out + [""]


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def _parameters_section(scenario: Scenario, paths: ScenarioPaths, base: Path) -> list[str]:
    from gan_core.checkpoint import CheckpointError, load_tensors

    out = ["## Parameters", ""]
    gen_path = paths.model / GENERATOR_FILE
    try:
        _, meta = load_tensors(gen_path)
    except CheckpointError as e:
        raise ModelCardError(f"cannot read the training config from {gen_path}: {e}") from None
    trained = json.loads(json.dumps(meta.get("config", {})))
    ops = ((_read_json(paths.augmented / "policy.json") or {}).get("discriminator") or {}).get("ops")
    cpu = scenario.gan_config(gpu=False, augment=ops).model_dump(mode="json")
    gpu = scenario.gan_config(gpu=True, augment=ops).model_dump(mode="json")
    profile = (_read_json(paths.model / "summary.json") or {}).get("profile")
    if profile in ("cpu", "gpu") and trained == (gpu if profile == "gpu" else cpu):
        blocks = "`gan` block with its `gpu` overrides" if profile == "gpu" else "`gan` block"
        budget = f"the `{profile}` profile (`profile` in scenarios/_project.yaml, a parameter in dvc.lock): the scenario's {blocks}"
    elif trained == cpu and trained == gpu:
        budget = "the scenario's `gan` block (it sets no separate `gpu` budget)"
    elif trained == cpu:
        budget = "the CPU budget: the scenario's `gan` block"
    elif trained == gpu:
        budget = "the GPU budget: the scenario's `gan` block with its `gpu` overrides"
    else:
        flat_t, flat_c = _flatten(trained), _flatten(cpu)
        keys = sorted(k for k in set(flat_t) | set(flat_c) if flat_t.get(k) != flat_c.get(k))
        budget = (
            "neither of the scenario's budgets (`gan`, `gan` + `gpu`): the generator was trained with "
            f"another config; keys that differ from `gan`: {', '.join(f'`{k}`' for k in keys)}"
        )
    out += [
        f"Trained with {budget}. The config below is the one stored in `{_rel(gen_path, base)}`.",
        "",
        "```yaml",
        yaml.safe_dump(trained, sort_keys=True, default_flow_style=False).rstrip("\n"),
        "```",
        "",
    ]
    return out


def _training_section(paths: ScenarioPaths, base: Path) -> list[str]:
    out = ["## Training", ""]
    summary_path = paths.model / "summary.json"
    s = _read_json(summary_path)
    if s is None:
        return out + [_missing(summary_path, base), ""]
    out += [
        f"- Steps: {s.get('steps')} ({s.get('images_seen')} images seen)",
        f"- Throughput: {_num(s.get('images_per_s'), '.1f')} images/s",
        f"- Wall time: {_num(s.get('wall_s'), '.1f')} s" + (f" (since the resume from step {s['resumed_from']})" if s.get("resumed_from") is not None else ""),
        f"- Rollbacks after a diverged loss: {s.get('rollbacks')}",
    ]
    logs = s.get("final_logs") or {}
    if logs:
        out.append("- Final losses: " + ", ".join(f"{k} {_num(v)}" for k, v in sorted(logs.items())))
    return out + [""]


def _metrics_section(headline: dict[str, Any], quality: dict[str, Any], paths: ScenarioPaths, base: Path) -> list[str]:
    q = quality
    floor = (_read_json(paths.ruler / "ruler.json") or {}).get("floor") or {}
    kid = f"{_num(q.get('kid_mean', headline.get('kid')))} ± {_num(q.get('kid_std'))}"
    kid_floor = f"{_num(q.get('kid_floor_mean'))} ± {_num(q.get('kid_floor_std'))}"
    out = [
        "## Metrics",
        "",
        f"Scored against the {q.get('n_real_train')} training images with {q.get('n_fake')} samples; the floor is the same metric "
        f"for the {q.get('n_heldout')} held-out real images, the best a model can expect. Feature network: "
        f"`{q.get('extractor')}` ({q.get('feature_dim')} features), the scenario's ruler `{_rel(paths.ruler, base)}` (trained on its "
        f"training images, DVC md5 {_hash(paths.ruler)}): numbers from another ruler, sample count or split "
        f"are not comparable. All numbers: `{_rel(paths.metrics, base)}`, "
        f"`{_rel(paths.evaluation / 'metrics.json', base)}`.",
        "",
        "| metric | model | floor (held-out real) |",
        "|---|---|---|",
        f"| FID | {_num(headline.get('fid'))} | {_num(headline.get('fid_floor'))} |",
        f"| FID / floor | {_num(headline.get('fid_over_floor'))} | 1 |",
        f"| KID ({q.get('kid_subsets')} subsets of {q.get('kid_subset_size')}) | {kid} | {kid_floor} |",
        f"| precision (k={q.get('k')}) | {_num(headline.get('precision'))} | {_num(q.get('precision_floor'))} |",
        f"| recall (k={q.get('k')}) | {_num(headline.get('recall'))} | {_num(q.get('recall_floor'))} |",
        f"| classifier two-sample accuracy (0.5 = indistinguishable) | {_num(headline.get('c2st_accuracy'))} | {_num(floor.get('c2st_accuracy'))} |",
        f"| sharpness ratio (1 = as much fine detail as the reals) | {_num(headline.get('sharpness_ratio'))} | {_num(floor.get('sharpness_ratio'))} |",
        "",
    ]
    return out


def _memorization_section(headline: dict[str, Any], m: dict[str, Any]) -> list[str]:
    quantile = m.get("quantile", 0.05)
    neighbours = m.get("neighbours", 5)
    share = headline.get("near_copy_share", m.get("near_copy_share"))
    return [
        "## Memorization audit",
        "",
        f"- Near-copy share: {_num(share)} ({m.get('near_copy_count')} of {m.get('n_samples')} samples; "
        f"{m.get('exact_copy_count')} exact copies) against {m.get('n_train')} training images, in `{m.get('extractor')}` space",
        f"- Median distance to the nearest training image: samples {_num(m.get('median_sample_nn'))}, "
        f"training images among themselves {_num(m.get('median_train_nn'))} (ratio {_num(m.get('nn_ratio'), '.2f')}; well below 1 suggests memorization)",
        "",
        f"A sample counts as a near-copy when its distance to the nearest training image is at most {_num(m.get('threshold'))} "
        f"(the {_num(quantile, '.0%')} quantile of the training images' distances to their own nearest neighbour) and at most "
        f"{_num(m.get('relative_threshold'), '.2f')} times its mean distance to the next {max(neighbours - 1, 1)} training images "
        f"(close to one image, not a blur of many); fresh held-out images score about {_num(quantile, '.0%')}, "
        "a memorizing generator close to 100%.",
        "",
    ]


def _privacy_section(headline: dict[str, Any], p: dict[str, Any], paths: ScenarioPaths) -> list[str]:
    auc = headline.get("membership_auc", p.get("membership_auc"))
    out = [
        "## Privacy",
        "",
        f"- Membership-inference audit: ROC AUC {_num(auc, '.3f')} (95 % interval {_num(p.get('auc_ci_low'), '.3f')}–"
        f"{_num(p.get('auc_ci_high'), '.3f')}): an attacker holding {p.get('n_samples')} samples tells the "
        f"{p.get('n_members')} training images from the {p.get('n_non_members')} held-out ones by their distance to the "
        "nearest sample. 0.5 = no better than a coin; the bar of a medical scenario is "
        f"`evaluation.promote.max_membership_auc` (default {MEDICAL_MAX_MEMBERSHIP_AUC}).",
    ]
    dp = (_read_json(paths.model / "summary.json") or {}).get("privacy")
    if dp:
        out.append(
            f"- Differentially private training: (ε = {_num(dp.get('epsilon_spent'), '.3g')}, δ = {dp.get('delta'):g}) spent of a budget "
            f"ε = {_num(dp.get('epsilon_budget'), '.3g')}: DP-SGD on the discriminator (per-image gradients clipped to "
            f"{_num(dp.get('max_grad_norm'), '.3g')}, Gaussian noise × {_num(dp.get('noise_multiplier'), '.3g')}, Poisson sampling at rate "
            f"{_num(dp.get('sample_rate'), '.3g')}, {dp.get('steps')} steps, opacus RDP accountant). The generator never sees a "
            "real image; its weights and samples inherit the guarantee. Training logs and this card's metrics are "
            "computed on the real images and are not covered."
        )
    else:
        out.append(
            "- Not trained with differential privacy (`gan.train.privacy`): no formal guarantee. A low AUC says this "
            "attack failed, not that every attack would."
        )
    return out + [""]


# How each measure of the verdict reads, for people.
_MEASURES = {
    "fid_over_floor": "FID / floor",
    "precision": "precision",
    "recall": "recall",
    "c2st_ci_low": "classifier two-sample test (accuracy, lower end of its 95 % interval)",
    "sharpness_ratio": "sharpness (fine detail of samples / of reals)",
    "near_copy_share": "near-copy share",
    "membership_auc": "membership-inference AUC (0.5 = no leakage)",
}


def _promotion_section(headline: dict[str, Any], verdict: dict[str, Any] | None) -> list[str]:
    promote = headline.get("promote")
    out = ["## Promotion", ""]
    if verdict is None:
        reasons = headline.get("promote_reasons") or []
        return out + [f"**{'Promoted' if promote else 'Not promoted'}.**", ""] + [f"- {r}" for r in reasons] + [""]
    failed = verdict.get("failed_criteria") or []
    out += [
        f"**{'Promoted' if promote else 'Not promoted'}**"
        + (f": fails {', '.join(failed)}." if failed else ": meets every criterion of the bar (`evaluation.promote`).")
        + " Each bar is widened, never tightened, by what held-out real images score (the floor).",
        "",
        "| criterion | measure | model | bar | |",
        "|---|---|---|---|---|",
    ]
    for c in verdict.get("checks") or []:
        out.append(f"| {c['criterion']} | {_MEASURES.get(c['measure'], c['measure'])} | {_num(c['value'], '.3f')} | {c['op']} {_num(c['bar'], '.3f')} | {'ok' if c['passed'] else '**fails**'} |")
    return out + [""]


def _samples_section(paths: ScenarioPaths, card: Path) -> list[str]:
    samples = _rel(paths.evaluation / "samples.png", card.parent)
    interpolation = _rel(paths.evaluation / "interpolation.png", card.parent)
    return [
        "## Samples",
        "",
        f"![64 samples]({samples})",
        "",
        f"![latent interpolation]({interpolation})",
        "",
    ]


def _generator_section(headline: dict[str, Any], paths: ScenarioPaths, base: Path) -> list[str]:
    gen_path = paths.model / GENERATOR_FILE
    return [
        "## Generator",
        "",
        f"- File: `{_rel(gen_path, base)}` (safetensors; load with `gan_core.load_generator`)",
        f"- sha256: `{headline.get('model_sha256')}`",
        f"- DVC md5: {_hash(gen_path)}",
        f"- Training steps: {headline.get('steps')}",
        "",
    ]


def _reproduce_section(name: str, paths: ScenarioPaths, base: Path) -> list[str]:
    ignore = (paths.roots.data, paths.roots.models, paths.roots.metrics)
    stage = stage_name("evaluate", name)
    commands = [
        (f"dvc pull --with-deps {stage}", "restore this model, its data and its evaluation from the DVC remote"),
        (f"dvc repro {stage}", "rerun what is out of date, up to this evaluation (DVC)"),
        (f"python -m assets.run {name}", "the same chain through Dagster"),
    ]
    width = max(len(c) for c, _ in commands)
    version = code_version(base, ignore=ignore)
    if version == NOT_A_GIT_CHECKOUT:
        code = f"Code: {NOT_A_GIT_CHECKOUT} (the project directory has no git history; the code version is not recorded)."
    else:
        code = f"Code: git commit {version}; check it out in the project directory first."
    return [
        "## Reproduce",
        "",
        code,
        "",
        "```bash",
        *(f"{c.ljust(width)}   # {why}" for c, why in commands),
        "```",
        "",
    ]
