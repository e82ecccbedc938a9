"""Files qeval writes and reads back: atomic writes, locks, writability checks, the cache.

May import: ``core``.
"""
