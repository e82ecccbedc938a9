"""Dropping library log lines that a qeval user cannot act on, and nothing else.

Each entry names a logger, the start of one message (its format string, before ``%`` arguments)
and how many times it is still shown per process. Every other record passes unchanged.
"""

from __future__ import annotations

import logging


class RepeatFilter(logging.Filter):
    """Drops records whose message starts with ``prefix`` after the first ``shown`` of them."""

    def __init__(self, prefix: str, shown: int):
        super().__init__()
        self.prefix, self.left = prefix, shown

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.prefix):
            return True
        self.left -= 1
        return self.left >= 0


def quiet(noise: dict[str, tuple[str, int]]) -> None:
    """Install a :class:`RepeatFilter` per ``logger name: (message prefix, times shown)``, once
    per logger and prefix."""
    for name, (prefix, shown) in noise.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, RepeatFilter) and f.prefix == prefix for f in logger.filters):
            logger.addFilter(RepeatFilter(prefix, shown))


# transformers imports torchao whenever it is installed (gptqmodel installs it): torchao then
# reports each CUDA-only extension it cannot load on this machine, and torch deprecates its enum
# registration. Neither concerns a qeval run.
MODEL_LOADING_NOISE = {
    # bitsandbytes, imported by transformers for any bitsandbytes checkpoint, on AVX512-BF16 CPUs:
    # an optional kernel from a hub (offline here)
    "bitsandbytes.backends.cpu.ops": ("Failed to load CPU gemm_4bit_forward from kernels", 0),
    "torchao": ("Failed to load ", 0),
    "torch.utils._pytree": ("%s is an Enum subclass and is now natively supported", 0),
}
