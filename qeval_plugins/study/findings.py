"""The seed study's findings as data: each paper's claim, what qeval measured, the verdict.

Every figure is a :class:`~.ledger.Number` (read from a results file, or derived from such
numbers), so the report can name where each one came from. ΔNLL is ``qeval_sqnr``'s
``ln_ppl_ratio`` = mean over tokens of NLL(quantized) − NLL(unquantized), in nats per token, on the
family's held-out in-domain passages (read from ``config.qeval.sqnr.metrics``). Verdicts follow
:mod:`.verdicts` (an effect counts only beyond the seed-to-seed spread).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from qeval_plugins.study import verdicts
from qeval_plugins.study.ledger import Ledger, Number, lookup
from qeval_plugins.study.plan import (
    DIVERGENCE,
    FULL_SPECS,
    TEMPERATURE,
    TEMPERATURE_SPECS,
    W4_SPEC,
    W8A8_SPEC,
    StudyModel,
    checkpoint_name,
    gptq_int,
    rtn_int,
)
from qeval_plugins.sweep.planning import slug

DNLL_KEY = ("config", "qeval", "sqnr", "metrics", "ln_ppl_ratio")
TEMPERATURES = ("0.0", "0.2", "0.5", "0.8", "1.0", "1.2")
BAND = ("0.5", "0.8")  # Roy's temperature band
RECIPE_SETTINGS = ((W4_SPEC, "W4 (int4 g32)"), (W8A8_SPEC, "W8A8 (int8 weights and activations)"))
EARLY_SETTINGS = RECIPE_SETTINGS[:1]  # the plan runs W4 only at the early checkpoints
OUTLIER_METRICS = (
    ("outlier_features_reference", "outlier features (count)"),
    ("act_absmax_reference", "largest |activation| (max over layers)"),
    ("act_kurtosis_reference", "activation kurtosis (mean over layers)"),
)

Cell = Number | str | None


@dataclass
class Verdict:
    """The verdict on one setting of a finding, with the effect and the spread it was judged on."""

    setting: str
    verdict: str
    effect: Number | None = None
    threshold: Number | None = None


@dataclass
class Finding:
    key: str
    paper: str
    claim: str
    measured: str
    columns: list[str]
    rows: list[list[Cell]]
    verdicts: list[Verdict]
    notes: list[str] = field(default_factory=list)


class Runs:
    """Reads the study's runs: ``RUNS/<part>/<model>__<spec>/results.json``."""

    def __init__(self, ledger: Ledger, runs_dir: Path):
        self.ledger = ledger
        self.runs_dir = runs_dir

    def results(self, part: str, model: str, spec: str) -> Path:
        return self.runs_dir / part / f"{slug(model)}__{slug(spec)}" / "results.json"

    def value(self, part: str, model: str, spec: str, key: Sequence) -> Number | None:
        return self.ledger.raw(self.results(part, model, spec), key)

    def dnll(self, model: str, spec: str) -> Number | None:
        return self.value(DIVERGENCE, model, spec, DNLL_KEY)

    def task_metric(self, part: str, model: str, spec: str, task: str, metric: str):
        """``results[task]["<metric>,none"]`` of a run."""
        return self.value(part, model, spec, ("results", task, f"{metric},none"))


def present(numbers: Sequence[Number | None]) -> list[Number]:
    return [n for n in numbers if n is not None]


@dataclass
class Context:
    """What the findings are computed from."""

    ledger: Ledger
    runs: Runs
    models: list[StudyModel]
    variant_size: str = "s"
    predictor: Path | None = None
    speed: Path | None = None

    def base_by_size(self) -> dict[str, list[StudyModel]]:
        """The final base-recipe (or ``--models``) models of each size, seeds in order."""
        sizes: dict[str, list[StudyModel]] = {}
        for model in self.models:
            if model.is_final and model.recipe in ("base", None):
                sizes.setdefault(model.size, []).append(model)
        return {size: sorted(ms, key=lambda m: m.seed or 0) for size, ms in sizes.items()}

    def recipe_models(self, recipe: str, fraction: float = 1.0) -> list[StudyModel]:
        return sorted(
            (
                m
                for m in self.models
                if m.recipe == recipe and m.size == self.variant_size and m.fraction == fraction
            ),
            key=lambda m: m.seed or 0,
        )

    def recipes(self) -> list[str]:
        return list(dict.fromkeys(m.recipe for m in self.models if m.recipe is not None))


def seed_values(ctx: Context, models: Sequence[StudyModel], spec: str) -> list[Number]:
    return present([ctx.runs.dnll(m.name, spec) for m in models])


def compared(ctx: Context, a: list[Number], b: list[Number]) -> tuple[Number | None, Number | None]:
    """The effect mean(a) − mean(b) and the threshold range(a) + range(b), as ledger numbers."""
    if not a or not b:
        return None, None
    led = ctx.ledger
    effect = led.derived("difference", [led.derived("mean", a), led.derived("mean", b)])
    if len(a) < 2 or len(b) < 2:
        return effect, None
    return effect, led.derived("sum", [led.derived("range", a), led.derived("range", b)])


def values_text(numbers: Sequence[Number | None]) -> str:
    """``0.1 · 0.12``; a missing value is ``—``."""
    return " · ".join(n.text if n else "—" for n in numbers) if numbers else "—"


def seeds_cell(numbers: list[Number]) -> Cell:
    """Per-seed values joined by ``·`` (the cell quotes each)."""
    return _Joined(numbers)


class _Joined(str):
    """A table cell quoting several numbers (seed 1 · seed 2 ...); None shows as ``—``."""

    numbers: list[Number]

    def __new__(cls, numbers: Sequence[Number | None]):
        cell = super().__new__(cls, values_text(numbers))
        cell.numbers = present(numbers)
        return cell


def directional(ctx, setting, a, b, sign) -> tuple[Verdict, list[Cell]]:
    """A verdict on mean(a) − mean(b) having ``sign`` and its table cells."""
    effect, threshold = compared(ctx, a, b)
    verdict = verdicts.directional_verdict([n.value for n in a], [n.value for n in b], sign)
    result = Verdict(setting, verdict, effect, threshold)
    return result, [seeds_cell(a), seeds_cell(b), effect, threshold, verdict]


COMPARE_COLUMNS = ["setting", "A (per seed)", "B (per seed)", "effect mean(A) − mean(B)"]
COMPARE_COLUMNS += ["spread range(A) + range(B)", "verdict"]


def recipe_finding(ctx: Context, recipe: str, key: str, claim: str, sign: int) -> Finding:
    """Ahmadian et al.: a training choice vs the base recipe at the variant size."""
    rows, found = [], []
    for spec, label in RECIPE_SETTINGS:
        a = seed_values(ctx, ctx.recipe_models(recipe), spec)
        b = seed_values(ctx, ctx.recipe_models("base"), spec)
        verdict, cells = directional(ctx, f"ΔNLL {label}", a, b, sign)
        found.append(verdict)
        rows.append([verdict.setting, *cells])
    direction = {-1: "lower than", 1: "higher than", 0: "different from"}[sign]
    measured = (
        f"ΔNLL (nats/token) of `{recipe}` (A) vs `base` (B) at size {ctx.variant_size}, per seed, "
        f"after {' and '.join(label for _, label in RECIPE_SETTINGS)}; claimed: A {direction} B."
    )
    return Finding(key, "Ahmadian et al., arXiv 2305.19268", claim, measured,
                   COMPARE_COLUMNS, rows, found)  # fmt: skip


def precision_finding(ctx: Context) -> Finding:
    """Ahmadian et al.: bf16 training gives fewer/weaker outliers and more robustness than fp16."""
    rows, found = [], []
    bf16, fp16 = ctx.recipe_models("bf16"), ctx.recipe_models("fp16")
    for spec, label in RECIPE_SETTINGS:
        a, b = seed_values(ctx, bf16, spec), seed_values(ctx, fp16, spec)
        verdict, cells = directional(ctx, f"ΔNLL {label}", a, b, -1)
        found.append(verdict)
        rows.append([verdict.setting, *cells])
    for metric, label in OUTLIER_METRICS:
        a = present([outlier(ctx, m, metric) for m in bf16])
        b = present([outlier(ctx, m, metric) for m in fp16])
        verdict, cells = directional(ctx, label, a, b, -1)
        found.append(verdict)
        rows.append([label, *cells])
    measured = (
        "ΔNLL after W4 and W8A8, and the unquantized model's outlier features (LLM.int8() "
        "definition: |x| ≥ 6 in ≥ 25 % of layers and ≥ 6 % of positions), largest activation "
        f"and activation kurtosis (`qeval_outliers`), of `bf16` (A) vs `fp16` (B) training at "
        f"size {ctx.variant_size}; claimed: A lower than B on every row."
    )
    claim = (
        "bf16 training gives fewer/weaker emergent outlier features than fp16 (and more robust "
        "models)."
    )
    return Finding("precision", "Ahmadian et al., arXiv 2305.19268", claim, measured,
                   COMPARE_COLUMNS, rows, found)  # fmt: skip


def outlier(ctx: Context, model: StudyModel, metric: str) -> Number | None:
    """An outlier statistic of the unquantized model (read from its W4 run)."""
    return ctx.runs.task_metric(DIVERGENCE, model.name, W4_SPEC, "qeval_outliers", metric)


def early_checkpoint_finding(ctx: Context, fraction: float) -> Finding:
    """Ahmadian et al.: do early checkpoints rank the variants' robustness as the final ones?"""
    recipes = ctx.recipes()
    seeds = sorted({m.seed for m in ctx.models if m.recipe is not None and m.seed is not None})
    columns = ["recipe"] + [f"seed {s}: {pct(fraction)} · 100 %" for s in seeds]
    rows, found = [], []
    led = ctx.ledger
    for spec, label in EARLY_SETTINGS:
        rows.append([f"**{label}**"] + [""] * len(seeds))
        early_by_seed: dict[int, list[Number]] = {s: [] for s in seeds}
        final_by_seed: dict[int, list[Number]] = {s: [] for s in seeds}
        for recipe in recipes:
            cells: list[Cell] = [f"`{recipe}`"]
            for seed in seeds:
                name = f"{recipe}-{ctx.variant_size}-seed{seed}"
                early = ctx.runs.dnll(checkpoint_name(name, fraction), spec)
                final = ctx.runs.dnll(name, spec)
                if early is not None and final is not None:
                    early_by_seed[seed].append(early)
                    final_by_seed[seed].append(final)
                cells.append(_Joined([early, final]))
            rows.append(cells)
        rhos, ps, ps_less = [], [], []
        rho_cells: list[Cell] = ["Spearman ρ"]
        p_cells: list[Cell] = ["one-sided exact p"]
        for seed in seeds:
            early, final = early_by_seed[seed], final_by_seed[seed]
            if len(early) >= 3 and len(early) <= 8:
                rhos.append(led.derived("spearman", [*early, *final]))
                ps.append(led.derived("spearman_p", [*early, *final]))
                ps_less.append(led.derived("spearman_p_less", [*early, *final]))
                rho_cells.append(rhos[-1])
                p_cells.append(ps[-1])
            else:
                rho_cells.append("—")
                p_cells.append("—")
        rows += [rho_cells, p_cells]
        verdict = verdicts.rank_agreement_verdict(
            [r.value for r in rhos], [p.value for p in ps], [p.value for p in ps_less]
        )
        spread_number = led.derived("range", rhos) if len(rhos) >= 2 else None
        mean_rho = led.derived("mean", rhos) if rhos else None
        found.append(Verdict(f"ranking after {label}", verdict, mean_rho, spread_number))
    measured = (
        f"ΔNLL (nats/token) of every recipe at size {ctx.variant_size} from its {pct(fraction)} "
        "checkpoint and from its final one; per seed, Spearman's ρ between the two rankings of "
        "the recipes and its exact permutation p. Effect = mean ρ over seeds, spread = its range."
    )
    claim = "early checkpoints predict the final model's robustness."
    return Finding("early-checkpoint", "Ahmadian et al., arXiv 2305.19268", claim, measured,
                   columns, rows, found)  # fmt: skip


def pct(fraction: float) -> str:
    return f"{round(fraction * 100)} %"


def gptq_gain(ctx: Context) -> tuple[Finding, dict[int, dict[str, tuple[float, float]]]]:
    """Xu et al.: GPTQ's gain over RTN, ΔNLL(rtn int b g32) − ΔNLL(gptq b g32), by size and bits.

    Also returns bits -> size -> (mean gain, range) for the chart."""
    led = ctx.ledger
    sizes = ctx.base_by_size()
    columns = ["bits", *[f"size {s}: gain per seed" for s in sizes], "non-monotonic in size?"]
    rows, found, chart = [], [], {}
    for bits in (4, 3):
        series, cells = [], [f"int{bits} g32"]
        chart[bits] = {}
        for size, models in sizes.items():
            gains = []
            for model in models:
                rtn = ctx.runs.dnll(model.name, rtn_int(bits))
                gptq = ctx.runs.dnll(model.name, gptq_int(bits))
                if rtn is not None and gptq is not None:
                    gains.append(led.derived("difference", [rtn, gptq]))
            series.append([g.value for g in gains])
            cells.append(seeds_cell(gains))
            if gains:
                chart[bits][size] = (verdicts.mean(series[-1]), verdicts.spread(series[-1]) or 0.0)
        verdict = verdicts.non_monotonic_verdict(series)
        cells.append(verdict)
        rows.append(cells)
        found.append(Verdict(f"gain by size, int{bits}", verdict))
    measured = (
        "GPTQ's gain = ΔNLL(rtn int b, groups of 32) − ΔNLL(gptq b, groups of 32) per model "
        "(positive: GPTQ better), per size and seed. A step between neighbouring sizes counts "
        "when the change of the seed means exceeds the sum of both sizes' seed ranges; "
        "non-monotonic = counting steps of both signs. qeval's GPTQ writes integer formats only, "
        "so 'by format' here is by bits."
    )
    claim = "GPTQ's gain over RTN is non-monotonic in bits/format/size."
    finding = Finding("gptq-gain", "Xu et al., arXiv 2410.12119", claim, measured, columns,
                      rows, found)  # fmt: skip
    return finding, chart


def nf4_fp4_finding(ctx: Context) -> Finding:
    """Roy: nf4 ≈ fp4 (bitsandbytes), by size."""
    led = ctx.ledger
    columns = [*COMPARE_COLUMNS[:-1], "4-bit ΔNLL scale", "verdict"]
    rows, found = [], []
    for size, models in ctx.base_by_size().items():
        a, b = seed_values(ctx, models, "bnb-nf4"), seed_values(ctx, models, "bnb-fp4")
        effect, threshold = compared(ctx, a, b)
        scale = led.derived("mean", [*a, *b]) if a and b else None
        verdict = verdicts.equality_verdict(
            [n.value for n in a], [n.value for n in b], scale.value if scale else 0.0
        )
        found.append(Verdict(f"size {size}", verdict, effect, threshold))
        rows.append([f"size {size}", seeds_cell(a), seeds_cell(b), effect, threshold, scale,
                     verdict])  # fmt: skip
    measured = (
        "ΔNLL (nats/token) of bitsandbytes nf4 (A) and fp4 (B) per size and seed. Equal = the "
        "difference within the seed spread and that spread at most "
        f"{verdicts.EQUALITY_FRACTION:g} × the 4-bit ΔNLL itself (the mean of A and B)."
    )
    return Finding("nf4-fp4", "Roy, arXiv 2309.05210", "nf4 ≈ fp4.", measured, columns, rows,
                   found)  # fmt: skip


def temperature_models(ctx: Context) -> list[StudyModel]:
    sizes = ctx.base_by_size()
    return list(sizes.values())[-1] if sizes else []


def rouge(ctx: Context, model: StudyModel, spec: str, temperature: str) -> Number | None:
    task = f"qeval_temperature_{temperature}"
    return ctx.runs.task_metric(TEMPERATURE, model.name, spec, task, "rougeL")


def temperature_curves(ctx: Context) -> tuple[list[str], list[list[Cell]], dict]:
    """ROUGE-L per temperature, spec and seed at the temperature size; chart data
    spec -> [(T, mean, range)]."""
    models = temperature_models(ctx)
    columns = ["temperature", *[f"`{spec}` per seed" for spec in TEMPERATURE_SPECS]]
    rows, chart = [], {spec: [] for spec in TEMPERATURE_SPECS}
    for temperature in TEMPERATURES:
        cells: list[Cell] = [temperature + (" ★" if temperature in BAND else "")]
        for spec in TEMPERATURE_SPECS:
            values = present([rouge(ctx, m, spec, temperature) for m in models])
            cells.append(seeds_cell(values))
            if values:
                raw = [v.value for v in values]
                chart[spec].append((float(temperature), verdicts.mean(raw), verdicts.spread(raw)))
        rows.append(cells)
    return columns, rows, chart


def band_drop(ctx: Context, model: StudyModel, spec: str) -> Number | None:
    """ROUGE-L at T = 0 minus the mean ROUGE-L at T = 0.5 and 0.8 (positive: worse when
    sampling in Roy's band)."""
    greedy = rouge(ctx, model, spec, "0.0")
    band = present([rouge(ctx, model, spec, t) for t in BAND])
    if greedy is None or len(band) != len(BAND):
        return None
    return ctx.ledger.derived("difference", [greedy, ctx.ledger.derived("mean", band)])


def temperature_findings(ctx: Context) -> list[Finding]:
    """Roy: nf4 more robust to temperature than fp4; 4-bit more sensitive in 0.5–0.8 than
    unquantized."""
    models = temperature_models(ctx)
    size = models[0].size if models else "?"
    gap = [
        [ctx.runs.task_metric(TEMPERATURE, m.name, spec, "qeval_temperature_summary", "rougeL_gap")
         for m in models]
        for spec in ("bnb-nf4", "bnb-fp4")
    ]  # fmt: skip
    verdict, cells = directional(
        ctx, "ROUGE-L gap in 0.5–0.8", present(gap[0]), present(gap[1]), -1
    )
    robust = Finding(
        "nf4-temperature",
        "Roy, arXiv 2309.05210",
        "nf4 is more robust to temperature (Llama-2).",
        f"`rougeL_gap` of `qeval_temperature_summary` at size {size}: the mean ROUGE-L of the "
        "unquantized model's samples minus the quantized model's over temperatures 0.5–0.8 "
        "(same seeds), nf4 (A) vs fp4 (B), per training seed; claimed: A lower than B.",
        COMPARE_COLUMNS,
        [[verdict.setting, *cells]],
        [verdict],
    )
    rows, found = [], []
    none = present([band_drop(ctx, m, "none") for m in models])
    for spec in ("bnb-nf4", "bnb-fp4"):
        quantized = present([band_drop(ctx, m, spec) for m in models])
        verdict, cells = directional(ctx, f"`{spec}` vs `none`", quantized, none, 1)
        found.append(verdict)
        rows.append([verdict.setting, *cells])
    sensitive = Finding(
        "band-sensitivity",
        "Roy, arXiv 2309.05210",
        "4-bit models are more sensitive to temperature in 0.5–0.8 than unquantized ones.",
        f"Drop = ROUGE-L at T = 0 minus the mean ROUGE-L at T = 0.5 and 0.8, at size {size}, "
        "per training seed, of the 4-bit model (A) and the unquantized one (B); claimed: A's "
        "drop larger than B's.",
        COMPARE_COLUMNS,
        rows,
        found,
    )
    return [robust, sensitive]


def size_table(ctx: Context) -> tuple[list[str], list[list[Cell]], dict]:
    """ΔNLL per spec and size (seeds joined); chart data spec -> [(size index, mean)]."""
    sizes = ctx.base_by_size()
    columns = ["spec", *[f"size {s}" for s in sizes]]
    rows, chart = [], {}
    for spec in FULL_SPECS:
        cells: list[Cell] = [f"`{spec}`"]
        for index, models in enumerate(sizes.values()):
            values = seed_values(ctx, models, spec)
            cells.append(seeds_cell(values))
            if values:
                chart.setdefault(spec, []).append((index, verdicts.mean([v.value for v in values])))
        rows.append(cells)
    return columns, rows, chart


PREDICTOR_MODELS = ("forest", "linear_sqnr", "noise_equivalent")
PREDICTOR_SCHEMES = (
    ("leave_one_model_out", "leave one model out"),
    ("leave_one_family_out", "leave one family out"),
)


def predictor_finding(ctx: Context, all_dnll: list[Number], seed_ranges: list[Number]) -> Finding:
    """Xu et al.: the loss after PTQ is predictable from cheap features.

    Effect = MAE of predicting every run's ΔNLL by their mean (the mean absolute deviation)
    minus the forest's held-out-family MAE; spread = the mean seed-to-seed range of ΔNLL (two
    seeds of one size and spec): a predictor counts only when it beats the constant by more than
    rerunning with another seed changes the number."""
    led = ctx.ledger
    claim = (
        "loss after PTQ is predictable from cheap features (random forest, validated on "
        "held-out families)."
    )
    columns = ["validation", *[f"{m} MAE" for m in PREDICTOR_MODELS]]
    columns += [f"{m} RMSE" for m in PREDICTOR_MODELS]
    rows: list[list[Cell]] = []
    path = ctx.predictor
    notes = []
    if path is None or not path.is_file():
        notes.append(
            "No predictor was fitted (`qeval predict fit` was not available or failed when the "
            "study ran), so this claim is not measured."
        )
        missing = [Verdict("forest, held-out families", verdicts.NOT_MEASURED)]
        return Finding("predictor", "Xu et al., arXiv 2410.12119", claim, "—", columns, rows,
                       missing, notes)  # fmt: skip
    lofo = None
    for scheme, label in PREDICTOR_SCHEMES:
        cells: list[Cell] = [label]
        for metric in ("mae", "rmse"):
            for model in PREDICTOR_MODELS:
                key = ("validation", scheme, model, metric)
                number = led.raw(path, key)
                cells.append(number if number is not None else "—")
                if (scheme, model, metric) == ("leave_one_family_out", "forest", "mae"):
                    lofo = number
        rows.append(cells)
    target = lookup(led.data(path), ("target",))
    verdict = verdicts.NOT_SHOWN
    effect = threshold = None
    if target not in ("delta_nll", "ln_ppl_ratio"):
        notes.append(f"The predictor's target is `{target}`, not ΔNLL: no verdict is drawn.")
    elif lofo is not None and len(all_dnll) >= 2 and seed_ranges:
        constant = led.derived("mean_abs_deviation", all_dnll)
        effect = led.derived("difference", [constant, lofo])
        threshold = led.derived("mean", seed_ranges)
        rows.append(["predicting the mean of all runs (MAE)", constant, "", "", "", "", ""])
        if effect.value > threshold.value:
            verdict = verdicts.REPRODUCED
        elif -effect.value > threshold.value:
            verdict = verdicts.CONTRADICTED
    measured = (
        "The predictor fitted by `qeval predict fit` on the study's runs (`predictor.json`: "
        "cheap features such as parameter count, the unquantized NLL and the RTN twin's weight "
        "SQNR), validated leaving one model out and leaving one family (here: one training "
        "recipe) out. Effect = MAE of predicting every run's ΔNLL by "
        "their mean − the forest's leave-one-family-out MAE; spread = the mean seed-to-seed "
        "range of ΔNLL over (size, spec) pairs with two seeds."
    )
    found = [Verdict("forest, held-out families", verdict, effect, threshold)]
    return Finding("predictor", "Xu et al., arXiv 2410.12119", claim, measured, columns, rows,
                   found, notes)  # fmt: skip


def speed_rows(ctx: Context) -> tuple[list[Finding], list[list[Cell]]]:
    """Roy: int8 (bitsandbytes) much slower, bf16 fastest; from ``speed.json`` (CPU here).

    tokens/s per repeat = new tokens / seconds; spread = the range over the repeats."""
    led = ctx.ledger
    path = ctx.speed
    table: list[list[Cell]] = []
    per_label: dict[str, list[Number]] = {}
    data = ctx.ledger.data(path) if path is not None and path.is_file() else None
    if data is None:
        return [], table
    new_tokens = led.raw(path, ("new_tokens",))
    for index, row in enumerate(data.get("rows", [])):
        label = str(row.get("label"))
        if "tokens_per_second" not in row:
            table.append([label, "—", "—", f"failed: {row.get('error', '?')}"])
            continue
        median = led.raw(path, ("rows", index, "tokens_per_second"))
        seconds = [led.raw(path, ("rows", index, "seconds", i)) for i in range(len(row["seconds"]))]
        rates = [led.derived("tokens_per_second", [new_tokens, s]) for s in present(seconds)]
        per_label[label] = rates
        table.append([label, median, seeds_cell(rates), ""])
    device = data.get("device", "cpu")
    where = "on CPU" if device == "cpu" else f"on {device}"
    findings = []
    int8, fp32 = per_label.get("bnb-int8", []), per_label.get("none float32", [])
    verdict, cells = directional(ctx, "tokens/s: bnb-int8 (A) vs none float32 (B)", int8, fp32, -1)
    findings.append(Finding(
        "int8-speed", "Roy, arXiv 2309.05210", "int8 (bitsandbytes) is much slower.",
        f"Greedy generation tokens/s {where}, each of 3 repeats (spread = their range).",
        COMPARE_COLUMNS, [[verdict.setting, *cells]], [verdict],
    ))  # fmt: skip
    bf16 = per_label.get("none bfloat16", [])
    rows, found = [], []
    for label, rates in per_label.items():
        if label == "none bfloat16":
            continue
        verdict, cells = directional(ctx, f"tokens/s: none bfloat16 (A) vs {label} (B)", bf16,
                                     rates, 1)  # fmt: skip
        found.append(verdict)
        rows.append([verdict.setting, *cells])
    findings.append(Finding(
        "bf16-speed", "Roy, arXiv 2309.05210", "bf16 is fastest.",
        f"Greedy generation tokens/s {where}; bf16 must beat every other setting beyond the "
        "repeats' spread.", COMPARE_COLUMNS, rows, found,
    ))  # fmt: skip
    return findings, table
