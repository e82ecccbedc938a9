"""The ``qeval`` command: main, run (sweeps), demo, cache, plugin and quantizer listings.

May import: everything.
"""
