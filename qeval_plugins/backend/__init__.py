"""The lm-eval model ``qeval``: loading and quantizing checkpoints, measuring size and speed.

May import: ``core``, ``storage``, ``metrics``.
"""
