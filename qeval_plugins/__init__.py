"""qeval: measure what post-training quantization does to an LLM, inside lm-evaluation-harness.

Public API for plugin authors:

* :data:`hookimpl` — decorate your hook implementations with it;
* :class:`Quantizer`, :class:`Option` (:class:`Requires` for one that acts only with another's
  value), :class:`LoadContext`, :class:`Scheme` — the quantizer contract;
  :data:`CALIBRATION_OPTIONS` and :class:`CalibrationSet` for methods that calibrate,
  :func:`decoder_layers` to walk a model's decoder blocks, and qeval's number formats
  (:data:`FORMATS`, :func:`quantize_dequantize`) for simulating them on any tensor;
* :class:`QevalError` — the one error class users see.

The names are resolved lazily: importing this package (which every interpreter of the
environment does at start-up, see ``_startup``) costs nothing and never imports torch,
transformers, bitsandbytes or gptqmodel.
"""

import importlib

_PUBLIC = {
    "CALIBRATION_OPTIONS": "qeval_plugins.core.calibration",
    "CalibrationSet": "qeval_plugins.core.calibration",
    "QevalError": "qeval_plugins.core.errors",
    "decoder_layers": "qeval_plugins.core.model_parts",
    "FORMATS": "qeval_plugins.formats.table",
    "quantize_dequantize": "qeval_plugins.formats.rounding",
    "Option": "qeval_plugins.core.options",
    "Requires": "qeval_plugins.core.options",
    "LoadContext": "qeval_plugins.core.quantizer",
    "Quantizer": "qeval_plugins.core.quantizer",
    "Scheme": "qeval_plugins.core.quantizer",
    "hookimpl": "qeval_plugins.core.hookspecs",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'qeval_plugins' has no attribute {name!r}")
