"""Built-in plugin: AutoRound (Cheng et al., Intel, 2023) through the ``auto-round`` library.

AutoRound tunes, one decoder block at a time, a rounding offset ``v ∈ [-0.5, 0.5]`` per weight
and a scale factor for each group's min and max by signed gradient descent (SignSGD, ``iters``
steps of ``lr = 1 / iters``) so that the block's output on the calibration windows matches the
unquantized block's. Weights are then ``q = clamp(round(w / s + v), ...)`` on AutoRound's grids:

* symmetric: ``s = m / 2**(bits-1)`` with ``m`` the group's value of largest magnitude (sign
  kept, times the tuned factor), codes ``-2**(bits-1) .. 2**(bits-1) - 1`` (the full
  two's-complement range, unlike ``rtn``'s restricted symmetric grid);
* asymmetric: ``s = (max - min) / (2**bits - 1)``, zero ``round(-min / s)``, codes
  ``0 .. 2**bits - 1``.

The calibration windows are qeval's (``context.calibration.input_ids``), handed to AutoRound as
token-id tensors, one per window (never a hub dataset). Simulated quantization: ``quantize()``
returns the model with every decoder ``nn.Linear`` holding its quantized-then-dequantized
weight (AutoRound's "fake" result), so the default save and load of quantized models apply; the
LM head and the embeddings stay unquantized. Tuning runs in float32 on CPU (AutoRound would cast
the whole model to bfloat16 there); the model comes back in the run's dtype. AutoRound's
progress bars and INFO lines are discarded; its warnings are repeated once each through the
``qeval`` logger.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Mapping
from typing import Any

from qeval_plugins import LoadContext, Option, QevalError, Quantizer, Scheme, hookimpl
from qeval_plugins.core.calibration import CALIBRATION_OPTIONS

logger = logging.getLogger("qeval")

SCALE_BITS = 16  # AutoRound stores one fp16 scale per group (its default scale_dtype)


class AutoRoundQuantizer(Quantizer):
    """AutoRound: signed-gradient tuning of weight rounding and clipping on calibration data."""

    name = "autoround"
    description = "AutoRound: int2-8 weights, rounding tuned by signed gradient on calibration data"
    aliases = ("auto-round",)
    requires = ("auto_round",)
    extra = "autoround"
    simulated = True
    calibrated = True
    cache_quantized = True
    options = (
        Option("bits", int, 4, "bits per weight", (2, 3, 4, 8)),
        Option(
            "group_size",
            int,
            128,
            "weights sharing one scale along the input dimension; 0 = per output channel",
            minimum=0,
        ),
        Option("sym", bool, True, "symmetric grid (false: scale + zero point per group)"),
        Option("iters", int, 200, "signed-gradient steps per decoder block", minimum=1),
        *CALIBRATION_OPTIONS,
    )

    def quantize(self, model: Any, options: Mapping[str, Any], context: LoadContext) -> Any:
        import torch

        if context.tokenizer is None:  # AutoRound refuses to start without one
            raise QevalError(
                f"quantizer '{self.name}' needs the model's tokenizer in LoadContext.tokenizer "
                f"(AutoRound requires one even with qeval's calibration windows)."
            )
        dtype = model.dtype
        ids = context.calibration.input_ids
        with _kept_random_state(), _autoround_output() as auto_round:
            config = auto_round.SignRoundConfig(
                bits=options["bits"],
                group_size=options["group_size"] or -1,
                sym=options["sym"],
                iters=options["iters"],
            )
            compressor = auto_round.AutoRound(
                model,
                context.tokenizer,
                alg_configs=config,
                nsamples=ids.shape[0],
                seqlen=ids.shape[1],
                dataset=[window.unsqueeze(0) for window in ids],
                device_map=context.device,
                amp=context.on_cuda and dtype != torch.float32,
                enable_torch_compile=False,
            )
            quantized, _ = compressor.quantize()
        return quantized.to(dtype)

    def scheme(self, options: Mapping[str, Any]) -> Scheme:
        """``int4 g128 autoround``, ``int3 per-channel asym autoround``."""
        group = options["group_size"]
        weights = f"int{options['bits']} " + (f"g{group}" if group else "per-channel")
        weights += ("" if options["sym"] else " asym") + " autoround"
        return Scheme(weights=weights, kept=("lm_head", "embeddings"))

    def effective_bits(self, options: Mapping[str, Any]) -> float:
        """``bits + (16 + (bits if asymmetric)) / group_size``: the codes, one fp16 scale per group
        and, asymmetric, one zero point of ``bits`` bits (AutoRound's packed export format).
        Per output channel (``group_size=0``) the overhead is left out: ``bits``. 4.125 at the
        defaults (int4 g128 symmetric)."""
        group = options["group_size"]
        if not group:
            return float(options["bits"])
        zero_bits = 0 if options["sym"] else options["bits"]
        return options["bits"] + (SCALE_BITS + zero_bits) / group


@contextlib.contextmanager
def _kept_random_state():
    """Python's, numpy's and torch's random states as they were: AutoRound calls
    ``transformers.set_seed(42)``, which would reseed the evaluation that follows."""
    import random

    import numpy
    import torch

    states = random.getstate(), numpy.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(states[0])
        numpy.random.set_state(states[1])
        torch.set_rng_state(states[2])


@contextlib.contextmanager
def _autoround_output():
    """Import auto_round with its console output held back; yields the module.

    Its logger (``autoround``, its own stderr handler, not propagating) is set to WARNING and its
    handlers are replaced by one that keeps the records; its tqdm bars (stderr) are discarded.
    Each distinct warning is repeated once through the ``qeval`` logger afterwards.
    """
    records = _Keep()
    with contextlib.redirect_stderr(io.StringIO()):
        import auto_round

        library = logging.getLogger("autoround")
        handlers, level = library.handlers[:], library.level
        library.handlers = [records]
        library.setLevel(logging.WARNING)
        try:
            yield auto_round
        finally:
            library.handlers = handlers
            library.setLevel(level)
    for message in dict.fromkeys(records.messages):
        logger.warning("autoround: %s", message)


class _Keep(logging.Handler):
    """Keeps the message of every record it handles."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@hookimpl
def qeval_register_quantizers(register):
    register(AutoRoundQuantizer())
