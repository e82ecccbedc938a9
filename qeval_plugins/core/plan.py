"""Turn the model_args of a run into a validated quantization plan, before anything is loaded."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from qeval_plugins.core.calibration import read_passages
from qeval_plugins.core.errors import QevalError, did_you_mean, near_miss
from qeval_plugins.core.kv_settings import KV_CACHE_ARGS, KvCache, take_kv_cache
from qeval_plugins.core.options import resolve_options
from qeval_plugins.core.quantizer import LoadContext, Quantizer
from qeval_plugins.core.registry import (
    PluginInfo,
    get_registry,
    run_finalize_options,
    run_scheme,
)
from qeval_plugins.core.specs import format_spec, parse_spec

# model_args the qeval backend itself takes besides pretrained and quantizer: the unquantized
# reference, and the KV-cache quantization of generations (qeval_plugins.core.kv_settings)
BACKEND_ARGS = ("reference", *KV_CACHE_ARGS)

# model_args of lm-eval's hf backend that quantize at load time; qeval does that through plugins.
HF_QUANTIZATION_ARGS = (
    "load_in_4bit",
    "load_in_8bit",
    "autogptq",
    "gptqmodel",
    "quantization_config",
)


@dataclass
class QuantizationPlan:
    """The chosen quantizer, its final options, and what the run measured about quantizing."""

    requested: str
    quantizer: Quantizer
    plugin: PluginInfo
    options: dict[str, Any]
    given: dict[str, Any] = field(default_factory=dict)  # the options the user set
    scheme: dict[str, Any] | None = None  # Scheme.record() of the quantizer at these options
    kv: KvCache | None = None  # the KV-cache quantization of generations, if any
    measured: dict[str, Any] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)  # those that select it (none dropped)

    @property
    def spec(self) -> str:
        """Canonical spec: name plus the options the user set, sorted: ``rtn:bits=3:format=int``."""
        return format_spec(self.quantizer.name, self.given)

    def context(
        self, device: str, dtype: Any, pretrained: str | None = None, revision: str | None = None
    ) -> LoadContext:
        """The quantizer's view of a load on ``device``, with ``dtype`` resolved to a torch dtype
        name (``auto``: the checkpoint's, read from ``pretrained`` at ``revision``)."""
        from qeval_plugins.core.quantizer import resolve_dtype

        return LoadContext(
            device=device,
            dtype=resolve_dtype(dtype, pretrained, revision),
            plugin=self.plugin.name,
        )

    def record(self) -> dict[str, Any]:
        """The ``qeval`` block of the results JSON's ``config``."""
        return {
            "spec": self.spec,
            "quantizer": self.quantizer.name,
            "requested_as": self.requested,
            "aliases": list(self.aliases),
            "options": dict(self.options),
            "quantizer_version": self.quantizer.version,
            "scheme": self.scheme,
            "simulated": self.quantizer.simulated,
            "effective_bits": self.quantizer.effective_bits(self.options),
            "kv_cache": self.kv.record() if self.kv else None,
            "plugin": {
                "name": self.plugin.name,
                "distribution": self.plugin.source,
                "version": self.plugin.version,
            },
            **self.measured,
        }


def plan_quantization(
    quantizer: Any, model_args: dict[str, Any], hf_params: set[str], device: str | None
) -> QuantizationPlan:
    """Pick the quantizer named ``quantizer`` and take its options and the KV-cache settings
    (:func:`~.kv_settings.take_kv_cache`) out of ``model_args``.

    ``model_args`` is changed in place: the quantizer's own options are removed, except those
    that are also parameters of lm-eval's HFLM (``hf_params``, e.g. ``dtype``), which stay so
    HFLM sees them. A model_arg that is an option of *another* quantizer is an error; any other
    model_arg is left for HFLM / ``from_pretrained``, as with ``--model hf``.
    """
    for name in HF_QUANTIZATION_ARGS:
        if model_args.get(name):
            raise QevalError(
                f"model_arg '{name}' is lm-eval's own quantization switch; with --model qeval use "
                f"quantizer=NAME instead (run 'qeval quantizers' to list them)."
            )
    check_device(device)
    check_dtype(model_args.get("dtype"))
    kv = take_kv_cache(model_args)
    registry = get_registry()
    requested = "none" if quantizer is None else str(quantizer)
    entry = registry.get(requested)
    chosen = entry.quantizer
    own = {option.name for option in chosen.options}
    given = {name: model_args[name] for name in own if name in model_args}
    for name in list(model_args):
        owners = registry.option_owners(name)
        if name not in own and owners and name not in hf_params:
            valid = ", ".join(sorted(own)) or "none"
            raise QevalError(
                f"option '{name}' belongs to {_quantizers(owners)}, not "
                f"'{chosen.name}'; valid options of '{chosen.name}': {valid}."
            )
        if name not in own and not owners and name not in hf_params:
            refuse_near_miss(name, chosen, registry)
    options = run_finalize_options(
        chosen, entry.plugin, resolve_options(chosen.name, chosen.options, given)
    )
    for name in own:
        if name in hf_params:
            model_args[name] = options[name]
        else:
            model_args.pop(name, None)
    missing = chosen.missing_requirement()
    if missing:
        raise QevalError(
            f"quantizer '{chosen.name}' needs the package '{missing}', which is not installed; "
            f"run: {install_command(chosen, missing)}"
        )
    if chosen.needs_cuda and devices_checked_here() and not _cuda_requested_and_present(device):
        raise QevalError(
            f"quantizer '{chosen.name}' needs a CUDA GPU and none is "
            f"{'available' if _cuda_missing() else 'selected'}; run with --device cuda on a "
            f"machine with an NVIDIA GPU, or pick another quantizer."
        )
    if chosen.needs_calibration(options):  # a bad file is one line now, not after loading
        read_passages(options["calibration_file"])
    given_final = {name: options[name] for name in given}
    scheme = run_scheme(chosen, entry.plugin, options)  # a plugin's bad answer fails here, early
    return QuantizationPlan(
        requested,
        chosen,
        entry.plugin,
        options,
        given_final,
        scheme,
        kv,
        aliases=registry.aliases(chosen.name),
    )


def _quantizers(names: list[str]) -> str:
    """``quantizer rtn``, ``quantizers gptq-sim and gptq``, ``quantizers a, b and c``."""
    if len(names) == 1:
        return f"quantizer {names[0]}"
    return f"quantizers {', '.join(names[:-1])} and {names[-1]}"


def refuse_near_miss(name: str, chosen: Quantizer, registry: Any) -> None:
    """A model_arg that is nobody's option but nearly one (``bit``, ``Quantizer``) is a typo.

    Other unknown model_args go on to ``from_pretrained``, as with ``--model hf``; these would be
    refused there only after the model loaded, or ignored, and the run would silently use the
    defaults. Near: :func:`~.errors.near_miss`.
    """
    known = {"quantizer", "pretrained", *BACKEND_ARGS} | {
        option.name for entry in registry.all() for option in entry.quantizer.options
    }
    intended = near_miss(name, known)
    if intended is not None:
        valid = ", ".join(sorted(option.name for option in chosen.options)) or "none"
        raise QevalError(
            f"unknown model_arg '{name}'. Did you mean '{intended}'? (options of quantizer "
            f"'{chosen.name}': {valid}; 'qeval quantizers' lists all)"
        )


MODEL_DTYPES = ("auto", "float32", "float16", "bfloat16", "float64")


def check_dtype(dtype: Any) -> None:
    """A ``dtype`` model_arg must be a floating-point torch dtype name (``torch.`` prefix allowed).

    lm-eval would fail with a traceback deep in loading (``module 'torch' has no attribute``).
    """
    if dtype is None:
        return
    text = str(dtype).removeprefix("torch.")
    if text not in MODEL_DTYPES:
        raise QevalError(
            f"model_arg dtype={dtype} is not a model dtype.{did_you_mean(text, MODEL_DTYPES)} "
            f"Use one of {', '.join(MODEL_DTYPES)}."
        )


_DEVICES_ELSEWHERE: ContextVar[bool] = ContextVar("qeval_devices_elsewhere", default=False)


@contextlib.contextmanager
def devices_elsewhere() -> Iterator[None]:
    """Checks made here for runs on other machines (a SLURM or Ray cluster driven from a login
    node without a GPU): inside the block, a CUDA device is not looked for on this machine
    (:func:`check_device` checks only its name, a quantizer that needs CUDA is not refused, and
    :func:`devices_checked_here` is False); each run checks its device where it runs."""
    token = _DEVICES_ELSEWHERE.set(True)
    try:
        yield
    finally:
        _DEVICES_ELSEWHERE.reset(token)


def devices_checked_here() -> bool:
    """False inside :func:`devices_elsewhere`."""
    return not _DEVICES_ELSEWHERE.get()


def check_device(device: str | None) -> None:
    """``device`` must name a device torch knows and that exists here, whatever the quantizer.

    ``cuda`` / ``cuda:N`` need a CUDA GPU (N below the device count), ``mps`` Apple's GPU; other
    device types (``cpu``, ``xpu``, ...) are left to torch and lm-eval.
    """
    if device is None:
        return
    import torch

    try:
        kind = torch.device(str(device)).type
    except (RuntimeError, ValueError):
        raise QevalError(
            f"--device {device}: not a device name torch knows; use cpu, cuda or cuda:N."
        ) from None
    if kind == "mps" and not torch.backends.mps.is_available():
        raise QevalError(f"--device {device}: Apple's MPS is not available here; use --device cpu.")
    if kind != "cuda" or not devices_checked_here():
        return

    if not torch.cuda.is_available():
        raise QevalError(
            f"--device {device}: this machine has no usable CUDA GPU (torch {torch.__version__}); "
            f"run with --device cpu, or on a machine with an NVIDIA GPU and a CUDA build of torch."
        )
    index = str(device).partition(":")[2]
    if index.isdecimal() and index.isascii() and int(index) >= torch.cuda.device_count():
        raise QevalError(
            f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s), "
            f"numbered from 0; pick one of them."
        )


def _cuda_missing() -> bool:
    import torch

    return not torch.cuda.is_available()


def _cuda_requested_and_present(device: str | None) -> bool:
    return not _cuda_missing() and (device is None or str(device).startswith("cuda"))


def _no_nvidia_driver() -> bool:
    """No NVIDIA driver on this machine: what a listing can tell without importing torch (a
    CPU-only torch build next to a driver is found out when the quantizer is chosen)."""
    import os
    import shutil

    if "torch" in sys.modules:
        return _cuda_missing()
    return not (os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi"))


def availability(quantizer: Quantizer) -> str:
    """``ok``, ``missing <module> → pip install ...``, ``needs CUDA`` or ``needs CUDA sm89+``
    (with ``(GPU 0 is sm80)`` when torch is loaded and its first GPU is older): can it run here?

    Listings call this for every quantizer: it never imports torch (see :func:`_no_nvidia_driver`).
    """
    missing = quantizer.missing_requirement()
    if missing:
        return f"missing {missing} → {install_command(quantizer, missing)}"
    if not quantizer.needs_cuda:
        return "ok"
    needed = quantizer.cuda_capability
    needs = "needs CUDA" + (f" sm{needed[0]}{needed[1]}+" if needed else "")
    if _no_nvidia_driver():
        return needs
    found = _first_gpu_capability()
    if needed and found and tuple(found) < tuple(needed):
        return f"{needs} (GPU 0 is sm{found[0]}{found[1]})"
    return "ok"


def _first_gpu_capability() -> tuple[int, int] | None:
    """GPU 0's compute capability when torch is already loaded and sees a GPU, else None."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return tuple(torch.cuda.get_device_capability(0))


def install_command(quantizer: Quantizer, missing: str) -> str:
    """The pip command that installs what ``quantizer`` misses.

    With an ``extra``: ``pip install 'DIST[extra]'``, DIST the distribution of the plugin that
    registered the quantizer (``qeval`` for built-ins); else ``pip install MODULE``.
    """
    plugin = get_registry().plugin_of(quantizer)
    source = plugin.source if plugin is not None else "built-in"
    distribution = "qeval" if source == "built-in" else source
    if not quantizer.extra or distribution == "unknown":
        return f"pip install {missing}"
    return f"pip install '{distribution}[{quantizer.extra}]'"


def check_spec(spec: str, device: str | None = None) -> QuantizationPlan:
    """Validate a spec fully (name, options, packages, CUDA) without loading anything."""
    name, options = parse_spec(spec)
    return plan_quantization(name, dict(options), set(), device)
