"""Predicting quantization damage from cheap features (``qeval predict``).

One row per (model, quantizer spec): features that need no evaluation of the quantized model
(:mod:`.features`: parameter count, the unquantized NLL, the weight SQNR of the spec's
round-to-nearest twin (:mod:`.rtn_twin`), format descriptors, bits per parameter; and
:mod:`.landscape`: the NLL under Gaussian weight noise of the same per-layer SQNR, and at fixed
radii), a target read from a ``qeval run`` (:mod:`.rows`), a random forest exported as JSON
(:mod:`.forest`, :mod:`.predictor_file`) and its leave-one-model-out and leave-one-family-out
errors next to two transparent baselines (:mod:`.validation`).
"""
