"""The ``skip=`` option shared by the quantizers that can leave chosen modules unquantized.

Syntax: ``skip=PATTERN[+PATTERN...]``. ``+`` separates patterns because specs split on ``:``
and lm-eval's ``--model_args`` on ``,``: ``rtn:skip=layers.0+layers.3.mlp.down_proj`` and
``--model_args quantizer=rtn,skip=layers.0+layers.3.mlp.down_proj`` say the same. A pattern is a
shell-style glob (``*``, ``?``, ``[0-3]``, matched case-sensitively) over dotted module names; it
matches a module whose whole name matches it or whose name *ends* with ``.`` + a match (so
``layers.0`` matches ``model.layers.0``, and ``down_proj`` every ``mlp.down_proj``). A module is
skipped when it or one of its parents matches: ``layers.0`` skips every linear of block 0.
Skipped modules keep their weights, bit for bit, in the model's dtype (with SmoothQuant,
``smooth=``, they are smoothed like their neighbours, which leaves their outputs unchanged, but
neither rounded nor given activation quantization). A pattern that matches
none of the modules the quantizer would quantize is one :class:`QevalError` line, before any
weight is changed; one that matches no layer of the checkpoint at all is refused even before
the run starts (:meth:`SkipOption.check_layers`, called by qeval's pre-run check with the layer
names of the checkpoint's safetensors headers).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any

from qeval_plugins import Option, QevalError

SEPARATOR = "+"


class SkipOption(Option):
    """The ``skip`` option: an :class:`Option` that also checks its patterns against the layer
    names of a checkpoint before the run starts."""

    def check_layers(self, value: Any, layers: Mapping[str, Any]) -> None:
        """One QevalError line for the first pattern of ``value`` that matches none of
        ``layers`` (the checkpoint's layer names, e.g. ``model.layers.0.self_attn.q_proj``),
        naming the pattern and an example name. ``layers`` holds every layer with a 2-D weight,
        more than any quantizer quantizes, so a pattern refused here would fail the run too.
        A checkpoint may be saved without the model class's prefix (GPT-2's ``h.0`` is
        ``transformer.h.0`` once loaded), so a pattern also passes when it matches without its
        first dotted component, if what is left names something (``foo.*`` is still refused);
        the run checks it exactly."""
        patterns = skip_patterns({self.name: value}, self.name)
        names = sorted(layers)
        if not patterns or not names:
            return
        example = max(names, key=lambda name: name.count("."))  # the first of the deepest
        for pattern in patterns:
            unprefixed = pattern.partition(".")[2]
            if not any(character.isalnum() for character in unprefixed):
                unprefixed = ""
            if not any(
                name_matches(name, pattern) or (unprefixed and name_matches(name, unprefixed))
                for name in names
            ):
                raise QevalError(
                    f"skip pattern {pattern!r} matches no layer of the model (its linear layers "
                    f"are named like {example}): fix the pattern."
                )


SKIP_OPTION = SkipOption(
    "skip",
    str,
    "",
    "modules left unquantized: glob patterns over module names joined by '+', e.g. "
    "layers.0+layers.3.mlp.down_proj (a pattern matches a name or its dotted tail; parents skip "
    "their children)",
)


def skip_patterns(options: Mapping[str, Any], who: str) -> tuple[str, ...]:
    """The patterns of ``options["skip"]`` (empty tuple when nothing is skipped).

    ``none`` (lm-eval turns the word into None, the option back into ``"none"``) and the empty
    string skip nothing; an empty pattern (``a++b``), whitespace or a non-printable character is
    one QevalError line naming the quantizer ``who``.
    """
    text = options.get("skip", "")
    if text in ("", "none"):
        return ()
    patterns = tuple(text.split(SEPARATOR))
    for pattern in patterns:
        if not pattern or not pattern.isprintable() or any(c.isspace() for c in pattern):
            raise QevalError(
                f"{who}: bad skip pattern {pattern!r} in skip={text!r}; write module-name globs "
                f"joined by '{SEPARATOR}', e.g. skip=layers.0+layers.3.mlp.down_proj."
            )
    return patterns


def name_matches(name: str, pattern: str) -> bool:
    """Whether the dotted module ``name`` or one of its parents matches ``pattern``: the whole
    name or any tail after a dot (``a.b.c`` is tried as ``a.b.c``, ``b.c``, ``c`` and as each
    parent ``a.b``, ``b``, ``a``)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        for start in range(end):
            if fnmatch.fnmatchcase(".".join(parts[start:end]), pattern):
                return True
    return False


def skipped_names(names: Iterable[str], options: Mapping[str, Any], who: str) -> set[str]:
    """The members of ``names`` (the modules the quantizer would quantize) that ``skip`` keeps.

    Every pattern must match at least one of ``names``; the first that matches none is one
    QevalError line listing a few of the names it could match.
    """
    patterns = skip_patterns(options, who)
    names = list(names)
    if not patterns:
        return set()
    skipped = set()
    for pattern in patterns:
        hits = {name for name in names if name_matches(name, pattern)}
        if not hits:
            sample = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            raise QevalError(
                f"{who}: skip pattern {pattern!r} matches none of the {len(names)} modules it "
                f"would quantize ({sample}); check the name with a model's named_modules()."
            )
        skipped |= hits
    return skipped


def skipped_linears(model: Any, options: Mapping[str, Any], who: str) -> set[str]:
    """:func:`skipped_names` over the names of ``model``'s ``torch.nn.Linear`` modules except its
    output projection (what GPTQModel and quanto quantize; both take exact module names)."""
    import torch

    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module is not output
    ]
    return skipped_names(names, options, who)


def kept_parts(options: Mapping[str, Any]) -> tuple[str, ...]:
    """The skip patterns, as a scheme lists them among its ``kept`` parts."""
    return skip_patterns(options, "skip")
