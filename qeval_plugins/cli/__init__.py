"""The ``qeval`` command: one module per command, assembled by :mod:`.main` (``COMMANDS``).

May import: everything.
"""
