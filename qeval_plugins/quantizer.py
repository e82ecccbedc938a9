"""The quantizer contract: what a plugin implements to add a quantization method.

One contract covers both kinds of method:

* methods that quantize *while loading* (bitsandbytes, GPTQ checkpoints) return extra
  ``from_pretrained`` keyword arguments from :meth:`Quantizer.load_kwargs`;
* methods that *transform a loaded model* (round-to-nearest, calibration-based GPTQ) implement
  :meth:`Quantizer.quantize`.

A method may use both. Options are declared as :class:`~qeval_plugins.options.Option` objects and
validated before anything is loaded; optional dependencies are named in ``requires`` and imported
only inside ``load_kwargs``/``quantize``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from qeval_plugins.options import Option


@dataclass(frozen=True)
class LoadContext:
    """What a quantizer may need to know about the load it takes part in.

    ``device`` is the device the model is evaluated on (``"cpu"``, ``"cuda"``, ``"cuda:1"``);
    ``dtype`` is the dtype requested for the unquantized parts (``"auto"``, ``"float16"``, ...).
    """

    device: str = "cpu"
    dtype: str = "auto"

    @property
    def on_cuda(self) -> bool:
        return self.device.startswith("cuda")


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
        extra: the pip extra of qeval (or your package) that installs ``requires``.
        needs_cuda: True when the method cannot run without a CUDA device.
        simulated: True when weights are replaced by their quantized values but kept in the
            original dtype ("fake" quantization): accuracy is exact, memory and speed are not.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    options: ClassVar[tuple[Option, ...]] = ()
    requires: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str | None] = None
    needs_cuda: ClassVar[bool] = False
    simulated: ClassVar[bool] = False

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
        """Transform the loaded model and return it (may be the same object, changed in place)."""
        return model

    def effective_bits(self, options: Mapping[str, Any]) -> float | None:
        """Average storage bits per quantized weight including scales, if the method knows it."""
        return None
