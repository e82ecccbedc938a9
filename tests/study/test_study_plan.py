"""The seed study's sweep matrix: every required spec, task, seed and checkpoint is planned."""

from __future__ import annotations

from qeval_plugins.study import plan as P
from qeval_plugins.study.family import default_family

REQUIRED_SPECS = {
    "bnb-nf4", "bnb-fp4", "bnb-int8",
    "rtn:bits=8:group_size=32", "rtn:bits=4:group_size=32", "rtn:bits=3:group_size=32",
    "rtn:bits=2:group_size=32", "rtn:format=fp4_e2m1:group_size=32",
    "rtn:format=nf4:group_size=32", "rtn:format=mxfp4", "rtn:format=mxint4",
    "gptq:bits=4:group_size=32", "gptq:bits=3:group_size=32",
}  # fmt: skip


def default_plan() -> P.StudyPlan:
    models = P.family_models(default_family())
    return P.build_plan(models, passages="held.jsonl", prompts="prompts.jsonl")


def runs_of(plan: P.StudyPlan, part: str) -> set[tuple[str, str]]:
    return {(model, spec) for p, model, spec in plan.runs() if p == part}


def test_seed_1_of_the_end_sizes_gets_every_required_spec_and_every_size_the_spread_ones():
    plan = default_plan()
    divergence = runs_of(plan, P.DIVERGENCE)
    for size in ("xs", "s", "m", "l"):
        specs = {spec for model, spec in divergence if model == f"base-{size}-seed1"}
        wanted = REQUIRED_SPECS if size == "l" else set(P.SPREAD_SPECS)
        # GPTQModel's 3-bit CPU kernel loads no float32 model: no 3-bit gptq on the family
        assert specs >= wanted - {P.gptq_int(3)}
        assert P.gptq_int(3) not in specs
    for group in plan.groups:
        if group.part == P.DIVERGENCE:
            # qeval_outliers (it cannot read GPTQ's packed layers) runs where the recipes run
            gptq = any(spec.startswith("gptq") for spec in group.specs)
            outliers = group.model.size == "s" and group.model.is_final and not gptq
            assert group.tasks == (P.DIVERGENCE_TASKS if outliers else ("qeval_sqnr",))
            assert group.metadata == {"text_file": "held.jsonl", "max_tokens": P.MAX_TOKENS}


def test_every_spread_finding_has_two_seeds_at_every_size():
    divergence = runs_of(default_plan(), P.DIVERGENCE)
    for size in ("xs", "s", "m", "l"):
        paired = P.PAIR_SPECS if size in ("s", "l") else ()
        for spec in P.SPREAD_SPECS + paired:
            if not P.runs_on_family(spec, size):
                continue
            for seed in (1, 2):
                assert (f"base-{size}-seed{seed}", spec) in divergence


def test_every_recipe_has_w4_and_w8a8_and_its_early_checkpoint_w4_on_two_seeds():
    divergence = runs_of(default_plan(), P.DIVERGENCE)
    assert P.W8A8_SPEC == "rtn:bits=8:group_size=0:act_format=int"
    for recipe in ("base", "wd0.1", "dropout0.1", "clip1.0", "bf16", "fp16"):
        for seed in (1, 2):
            name = f"{recipe}-s-seed{seed}"
            assert {(name, P.W4_SPEC), (name, P.W8A8_SPEC)} <= divergence
            assert (f"{name}-at25pct", P.W4_SPEC) in divergence


def test_the_temperature_sweep_is_none_nf4_fp4_on_the_largest_size_both_seeds():
    plan = default_plan()
    temperature = runs_of(plan, P.TEMPERATURE)
    assert temperature == {
        (f"base-l-seed{seed}", spec) for seed in (1, 2) for spec in ("none", "bnb-nf4", "bnb-fp4")
    }
    groups = [g for g in plan.groups if g.part == P.TEMPERATURE]
    assert all(g.metadata == {"prompt_file": "prompts.jsonl"} for g in groups)
    assert all(g.tasks == ("qeval_temperature",) for g in groups)
    assert all(g.limit == P.TEMPERATURE_PROMPTS for g in groups)


def test_the_default_study_is_about_100_runs_each_planned_once():
    plan = default_plan()
    # size series: 8 models x 4 spread specs, 4 models (s, l) x 2 pair specs, 7 more on l seed 1;
    # recipes: 12 models x 2 minus base-s W4 (in the series); 12 early checkpoints x 1;
    # temperature 2 x 3
    # (no 3-bit gptq: 8 runs fewer)
    assert plan.run_count == 32 - 8 + 8 + 7 + 22 + 12 + 6 == 79
    assert len(plan.runs()) == len(set(plan.runs()))
    keys = [(g.model.name, g.tasks) for g in plan.groups if g.part == P.DIVERGENCE]
    assert len(set(keys)) == len(keys)  # one qeval run per model and task set


def test_external_models_get_only_the_size_series_with_every_spec():
    models = [P.StudyModel("pythia-70m", "EleutherAI/pythia-70m", None, None)]
    plan = P.build_plan(models, passages=None, prompts=None)
    divergence = runs_of(plan, P.DIVERGENCE)
    assert {spec for _, spec in divergence} == set(P.FULL_SPECS)
    assert all(g.metadata == {} for g in plan.groups)


def test_given_models_are_named_as_qeval_run_names_their_folders(tmp_path):
    from qeval_plugins.study.runner import external_models
    from qeval_plugins.sweep.planning import slug

    local = tmp_path / "pythia-local"
    local.mkdir()
    given = external_models(["EleutherAI/pythia-70m", str(local)])
    hub, folder = given["EleutherAI/pythia-70m"], given[str(local)]
    assert slug(hub.name) == slug("EleutherAI/pythia-70m") == "EleutherAI--pythia-70m"
    assert folder.name == folder.size == "pythia-local"
    assert hub.recipe is None and hub.seed is None
