"""The lm-eval backend ``qeval``: lm-eval's HFLM, with the model coming from a quantizer plugin.

Only model creation changes: :meth:`QevalLM._create_model` asks the chosen quantizer for extra
``from_pretrained`` arguments, lets HFLM load (so ``accelerate launch`` data parallelism,
``parallelize=True`` and every ``hf`` model_arg keep working), then lets the quantizer transform
the loaded model. The backend knows nothing about any particular quantization library.

Every forward pass of the quantized model is checked for non-finite logits
(:meth:`QevalLM._check_logits`, a forward hook): a quantizer that makes NaN or infinite outputs
fails the run with one line naming it, rather than scoring like a bad model.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import logging
import re
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from qeval_plugins.backend import kv_cache
from qeval_plugins.backend.checkpoints import (
    DEFAULT_MODEL,
    checked_quantization,
    checkpoint_parameter_bytes,
    checkpoint_parameter_count,
    local_folder,
    resolve_pretrained,
)
from qeval_plugins.backend.memory import model_storage_bytes
from qeval_plugins.backend.model_args import checked_model_args, parse_model_args
from qeval_plugins.backend.preflight import preflight
from qeval_plugins.backend.quantized import QuantizedCache, kept_weights
from qeval_plugins.backend.reference import (
    check_same_architecture,
    check_same_tokenizer,
    resolve_reference,
)
from qeval_plugins.backend.requests import handler_for
from qeval_plugins.backend.throughput import Throughput, peak_memory
from qeval_plugins.core.errors import QevalError, install_excepthook
from qeval_plugins.core.logs import MODEL_LOADING_NOISE, quiet
from qeval_plugins.core.plan import plan_quantization
from qeval_plugins.core.prequantized import checkpoint_scheme
from qeval_plugins.core.version import qeval_version
from qeval_plugins.storage.cache_pruning import max_size

install_excepthook()
quiet(MODEL_LOADING_NOISE)

T = TypeVar("T")
_HFLM_PARAMS = set(inspect.signature(HFLM.__init__).parameters) - {"self", "kwargs"}


@register_model("qeval")
class QevalLM(HFLM):
    """HFLM whose model is loaded and quantized by the quantizer named in ``quantizer=``.

    Model args: everything ``--model hf`` accepts, plus ``quantizer`` (default ``none``), the
    chosen quantizer's options (``qeval quantizers`` lists them) and ``reference`` (the
    unquantized model to compare with; default: the checkpoint itself). ``pretrained`` defaults
    to the embedded ``qeval-tiny``.
    """

    def __init__(
        self,
        pretrained: Any = DEFAULT_MODEL,
        quantizer: Any = "none",
        reference: Any = None,
        **kwargs: Any,
    ):
        if not isinstance(pretrained, str):
            raise QevalError(
                "--model qeval loads and quantizes the model itself: pass pretrained= a path or "
                "hub id, not a model object."
            )
        if "device" in kwargs:  # absent: HFLM's own default; None would fail its assertion
            kwargs["device"] = run_device(kwargs["device"])
        plan = plan_quantization(quantizer, kwargs, _HFLM_PARAMS, kwargs.get("device"))
        max_size()  # a bad QEVAL_CACHE_MAX_SIZE is one line now, not after quantizing
        self._qeval_plan = plan
        self._qeval_throughput = Throughput()
        self._qeval_doing = ("forward pass", False)  # what _check_logits names; last position only
        self._qeval_reference = resolve_reference(reference)
        shown, pretrained = pretrained, resolve_pretrained(pretrained)
        prequantized = checked_quantization(pretrained, plan.quantizer.name, kwargs.get("revision"))
        device, dtype, revision = kwargs.get("device"), kwargs.get("dtype"), kwargs.get("revision")
        preflight(pretrained, plan, device, dtype, revision, shown)  # before loading the model
        plan.measured["prequantized"] = prequantized
        plan.measured["reference"] = self._qeval_reference
        if prequantized:
            plan.scheme = checkpoint_scheme(prequantized).record()
        self._qeval_quantized = QuantizedCache(plan)
        try:
            super().__init__(pretrained=pretrained, **kwargs)
        except OSError as error:  # transformers' "not a local folder and not a valid hub id"
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise QevalError(
                f"could not load model '{pretrained}': {first_line} Give a local model directory "
                f"(or a hub id with network access)."
            ) from error
        except TypeError as error:  # an unknown model_arg reached the model's constructor
            unknown = re.search(r"unexpected keyword argument '([^']+)'", str(error))
            if unknown is None:
                raise
            raise QevalError(
                f"model_arg '{unknown.group(1)}' is not known to qeval, lm-eval's hf backend or "
                f"the model; check its spelling ('qeval quantizers' lists quantizer options)."
            ) from error

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
        """Build from a ``--model_args`` string, read strictly by :func:`parse_model_args`."""
        return cls.create_from_arg_obj(parse_model_args(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None):
        """Build from parsed model_args (what the ``lm_eval`` command passes), checked.

        :func:`checked_model_args` strips stray spaces and refuses repeated keys.
        """
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None}
        return cls(**checked_model_args(arg_dict, sys.argv), **extra)

    def _create_model(self, pretrained: str, dtype: Any = "auto", **kwargs: Any) -> None:
        self._qeval_load_args = {"pretrained": pretrained, "dtype": dtype, "kwargs": dict(kwargs)}
        from qeval_plugins.core.registry import run_load_kwargs, run_quantize

        plan = self._qeval_plan
        first = "quantize_seconds" not in plan.measured  # else a reload after a reference pass
        if first and self._qeval_reference is not None:
            check_same_tokenizer(self.tokenizer, self._qeval_reference, pretrained)
            check_same_architecture(self._qeval_reference, pretrained, kwargs.get("revision"))
        context = self._qeval_quantized.context(
            str(self.device),
            dtype,
            pretrained,
            kwargs.get("revision"),
            self.tokenizer,
            getattr(self.config, "max_position_embeddings", None),
            {"dtype": dtype, **kwargs},  # lm-eval's load arguments, for the plugin to read
        )
        started = time.perf_counter()
        cached = self._qeval_quantized.load(context, lambda path: self._load_folder(path, dtype))
        if cached is not None:
            self._model = cached
            kv_cache.attach(self._model, self._qeval_plan.kv)
            self._model.register_forward_hook(self._check_logits)
            if first:
                loaded = time.perf_counter()
                self._measure(pretrained, dtype, started, loaded, loaded, while_loading=False)
            return
        extra = run_load_kwargs(plan.quantizer, plan.plugin, plan.options, context)
        dtype = extra.pop("dtype", dtype)
        while_loading = bool(extra)  # from_pretrained quantizes: its time holds both
        if extra.get("quantization_config") is not None:
            kwargs["quantization_config"] = extra.pop("quantization_config")
        with warnings.catch_warnings():
            # HFLM hands a quantized checkpoint's own quantization_config back to
            # from_pretrained, which then warns that the user passed one
            warnings.filterwarnings("ignore", message="You passed `quantization_config`")
            super()._create_model(pretrained, dtype=dtype, **kwargs, **extra)
        loaded = time.perf_counter()
        self._model = run_quantize(plan.quantizer, plan.plugin, self._model, plan.options, context)
        done = time.perf_counter()
        self._qeval_quantized.save(
            self._model, context, (done - started) if while_loading else (done - loaded)
        )
        kv_cache.attach(self._model, self._qeval_plan.kv)
        self._model.register_forward_hook(self._check_logits)
        if first:
            self._measure(pretrained, dtype, started, loaded, done, while_loading)

    def _load_folder(self, folder: str, dtype: Any) -> Any:
        """The model in a quantized-model cache folder, loaded as HFLM loads a checkpoint."""
        kwargs = dict(self._qeval_load_args["kwargs"])
        kwargs.pop("revision", None)  # of the checkpoint, not of the cache folder
        HFLM._create_model(self, folder, dtype=dtype, **kwargs)
        return self._model

    def _measure(
        self,
        pretrained: str,
        dtype: Any,
        started: float,
        loaded: float,
        done: float,
        while_loading: bool,
    ) -> None:
        """Record load and quantize times, sizes and bits once, after the first model creation.

        ``load_seconds`` = loaded − started (from_pretrained, or the quantized-model cache);
        ``quantize_seconds`` = done − loaded (the quantizer's ``quantize``), except: None for
        ``none``; the load's time too when the quantizer quantizes inside from_pretrained
        (``while_loading``: the two cannot be told apart; ``quantized_while_loading`` says so);
        the original quantize time when the model is reused from the quantized-model cache.
        """
        plan = self._qeval_plan
        reused = plan.measured.get("quantized_cache", {}).get("reused")
        # a checkpoint saved already quantized holds packed tensors: counting their elements as
        # parameters (and their bytes as the unquantized size) would give wrong bits/param
        unquantized = not plan.measured.get("prequantized")
        if plan.quantizer.identity:
            quantize_seconds = None
        elif reused:
            quantize_seconds = plan.measured["quantized_cache"]["quantize_seconds"]
        else:
            quantize_seconds = round((done - started) if while_loading else (done - loaded), 4)
        plan.measured.update(
            load_seconds=round(loaded - started, 4),
            quantize_seconds=quantize_seconds,
            quantized_while_loading=while_loading,
            param_bytes_before=(
                checkpoint_parameter_bytes(pretrained, str(dtype)) if unquantized else None
            ),
            param_bytes_after=model_storage_bytes(self._model),
            param_count=checkpoint_parameter_count(pretrained) if unquantized else None,
        )
        if plan.measured["param_count"]:
            plan.measured["bits_per_param"] = round(
                8 * plan.measured["param_bytes_after"] / plan.measured["param_count"], 4
            )
        plan.measured.update(kept_weights(plan, self._model))

    def _check_logits(self, module: Any, args: Any, output: Any) -> None:
        """Forward hook of the quantized model: a QevalError unless every logit is finite.

        Every path that runs the model goes through its forward: HFLM's ``_model_call``
        (loglikelihood and loglikelihood_rolling batches), each step of ``generate`` (where only
        the last position, the one sampled from, is checked: left padding may leave others
        undefined) and qeval's own request types. Cost per pass: one read of the logits, no extra
        forward: every logit is finite iff their minimum and maximum are (NaN propagates through
        both), and ``torch.aminmax`` allocates nothing, where ``torch.isfinite(logits).all()``
        writes a boolean per logit (15× slower on a CPU, 3× HFLM's own ``log_softmax``).
        """
        logits = getattr(output, "logits", None)
        if not isinstance(logits, torch.Tensor) or not logits.numel():
            return
        what, last_only = self._qeval_doing
        checked = logits[:, -1] if last_only and logits.dim() == 3 else logits
        if bool(torch.isfinite(torch.stack(torch.aminmax(checked))).all()):
            return
        bad = int((~torch.isfinite(checked)).sum())
        plan = self._qeval_plan
        share = f"{bad:,} of {checked.numel():,} logits"
        if plan.quantizer.name == "none":
            raise QevalError(
                f"the model itself (quantizer 'none') output NaN/inf logits in a {what} ({share}); "
                f"its weights or dtype overflow: try dtype=float32 or bfloat16."
            )
        raise QevalError(
            f"quantizer '{plan.quantizer.name}' ({plan.spec}) made the model output NaN/inf "
            f"logits in a {what} ({share}); its weights are not finite, so no score of this run "
            f"would mean anything: try other options (more bits, another format or dtype)."
        )

    @contextlib.contextmanager
    def _doing(self, what: str, last_only: bool = False):
        """Name the passes made inside the block for :meth:`_check_logits` (and whether only
        the last position of their logits counts)."""
        before, self._qeval_doing = self._qeval_doing, (what, last_only)
        try:
            yield
        finally:
            self._qeval_doing = before

    def _loglikelihood_tokens(self, requests, *args: Any, **kwargs: Any):
        """HFLM's scoring, timed: tokens = context + continuation tokens of every request."""
        with (
            self._qeval_throughput.timing("loglikelihood") as counted,
            self._doing("loglikelihood batch"),
        ):
            results = super()._loglikelihood_tokens(requests, *args, **kwargs)
            counted.append(
                sum(len(context) + len(continuation) for _, context, continuation in requests)
            )
        return results

    def generate_until(self, requests, *args: Any, **kwargs: Any):
        """HFLM's generation, timed: tokens = new tokens of the returned continuations."""
        with self._qeval_throughput.timing("generate") as counted:
            results = super().generate_until(requests, *args, **kwargs)
            counted.append(sum(len(self.tok_encode(text)) for text in results))
        return results

    def _model_generate(self, *args: Any, **kwargs: Any):
        """HFLM's batched generation, each step's logits checked at the sampled position."""
        with self._doing("generation step", last_only=True):
            return super()._model_generate(*args, **kwargs)

    def qeval_sqnr(self, requests: list) -> list[dict]:
        """Answer the ``qeval_sqnr`` task's requests (lm-eval dispatches by request type)."""
        with self._doing("qeval_sqnr pass"):
            return handler_for("qeval_sqnr")(self, requests)

    def qeval_sample(self, requests: list) -> list[dict]:
        """Answer the sampling-sensitivity tasks' requests: matched quantized/reference samples."""
        with self._doing("qeval_sample pass"):
            return handler_for("qeval_sample")(self, requests)

    def qeval_outliers(self, requests: list) -> list[dict]:
        """Answer the ``qeval_outliers`` task's requests: outlier features of both models."""
        with self._doing("qeval_outliers pass"):
            return handler_for("qeval_outliers")(self, requests)

    # ---- what qeval's task engines may use (besides HFLM's model, tokenizer and tok_encode)

    @property
    def pretrained_name(self) -> str:
        """The checkpoint as loaded: a local folder (the embedded model's included) or a hub id."""
        return str(self._qeval_load_args["pretrained"])

    @property
    def dtype_name(self) -> str:
        """The run's ``dtype`` model_arg as text (``auto``, ``float32``, ``bfloat16``, ...)."""
        return str(self._qeval_load_args["dtype"]).removeprefix("torch.")

    @property
    def quantized_by(self) -> str:
        """The plugin whose quantizer made this run's model (``qeval.rtn``, an entry-point
        name): its ``qeval_dequantize_weight`` hook is asked first for the model's layers."""
        return self._qeval_plan.plugin.name

    def record(self, section: str, value: dict[str, Any]) -> None:
        """Put ``value`` under ``section`` of the run's ``qeval`` results block (JSON-safe)."""
        self._qeval_plan.measured[section] = value

    def require_reference(self) -> None:
        """Raise a one-line QevalError when this run has no unquantized reference.

        That is the case for a checkpoint saved already quantized without ``reference=``: tasks
        that compare with the unquantized model call this before any work.
        """
        prequantized = self._qeval_plan.measured.get("prequantized")
        if prequantized and self._qeval_reference is None:
            raise QevalError(
                f"this checkpoint is already quantized (quant_method="
                f"{prequantized.get('quant_method')}), so qeval has no unquantized reference to "
                f"compare it with; add reference=UNQUANTIZED_MODEL to --model_args (the model it "
                f"was made from)."
            )

    @property
    def reference_name(self) -> str:
        """The unquantized reference model: ``reference=`` if given, else the checkpoint."""
        return self._qeval_reference or self.pretrained_name

    def on_reference_model(self, work: Callable[[Any], T]) -> T:
        """``work(reference)`` on the unquantized model in the run's dtype; returns its result.

        Never holds both models: the quantized model is dropped first and loaded again
        afterwards (from the quantized-model cache where the quantizer uses it), when ``work``
        has returned and nothing refers to the reference any more. With ``quantizer=none`` and
        no ``reference=`` the model itself is the reference.
        """
        self.require_reference()
        if self._qeval_plan.quantizer.name == "none" and self._qeval_reference is None:
            with kv_cache.detached(self.model) as reference:
                return work(reference)
        args = self._qeval_load_args
        # HFLM passes the checkpoint's own quantization_config on: never to the reference
        reference_kwargs = {**args["kwargs"], "quantization_config": None}
        if self._qeval_reference is not None:
            reference_kwargs.pop("revision", None)  # the checkpoint's revision, not the reference's
        self._model = None
        release_memory(str(self.device))
        HFLM._create_model(self, self.reference_name, dtype=args["dtype"], **reference_kwargs)
        try:
            return work(self._model)
        finally:
            self._model = None
            release_memory(str(self.device))
            self._create_model(args["pretrained"], dtype=args["dtype"], **args["kwargs"])
            self._model.eval()

    def checkpoint_dir(self) -> str:
        """Local folder of the checkpoint's files (the hub cache folder for hub ids)."""
        return local_folder(self._qeval_load_args["pretrained"], self.revision)

    def reference_dir(self) -> str:
        """Local folder of the reference model's files (:attr:`reference_name`)."""
        if self._qeval_reference is None:
            return self.checkpoint_dir()
        try:  # a hub id not loaded before: fetched (its weights are about to be loaded anyway)
            folder = local_folder(self._qeval_reference, None, download=True)
        except Exception as error:  # the hub library's errors have no common base
            raise QevalError(
                f"reference={self._qeval_reference}: its files cannot be found here or fetched "
                f"({type(error).__name__}); give a local model folder, or a hub id with network "
                f"access."
            ) from None
        # what was not on this machine at load time (a hub reference's weights) is checked now
        check_same_architecture(self._qeval_reference, self.pretrained_name, self.revision)
        return folder

    def get_model_info(self) -> dict:
        """lm-eval's model info plus the ``qeval`` block (quantizer, options, plugin, sizes, and
        ``plugin_record``: what the quantizer recorded with ``context.record``)."""
        info = super().get_model_info()
        info["qeval"] = {
            "qeval_version": qeval_version(),
            **self._qeval_plan.record(),
            **self._qeval_quantized.records.results(),
            "peak_memory": peak_memory(str(self.device)),
            "throughput": self._qeval_throughput.record(),
            "machine_load": self._qeval_throughput.machine_load(),
        }
        return info


LM_EVAL_DEFAULT_DEVICE = "cuda:0"  # what lm_eval passes when the command line names no --device


def run_device(device: Any) -> Any:
    """The device a run uses: ``cpu`` for lm-eval's default ``cuda:0`` on a machine without a
    CUDA GPU (with a warning; lm-eval's ``hf`` model falls back the same way, so the stock
    command runs on a laptop without ``--device cpu``), else ``device`` as given, which the plan
    checks (an explicit ``cuda`` on such a machine is one error line)."""
    import torch

    if device != LM_EVAL_DEFAULT_DEVICE or torch.cuda.is_available():
        return device
    logging.getLogger("qeval").warning(
        "no CUDA GPU here: running on cpu (lm_eval's default device is cuda:0; pass --device cpu "
        "to say so)"
    )
    return "cpu"


def release_memory(device: str) -> None:
    """Give freed tensors' memory back (and CUDA's cache) before loading another model."""
    import torch

    gc.collect()
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()
