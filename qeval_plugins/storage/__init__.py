"""Files qeval writes and reads back: atomic writes, locks, writability checks, files' SHA-256
(``content_hash``), where the caches live (``cache_layout``), the reference cache
(``reference_cache``), the quantized-model cache (``model_cache``) and the pruning and size limit
both share (``cache_pruning``).

May import: ``core``.
"""
