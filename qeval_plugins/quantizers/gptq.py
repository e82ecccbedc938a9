"""Built-in plugin: GPTQ (Frantar et al. 2022) through GPTQModel 7.6 — real packed integer weights.

GPTQModel quantizes the checkpoint one decoder layer at a time on qeval's own calibration windows
(``context.calibration.input_ids``, handed over as token ids, never re-tokenized), writes its
checkpoint format (``qweight`` int32-packed codes, fp16 ``scales``, packed ``qzeros``, ``g_idx``)
and loads it back with one of its quantized-linear kernels. The returned model is a transformers
causal LM whose linear layers hold the packed weights: its memory is that of the packed model.

Pinned here instead of left to GPTQModel's defaults (each one recorded as an option, or stated):

* ``damp_percent`` 0.05, ``true_sequential`` and ``act_group_aware`` (GPTQModel's "GAR" ordering
  of groups by activation; off with ``desc_act``) are options, so the run records them;
* GPTQModel's fallback that quantizes a layer with too little calibration (under 0.5 % of the
  tokens) by round-to-nearest is turned off: every layer of a ``gptq`` run is GPTQ-quantized;
* ``offload_to_disk`` (on by default, into a system temp folder) is off: the layers stay in
  memory, and quantizing the 4-layer embedded model takes 1.3 s instead of 23 s;
* the model is loaded in the run's dtype (GPTQModel would load a float32 checkpoint on CPU in
  bfloat16), the calibration windows keep their order (GPTQModel sorts by length) and none is
  dropped (GPTQModel drops windows of 10 tokens or fewer);
* the checkpoint's ``generation_config.json`` is kept (GPTQModel's loader forces
  ``do_sample: true`` into it and into the loaded model);
* GPTQModel's output (a banner at import, progress bars, tables; several hundred lines) goes to
  ``gptqmodel.log`` in the work folder; its warnings are repeated once each through qeval's
  logger, except those a qeval user cannot act on (:data:`UNACTIONABLE`): the Python GIL note,
  and the advice of more than 256 calibration windows of more than 256 tokens each — GPTQ's
  paper calibrates on 128 windows of 2048 tokens, qeval's default is 128 windows of 512 (raise
  ``calibration_seqlen`` up to the model's context for the paper's setting), and its disk
  throughput warning (a slow disk would slow offloading, which is off). Its per-layer log
  (``logs/`` of the current folder in GPTQModel) goes to the work folder too, and tokenicer's
  INFO lines (``Auto fixed pad_token_id``) are silenced while GPTQModel runs;
* the work folder is removed when the quantized model is freed, and at once when
  :meth:`GptqQuantizer.quantize` fails;
* a ``kernel`` that cannot run on the run's device or dtype (:data:`KERNEL_SUPPORT`) is refused
  by :meth:`GptqQuantizer.check_run`, before any run starts (``kernel=marlin`` on a CPU), and
  again in :meth:`GptqQuantizer.load_kwargs`, before anything is loaded.

GPTQModel's freshly quantized layers hold zero points in the GPTQ "v1" layout while its kernels
compute with "v2" (they differ by one quantization step), which GPTQModel converts only when it
loads a saved checkpoint: a model used straight after ``quantize()`` computes with every weight
shifted by one step (logit SQNR 4.3 dB instead of 18.6 dB on the embedded model). So
:meth:`GptqQuantizer.quantize` saves and loads back, exactly as :meth:`load_quantized` does, and
a cached reload gives the same logits as the first run.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qeval_plugins import LoadContext, Option, QevalError, Quantizer, Requires, Scheme, hookimpl
from qeval_plugins.core.calibration import CALIBRATION_OPTIONS
from qeval_plugins.quantizers.skip import SKIP_OPTION, kept_parts, skip_patterns, skipped_linears

logger = logging.getLogger("qeval")

DEFAULT_DAMP = 0.05  # GPTQModel 7.6's default for GPTQ (and the GPTQ paper's 1 % is 0.01)
GROUP_SIZES = (0, 16, 32, 64, 128, 256, 512, 1024)  # 0: per output channel (GPTQModel's -1)
KERNELS = ("auto", "torch", "torch_fused", "torch_aten", "triton", "marlin", "exllama_v2")
SCALE_BITS = 16  # fp16 scale per group and output column
# Where GPTQModel 7.6's kernel class of each choice runs (SUPPORTS_DEVICES; None: anywhere) and
# the dtypes it computes in (SUPPORTS_DTYPES); a test checks this against GPTQModel.
KERNEL_SUPPORT = {
    "torch": (None, ("float16", "bfloat16")),
    "torch_fused": (("cpu", "xpu"), ("float32", "float16", "bfloat16")),
    "torch_aten": (("cpu",), ("float16", "bfloat16")),
    "triton": (("cuda",), ("float16", "bfloat16")),
    "marlin": (("cuda",), ("float16", "bfloat16")),
    "exllama_v2": (("cuda",), ("float16", "bfloat16")),
}
DEVICE_NAMES = {"cpu": "CPU", "xpu": "Intel XPU", "cuda": "CUDA GPU"}
# GPTQModel warnings a qeval user cannot act on (message prefixes); see the module doc.
UNACTIONABLE = (
    "Python GIL is enabled",
    "Calibration dataset size should be more than",
    "The average length of input_ids of calibration_dataset should be greater than",
    # WARN below 200 MB/s, ERROR below 100 MB/s ("severely"): GPTQModel times a write to the
    # system temp folder and warns that offloading layers to disk will be slow. qeval turns
    # offload_to_disk off, so quantizing writes nothing per layer (only the finished checkpoint,
    # once) and no qeval option changes the measured disk: nothing to act on, and a busy disk
    # would otherwise print it on every gptq run.
    "Disk subsystem write throughput detected at",
)
FOLDER_ATTRIBUTE = "qeval_gptq_folder"  # where quantize() left GPTQModel's files
LOG_NAME = "gptqmodel.log"


class GptqQuantizer(Quantizer):
    """GPTQ with GPTQModel: calibrated, real packed int2/3/4/8 weights, any device it supports."""

    name = "gptq"
    description = "GPTQ (GPTQModel): calibrated int2/3/4/8 weights, packed, per group or channel"
    aliases = ("gptqmodel", "autogptq", "auto-gptq")
    requires = ("gptqmodel",)
    extra = "gptq"
    calibrated = True
    cache_quantized = True
    version = "1"
    options = (
        Option("bits", int, 4, "bits per weight", choices=(2, 3, 4, 8)),
        Option(
            "group_size",
            int,
            128,
            "weights sharing one scale and zero point along the input dimension; "
            "0 = per output channel",
            choices=GROUP_SIZES,
        ),
        Option(
            "desc_act",
            bool,
            False,
            "GPTQ's act-order: quantize columns in order of decreasing activation (stores g_idx)",
        ),
        Option("sym", bool, True, "symmetric (false: a zero point per group)"),
        Option(
            "damp_percent",
            float,
            DEFAULT_DAMP,
            "Hessian dampening, a fraction of its mean diagonal",
            minimum=0.001,
            maximum=0.99,
        ),
        Option(
            "act_group_aware",
            bool,
            True,
            "GPTQModel's group-aware activation ordering (GAR); always false with desc_act",
            requires=(Requires("desc_act", (False,), implies=((True, False),)),),
        ),
        Option(
            "true_sequential",
            bool,
            True,
            "quantize a layer's projections in order, each on the outputs of the quantized ones",
        ),
        Option(
            "kernel",
            str,
            "auto",
            "GPTQModel kernel of the packed layers ('auto': GPTQModel's pick for the device)",
            choices=KERNELS,
        ),
        SKIP_OPTION,
        *CALIBRATION_OPTIONS,
    )

    def finalize_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """``desc_act`` turns ``act_group_aware`` off (GPTQModel allows only one ordering;
        ``act_group_aware=true`` given with it was refused, ``requires``)."""
        skip_patterns(options, self.name)  # a malformed pattern fails before loading
        final = dict(options)
        if final["desc_act"]:
            final["act_group_aware"] = False
        return final

    def check_run(
        self,
        options: Mapping[str, Any],
        context: LoadContext,
        layers: Mapping[str, tuple[int, ...]] | None,
    ) -> None:
        """Refuse a ``kernel`` the run's device or dtype cannot use (:func:`kernel_problem`)
        before any run starts."""
        problem = kernel_problem(options["kernel"], context)
        if problem:
            raise QevalError(problem)

    def load_kwargs(self, options: Mapping[str, Any], context: LoadContext) -> dict[str, Any]:
        """No ``from_pretrained`` arguments (GPTQModel reads the checkpoint); refuses a
        ``kernel`` the run's device or dtype cannot use, before anything is loaded."""
        check_kernel(options["kernel"], context)
        return {}

    def quantize(self, model: Any, options: Mapping[str, Any], context: LoadContext) -> Any:
        """GPTQ-quantize ``context.checkpoint`` on ``context.calibration``; the packed model.

        GPTQModel reads the checkpoint itself, layer by layer, so the unquantized ``model`` is
        not used: its weights are released here (moved to the meta device) so that the two models
        are never in memory together. Its generation config is kept on the returned model.
        The work folder is removed if anything fails.
        """
        check_kernel(options["kernel"], context)
        _check_context(context)
        _check_seqlen(model, context)
        skipped = skipped_linears(model, options, self.name)
        _check_packable(model, options["bits"], skipped)
        work = _work_folder(context)
        try:
            return self._quantize_in(work, model, options, context, skipped)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise

    def _quantize_in(
        self,
        work: Path,
        model: Any,
        options: Mapping[str, Any],
        context: LoadContext,
        skipped: set[str],
    ) -> Any:
        """:meth:`quantize` with GPTQModel's files in ``work`` (removed when the model is freed);
        the ``skipped`` layers stay unquantized."""
        started = time.perf_counter()
        with _gptqmodel_output(work) as gptqmodel:
            folder = work / "model"
            _quantize_and_save(gptqmodel, options, context, folder, skipped)
        _keep_generation_config(context.checkpoint, folder)
        if hasattr(model, "to"):
            model.to("meta")
        quantized = self.load_quantized(folder, options, context)
        setattr(quantized, FOLDER_ATTRIBUTE, str(folder))
        weakref.finalize(quantized, shutil.rmtree, str(work), True)
        logger.info(
            "gptq: %d layers quantized by GPTQModel in %.1f s (log: %s)",
            sum(1 for _ in packed_layers(quantized)),
            time.perf_counter() - started,
            work / LOG_NAME,
        )
        return quantized

    def save_quantized(
        self, model: Any, folder: Path, options: Mapping[str, Any], context: LoadContext
    ) -> None:
        """Copy the checkpoint GPTQModel wrote during :meth:`quantize` (its own format)."""
        source = getattr(model, FOLDER_ATTRIBUTE, None)
        if source is None or not Path(source).is_dir():
            raise QevalError(
                "gptq: this model was not quantized by qeval's gptq quantizer in this process; "
                "quantize it again to save it."
            )
        for file in sorted(Path(source).iterdir()):
            if file.is_file():
                shutil.copy2(file, Path(folder) / file.name)

    def load_quantized(self, folder: Path, options: Mapping[str, Any], context: LoadContext) -> Any:
        """The model in ``folder`` (GPTQModel's format), on the kernel option ``kernel`` names."""
        check_kernel(options["kernel"], context)
        with (
            tempfile.TemporaryDirectory(prefix="gptq-load-") as log_dir,
            _gptqmodel_output(Path(log_dir)) as gptqmodel,
        ):
            try:
                loaded = gptqmodel.GPTQModel.load(
                    str(folder),
                    device=context.device,
                    dtype=_torch_dtype(context),
                    backend=_backend(options["kernel"]),
                )
            except Exception as error:
                raise QevalError(
                    f"gptq: GPTQModel cannot load the quantized model: {_one_line(error, folder)}"
                ) from error
        model = loaded.model.eval()
        model.generation_config = _generation_config(Path(folder), model)
        return model

    def scheme(self, options: Mapping[str, Any]) -> Scheme:
        """``int4 g128``, ``int3 per-channel act-order asym``; LM head and embeddings kept."""
        group = options["group_size"]
        weights = f"int{options['bits']}" + (f" g{group}" if group else " per-channel")
        if options["desc_act"]:
            weights += " act-order"
        if not options["sym"]:
            weights += " asym"
        return Scheme(weights=weights, kept=("lm_head", "embeddings", *kept_parts(options)))

    def effective_bits(self, options: Mapping[str, Any]) -> float:
        """``bits + (16 + bits) / G``: per group of ``G`` weights one fp16 scale and one packed
        ``bits``-bit zero point (stored for symmetric groups too).

        ``g_idx`` (one int32 per input column, 32 / out_features bits per weight) and the
        per-channel case (``G`` = in_features, unknown here) are left out as negligible.
        """
        bits, group = options["bits"], options["group_size"]
        return float(bits) + ((SCALE_BITS + bits) / group if group else 0.0)


def check_kernel(kernel: str, context: LoadContext) -> None:
    """Refuse (``gptq: ...``) a ``kernel`` whose GPTQModel class cannot run on the run's device
    or dtype."""
    problem = kernel_problem(kernel, context)
    if problem:
        raise QevalError(f"gptq: {problem}")


def kernel_problem(kernel: str, context: LoadContext) -> str | None:
    """Why ``kernel`` cannot run on ``context``'s device or dtype (:data:`KERNEL_SUPPORT`) and
    what to use instead, or None when it can (``auto`` always can)."""
    if kernel not in KERNEL_SUPPORT:
        return None
    devices, dtypes = KERNEL_SUPPORT[kernel]
    device = context.device.split(":")[0]
    on_cpu = " or torch_fused on CPU" if device == "cpu" else ""
    if devices is not None and device not in devices:
        where = " or ".join(DEVICE_NAMES.get(d, d) for d in devices)
        needs = "needs a CUDA GPU" if devices == ("cuda",) else f"runs on {where} only"
        return (
            f"kernel={kernel} {needs} (this run is on {context.device}); use kernel=auto{on_cpu}."
        )
    dtype = str(_torch_dtype(context)).removeprefix("torch.")
    if dtype not in dtypes:
        return (
            f"kernel={kernel} computes in {' or '.join(dtypes)} only (this run is {dtype}); "
            f"use dtype={dtypes[-1]}, or kernel=auto{on_cpu}."
        )
    return None


def _one_line(error: BaseException, *folders: Path) -> str:
    """``error``'s text on one line, with qeval's internal folders left out."""
    text = " ".join(str(error).split())
    for folder in folders:
        text = text.replace(str(folder), "<folder>")
    return text


def _check_context(context: LoadContext) -> None:
    if context.checkpoint is None or context.calibration is None:
        raise QevalError(
            "gptq: needs the checkpoint folder and calibration windows; run it through the qeval "
            "backend (lm_eval --model qeval or qeval run)."
        )


def _check_seqlen(model: Any, context: LoadContext) -> None:
    """GPTQModel silently cuts windows longer than the model's context; refuse them instead."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    seqlen = context.calibration.seqlen
    if isinstance(limit, int) and seqlen > limit:
        raise QevalError(
            f"gptq: calibration_seqlen={seqlen} is longer than the model's context ({limit} "
            f"tokens); set calibration_seqlen={limit} or less."
        )


#: GPTQModel packs 3-bit weights in blocks of 32 output rows; a narrower layer stops its packer
#: (IndexError in a worker thread, which then ends the process with os._exit(1): no message)
THREE_BIT_ROWS = 32


def _check_packable(model: Any, bits: int, skipped: set[str]) -> None:
    """Refuse, before GPTQModel runs, a 3-bit layer whose output rows GPTQModel cannot pack."""
    if bits != 3 or not hasattr(model, "named_modules"):
        return
    import torch

    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or module is output or name in skipped:
            continue
        if module.out_features % THREE_BIT_ROWS:
            raise QevalError(
                f"gptq: bits=3 packs {THREE_BIT_ROWS} output rows at a time, but layer '{name}' "
                f"has {module.out_features}; use bits=4 or 2, or skip={name}"
            )


def _work_folder(context: LoadContext) -> Path:
    """A fresh folder for GPTQModel's files: under ``context.cache_dir``, else the temp folder."""
    parent = None
    if context.cache_dir is not None:
        parent = Path(context.cache_dir)
        parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="gptq-", dir=parent))


def _torch_dtype(context: LoadContext):
    """The run's dtype; ``auto`` (unreadable from the checkpoint): float32 on CPU, else bf16."""
    import torch

    if context.dtype != "auto":
        return getattr(torch, context.dtype)
    return torch.bfloat16 if context.on_cuda else torch.float32


def _backend(kernel: str) -> str:
    return kernel if kernel == "auto" else f"gptq_{kernel}"


def _quantize_config(gptqmodel: Any, options: Mapping[str, Any], skipped: set[str]) -> Any:
    """GPTQModel's config with every default that changes the result pinned (module doc); the
    ``skipped`` layers as GPTQModel's negative ``dynamic`` rules (``-:`` + an anchored regular
    expression of the exact module name), which it records in the saved checkpoint too."""
    import re

    group = options["group_size"]
    dynamic = {f"-:^{re.escape(name)}$": {} for name in sorted(skipped)} or None
    return gptqmodel.QuantizeConfig(
        dynamic=dynamic,
        bits=options["bits"],
        group_size=group if group else -1,
        desc_act=options["desc_act"],
        sym=options["sym"],
        damp_percent=options["damp_percent"],
        act_group_aware=options["act_group_aware"],
        true_sequential=options["true_sequential"],
        fallback=None,
        offload_to_disk=False,
        mse=0.0,
        static_groups=False,
    )


def calibration_batches(input_ids: Any) -> list[dict[str, Any]]:
    """One ``{"input_ids", "attention_mask"}`` dict of shape ``[1, seqlen]`` per window."""
    import torch

    return [
        {"input_ids": row.unsqueeze(0), "attention_mask": torch.ones_like(row).unsqueeze(0)}
        for row in input_ids
    ]


def _quantize_and_save(
    gptqmodel: Any,
    options: Mapping[str, Any],
    context: LoadContext,
    folder: Path,
    skipped: set[str] = frozenset(),
) -> None:
    try:
        wrapper = gptqmodel.GPTQModel.load(
            context.checkpoint,
            _quantize_config(gptqmodel, options, skipped),
            device=context.device,
            dtype=_torch_dtype(context),
        )
        wrapper.quantize(
            calibration_batches(context.calibration.input_ids),
            batch_size=1,
            calibration_sort=None,
            calibration_data_min_length=0,
        )
        wrapper.save(str(folder))
    except QevalError:
        raise
    except Exception as error:
        raise QevalError(f"gptq: GPTQModel failed: {_one_line(error, folder.parent)}") from error


def _keep_generation_config(checkpoint: str, folder: Path) -> None:
    """Put the checkpoint's ``generation_config.json`` back (or none, if it had none)."""
    original = Path(checkpoint) / "generation_config.json"
    target = folder / "generation_config.json"
    if original.is_file():
        shutil.copyfile(original, target)
    else:
        target.unlink(missing_ok=True)


def _generation_config(folder: Path, model: Any) -> Any:
    """What transformers would load: ``generation_config.json`` of ``folder``, else the model
    config's. (GPTQModel's loader forces ``do_sample: true`` into every model it loads.)"""
    from transformers import GenerationConfig

    if (folder / "generation_config.json").is_file():
        return GenerationConfig.from_pretrained(folder)
    return GenerationConfig.from_model_config(model.config)


@contextlib.contextmanager
def _gptqmodel_output(work: Path):
    """Import gptqmodel with its output sent to ``work/gptqmodel.log``; yields the module.

    GPTQModel prints through a stdout logger (LogBar), shows tqdm bars on stderr and writes a
    per-layer log under ``./logs``: all go to ``work``. Its warnings are repeated once each
    through logging. Tokenicer's INFO lines are silenced meanwhile; the root logger's level (which
    tokenicer's import sets to INFO) is restored after.
    """
    import os
    import sys

    work.mkdir(parents=True, exist_ok=True)
    log_path = work / LOG_NAME
    # GPTQModel's default, (cores + 1) // 2, is 1 on a 2-core machine, and its loader then fails
    # ("requests 2 workers but parent 'cpu' only has 1"): at least 2, unless the user chose.
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(2, min(12, (os.cpu_count() or 1) // 2))))
    with contextlib.ExitStack() as stack:
        stack.enter_context(_quiet_loggers())
        log = stack.enter_context(open(log_path, "a", encoding="utf-8"))
        stack.enter_context(contextlib.redirect_stdout(log))
        stack.enter_context(contextlib.redirect_stderr(log))
        import gptqmodel
        from gptqmodel.looper import loop_processor

        project_logs = loop_processor._PROJECT_LOG_DIR
        loop_processor._PROJECT_LOG_DIR = work / "logs"
        try:
            yield gptqmodel
        finally:
            loop_processor._PROJECT_LOG_DIR = project_logs
            sys.stdout.flush()
            sys.stderr.flush()
            _unbind_handlers(log)
    _relay_warnings(log_path)


def import_gptqmodel_quietly() -> None:
    """Import gptqmodel with its banner and environment notes sent to a throw-away log, and its
    console logger at WARNING: for checkpoints that transformers loads through GPTQModel
    (``quantizer=prequantized``), whose kernel-selection and format notes are not a user's
    concern. Its warnings still show; a ``gptq`` run sends all of its output to a log anyway."""
    from logbar import LogBar

    with tempfile.TemporaryDirectory() as work, _gptqmodel_output(Path(work)):
        pass
    LogBar.shared().setLevel(logging.WARNING)


@contextlib.contextmanager
def _quiet_loggers():
    """Tokenicer's logger at WARNING, and the root logger's level kept, for the ``with`` body."""
    root, tokenicer = logging.getLogger(), logging.getLogger("tokenicer")
    levels = root.level, tokenicer.level
    tokenicer.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.setLevel(levels[0])
        tokenicer.setLevel(levels[1])


def _unbind_handlers(log: Any) -> None:
    """Point logging handlers created inside the redirect (a ``basicConfig`` run by an import)
    back at the real stderr, so they do not keep writing into the closed log file."""
    import sys

    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for item in loggers:
        for handler in getattr(item, "handlers", ()):
            if vars(handler).get("stream") is log:  # not stderr-following handlers
                handler.setStream(sys.__stderr__)


_RELAYED: set[str] = set()


def _relay_warnings(log_path: Path) -> None:
    """Log each distinct ``WARN``/``ERROR`` line of GPTQModel's output once per process, but
    none that starts as an :data:`UNACTIONABLE` one."""
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        level, _, message = line.strip().partition(" ")
        message = message.strip()
        if level not in ("WARN", "ERROR") or not message or message.startswith(UNACTIONABLE):
            continue
        if message not in _RELAYED:
            _RELAYED.add(message)
            logger.warning("gptq: GPTQModel: %s", message)


def packed_layers(model: Any):
    """(name, module) of every GPTQModel quantized linear layer of ``model``."""
    for name, module in model.named_modules():
        if _is_gptqmodel_layer(module):
            yield name, module


def _is_gptqmodel_layer(module: Any) -> bool:
    if not type(module).__module__.startswith("gptqmodel."):
        return False
    from gptqmodel.nn_modules.qlinear import BaseQuantLinear

    return isinstance(module, BaseQuantLinear)


@hookimpl
def qeval_register_quantizers(register):
    register(GptqQuantizer())


@hookimpl
def qeval_dequantize_weight(module):
    """The dense ``[out_features, in_features]`` weight of a GPTQModel quantized linear layer.

    Layers still in the GPTQ layout (``linear_mode`` unset: no forward pass yet, or a kernel that
    keeps it) are unpacked by GPTQModel's ``dequantize_weight`` (``W[o, i] = scales[g_idx[i], o]
    · (q[i, o] − zeros[g_idx[i], o])``, returned ``[in, out]``, transposed here). Kernels that
    repack at their first forward pass (the CPU int4 kernels ``TorchFusedLinear`` and
    ``TorchAtenLinear``) or keep their own layout (Marlin, ExLlama) are probed instead: the
    layer applied to the identity matrix gives ``Wᵀ`` (bias removed), the weight it computes with.
    """
    if not _is_gptqmodel_layer(module):
        return None
    import torch

    with torch.no_grad():
        if getattr(module, "linear_mode", None) is None and hasattr(module, "dequantize_weight"):
            return module.dequantize_weight().t().to(torch.float32).contiguous()
        return _probe_weight(module)


def _probe_weight(module: Any, chunk: int = 1024):
    """``Wᵀ`` rows from ``module(I)`` over ``chunk`` input columns at a time, as ``[out, in]``."""
    import torch

    scales = getattr(module, "scales", None)
    dtype = scales.dtype if scales is not None and scales.is_floating_point() else torch.float32
    device = scales.device if scales is not None else torch.device("cpu")
    bias = getattr(module, "bias", None)
    rows = []
    for start in range(0, module.in_features, chunk):
        stop = min(start + chunk, module.in_features)
        eye = torch.zeros(stop - start, module.in_features, dtype=dtype, device=device)
        eye[:, start:stop] = torch.eye(stop - start, dtype=dtype, device=device)
        out = module(eye).to(torch.float32)
        rows.append(out - bias.to(torch.float32) if bias is not None else out)
    return torch.cat(rows).t().contiguous()
