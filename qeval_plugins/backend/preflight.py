"""The pre-run check: rules that need the model and the device, applied before any run starts.

``check_spec`` validates a spec on its own (names, options, packages). Some options can only be
judged against the run: ``gptq:kernel=marlin`` needs a CUDA device, ``skip=foo.*`` must match a
layer of *this* model. :func:`preflight` checks those in a second, without loading anything, so
``qeval run``/``scan``/``demo`` refuse a bad spec in one line before the first run, and the
backend before it loads the model. Two sources of rules:

* options that check themselves against the checkpoint's layer names (an option object with a
  ``check_layers(value, layers)`` method: qeval's shared ``skip`` option);
* the quantizer's :meth:`~qeval_plugins.core.quantizer.Quantizer.check_run`.

Layer names and shapes come from the checkpoint's safetensors headers (the embedded model, local
folders, hub models already in the local cache); when they cannot be read without a download,
the layer rules are skipped and the run checks them itself.
"""

from __future__ import annotations

from typing import Any

from qeval_plugins.backend.checkpoints import checkpoint_config, local_folder, resolve_pretrained
from qeval_plugins.backend.reference import local_shapes
from qeval_plugins.core.errors import QevalError
from qeval_plugins.core.options import FrozenOptions
from qeval_plugins.core.plan import QuantizationPlan, check_spec, devices_checked_here
from qeval_plugins.core.quantizer import LoadContext, resolve_dtype
from qeval_plugins.core.text import one_line


def preflight_spec(
    model: str, spec: str, device: str | None, model_args: dict[str, Any] | None = None
) -> None:
    """:func:`preflight` of the quantizer ``spec`` on ``model`` (a name as the user gave it),
    with ``dtype`` and ``revision`` taken from ``model_args`` (``--model_args``) when given."""
    args = model_args or {}
    preflight(
        resolve_pretrained(model),
        check_spec(spec, device),
        device,
        args.get("dtype"),
        args.get("revision"),
        shown=model,
    )


def preflight(
    pretrained: str,
    plan: QuantizationPlan,
    device: str | None,
    dtype: Any = None,
    revision: str | None = None,
    shown: str | None = None,
) -> None:
    """Raise one QevalError line, ``SPEC on MODEL: why``, when ``plan`` cannot run on the
    resolved checkpoint ``pretrained`` on ``device`` (None: the default, CUDA if available).

    ``dtype`` is the run's ``dtype`` model_arg (None or ``auto``: the checkpoint's); ``shown``
    the model's name in the message, as the user gave it (default: ``pretrained``). An exception
    other than a QevalError from the quantizer's ``check_run`` is a plugin bug, named as such.
    """
    quantizer, options = plan.quantizer, FrozenOptions(plan.options)
    layers = checkpoint_layers(pretrained, revision)
    where = f"{plan.spec} on {shown or pretrained}"
    context = LoadContext(
        device=run_device(device),
        dtype=run_dtype(dtype, pretrained, revision),
        checkpoint=_local(pretrained, revision),
        plugin=plan.plugin.name,
    )
    try:
        if layers is not None:
            for option in quantizer.options:
                check_layers = getattr(option, "check_layers", None)
                if callable(check_layers):
                    check_layers(options[option.name], layers)
        if devices_checked_here():  # else the run checks its device on its machine
            quantizer.check_run(options, context, layers)
    except QevalError as error:
        raise QevalError(f"{where}: {error}") from None
    except Exception as error:
        raise QevalError(
            f"{where}: quantizer '{quantizer.name}' of {plan.plugin.describe()}: check_run() "
            f"raised {one_line(f'{type(error).__name__}: {error}')} (a plugin bug: report it "
            f"to the plugin's author; QEVAL_DEBUG=1 shows the traceback)."
        ) from error


def checkpoint_layers(
    pretrained: str, revision: str | None = None
) -> dict[str, tuple[int, ...]] | None:
    """Layer name -> weight shape of every 2-D ``NAME.weight`` in the checkpoint's safetensors
    headers on this machine (``model.layers.0.self_attn.q_proj`` -> ``(128, 128)``), or None
    when there are none to read (a hub model not downloaded, a ``.bin``-only checkpoint).

    An output head tied to the input embeddings is stored once, as the embeddings, yet loads as
    a layer of its own: it is added as ``lm_head`` -> None when the config ties them
    (``tie_word_embeddings``, True unless the config says otherwise, as in transformers) and no
    stored name ends in ``lm_head``.
    """
    layers: dict[str, tuple[int, ...] | None] = {
        name.removesuffix(".weight"): tuple(shape)
        for name, shape in local_shapes(pretrained, revision).items()
        if name.endswith(".weight") and len(shape) == 2
    }
    if not layers:
        return None
    tied = checkpoint_config(pretrained, revision).get("tie_word_embeddings", True) is not False
    if tied and not any(name.rpartition(".")[2] == "lm_head" for name in layers):
        layers["lm_head"] = None
    return layers


def run_device(device: str | None) -> str:
    """The device a run uses: ``device`` as given, else ``cuda`` when torch sees a CUDA GPU and
    ``cpu`` otherwise (what ``qeval run`` and lm-eval's hf backend pick)."""
    if device:
        return str(device)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run_dtype(dtype: Any, pretrained: str, revision: str | None = None) -> str:
    """The torch dtype name a load with ``dtype`` gives; ``auto``/None read from the local
    ``config.json`` first (no transformers import), else as
    :func:`~qeval_plugins.core.quantizer.resolve_dtype` does."""
    if dtype is None or str(dtype) == "auto":
        config = checkpoint_config(pretrained, revision)
        stated = config.get("dtype") or config.get("torch_dtype")
        if isinstance(stated, str) and stated != "auto":
            return resolve_dtype(stated)
    return resolve_dtype(dtype, pretrained, revision)


def _local(pretrained: str, revision: str | None) -> str | None:
    """The checkpoint's local folder, or None when it is not on this machine."""
    try:
        return local_folder(pretrained, revision)
    except Exception:  # a hub id not in the local cache: the hub library's errors vary
        return None
