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

import contextlib
import importlib.util
import json
import logging
import math
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

from qeval_plugins.core.calibration import (
    CALIBRATION_OPTION_NAMES,
    CALIBRATION_OPTIONS,
    CalibrationSet,
)
from qeval_plugins.core.errors import QevalError
from qeval_plugins.core.options import Option, name_problem, requirement_problems, text_problem

_EXTRA = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
RESERVED_OPTIONS = ("quantizer", "pretrained")  # model_args the qeval backend itself takes


RECORD_CAP_BYTES = 64 * 1024  # the plugin record's size in the results, as compact JSON
_RECORD_DEPTH = 32  # deeper nesting than this is refused (a cycle, or not a record)
PROGRESS_LOG_SECONDS = 30.0  # a progress handle logs a line at most this often


class PluginRecord:
    """What a plugin recorded with :meth:`LoadContext.record`: JSON values by key, size-capped.

    ``values`` is what the results show as ``qeval.plugin_record``; ``dropped`` lists the keys
    whose values did not fit under :data:`RECORD_CAP_BYTES` (``qeval.plugin_record_dropped``).
    The size is that of ``values`` as compact JSON (``separators=(",", ":")``), in bytes of UTF-8:
    2 + Σ over keys of (len of ``{key: value}``'s JSON − 2) + (number of keys − 1) commas.
    """

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.dropped: list[str] = []
        self._sizes: dict[str, int] = {}
        self._warned = False

    def __bool__(self) -> bool:
        return bool(self.values or self.dropped)

    def size(self) -> int:
        """Bytes of ``values`` as compact JSON (``{}`` is 2)."""
        return len(json.dumps(self.values, separators=(",", ":")).encode())

    def add(self, key: str, value: Any, plugin: str) -> None:
        """Store ``value`` (made JSON-safe by :func:`json_value`) under ``key``; a later value
        of the same key replaces it. Past the cap, one warning and the value is dropped."""
        if not isinstance(key, str) or not key or not key.isprintable():
            raise QevalError(
                f"plugin '{plugin}': context.record() takes a non-empty printable string key, "
                f"got {key!r}."
            )
        safe = json_value(value, f"plugin '{plugin}': context.record({key!r}, ...)")
        sizes = {**self._sizes, key: len(json.dumps({key: safe}, separators=(",", ":")).encode())}
        if 2 + sum(size - 2 for size in sizes.values()) + len(sizes) - 1 > RECORD_CAP_BYTES:
            if not self._warned:
                logging.getLogger("qeval").warning(
                    "plugin '%s': context.record(%r, ...) would take the plugin record past "
                    "%d KiB; that value and any later ones that do not fit are dropped (listed "
                    "in qeval.plugin_record_dropped). Record fewer or smaller values.",
                    plugin,
                    key,
                    RECORD_CAP_BYTES // 1024,
                )
                self._warned = True
            if key not in self.dropped:
                self.dropped.append(key)
            return
        self.values[key] = safe
        self._sizes = sizes

    def restore(self, saved: Any) -> None:
        """Take back what :meth:`saved` gave (a cache entry's copy); anything else is ignored."""
        if not isinstance(saved, dict):
            return
        values, dropped = saved.get("values"), saved.get("dropped")
        if isinstance(values, dict):
            for key, value in values.items():
                with contextlib.suppress(QevalError):
                    self.add(key, value, "cache")
        if isinstance(dropped, list):
            self.dropped += [k for k in dropped if isinstance(k, str) and k not in self.dropped]

    def saved(self) -> dict[str, Any]:
        """``{"values": ..., "dropped": [...]}``: what a cache entry keeps of this record."""
        return {"values": dict(self.values), "dropped": list(self.dropped)}

    def results(self) -> dict[str, Any]:
        """The results' entries: ``plugin_record`` (and ``plugin_record_dropped`` if any)."""
        found: dict[str, Any] = {"plugin_record": dict(self.values)} if self.values else {}
        return found | ({"plugin_record_dropped": list(self.dropped)} if self.dropped else {})


def json_value(value: Any, where: str, depth: int = 0) -> Any:
    """``value`` as strict JSON data, or a one-line QevalError starting with ``where``.

    Kept: None, bool, int, finite float, str; lists and tuples (as lists) and dicts with string
    keys, recursively. Converted: numpy scalars and 0-d arrays and 0-d torch tensors, by
    ``.item()``. Refused: NaN and ±inf, arrays and tensors with dimensions (give
    ``.tolist()``), and every other type.
    """
    if depth > _RECORD_DEPTH:
        raise QevalError(f"{where}: the value nests deeper than {_RECORD_DEPTH} levels.")
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise QevalError(
                f"{where}: {value} is not valid JSON; record NaN or infinity as None or a string."
            )
        return float(value)
    if isinstance(value, list | tuple):
        return [json_value(item, where, depth + 1) for item in value]
    if isinstance(value, dict):
        wrong = [key for key in value if not isinstance(key, str)]
        if wrong:
            raise QevalError(f"{where}: dict keys must be strings, got {wrong[0]!r}.")
        return {key: json_value(item, where, depth + 1) for key, item in value.items()}
    shape = getattr(value, "shape", None)
    library = type(value).__module__.split(".")[0]
    if shape is not None and hasattr(value, "item") and library in ("numpy", "torch"):
        if tuple(shape) == ():
            return json_value(value.item(), where, depth + 1)
        raise QevalError(
            f"{where}: got a {type(value).__name__} of shape {tuple(shape)}; record "
            f"value.tolist() (or a summary of it)."
        )
    raise QevalError(
        f"{where}: a {type(value).__name__} is not JSON; record numbers, strings, booleans, None, "
        f"lists and dicts with string keys."
    )


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

    ``load_kwargs`` is a read-only mapping of lm-eval's model-loading arguments as the run got
    them: ``dtype`` (as given, e.g. ``"auto"``), ``revision``, ``trust_remote_code``, device
    placement (``parallelize``, ``device_map``, ``max_memory_per_gpu``, ``max_cpu_memory``,
    ``offload_folder``) and every other ``hf`` model_arg (``attn_implementation``, ...) that
    reached model creation; empty when nothing is loaded. ``plugin`` is the name of the plugin
    whose quantizer runs (``context.logger`` and error lines use it). :meth:`record`,
    :attr:`logger` and :meth:`progress` are the plugin's channels to the results and the terminal.
    """

    device: str = "cpu"
    dtype: str = "auto"
    checkpoint: str | None = None
    tokenizer: Any = field(default=None, compare=False, repr=False)
    calibration: CalibrationSet | None = field(default=None, compare=False, repr=False)
    cache_dir: str | None = None
    load_kwargs: Mapping[str, Any] = field(
        default_factory=lambda: MappingProxyType({}), compare=False, repr=False
    )
    plugin: str = ""
    records: PluginRecord = field(default_factory=PluginRecord, compare=False, repr=False)

    @property
    def on_cuda(self) -> bool:
        return self.device.startswith("cuda")

    def record(self, key: str, value: Any) -> None:
        """Put ``value`` under ``key`` in the run's ``qeval.plugin_record`` results block.

        For what the method found: a chosen α per layer, the calibration loss, iterations. The
        value must be JSON data (numbers, strings, booleans, None, lists, dicts with string
        keys); numpy and torch scalars are converted with ``.item()``; NaN, ±inf, arrays and
        other objects are a one-line QevalError naming the plugin. Recording a key again
        replaces its value. The whole record is capped at 64 KiB of compact JSON: a value that
        would pass the cap gets one warning, is dropped, and its key is listed in
        ``qeval.plugin_record_dropped``. The record is saved with a quantized-model cache entry,
        so a run that reuses the entry reports it too.
        """
        self.records.add(key, value, self.plugin or "unnamed")

    @property
    def logger(self) -> logging.Logger:
        """The plugin's logger, ``qeval.plugin.<plugin>``, a child of qeval's ``qeval`` logger.

        Its INFO and higher lines go to stderr (the terminal, and the run's log under ``qeval
        run``) formatted as lm-eval's own, unless the program configured logging itself (the
        root logger has a handler): then they go where that configuration says.
        """
        return plugin_logger(self.plugin)

    @contextlib.contextmanager
    def progress(self, description: str, total: int | None = None) -> Iterator[Callable[..., None]]:
        """``with context.progress("calibrating", total=n) as advance: ... advance(1)``.

        On a terminal, a rich progress bar on stderr (as ``qeval run`` draws its own); in every
        case :attr:`logger` logs the start, a line at most every 30 s while it runs (done/total
        and elapsed seconds, for a log file) and the end with the elapsed time. ``total`` None
        (unknown) shows a pulsing bar and the count so far. Only one bar is drawn at a time: a
        progress opened inside another only logs.
        """
        handle = _Progress(self.logger, str(description), total)
        with handle.shown():
            yield handle.advance
        handle.finish()


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (rich's live display redirects it, so
    a line logged under a progress bar is printed above the bar)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> Any:  # type: ignore[override]
        return sys.stderr


def plugin_logger(plugin: str) -> logging.Logger:
    """``qeval.plugin.<plugin>`` (``qeval.plugin`` for no name; a built-in's ``qeval.`` prefix is
    left out: ``qeval.plugin.rtn``), with ``qeval.plugin`` at INFO and given a stderr handler on
    first use when neither it nor the root logger has one."""
    parent = logging.getLogger("qeval.plugin")
    if parent.level == logging.NOTSET:
        parent.setLevel(logging.INFO)
    if not parent.handlers and not logging.getLogger().handlers:
        handler = _StderrHandler()
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)-8s [%(name)s] %(message)s", datefmt="%Y-%m-%d:%H:%M:%S"
            )
        )
        parent.addHandler(handler)
    if not plugin:
        return parent
    return logging.getLogger(f"qeval.plugin.{plugin.removeprefix('qeval.')}")


class _Progress:
    """One :meth:`LoadContext.progress` block: counts steps, draws a bar, logs."""

    drawing = False  # a rich live display is on (rich allows one at a time)

    def __init__(self, logger: logging.Logger, description: str, total: int | None) -> None:
        self.logger, self.description, self.total = logger, description, total
        self.done = 0
        self.started = self.logged = time.monotonic()
        self.bar: Any = None
        self.task: Any = None
        logger.info("%s: started%s", description, f" ({total} steps)" if total is not None else "")

    @contextlib.contextmanager
    def shown(self) -> Iterator[None]:
        """The rich bar while the block runs, when stderr is a terminal and no bar is shown."""
        from rich.console import Console

        console = Console(stderr=True)
        if _Progress.drawing or not console.is_terminal:
            yield
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
        with Progress(*columns, TimeElapsedColumn(), console=console, transient=True) as bar:
            _Progress.drawing = True
            self.bar, self.task = bar, bar.add_task(self.description, total=self.total)
            try:
                yield
            finally:
                _Progress.drawing = False
                self.bar = None

    def advance(self, steps: float = 1) -> None:
        """Count ``steps`` more done (redraws the bar; logs when 30 s passed since the last)."""
        self.done += steps
        if self.bar is not None:
            self.bar.advance(self.task, steps)
        now = time.monotonic()
        if now - self.logged >= PROGRESS_LOG_SECONDS:
            self.logged = now
            self.logger.info("%s: %s, %.0f s", self.description, self._count(), now - self.started)

    def finish(self) -> None:
        self.logger.info(
            "%s: done, %s in %.1f s",
            self.description,
            self._count(),
            time.monotonic() - self.started,
        )

    def _count(self) -> str:
        done = f"{self.done:g}"
        return f"{done}/{self.total}" if self.total is not None else f"{done} steps"


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

    def check_run(
        self,
        options: Mapping[str, Any],
        context: LoadContext,
        layers: Mapping[str, tuple[int, ...]] | None,
    ) -> None:
        """Refuse, before any run starts, options that cannot work for this model and device.

        Raise a one-line QevalError saying what is wrong and what to do instead (qeval prefixes
        the spec and the model: ``gptq:kernel=marlin on qeval-tiny: ...``). Called by ``qeval
        run``, ``qeval scan`` and ``qeval demo`` for every spec and model before the first run,
        and by the backend before it loads the model, so a rule here fails in a second instead
        of minutes into a run. Nothing is loaded: ``context`` has the run's ``device`` (resolved:
        ``"cuda"`` or ``"cpu"`` when the user gave none), its resolved ``dtype``, the local
        ``checkpoint`` folder (None for a hub model not on this machine) and ``plugin``; the
        rest is None. ``layers`` maps the name of every layer with a 2-D ``weight`` in the
        checkpoint (``model.layers.0.self_attn.q_proj``) to that weight's shape ``[out, in]``,
        read from its safetensors headers; None when they cannot be known without loading or
        downloading. ``options`` are final and read-only. Keep it fast and free of heavy
        imports. Default: accepts everything.
        """

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

    def weight_split(
        self, model: Any, options: Mapping[str, Any]
    ) -> tuple[dict[str, int], list[str]] | None:
        """``(params, kept)`` of the quantized ``model``: every weight matrix these options
        target, ``skip=`` set aside (name -> weight count), and the names ``skip=`` kept
        unquantized; None (the default) when the method does not say. With it and
        :meth:`effective_bits`, qeval records a run's ``effective_bits`` as
        :func:`bits_per_param` over ``params``, kept weights at the model dtype's bits."""
        return None

    def scheme(self, options: Mapping[str, Any]) -> Scheme | None:
        """What these options quantize, and to which formats (:class:`Scheme`); None if unknown."""
        return None


def bits_per_param(
    params: Mapping[str, int], kept: Iterable[str], quantized_bits: float, kept_bits: float
) -> float:
    """Storage bits per weight over the matrices ``params`` (name -> weight count) a quantizer
    targets, with the ``kept`` ones left unquantized::

        bits/param = (Σ_kept n_u · b_kept + Σ_quantized n_u · b_q) / Σ n_u

    ``b_q`` is the quantizer's ``effective_bits`` (codes plus scales), ``b_kept`` the kept
    weights' dtype bits (16 for bfloat16, 32 for float32). Embeddings and ``lm_head`` count
    only when the quantizer targets them. ``qeval scan``'s advice and a run's recorded
    ``effective_bits`` both use it, so the same skip set gives the same figure.
    """
    total = sum(params.values())
    held = sum(params[name] for name in set(kept))
    return (held * kept_bits + (total - held) * quantized_bits) / total


def contract_problems(quantizer: Quantizer) -> list[str]:
    """What ``quantizer`` declares against the contract; empty when it may be registered.

    Rules: name and aliases follow :func:`~qeval_plugins.core.options.name_problem` and differ from
    each other; the description is one non-empty line; options are :class:`Option` objects
    with distinct names, none of them ``quantizer`` or ``pretrained``, each passing
    :meth:`Option.problems`; ``requires`` is a tuple of module names; ``extra`` is None or a pip
    extra name; ``version`` is one non-empty line; ``needs_cuda``, ``simulated``, ``identity``,
    ``calibrated`` and ``cache_quantized`` are booleans; a calibrated quantizer declares the
    calibration options; a declared calibration option differs from qeval's only in its default
    and help.
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
    problems += requirement_problems(options)
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
    problems += _calibration_option_problems(quantizer.options)
    for flag in ("needs_cuda", "simulated", "identity", "calibrated", "cache_quantized"):
        if not isinstance(getattr(quantizer, flag), bool):
            problems.append(f"{flag} must be True or False, got {getattr(quantizer, flag)!r}")
    capability = getattr(quantizer, "cuda_capability", None)
    if capability is not None and not _is_capability(capability):
        problems.append(f"cuda_capability must be (major, minor) or None, got {capability!r}")
    elif capability is not None and quantizer.needs_cuda is not True:
        problems.append("cuda_capability is set, so needs_cuda must be True")
    return problems


def _calibration_option_problems(options: Any) -> list[str]:
    """A declared calibration option may differ from qeval's only in its default and help.

    So a method may calibrate on, say, 32 windows by default (``dataclasses.replace(option,
    default=32)``), while the type, bounds and choices every run is validated with stay qeval's.
    """
    shared = {option.name: option for option in CALIBRATION_OPTIONS}
    problems = []
    for option in options if isinstance(options, tuple | list) else ():
        own = shared.get(getattr(option, "name", None))
        if own is None or not isinstance(option, Option):
            continue
        rules = ("type", "minimum", "maximum", "choices")
        changed = [rule for rule in rules if getattr(option, rule) != getattr(own, rule)]
        if changed:
            problems.append(
                f"calibration option {option.name!r} may change only its default and help "
                f"(dataclasses.replace(option, default=...)); its {', '.join(changed)} differ "
                f"from qeval's"
            )
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
