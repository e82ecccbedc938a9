"""Groups sharing one scale and their storage cost (qeval_plugins.formats.groups)."""

from __future__ import annotations

import pytest

from qeval_plugins.formats.groups import effective_bits, group_length


def test_effective_bits():
    assert effective_bits("int", 4, 128) == 4 + 16 / 128
    assert effective_bits("int", 4, 128, symmetric=False) == 4 + 32 / 128
    assert effective_bits("int", 3, 0, in_features=4096) == 3 + 16 / 4096
    assert effective_bits("int", 8, 0) == 8.0  # per-channel overhead unknown -> ignored
    assert effective_bits("nf4", group_size=64) == 4.25
    assert effective_bits("fp8_e4m3", group_size=0, in_features=1024) == 8 + 16 / 1024
    assert effective_bits("fp6_e2m3", group_size=32) == 6.5
    assert effective_bits("mxfp4") == 4.25
    assert effective_bits("mxfp4", group_size=32) == 4.25
    assert effective_bits("mxint8") == 8.25
    assert effective_bits("mxfp6") == 6.25
    with pytest.raises(ValueError, match="group_size"):
        effective_bits("mxfp8", group_size=64)
    with pytest.raises(ValueError, match="bits"):
        effective_bits("int", 9, 128)


def test_group_length():
    assert group_length("int", 0, 96) == 96  # per output channel: the whole row
    assert group_length("nf4", 32, 96) == 32
    assert group_length("mxfp4", 0, 40) == 32  # MX: blocks of 32, the last one padded
    with pytest.raises(ValueError, match="in_features=100 is not divisible by group_size=32"):
        group_length("int", 32, 100)
    with pytest.raises(ValueError, match="fixed block size of 32"):
        group_length("mxint8", 16, 64)
