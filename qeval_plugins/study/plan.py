"""The seed study's sweep matrix: which model gets which quantizer specs on which tasks.

Four parts, each a list of :class:`SweepGroup` (one ``qeval run`` per model, so two workers never
compute the same model's reference at once):

* **size series** (``divergence/``): the base recipe at every size and seed with
  :data:`SPREAD_SPECS` (the specs whose findings need a seed spread), at the variant size and
  the largest also :data:`PAIR_SPECS` (nf4 vs fp4) on every seed, and seed 1 of the largest size
  with every spec of :data:`FULL_SPECS`; task ``qeval_sqnr`` on the family's
  held-out passages (at the variant size also ``qeval_outliers``, as the recipes; the
  :data:`SQNR_ONLY` specs in groups of their own at the end).
* **recipes** (``divergence/``): every recipe at the variant size and every seed, with
  :data:`RECIPE_SPECS` (Ahmadian et al.'s W4 and W8A8 settings) on ``qeval_sqnr`` and
  ``qeval_outliers``.
* **early checkpoints** (``divergence/``): the :data:`EARLY_FRACTION` checkpoint of each
  variant-size model, with :data:`W4_SPEC` on ``qeval_sqnr``.
* **temperature** (``temperature/``): the largest size, every seed, :data:`TEMPERATURE_SPECS`
  on ``qeval_temperature`` with the first :data:`TEMPERATURE_PROMPTS` of the world's held-out
  story openings.

Every held-out passage is cut to :data:`MAX_TOKENS` tokens; models given with ``--models`` get
every spec of :data:`FULL_SPECS` on the tasks' own texts and settings. The plan is sized for 2
CPU cores: a ``qeval run`` costs about half a minute there whatever the model (lm-eval's
start-up), so the full spec list runs once, at the largest size, and the seeds go where a
verdict needs them.

A run is (part folder, model, spec); a model planned twice (base at the variant size is in the
size series and in the recipes) is one group with the specs of both, each run once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

#: weights sharing one scale: 32 divides every family width (hidden 32-128, MLP 96-384; 128,
#: the usual group, does not divide 32, 64 or 96) and every width of real models
GROUP = 32


def rtn_int(bits: int) -> str:
    """The RTN integer spec at ``bits``, groups of :data:`GROUP`."""
    return f"rtn:bits={bits}:group_size={GROUP}"


def gptq_int(bits: int) -> str:
    """The GPTQ spec at ``bits``, groups of :data:`GROUP` (comparable with :func:`rtn_int`)."""
    return f"gptq:bits={bits}:group_size={GROUP}"


#: every quantizer spec of the size series (seed 1)
FULL_SPECS: tuple[str, ...] = (
    rtn_int(8),
    rtn_int(4),
    rtn_int(3),
    rtn_int(2),
    f"rtn:format=fp4_e2m1:group_size={GROUP}",
    f"rtn:format=nf4:group_size={GROUP}",
    "rtn:format=mxfp4",
    "rtn:format=mxint4",
    "bnb-int8",
    "bnb-nf4",
    "bnb-fp4",
    gptq_int(4),
    gptq_int(3),
)
#: the specs run at every size and seed: GPTQ's gain over RTN by size and bits needs them all
SPREAD_SPECS: tuple[str, ...] = (rtn_int(4), rtn_int(3), gptq_int(4), gptq_int(3))
#: nf4 vs fp4 (Roy), on every seed of the variant size and the largest
PAIR_SPECS: tuple[str, ...] = ("bnb-nf4", "bnb-fp4")
#: Ahmadian et al.'s settings: W4 (int4 weights, groups of 32) and W8A8 (int8 weights per output
#: channel, int8 activations per token)
W4_SPEC = rtn_int(4)
W8A8_SPEC = "rtn:bits=8:group_size=0:act_format=int"
RECIPE_SPECS: tuple[str, ...] = (W4_SPEC, W8A8_SPEC)
TEMPERATURE_SPECS: tuple[str, ...] = ("none", "bnb-nf4", "bnb-fp4")
DIVERGENCE_TASKS: tuple[str, ...] = ("qeval_sqnr", "qeval_outliers")
SQNR_TASKS: tuple[str, ...] = ("qeval_sqnr",)
TEMPERATURE_TASKS: tuple[str, ...] = ("qeval_temperature",)
#: prompts of the temperature sweep (``--limit``: each of 6 temperatures × 4 samples × 64 tokens,
#: for the quantized model and the reference)
TEMPERATURE_PROMPTS = 8
#: tokens of each passage measured by qeval_sqnr and qeval_outliers
MAX_TOKENS = 128
#: specs run with qeval_sqnr only: qeval_outliers cannot read GPTQModel's packed CPU layers
#: (no in_features); they run after every other group, so never beside their model's other group
SQNR_ONLY = ("gptq",)
EARLY_FRACTION = 0.25
DIVERGENCE = "divergence"  # sub-folder of the runs folder for the sqnr + outliers runs
TEMPERATURE = "temperature"  # sub-folder for the temperature sweeps


@dataclass(frozen=True)
class StudyModel:
    """One model of the study: its run-folder name and what it is.

    ``size``, ``recipe``, ``seed`` and ``fraction`` describe a family member's checkpoint;
    a model given with ``--models`` has ``recipe`` None (only its size series is studied)."""

    name: str
    size: str
    recipe: str | None = "base"
    seed: int | None = 1
    fraction: float = 1.0

    @property
    def is_final(self) -> bool:
        return self.fraction == 1.0


def checkpoint_name(member_name: str, fraction: float) -> str:
    """The run-folder name of a member's checkpoint: ``base-s-seed1`` for the final one,
    ``base-s-seed1-at25pct`` for its 25 % checkpoint."""
    return member_name if fraction == 1.0 else f"{member_name}-at{round(fraction * 100)}pct"


@dataclass(frozen=True)
class SweepGroup:
    """One ``qeval run``: a model, its specs and tasks, into the runs folder's ``part``."""

    part: str
    model: StudyModel
    specs: tuple[str, ...]
    tasks: tuple[str, ...]
    metadata: dict = field(default_factory=dict, compare=False, hash=False)
    limit: int | None = None  # lm-eval's --limit: documents per task (None: all)


@dataclass
class StudyPlan:
    """Every sweep group of the study, in the order they run."""

    groups: list[SweepGroup]

    def runs(self) -> list[tuple[str, str, str]]:
        """Every distinct run as (part, model name, spec), in plan order."""
        seen: dict[tuple[str, str, str], None] = {}
        for group in self.groups:
            for spec in group.specs:
                seen.setdefault((group.part, group.model.name, spec), None)
        return list(seen)

    @property
    def run_count(self) -> int:
        return len(self.runs())

    def models(self) -> list[StudyModel]:
        """Every model the plan runs, once each."""
        return list({group.model.name: group.model for group in self.groups}.values())


def runs_on_family(spec: str, size: str) -> bool:
    """False for 3-bit ``gptq`` on a family model, True for every other spec and for models not
    of the family. GPTQModel's CPU kernel for 3-bit weights loads float16 and bfloat16 models
    only (the family is float32: comparing with RTN in another dtype would mix baselines), and
    its packer takes 32 output rows at a time (the k/v projections of xs and m have 16 and 48)."""
    from qeval_plugins.study.family import SIZES

    return not (spec == gptq_int(3) and size in SIZES)


def family_models(
    members: Iterable, variant_size: str = "s", fractions: Sequence[float] = (1.0, EARLY_FRACTION)
) -> list[StudyModel]:
    """The study's models of family ``members`` (objects with ``.name``, ``.size.name``,
    ``.recipe.name``, ``.seed``): every final checkpoint, plus the early checkpoints of the
    variant-size members."""
    models = []
    for member in members:
        for fraction in fractions:
            if fraction != 1.0 and member.size.name != variant_size:
                continue
            models.append(
                StudyModel(
                    checkpoint_name(member.name, fraction),
                    member.size.name,
                    member.recipe.name,
                    member.seed,
                    fraction,
                )
            )
    return models


def merged(groups: list[SweepGroup]) -> list[SweepGroup]:
    """One group per (part, model, tasks): a model planned twice gets both groups' specs in one
    ``qeval run``, at the first one's place."""
    by_key: dict[tuple[str, str, tuple[str, ...]], SweepGroup] = {}
    for group in groups:
        key = (group.part, group.model.name, group.tasks)
        if key in by_key:
            first = by_key[key]
            specs = tuple(dict.fromkeys((*first.specs, *group.specs)))
            group = SweepGroup(
                first.part, first.model, specs, first.tasks, first.metadata, first.limit
            )
        by_key[key] = group
    return list(by_key.values())


def build_plan(
    models: Sequence[StudyModel],
    *,
    passages: str | None,
    prompts: str | None,
    variant_size: str = "s",
    temperature_size: str | None = None,
    specs: Sequence[str] = (),
) -> StudyPlan:
    """The sweep groups for ``models`` (see the module docstring).

    ``passages``: the held-out JSONL for ``qeval_sqnr``/``qeval_outliers`` (``text_file``;
    None: their bundled English passages); ``prompts``: the story openings JSONL for
    ``qeval_temperature`` (``prompt_file``; None: its bundled prompts);
    ``temperature_size``: the size of the temperature sweep (default: the last size listed);
    ``specs``: the size series' specs on every seed instead of :data:`FULL_SPECS` /
    :data:`SPREAD_SPECS` (a quicker study)."""
    divergence = {"text_file": passages, "max_tokens": MAX_TOKENS} if passages else {}
    first_seed = min((m.seed for m in models if m.seed is not None), default=None)
    base = [m for m in models if m.is_final and m.recipe in ("base", None)]
    sizes = list(dict.fromkeys(m.size for m in base))
    largest = sizes[-1] if sizes else None
    groups, last = [], []
    for model in sorted(base, key=lambda m: (m.seed != first_seed, m.seed or 0)):
        full = model.seed is None or (model.seed == first_seed and model.size == largest)
        paired = model.size in (variant_size, largest)
        chosen = FULL_SPECS if full else SPREAD_SPECS + (PAIR_SPECS if paired else ())
        chosen = tuple(spec for spec in tuple(specs) or chosen if runs_on_family(spec, model.size))
        tasks = DIVERGENCE_TASKS if model.size == variant_size else SQNR_TASKS
        kept = tuple(spec for spec in chosen if not spec.startswith(SQNR_ONLY))
        groups.append(SweepGroup(DIVERGENCE, model, kept, tasks, divergence))
        if kept != chosen:
            sqnr_only = tuple(spec for spec in chosen if spec.startswith(SQNR_ONLY))
            last.append(SweepGroup(DIVERGENCE, model, sqnr_only, SQNR_TASKS, divergence))
    recipes = [m for m in models if m.size == variant_size and m.recipe is not None]
    for model in sorted(recipes, key=lambda m: (not m.is_final, m.recipe, m.seed)):
        if model.is_final:
            groups.append(SweepGroup(DIVERGENCE, model, RECIPE_SPECS, DIVERGENCE_TASKS, divergence))
        else:
            groups.append(SweepGroup(DIVERGENCE, model, (W4_SPEC,), SQNR_TASKS, divergence))
    groups = merged(groups + last)
    for model in base:
        if model.size == (temperature_size or largest):
            metadata = {"prompt_file": prompts} if prompts else {}
            groups.append(
                SweepGroup(
                    TEMPERATURE,
                    model,
                    TEMPERATURE_SPECS,
                    TEMPERATURE_TASKS,
                    metadata,
                    TEMPERATURE_PROMPTS,
                )
            )
    return StudyPlan(groups)
