"""The quantizer contract: what a plugin implements to add a quantization method.

One contract covers both kinds of method:

* methods that quantize *while loading* (bitsandbytes, GPTQ checkpoints) return extra
  ``from_pretrained`` keyword arguments from :meth:`Quantizer.load_kwargs`;
* methods that *transform a loaded model* (round-to-nearest, calibration-based GPTQ) implement
  :meth:`Quantizer.quantize`.

A method may use both. Options are declared as :class:`~.options.Option` objects and
validated before anything is loaded; optional dependencies are named in ``requires`` and imported
only inside ``load_kwargs``/``quantize``. :func:`contract_problems` lists what a quantizer class
declares wrongly; the registry disables such a quantizer at registration.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from qeval_plugins.core.calibration import CALIBRATION_OPTION_NAMES, CalibrationSet
from qeval_plugins.core.options import Option, name_problem, text_problem

_EXTRA = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
RESERVED_OPTIONS = ("quantizer", "pretrained")  # model_args the qeval backend itself takes


@dataclass(frozen=True)
class LoadContext:
    """What a quantizer may need to know about the load it takes part in.

    ``device`` is the device the model is evaluated on (``"cpu"``, ``"cuda"``, ``"cuda:1"``);
    ``dtype`` is the torch dtype name of the unquantized parts (``"float32"``, ``"bfloat16"``,
    ...): with ``dtype=auto`` the checkpoint's own (from its config); ``"auto"`` only when that
    cannot be read. ``checkpoint`` is the local folder of the checkpoint's files (a hub model's
    cache folder); ``tokenizer`` the run's tokenizer; ``calibration`` the calibration windows
    qeval chose for a ``calibrated`` quantizer (None for others); ``cache_dir`` a folder of qeval's
    cache the quantizer may keep its own files in (created on first use by the quantizer).
    All but ``device`` and ``dtype`` are None when qeval cannot provide them (a plan checked
    without loading).
    """

    device: str = "cpu"
    dtype: str = "auto"
    checkpoint: str | None = None
    tokenizer: Any = field(default=None, compare=False, repr=False)
    calibration: CalibrationSet | None = field(default=None, compare=False, repr=False)
    cache_dir: str | None = None

    @property
    def on_cuda(self) -> bool:
        return self.device.startswith("cuda")


@dataclass(frozen=True)
class Scheme:
    """What a quantizer does to a model, in the words the results and the report use.

    ``weights``: the quantized weights' number format and grouping, e.g. ``"int4 g128"``,
    ``"nf4 b64 dq"``, ``"mxfp4"``; ``activations``: the format of the activations entering the
    quantized layers, ``"unquantized"`` when they stay in the compute dtype; ``kept``: the parts
    left unquantized (``"lm_head"``, ``"embeddings"``).
    """

    weights: str
    activations: str = "unquantized"
    kept: tuple[str, ...] = ()

    def problems(self) -> list[str]:
        """What is wrong with a scheme a plugin returned; empty when it may be recorded."""
        found = [text_problem(self.weights, "scheme weights")]
        found.append(text_problem(self.activations, "scheme activations"))
        if not isinstance(self.kept, tuple) or not all(isinstance(k, str) for k in self.kept):
            found.append(f"scheme kept must be a tuple of names, got {self.kept!r}")
        return [problem for problem in found if problem]

    def record(self) -> dict[str, Any]:
        """The scheme as the results' ``qeval.scheme`` block."""
        return {"weights": self.weights, "activations": self.activations, "kept": list(self.kept)}

    def describe(self) -> str:
        """``W int4 g128 · A int8 · kept lm_head``: one line for listings."""
        parts = [f"W {self.weights}", f"A {self.activations}"]
        return " · ".join(parts + ([f"kept {', '.join(self.kept)}"] if self.kept else []))


class Quantizer:
    """Base class of every quantizer, built-in or third-party.

    Subclasses set the class attributes and override :meth:`load_kwargs` and/or :meth:`quantize`.

    Attributes:
        name: the name users type (``quantizer=NAME``), lower case, no commas or colons.
        description: one line shown by ``qeval quantizers``.
        aliases: other names for the same quantizer (for example the literature's names).
        options: the declared options, with types, defaults and ranges.
        requires: importable module names the quantizer needs (checked lazily, never imported
            at registration).
        extra: the pip extra of the plugin's own distribution that installs ``requires``
            (the install hint is ``pip install 'DISTRIBUTION[extra]'``).
        needs_cuda: True when the method cannot run without a CUDA device.
        cuda_capability: the lowest CUDA compute capability it runs on, ``(major, minor)``
            (``(8, 9)`` for float8 kernels), or None for any; only with ``needs_cuda``.
        simulated: True when weights are replaced by their quantized values but kept in the
            original dtype ("fake" quantization): accuracy is exact, memory and speed are not.
        identity: True only for a method that leaves the model unchanged (the ``none``
            baseline); :func:`qeval_plugins.testing.check_quantizer` then expects identical
            outputs instead of different ones.
        version: the method's version, recorded with every run; raise it whenever the same
            options would quantize differently (a fixed bug, a new default), so results and any
            cache of quantized models made by the older code are told apart.
        calibrated: True when ``quantize`` needs calibration data: the quantizer then declares
            :data:`~qeval_plugins.core.calibration.CALIBRATION_OPTIONS` among its options and
            reads the windows from ``context.calibration``.
        cache_quantized: True when quantizing is worth caching (calibration, minutes of work):
            qeval saves the quantized model with :meth:`save_quantized` and reuses it for the
            reloads after a reference pass and for later runs of the same spec.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    options: ClassVar[tuple[Option, ...]] = ()
    requires: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str | None] = None
    needs_cuda: ClassVar[bool] = False
    cuda_capability: ClassVar[tuple[int, int] | None] = None
    simulated: ClassVar[bool] = False
    identity: ClassVar[bool] = False
    version: ClassVar[str] = "1"
    calibrated: ClassVar[bool] = False
    cache_quantized: ClassVar[bool] = False

    def missing_requirement(self) -> str | None:
        """Name of the first required module that is not installed, or None."""
        for module in self.requires:
            if importlib.util.find_spec(module) is None:
                return module
        return None

    def finalize_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Reject combinations that do not go together (QevalError); return the final options.

        Each option is already type- and range-checked and defaults are filled in. A quantizer
        may fill in values implied by others (e.g. the bits of a fixed format), so that the
        options recorded in the results are the ones actually used. Called before loading.
        """
        return options

    def load_kwargs(self, options: Mapping[str, Any], context: LoadContext) -> dict[str, Any]:
        """Extra keyword arguments for ``AutoModelForCausalLM.from_pretrained``.

        May contain ``quantization_config`` and ``dtype`` (which then overrides the requested one).
        Called once, after options are validated, before the model is loaded.
        """
        return {}

    def quantize(self, model: Any, options: Mapping[str, Any], context: LoadContext) -> Any:
        """Transform the loaded model and return it (may be the same object, changed in place).

        Must return a ``torch.nn.Module`` (never None) and must not change ``options`` (they are
        read-only: they are what the run records).
        """
        return model

    def needs_calibration(self, options: Mapping[str, Any]) -> bool:
        """Whether quantizing with these options reads ``context.calibration``; qeval then builds
        and records the windows. Default: ``calibrated``. A method that calibrates only for some
        options (``rtn`` with static activation scales or SmoothQuant) says so here; it declares
        the calibration options but is not ``calibrated``."""
        return self.calibrated

    def save_quantized(
        self, model: Any, folder: Path, options: Mapping[str, Any], context: LoadContext
    ) -> None:
        """Write the quantized ``model`` into the empty ``folder`` (only with ``cache_quantized``).

        The default ``model.save_pretrained(folder)`` suits methods that keep the model's
        structure (simulated quantization); a method with its own format overrides this and
        :meth:`load_quantized`.
        """
        model.save_pretrained(folder)

    def load_quantized(self, folder: Path, options: Mapping[str, Any], context: LoadContext) -> Any:
        """The model :meth:`save_quantized` wrote into ``folder``, or None (the default) to let
        qeval load ``folder`` like a checkpoint, with lm-eval's loading options."""
        return None

    def effective_bits(self, options: Mapping[str, Any]) -> float | None:
        """Average storage bits per quantized weight including scales, if the method knows it."""
        return None

    def scheme(self, options: Mapping[str, Any]) -> Scheme | None:
        """What these options quantize, and to which formats (:class:`Scheme`); None if unknown."""
        return None


def contract_problems(quantizer: Quantizer) -> list[str]:
    """What ``quantizer`` declares against the contract; empty when it may be registered.

    Rules: name and aliases follow :func:`~qeval_plugins.core.options.name_problem` and differ from
    each other; the description is one non-empty line; options are :class:`Option` objects
    with distinct names, none of them ``quantizer`` or ``pretrained``, each passing
    :meth:`Option.problems`; ``requires`` is a tuple of module names; ``extra`` is None or a pip
    extra name; ``version`` is one non-empty line; ``needs_cuda``, ``simulated``, ``identity``,
    ``calibrated`` and ``cache_quantized`` are booleans; a calibrated quantizer declares the
    calibration options.
    """
    problems = [name_problem(quantizer.name, "name")]
    aliases = quantizer.aliases
    if isinstance(aliases, tuple | list):
        problems += [name_problem(alias, "alias") for alias in aliases]
        keys = [quantizer.name, *aliases]
        repeated = sorted({str(key) for key in keys if keys.count(key) > 1})
        problems += [f"alias {key!r} repeats its name or another alias" for key in repeated]
    else:
        problems.append(f"aliases must be a tuple of names, got {aliases!r}")
    problems.append(text_problem(quantizer.description, "description"))
    problems += _options_problems(quantizer.options)
    problems += _declaration_problems(quantizer)
    return [problem for problem in problems if problem]


def _options_problems(options: Any) -> list[str]:
    if not isinstance(options, tuple | list):
        return [f"options must be a tuple of qeval_plugins.Option, got {options!r}"]
    wrong = [option for option in options if not isinstance(option, Option)]
    if wrong:
        return [f"options must be qeval_plugins.Option objects, got {wrong[0]!r}"]
    names = [option.name for option in options]
    problems = [problem for option in options for problem in option.problems()]
    problems += [
        f"option {n!r} is declared twice" for n in sorted(set(names)) if names.count(n) > 1
    ]
    reserved = [name for name in names if name in RESERVED_OPTIONS]
    problems += [f"option name {name!r} is reserved for the qeval backend" for name in reserved]
    return problems


def _declaration_problems(quantizer: Quantizer) -> list[str]:
    """``requires``, ``extra`` and the boolean flags."""
    problems = []
    requires = quantizer.requires
    if not isinstance(requires, tuple | list) or not all(
        isinstance(module, str) and module for module in requires
    ):
        problems.append(
            f"requires must be a tuple of module names, e.g. ('hqq',), got {requires!r}"
        )
    extra = quantizer.extra
    if extra is not None and not (isinstance(extra, str) and _EXTRA.fullmatch(extra)):
        problems.append(f"extra must be None or a pip extra name, got {extra!r}")
    problems.append(text_problem(quantizer.version, "version"))
    if quantizer.calibrated is True:
        declared = {getattr(option, "name", None) for option in quantizer.options}
        missing = [name for name in CALIBRATION_OPTION_NAMES if name not in declared]
        if missing:
            problems.append(
                f"calibrated quantizers declare CALIBRATION_OPTIONS among their options; "
                f"missing {', '.join(missing)}"
            )
    for flag in ("needs_cuda", "simulated", "identity", "calibrated", "cache_quantized"):
        if not isinstance(getattr(quantizer, flag), bool):
            problems.append(f"{flag} must be True or False, got {getattr(quantizer, flag)!r}")
    capability = getattr(quantizer, "cuda_capability", None)
    if capability is not None and not _is_capability(capability):
        problems.append(f"cuda_capability must be (major, minor) or None, got {capability!r}")
    elif capability is not None and quantizer.needs_cuda is not True:
        problems.append("cuda_capability is set, so needs_cuda must be True")
    return problems


def _is_capability(value: Any) -> bool:
    """``(major, minor)``: a tuple of two non-negative ints."""
    return (
        isinstance(value, tuple)
        and len(value) == 2
        and all(type(part) is int and part >= 0 for part in value)
    )


def resolve_dtype(dtype: Any, pretrained: str | None = None, revision: str | None = None) -> str:
    """The torch dtype name (``"float32"``, ``"bfloat16"``, ...) a load with ``dtype`` gives.

    ``dtype`` is what the user passed (a name, ``torch.<name>``, a ``torch.dtype``, ``"auto"`` or
    None). ``auto``/None resolves as transformers does: the ``dtype`` (older: ``torch_dtype``) of
    the checkpoint's config.json, else the type of its first floating-point safetensors tensor;
    ``"auto"`` is returned only when neither can be read (e.g. no ``pretrained``).
    """
    text = "auto" if dtype is None else str(dtype).removeprefix("torch.")
    if text != "auto":
        import torch

        value = getattr(torch, text, None)
        return str(value).removeprefix("torch.") if isinstance(value, torch.dtype) else text
    if pretrained is None:
        return "auto"
    return _config_dtype(pretrained, revision) or _safetensors_dtype(pretrained) or "auto"


def _config_dtype(pretrained: str, revision: str | None) -> str | None:
    from transformers import PretrainedConfig

    try:
        config, _ = PretrainedConfig.get_config_dict(pretrained, revision=revision)
    except (OSError, ValueError):
        return None
    value = config.get("dtype") or config.get("torch_dtype")
    return resolve_dtype(value) if isinstance(value, str) and value != "auto" else None


_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}


def _safetensors_dtype(pretrained: str) -> str | None:
    from safetensors import safe_open

    for file in sorted(Path(pretrained).glob("*.safetensors")):
        with safe_open(str(file), "pt") as handle:
            keys = handle.keys()
            for key in keys:
                name = _SAFETENSORS_DTYPES.get(handle.get_slice(key).get_dtype())
                if name:
                    return name
    return None
