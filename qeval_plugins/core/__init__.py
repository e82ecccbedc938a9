"""The quantizer contract and the registry: hookspecs, errors, options, quantizers, specs, plans.

May import: nothing of qeval's outside ``core``.
"""
