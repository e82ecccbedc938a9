"""``reference=``: the unquantized model that a run's quantized model is compared with.

By default the reference is the checkpoint itself, loaded without quantization. A checkpoint
saved already quantized has none of its own: ``reference=PATH_OR_ID`` names its base model. Any
quantizer may be given one (e.g. to compare with a model in another dtype's checkpoint). The
reference must be unquantized, use the same tokenizer (or the comparisons would pair different
tokens) and be the same architecture with the same layers (or the logits would be another
model's, and no weight would have a counterpart to compare with).
"""

from __future__ import annotations

from typing import Any

from qeval_plugins.backend.checkpoints import (
    checkpoint_config,
    checkpoint_quantization,
    local_folder,
    resolve_pretrained,
    tensor_shapes,
)
from qeval_plugins.core.errors import QevalError


def resolve_reference(reference: Any) -> str | None:
    """The reference model as a loadable name (embedded names and paths resolved), or None.

    A reference that is itself a quantized checkpoint is a one-line QevalError.
    """
    if reference is None or str(reference).strip() == "":
        return None
    try:
        resolved = resolve_pretrained(str(reference).strip())
    except QevalError as error:
        raise QevalError(f"reference={reference}: {error}") from None
    found = checkpoint_quantization(resolved)
    if found:
        raise QevalError(
            f"reference={reference} is itself quantized (quant_method="
            f"{found.get('quant_method')}); give the unquantized model as reference=."
        )
    return resolved


def check_same_tokenizer(tokenizer: Any, reference: str, model: str) -> None:
    """Raise a one-line QevalError unless ``reference``'s tokenizer maps every token to the same
    id as ``tokenizer`` (the run's) and has the same special tokens."""
    from transformers import AutoTokenizer

    try:
        other = AutoTokenizer.from_pretrained(reference)
    except (OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise QevalError(
            f"reference={reference}: its tokenizer cannot be loaded ({first[:160]}); give a "
            f"model folder with its tokenizer files, or a hub id with network access."
        ) from None
    ours, theirs = tokenizer.get_vocab(), other.get_vocab()
    differing = sum(
        1 for token in ours.keys() | theirs.keys() if ours.get(token) != theirs.get(token)
    )
    special = ("bos_token_id", "eos_token_id")
    mismatched = [name for name in special if getattr(tokenizer, name) != getattr(other, name)]
    if differing or mismatched:
        what = f"{differing} of {len(ours | theirs)} tokens differ" if differing else ""
        what = what or f"{', '.join(mismatched)} differ"
        raise QevalError(
            f"reference={reference} does not use the tokenizer of '{model}' ({what}); give the "
            f"unquantized model this checkpoint was made from."
        )


def check_same_architecture(reference: str, model: str, revision: str | None = None) -> None:
    """Raise a one-line QevalError unless ``reference`` is the architecture of ``model`` with the
    same layers, as far as the files on this machine tell (nothing is downloaded).

    Architecture: ``config.json``'s ``model_type`` and ``architectures``, where both give one.
    Layers: the checkpoints' safetensors headers, where both are local: the same 2-D weights by
    name and shape; for a ``model`` saved already quantized (packed tensors), the same layers by
    name (``x`` of every ``x.weight`` or ``x.qweight``). Names are compared also without a
    leading ``prefix.`` (``transformer.h.0`` and ``h.0``: one model saved with and without its
    head class).
    """
    ours, theirs = checkpoint_config(model, revision), checkpoint_config(reference)
    for key in ("model_type", "architectures"):
        if ours.get(key) and theirs.get(key) and ours[key] != theirs[key]:
            raise QevalError(
                f"reference={reference} is another architecture ({key} {_shown(theirs[key])}) "
                f"than '{model}' ({_shown(ours[key])}); give the unquantized model this "
                f"checkpoint was made from."
            )
    packed = checkpoint_quantization(model, revision) is not None
    ours_layers = _layers(local_shapes(model, revision), packed)
    theirs_layers = _layers(local_shapes(reference, None), packed)
    if not ours_layers or not theirs_layers:
        return
    differing = min(
        (
            _differing(ours_layers, theirs_layers, prefix)
            for prefix in _prefixes(ours_layers, theirs_layers)
        ),
        key=len,
    )
    if differing:
        raise QevalError(
            f"reference={reference} does not have the layers of '{model}': {len(differing)} "
            f"weight(s) differ in name{'' if packed else ' or shape'} (e.g. {differing[0]}); "
            f"give the unquantized model this checkpoint was made from."
        )


def _shown(value: Any) -> str:
    """A config value as text: a list's items joined by commas."""
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def local_shapes(model: str, revision: str | None) -> dict[str, list[int]]:
    """:func:`tensor_shapes` of ``model``'s files on this machine; {} when they are not here."""
    try:
        return tensor_shapes(local_folder(model, revision))
    except Exception:  # a hub id not in the local cache: nothing to read here
        return {}


def _layers(shapes: dict[str, list[int]], packed: bool) -> dict[str, list[int] | None]:
    """Layer -> shape compared: every 2-D ``x.weight`` as ``x.weight`` -> shape; with ``packed``
    (the model is a checkpoint saved quantized) every ``x`` of an ``x.weight`` or ``x.qweight``
    of any rank, as ``x`` -> None (by name only)."""
    if packed:
        return {
            name.rpartition(".")[0]: None
            for name in shapes
            if name.endswith((".weight", ".qweight"))
        }
    return {
        name: shape
        for name, shape in shapes.items()
        if name.endswith(".weight") and len(shape) == 2
    }


def _prefixes(ours: dict, theirs: dict) -> list[str]:
    """The prefixes to compare names without: none, and every first name component (with its
    dot) of either side."""
    return ["", *sorted({name.partition(".")[0] + "." for name in (*ours, *theirs) if "." in name})]


def _differing(ours: dict, theirs: dict, prefix: str) -> list[str]:
    """The layers that differ between ``ours`` and ``theirs`` once ``prefix`` is removed from
    the names that start with it, each as ``'name' [shape] in the model, absent in the
    reference``."""
    ours, theirs = (
        {name.removeprefix(prefix): shape for name, shape in side.items()}
        for side in (ours, theirs)
    )
    return [
        f"'{name}' {_state(ours, name)} in the model, {_state(theirs, name)} in the reference"
        for name in sorted(ours.keys() | theirs.keys())
        if name not in ours or name not in theirs or ours[name] != theirs[name]
    ]


def _state(layers: dict, name: str) -> str:
    """``name``'s shape in ``layers`` (``[256, 128]``), ``present`` (compared by name only) or
    ``absent``."""
    if name not in layers:
        return "absent"
    return "present" if layers[name] is None else str(layers[name])
