"""Write the seed study's report: ``README.md``, PNG charts, ``numbers.json``, ``family.json``.

Every number in the Markdown is a :class:`~.ledger.Number`; ``numbers.json`` lists each with the
file (relative to the report folder) and JSON key it was read from, or the operation and numbers
it was derived from. Every file is written atomically. Charts need matplotlib (the ``plot``
extra); without it the report says so and has no charts.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

from qeval_plugins.storage.atomic import write_atomic
from qeval_plugins.study import findings as F
from qeval_plugins.study import verdicts
from qeval_plugins.study.ledger import Ledger, Number
from qeval_plugins.study.plan import (
    EARLY_FRACTION,
    FULL_SPECS,
    MAX_TOKENS,
    TEMPERATURE_PROMPTS,
    W4_SPEC,
    W8A8_SPEC,
)
from qeval_plugins.sweep.planning import slug

FAMILY_FIELDS = (
    ("non_embedding_params", "non-embedding params"),
    ("steps", "steps"),
    ("train_loss", "train loss"),
    ("held_out_loss", "held-out loss"),
    ("seconds", "training s"),
)
VERDICT_RULE = f"""\
**Verdict rule.** A group's value is the mean over its training seeds; its spread is its range
over the seeds (max − min). For a claim that A is below (or above) B: effect = mean(A) − mean(B),
spread = range(A) + range(B). |effect| > spread in the claimed direction →
**{verdicts.REPRODUCED}**; |effect| > spread in the opposite direction →
**{verdicts.CONTRADICTED}**; otherwise (the effect is inside the seed-to-seed spread, or only one
seed was measured) → **{verdicts.NOT_SHOWN}**. A claim that a choice "matters" is reproduced by
|effect| > spread in either direction. An equality claim (nf4 ≈ fp4) is reproduced only if
|effect| ≤ spread *and* the spread is at most {verdicts.EQUALITY_FRACTION:g} × the effect being
compared (the 4-bit ΔNLL itself); contradicted if |effect| > spread. Rank agreement (early
checkpoints) is Spearman's ρ per seed with its exact one-sided permutation p: reproduced when
every seed has p < {verdicts.ALPHA:g} and mean(ρ) − range(ρ) > 0, contradicted when
every seed's opposite one-sided p (ρ this low) < {verdicts.ALPHA:g} and mean(ρ) + range(ρ) < 0.
Non-monotonic (GPTQ's gain by size): a step between neighbouring sizes counts
when the change of the means exceeds the sum of both seed ranges; reproduced when counting steps
of both signs exist, contradicted when every step counts and all go one way."""


BARS = "Bars: mean ± half the range over the seeds (two seeds: one seed's value to the other's)."


class Quoted:
    """Renders cells and remembers which ledger numbers the Markdown quotes."""

    def __init__(self):
        self.ids: set[int] = set()

    def __call__(self, cell) -> str:
        if cell is None:
            return "—"
        if isinstance(cell, Number):
            self.ids.add(cell.id)
            return cell.text
        for number in getattr(cell, "numbers", []):
            self.ids.add(number.id)
        return str(cell) if str(cell) else ""

    def table(self, columns: Sequence[str], rows: Sequence[Sequence]) -> list[str]:
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for row in rows:
            lines.append("| " + " | ".join(self(cell).replace("|", "\\|") for cell in row) + " |")
        return lines


def write_family(out: Path, family: dict[str, dict]) -> Path | None:
    """``family.json``: each trained checkpoint's ``qeval_family`` block (kept when the study
    ran without training, e.g. ``--report-only`` on a machine without the family)."""
    path = out / "family.json"
    if family:
        write_atomic(path, (json.dumps(family, indent=1, sort_keys=True) + "\n").encode())
    return path if path.is_file() else None


def family_section(ledger: Ledger, quote: Quoted, path: Path | None) -> list[str]:
    if path is None:
        return ["Models given with `--models` (no family trained): training-recipe findings "
                "are not measured.", ""]  # fmt: skip
    data = ledger.data(path) or {}
    columns = ["model", *[label for _, label in FAMILY_FIELDS]]
    rows = []
    for name in sorted(data, key=_model_order):
        rows.append([f"`{name}`", *[ledger.raw(path, (name, key)) for key, _ in FAMILY_FIELDS]])
    return [*quote.table(columns, rows), ""]


def _model_order(name: str) -> tuple:
    parts = name.split("-")
    sizes = {"xs": 0, "s": 1, "m": 2, "l": 3}
    size = next((sizes[p] for p in parts if p in sizes), 9)
    return (parts[0] != "base", parts[0], size, name)


def verdict_lines(quote: Quoted, finding: F.Finding) -> list[str]:
    lines = []
    for v in finding.verdicts:
        detail = ""
        if v.effect is not None:
            detail = f" (effect {quote(v.effect)}"
            detail += f", spread {quote(v.threshold)})" if v.threshold is not None else ")"
        lines.append(f"- {v.setting}: **{v.verdict}**{detail}")
    return lines


def finding_section(quote: Quoted, finding: F.Finding) -> list[str]:
    lines = [f"### {finding.paper}: {finding.claim}", ""]
    lines += [f"**Claim** ({finding.paper}): “{finding.claim}”", ""]
    lines += [f"**Measured.** {finding.measured}", ""]
    if finding.rows:
        lines += [*quote.table(finding.columns, finding.rows), ""]
    lines += ["**Verdict.**", "", *verdict_lines(quote, finding), ""]
    lines += [*finding.notes, ""] if finding.notes else []
    return lines


def write_png(path: Path, draw) -> bool:
    """Draw with matplotlib (Agg) and write ``path`` atomically; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axes = plt.subplots(figsize=(7, 4.2))
    draw(axes)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    plt.close(figure)
    write_atomic(path, buffer.getvalue())
    return True


def legend(axes, **options) -> None:
    """A legend when something was drawn with a label (none for a chart of no runs)."""
    if axes.get_legend_handles_labels()[0]:
        axes.legend(**options)


def size_chart(sizes: list[str], chart: dict):
    def draw(axes):
        for spec, points in chart.items():
            axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=spec)
        axes.set_xticks(range(len(sizes)), sizes)
        axes.set_yscale("symlog", linthresh=1e-3)
        axes.set_xlabel("model size")
        axes.set_ylabel("ΔNLL (nats/token), mean over seeds")
        legend(axes, fontsize=6, ncol=2)

    return draw


def temperature_chart(chart: dict):
    def draw(axes):
        for spec, points in chart.items():
            if points:
                axes.errorbar([p[0] for p in points], [p[1] for p in points],
                              yerr=[(p[2] or 0) / 2 for p in points], marker="o", capsize=3,
                              label=spec)  # fmt: skip
        axes.axvspan(0.5, 0.8, alpha=0.12, color="grey", label="Roy's 0.5–0.8 band")
        axes.set_xlabel("temperature")
        axes.set_ylabel("ROUGE-L vs reference continuation")
        legend(axes, fontsize=8)

    return draw


def gptq_chart(chart: dict):
    def draw(axes):
        for bits, by_size in chart.items():
            sizes = list(by_size)
            axes.errorbar(range(len(sizes)), [by_size[s][0] for s in sizes],
                          yerr=[by_size[s][1] / 2 for s in sizes], marker="o", capsize=3,
                          label=f"int{bits}")  # fmt: skip
            axes.set_xticks(range(len(sizes)), sizes)
        axes.axhline(0, color="black", linewidth=0.6)
        axes.set_xlabel("model size")
        axes.set_ylabel("ΔNLL(RTN) − ΔNLL(GPTQ), nats/token")
        legend(axes, fontsize=8)

    return draw


def write_report(settings, prepared) -> Path:
    """Write the report of the study's runs into ``settings.output``; returns README.md."""
    out = settings.output
    out.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(out)
    quote = Quoted()
    family_path = write_family(out, prepared.family)
    predictor = out / "predictor.json"
    speed = out / "speed.json"
    ctx = F.Context(ledger, F.Runs(ledger, settings.runs_dir), prepared.plan.models(),
                    settings.variant_size, predictor, speed)  # fmt: skip
    sizes = list(ctx.base_by_size())
    has_family = not settings.models

    size_columns, size_rows, size_points = F.size_table(ctx)
    gain, gain_points = F.gptq_gain(ctx)
    temp_columns, temp_rows, temp_points = F.temperature_curves(ctx)
    speed_findings, speed_table = F.speed_rows(ctx)
    all_dnll, seed_ranges = dnll_pool(ctx)
    found: list[F.Finding] = []
    if has_family:
        found += [
            F.recipe_finding(ctx, "wd0.1", "weight-decay",
                             "higher weight decay helps robustness to PTQ.", -1),
            F.recipe_finding(ctx, "dropout0.1", "dropout", "dropout matters.", 0),
            F.recipe_finding(ctx, "clip1.0", "clipping", "gradient clipping matters.", 0),
            F.precision_finding(ctx),
            F.early_checkpoint_finding(ctx, EARLY_FRACTION),
        ]  # fmt: skip
    found += [F.predictor_finding(ctx, all_dnll, seed_ranges), gain, F.nf4_fp4_finding(ctx)]
    found += [*F.temperature_findings(ctx), *speed_findings]

    charts = {
        "dnll_by_size.png": size_chart(sizes, size_points),
        "temperature.png": temperature_chart(temp_points),
        "gptq_gain.png": gptq_chart(gain_points),
    }
    drawn = {name: write_png(out / name, draw) for name, draw in charts.items()}

    lines = ["# The seed study: what post-training quantization does to a model family", ""]
    lines += [
        "Generated by `qeval study` (do not edit by hand; rerun `qeval study --report-only` to "
        "rewrite it from the runs). Every number below is listed in `numbers.json` with the "
        "results file and JSON key it came from.",
        "",
        "## Verdicts",
        "",
        "| paper | claim | setting | verdict |",
        "|---|---|---|---|",
    ]
    for finding in found:
        for v in finding.verdicts:
            lines.append(f"| {finding.paper} | {finding.claim} | {v.setting} | {v.verdict} |")
    lines += ["", VERDICT_RULE, "", "## Setup", ""]
    lines += setup_lines(settings, prepared)
    lines += ["### The family", ""]
    lines += family_section(ledger, quote, family_path if has_family else None)
    lines += ["## ΔNLL by size and quantizer", ""]
    lines += [
        "ΔNLL = `ln_ppl_ratio` of `qeval_sqnr` (`config.qeval.sqnr.metrics`): mean over tokens "
        "of NLL(quantized) − NLL(unquantized), nats per token, on the held-out in-domain "
        "passages; per seed (seed 1 · seed 2).",
        "",
        *quote.table(size_columns, size_rows),
        "",
    ]
    lines += ["![ΔNLL by size](dnll_by_size.png)", ""] if drawn["dnll_by_size.png"] else []
    lines += ["## Findings", ""]
    for finding in found:
        lines += finding_section(quote, finding)
        if finding.key == "gptq-gain" and drawn["gptq_gain.png"]:
            lines += ["![GPTQ gain over RTN](gptq_gain.png)", "", BARS, ""]
    lines += ["## nf4 vs fp4 temperature curves", ""]
    lines += [
        "ROUGE-L (0–1) of 4 samples per prompt against the world's reference continuation, "
        "on held-out story openings of the world (`tasks/qeval_demo/sampling.jsonl`), 64 new "
        "tokens, per training seed; ★ = Roy's 0.5–0.8 band.",
        "",
        *quote.table(temp_columns, temp_rows),
        "",
    ]
    if drawn["temperature.png"]:
        lines += ["![temperature curves](temperature.png)", "", BARS, ""]
    lines += ["## Tokens/s per quantizer (CPU figures)", ""]
    lines += speed_lines(quote, speed_table, settings.device)
    lines += ["## What this does not show", "", *limits(settings), ""]
    if not all(drawn.values()):
        lines += ["(Charts were not drawn: matplotlib, the `plot` extra, is not installed.)", ""]
    text = "\n".join(lines).rstrip() + "\n"
    readme = out / "README.md"
    write_atomic(readme, text.encode())
    numbers = {"format": "qeval-study-numbers", "version": 1,
               "numbers": ledger.record(quote.ids)}  # fmt: skip
    write_atomic(out / "numbers.json", (json.dumps(numbers, indent=1) + "\n").encode())
    return readme


def dnll_pool(ctx: F.Context) -> tuple[list[Number], list[Number]]:
    """Every size-series ΔNLL, and each (size, spec)'s seed range where two seeds exist."""
    pool, ranges = [], []
    for models in ctx.base_by_size().values():
        for spec in FULL_SPECS:
            values = F.seed_values(ctx, models, spec)
            pool += values
            if len(values) >= 2:
                ranges.append(ctx.ledger.derived("range", values))
    return pool, ranges


def setup_lines(settings, prepared) -> list[str]:
    plan = prepared.plan
    parts: dict[str, int] = {}
    for part, _, _ in plan.runs():
        parts[part] = parts.get(part, 0) + 1
    counts = ", ".join(f"{count} in `runs/{part}/`" for part, count in parts.items())
    done = sum(
        (settings.runs_dir / part / f"{slug(model)}__{slug(spec)}" / "results.json").is_file()
        for part, model, spec in plan.runs()
    )
    lines = [
        f"- Runs: {plan.run_count} `qeval run` runs planned ({counts}), {done} with results, "
        "each `runs/<part>/<model>__<spec>/results.json` (a standard lm-eval results file) "
        "with `qeval_run.json` (its settings). A finding whose runs are missing says "
        f"'{verdicts.NOT_MEASURED}'.",
        f"- Device: `{settings.device}`. Seeds: {', '.join(map(str, settings.seeds))}."
        if not settings.models
        else f"- Device: `{settings.device}`. Models (one seed each): "
        + ", ".join(f"`{m}`" for m in settings.models)
        + ".",
        f"- Size series: {series_text(settings, plan)}. Task `qeval_sqnr` (with "
        f"`qeval_outliers` at size {settings.variant_size}, as for the recipes; never for "
        "`gptq`, whose packed CPU layers `qeval_outliers` cannot read) on "
        + ("their bundled English passages." if settings.models else "the family's held-out "
           f"in-domain passages, {MAX_TOKENS} tokens each."),
    ]  # fmt: skip
    if not settings.models:
        lines += [
            f"- Recipes at size {settings.variant_size}: every recipe and seed with W4 "
            f"`{W4_SPEC}` and W8A8 `{W8A8_SPEC}` (int8 per-token activations) on `qeval_sqnr` "
            f"and `qeval_outliers`; each one's {round(EARLY_FRACTION * 100)} % checkpoint with "
            "W4 on `qeval_sqnr`.",
        ]
    lines += [
        "- Temperature sweep: `qeval_temperature` (T = 0, 0.2, 0.5, 0.8, 1.0, 1.2; 4 samples "
        f"per prompt, matched seeds; the first {TEMPERATURE_PROMPTS} prompts) for `none`, "
        "`bnb-nf4`, `bnb-fp4` at the largest size.",
        "",
    ]
    return lines


def series_text(settings, plan) -> str:
    """Which specs each model of the size series got, from the plan: models with the same specs
    share one item."""
    specs: dict[str, list[str]] = {}
    for group in plan.groups:
        model = group.model
        if group.part == "divergence" and model.is_final and model.recipe in ("base", None):
            specs.setdefault(model.name, []).extend(group.specs)
    by_specs: dict[tuple[str, ...], list[str]] = {}
    for name, chosen in specs.items():
        by_specs.setdefault(tuple(dict.fromkeys(chosen)), []).append(name)
    parts = [
        ", ".join(f"`{name}`" for name in names) + " with " + ", ".join(f"`{s}`" for s in chosen)
        for chosen, names in by_specs.items()
    ]
    where = (
        "the given models"
        if settings.models
        else f"the base recipe at sizes {', '.join(settings.sizes)}"
    )
    return f"{where}: " + "; ".join(parts)


def speed_lines(quote: Quoted, table: list, device: str) -> list[str]:
    if not table:
        return ["Not measured (no `speed.json`).", ""]
    where = "a CPU" if device == "cpu" else device
    lines = [
        f"Measured on {where}: greedy generation of exactly 64 new tokens from one prompt, batch "
        "size 1, 3 timed repeats after a warm-up, median (`speed.json`). These are CPU kernels "
        "(bitsandbytes' and GPTQModel's CPU paths, rtn simulated in float32), not the GPU "
        "figures Roy reports: **no GPU was lent to this study**, so no GPU speed row exists. "
        "RTN's formats (int, fp4, nf4, MX) are simulated: their weights are stored dequantized "
        "in float32, so one rtn row stands for all of them."
        if device == "cpu"
        else f"Measured on {where}: greedy generation of 64 new tokens, batch size 1, median "
        "of 3 repeats (`speed.json`).",
        "",
        *quote.table(["setting", "tokens/s (median)", "tokens/s per repeat", "note"], table),
        "",
        "Other work on the machine slows every row: `speed.json` records the 1-minute load "
        "average before and after the timing (`load_average`) beside the CPU count (`cpus`).",
        "",
    ]
    return lines


def limits(settings) -> list[str]:
    scale = (
        "- **Scale.** The family's models have 10⁴–10⁶ parameters and were trained for a few "
        "hundred steps on a synthetic world; the papers study 10⁸–10¹¹ parameters. A verdict "
        "here says what qeval measured on this family, not whether the claim holds for LLMs."
    )
    if settings.models:
        scale = (
            "- **Models given.** The models were given with `--models`: no recipe varies "
            "between them, so the training-recipe findings (Ahmadian et al.) are not measured."
        )
    return [
        scale,
        "- **Two seeds.** The spread is a range over two seeds: a crude, optimistic estimate of "
        "seed-to-seed variation. Effects inside it are 'not shown', never 'reproduced'.",
        "- **Precision recipes.** On a CPU, bf16 and fp16 training are emulated: each linear "
        "layer's inputs, weights, outputs and gradients are rounded to the format (fp16 with a "
        "loss scaler); attention scores and norms stay float32 (see the family table for how "
        "little that changes these models' losses).",
        "- **Outliers.** Emergent outlier features appear in models beyond ~6.7B parameters "
        "(LLM.int8()); counts of zero at this scale say nothing about the bf16/fp16 claim.",
        "- **GPTQ calibration.** `gptq` calibrates on qeval's bundled English passages, not on "
        "the world's text; in-domain calibration would likely gain more over RTN.",
        "- **GPTQ 3 bits.** GPTQModel's CPU kernel for 3-bit weights loads float16/bfloat16 "
        "models only (the family is float32), and its packer takes 32 output rows at a time "
        "(the k/v projections of xs and m have 16 and 48): the 3-bit GPTQ gain is not measured "
        "on the family (—); `--models` with float16 models on a GPU measures it.",
        "- **Temperature.** Quality is ROUGE-L against one reference continuation on the first "
        f"{TEMPERATURE_PROMPTS} of the world's story openings, 4 samples each; Roy's exact metric "
        "and prompts could not be confirmed.",
        "- **Speed.** CPU figures with each quantizer's CPU kernels; Roy's int8/bf16 speed "
        "claims are about GPUs.",
        "- **Predictor.** One model family (one training corpus): 'held-out families' are "
        "held-out recipes or sizes of it, not other pre-trained families as in Xu et al.",
    ]
