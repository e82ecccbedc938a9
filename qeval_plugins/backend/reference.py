"""``reference=``: the unquantized model that a run's quantized model is compared with.

By default the reference is the checkpoint itself, loaded without quantization. A checkpoint
saved already quantized has none of its own: ``reference=PATH_OR_ID`` names its base model. Any
quantizer may be given one (e.g. to compare with a model in another dtype's checkpoint). The
reference must be unquantized and use the same tokenizer, or the comparisons would pair
different tokens.
"""

from __future__ import annotations

from typing import Any

from qeval_plugins.backend.checkpoints import checkpoint_quantization, resolve_pretrained
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
