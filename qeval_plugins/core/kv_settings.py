"""The KV-cache quantization settings of a run: the ``kv_*`` model_args (or spec options).

``kv_backend=sim|quanto|hqq`` with ``kv_bits``, ``kv_format``, ``kv_group_size`` and
``kv_residual_length`` make every ``generate`` of the quantized model store its keys and values
quantized (:mod:`qeval_plugins.backend.kv_cache` does it); ``kv_format`` is any format of the
table :data:`qeval_plugins.formats.table.FORMATS` (rtn's formats). Any ``kv_*`` option without
``kv_backend`` means ``kv_backend=sim``, and an MX ``kv_format`` means blocks of 32. A setting
given that has no effect in its combination is refused, by the quantizers' rule
(:class:`~qeval_plugins.core.options.Requires`): ``kv_format`` other than ``int`` with a backend
other than ``sim``, ``kv_bits`` with a fixed-width ``kv_format``, ``kv_group_size`` other than
32 with an MX ``kv_format``. They belong to the run, not to the quantizer, so they
combine with any quantizer and may be written in a spec (``rtn:bits=4:kv_bits=2``), where
``qeval run`` keys and names the run by them. Checked here, before anything is loaded: one
QevalError line per mistake.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass
from typing import Any

from qeval_plugins.core.errors import QevalError, did_you_mean
from qeval_plugins.core.options import Option, Requires
from qeval_plugins.formats.table import FORMATS, MX_BLOCK_SIZE

KV_CACHE_ARGS = ("kv_backend", "kv_bits", "kv_format", "kv_group_size", "kv_residual_length")
BACKENDS = ("sim", "quanto", "hqq")
PACKAGES = {"quanto": "optimum.quanto", "hqq": "hqq"}  # backend -> module (and qeval extra)
DEFAULTS = {"kv_bits": 4, "kv_format": "int", "kv_group_size": 64, "kv_residual_length": 128}
MX_FORMATS = tuple(fmt for fmt, spec in FORMATS.items() if spec.is_mx)  # kv_group_size: their block


@dataclass(frozen=True)
class KvCache:
    """The KV-cache quantization of a run (see the module docstring)."""

    backend: str
    bits: int
    format: str
    group_size: int
    residual_length: int

    def describe(self) -> str:
        """``int4 g64 r128 (sim)``: what the report shows next to the run's label."""
        fmt = f"int{self.bits}" if self.format == "int" else self.format
        return f"{fmt} g{self.group_size} r{self.residual_length} ({self.backend})"

    def record(self) -> dict[str, Any]:
        return {**asdict(self), "describe": self.describe()}


def take_kv_cache(model_args: dict[str, Any]) -> KvCache | None:
    """The ``kv_*`` settings, removed from ``model_args`` and checked (one-line QevalError).

    Values may be numbers (lm-eval's model_args) or their text (a spec's options).
    """
    given = {name: model_args.pop(name) for name in KV_CACHE_ARGS if name in model_args}
    backend = str(given.pop("kv_backend", "sim" if given else "none")).strip().lower()
    if backend in ("none", "", "false"):
        if given:
            raise QevalError(
                f"{sorted(given)[0]} has no effect with kv_backend={backend or 'none'}; drop it, "
                f"or pick kv_backend=sim, quanto or hqq."
            )
        return None
    if backend not in BACKENDS:
        raise QevalError(
            f"kv_backend={backend} is not a KV-cache backend.{did_you_mean(backend, BACKENDS)} "
            f"Use sim, quanto or hqq."
        )
    values = {**DEFAULTS, **given}
    fmt = str(values["kv_format"]).strip()
    if fmt in MX_FORMATS and "kv_group_size" not in given:
        values["kv_group_size"] = MX_BLOCK_SIZE
    settings = KvCache(
        backend=backend,
        bits=_integer(values["kv_bits"], "kv_bits", 1, 8),
        format=fmt,
        group_size=_integer(values["kv_group_size"], "kv_group_size", 1, 1 << 16),
        residual_length=_integer(values["kv_residual_length"], "kv_residual_length", 0, 1 << 20),
    )
    _check(settings, given)
    return settings


def check_head_dim(settings: KvCache | None, head_dim: int | None) -> None:
    """A ``sim`` cache's groups (``kv_group_size``, at most the head dimension) must divide the
    model's head dimension; an MX ``kv_format``'s blocks of 32 (the last one padded) need a head
    dimension of 32 or more: one QevalError line. Nothing to check without settings or a known
    head dimension."""
    if settings is None or head_dim is None or settings.backend != "sim":
        return
    if settings.format in MX_FORMATS:
        if head_dim < MX_BLOCK_SIZE:
            raise QevalError(
                f"kv_format={settings.format} quantizes blocks of {MX_BLOCK_SIZE} values, more "
                f"than the model's head dimension {head_dim}; pick a kv_format that is not MX."
            )
        return
    if head_dim % min(settings.group_size, head_dim):
        raise QevalError(
            f"kv_group_size={settings.group_size} does not divide the model's head dimension "
            f"{head_dim}; give a divisor of {head_dim}."
        )


def config_head_dim(config: Any) -> int | None:
    """The head dimension a model's ``config.json`` (parsed) states: ``head_dim``, else
    ``hidden_size // num_attention_heads``, of its ``text_config`` when it has one; None when
    it says neither as positive integers."""
    if not isinstance(config, dict):
        return None
    text = config.get("text_config")
    config = text if isinstance(text, dict) else config
    head_dim = config.get("head_dim")
    if type(head_dim) is int and head_dim > 0:
        return head_dim
    hidden, heads = config.get("hidden_size"), config.get("num_attention_heads")
    if type(hidden) is int and type(heads) is int and hidden > 0 and heads > 0:
        return hidden // heads
    return None


def _integer(value: Any, name: str, low: int, high: int) -> int:
    """``value`` as a whole number in ``[low, high]``: an int, or its decimal text."""
    if isinstance(value, str) and value.strip().isdecimal() and value.strip().isascii():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise QevalError(f"{name} must be a whole number from {low} to {high}, got {value!r}.")
    return value


def _kv_options() -> dict[str, Option]:
    """The ``kv_*`` settings that depend on others, as options with their :class:`Requires`;
    ``kv_bits`` of a fixed-width format is, as rtn's ``bits``, accepted at the format's own width
    (``kv_format=mxfp4:kv_bits=4``)."""
    widths = tuple((fmt, spec.element_bits) for fmt, spec in FORMATS.items() if spec.element_bits)
    scaled = tuple(fmt for fmt in FORMATS if fmt not in MX_FORMATS)
    blocks = tuple((fmt, MX_BLOCK_SIZE) for fmt in MX_FORMATS)
    return {
        "kv_format": Option(
            "kv_format",
            str,
            "int",
            "number format",
            tuple(FORMATS),
            requires=(
                Requires("kv_backend", ("sim",), implies=(("quanto", "int"), ("hqq", "int"))),
            ),
        ),
        "kv_bits": Option(
            "kv_bits",
            int,
            4,
            "bits",
            minimum=1,
            maximum=8,
            requires=(Requires("kv_format", ("int",), implies=widths),),
        ),
        "kv_group_size": Option(
            "kv_group_size",
            int,
            64,
            "values per scale",
            minimum=1,
            requires=(Requires("kv_format", scaled, implies=blocks),),
        ),
    }


def _check(settings: KvCache, given: dict[str, Any]) -> None:
    if settings.format not in FORMATS:
        raise QevalError(
            f"kv_format={settings.format} is not an rtn format."
            f"{did_you_mean(settings.format, tuple(FORMATS))} ('qeval quantizers' lists them)"
        )
    resolved = {f"kv_{name}": value for name, value in asdict(settings).items()}
    for name, option in _kv_options().items():
        problem = option.inert(resolved) if name in given else None
        if problem:
            raise QevalError(problem)
    if settings.backend == "sim" and settings.format == "int" and settings.bits < 2:
        raise QevalError("kv_backend=sim needs kv_bits of 2 or more (rtn's int formats).")
    if settings.backend == "quanto" and settings.bits not in (2, 4):
        raise QevalError(f"kv_backend=quanto stores 2 or 4 bits, not kv_bits={settings.bits}.")
    module = PACKAGES.get(settings.backend)
    if module and not _installed(module):
        raise QevalError(
            f"kv_backend={settings.backend} needs {module}, which is not installed; run: "
            f"pip install 'qeval[{settings.backend}]'"
        )


def _installed(module: str) -> bool:
    """Whether ``module`` imports (``optimum`` may be there without ``optimum.quanto``)."""
    parent = module.split(".")[0]
    return (
        importlib.util.find_spec(parent) is not None
        and importlib.util.find_spec(module) is not None
    )
