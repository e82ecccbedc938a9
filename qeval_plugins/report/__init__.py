"""``qeval report``: reading results files, comparing runs, rendering, exporting, plotting.

May import: ``core``, ``metrics``, ``storage``; never the backend, torch or lm-eval at module
level (``qeval report`` stays instant and runs without a model library).
"""
