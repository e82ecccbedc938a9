"""Shared fixtures: tiny models built offline, the task directory, a clean plugin registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_PLUGIN = REPO / "examples" / "qeval-ternary"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def private_cache_dir(tmp_path_factory):
    """Reference caches of the whole run go to a temporary folder, never to ~/.cache."""
    os.environ["QEVAL_CACHE_DIR"] = str(tmp_path_factory.mktemp("qeval-cache"))
    return Path(os.environ["QEVAL_CACHE_DIR"])


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random-init 2-layer Llama (hidden 128) with a BPE tokenizer, saved as safetensors."""
    from qeval_plugins.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def tasks_dir() -> Path:
    from qeval_plugins.paths import tasks_path

    return tasks_path()


@pytest.fixture
def fresh_registry(monkeypatch):
    """Reload plugins for this test (and again afterwards), so env changes take effect."""
    from qeval_plugins.core.registry import reset_registry

    reset_registry()
    yield
    reset_registry()


@pytest.fixture(scope="session")
def example_plugin_path(tmp_path_factory) -> Path:
    """The example plugin package pip-installed into a private folder (put it on PYTHONPATH)."""
    target = tmp_path_factory.mktemp("plugin-site")
    pip("install", "--no-build-isolation", "--target", str(target), str(EXAMPLE_PLUGIN))
    return target


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from qeval_plugins.backend.checkpoints import EMBEDDED_MODELS

    return AutoTokenizer.from_pretrained(EMBEDDED_MODELS["qeval-tiny"])


@pytest.fixture(scope="module")
def base():
    """The embedded (trained) model in float32, in eval mode (quantize copies of it)."""
    import torch
    from transformers import AutoModelForCausalLM

    from qeval_plugins.backend.checkpoints import EMBEDDED_MODELS

    model = AutoModelForCausalLM.from_pretrained(EMBEDDED_MODELS["qeval-tiny"], dtype=torch.float32)
    return model.eval()


@pytest.fixture(scope="module")
def held_out(tokenizer, tasks_dir):
    """The first four ``qeval_sqnr`` passages, 256 tokens each: text to compare outputs on,
    never calibrated on (calibration uses the bundled passages)."""
    import torch

    lines = (tasks_dir / "qeval_sqnr" / "passages.jsonl").read_text().splitlines()[:4]
    texts = [json.loads(line)["text"] for line in lines]
    return [torch.tensor(tokenizer(t, add_special_tokens=False)["input_ids"][:256]) for t in texts]


def pip(command: str, *args: str) -> None:
    """``python -m pip COMMAND --quiet --no-deps ARGS`` in this environment; raises if it fails."""
    quiet = [command, "--quiet", "--no-deps"]
    subprocess.run([sys.executable, "-m", "pip", *quiet, *args], check=True)


def lm_eval_args(
    model_args: str, task: str, tasks_dir: Path, *extra: str, model: str = "qeval"
) -> list[str]:
    """Arguments (after the command) of an ``lm_eval`` run of ``task`` from ``tasks_dir`` on CPU."""
    return [
        *("--model", model, "--model_args", model_args, "--tasks", task),
        *("--include_path", str(tasks_dir), "--device", "cpu", *extra),
    ]


def run_cli(
    args: list[str],
    *,
    extra_path: Path | None = None,
    cwd: Path | None = None,
    timeout: int = 600,
    cpus: int | None = None,
) -> subprocess.CompletedProcess:
    """Run a console command of this environment in a subprocess; return the finished process.
    ``cpus``: on this process's first ``cpus`` CPUs only (its affinity, which qeval counts as
    the cores it has)."""
    chosen = set(sorted(os.sched_getaffinity(0))[:cpus]) if cpus else None
    env = dict(os.environ)
    env.pop("QEVAL_DEBUG", None)
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(extra_path), env.get("PYTHONPATH")]))
    executable = Path(sys.executable).parent / args[0]
    return subprocess.run(
        [str(executable), *args[1:]],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
        preexec_fn=(lambda: os.sched_setaffinity(0, chosen)) if chosen else None,
    )


def evaluate(
    model_args: str, tasks: list[str], tasks_dir: Path, limit: int = 2, metadata: dict | None = None
) -> dict:
    """``lm_eval.simple_evaluate`` of ``--model qeval`` with qeval's tasks only, on the CPU;
    ``metadata`` overrides the task YAMLs' (runtime task settings)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    manager = TaskManager(
        include_path=str(tasks_dir), include_defaults=False, metadata=metadata or None
    )
    return lm_eval.simple_evaluate(
        model="qeval",
        model_args=model_args,
        tasks=tasks,
        device="cpu",
        limit=limit,
        task_manager=manager,
    )


def unpack_gptq_int4(folder: Path) -> dict[str, tuple]:
    """A GPTQ (auto-gptq "v1") 4-bit checkpoint's layers, read without GPTQModel: per layer
    ``(codes [in, out], zeros [G, out], scales [G, out] float64, g_idx [in])``.

    ``qweight`` ``[in/8, out]`` and ``qzeros`` ``[G, out/8]`` hold 8 codes per int32, low bits
    first; v1 stores zero points minus one (returned here plus one), so
    ``W[o, i] = scales[g, o] · (codes[i, o] − zeros[g, o])`` with ``g = g_idx[i]``.
    """
    import torch
    from safetensors.torch import load_file

    tensors = load_file(str(folder / "model.safetensors"))
    shifts = torch.arange(8, dtype=torch.int64) * 4
    layers = {}
    for key in tensors:
        if not key.endswith(".qweight"):
            continue
        name = key.removesuffix(".qweight")
        qweight = tensors[key].to(torch.int64) & 0xFFFFFFFF
        codes = ((qweight.unsqueeze(1) >> shifts.view(1, -1, 1)) & 15).reshape(-1, qweight.shape[1])
        qzeros = tensors[f"{name}.qzeros"].to(torch.int64) & 0xFFFFFFFF
        zeros = ((qzeros.unsqueeze(2) >> shifts.view(1, 1, -1)) & 15).reshape(qzeros.shape[0], -1)
        scales = tensors[f"{name}.scales"].double()
        layers[name] = (codes, zeros + 1, scales, tensors[f"{name}.g_idx"].long())
    return layers


OUTLIER_DIMS = [5, 40, 99]  # the hidden dimensions inject_outliers scales


def inject_outliers(model, dims=OUTLIER_DIMS, scale=50.0):
    """A copy of ``model`` whose norms feeding q/k/v and gate/up scale ``dims`` by ``scale`` and
    whose linears reading them divide those input columns by it: the same function, with the
    dimensions ×``scale`` in every decoder layer's projection inputs (outlier features)."""
    import copy

    import torch

    model = copy.deepcopy(model)
    with torch.no_grad():
        for layer in model.model.layers:
            attention, mlp = layer.self_attn, layer.mlp
            for norm, linears in (
                (layer.input_layernorm, (attention.q_proj, attention.k_proj, attention.v_proj)),
                (layer.post_attention_layernorm, (mlp.gate_proj, mlp.up_proj)),
            ):
                norm.weight[dims] *= scale
                for linear in linears:
                    linear.weight[:, dims] /= scale
    return model


def hide_module(monkeypatch, name: str) -> None:
    """Make ``importlib.util.find_spec(name)`` answer None: the package looks uninstalled."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda spec, *args: None if spec == name else real(spec, *args)
    )


def only_qeval_group(monkeypatch, points: list) -> None:
    """Answer ``entry_points(group="qeval")`` with ``points``; every other group as installed.

    ``importlib.metadata`` is process-wide: torch, imported for the first time during a test,
    would otherwise load the fake plugins as its device backends.
    """
    from importlib import metadata

    real = metadata.entry_points

    def entry_points(**selection):
        return points if selection.get("group") == "qeval" else real(**selection)

    monkeypatch.setattr(metadata, "entry_points", entry_points)


def fake_plugins(monkeypatch, tmp_path, modules: dict[str, str]) -> None:
    """Make ``modules`` (entry-point name -> module source) the only external plugins; each is
    the module ``fakeplugin_<name>`` in ``tmp_path``."""
    import importlib
    import textwrap
    from importlib import metadata

    for name, source in modules.items():
        (tmp_path / f"fakeplugin_{name}.py").write_text(textwrap.dedent(source))
        monkeypatch.delitem(sys.modules, f"fakeplugin_{name}", raising=False)
    importlib.invalidate_caches()
    monkeypatch.syspath_prepend(str(tmp_path))
    points = [
        metadata.EntryPoint(name=name, value=f"fakeplugin_{name}", group="qeval")
        for name in modules
    ]
    only_qeval_group(monkeypatch, points)


def replace_keeping_size_and_mtime(path: Path, source: Path) -> None:
    """``cp -p source path`` for a file of the same size: new bytes, the old modification time
    (nanoseconds); retried until the change time moves, which a coarse clock may delay."""
    import shutil
    import time

    old = path.stat()
    for _ in range(500):
        shutil.copyfile(source, path)
        os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))
        if path.stat().st_ctime_ns != old.st_ctime_ns:
            break
        time.sleep(0.01)
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (old.st_size, old.st_mtime_ns)
