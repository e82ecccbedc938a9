"""Number formats: which there are, and the tensor math that rounds to them (the bottom layer).

* :mod:`~qeval_plugins.formats.table`: every format by name (:data:`~.table.FORMATS`: element
  bits, kind, MX block size, minifloat parameters), listed without importing torch;
* :mod:`~qeval_plugins.formats.groups`: the weights that share one scale (group length, the
  argument checks) and their storage cost (:func:`~.groups.effective_bits`), also without torch;
* :mod:`~qeval_plugins.formats.rounding`: the torch math, simulated ("fake") quantization to any
  format (:func:`~.rounding.quantize_dequantize`, and the two-step
  :func:`~.rounding.group_params` / :func:`~.rounding.quantize_with_params` of GPTQ).

Like ``metrics``, this package imports nothing of qeval's; every other layer may import it.
"""
