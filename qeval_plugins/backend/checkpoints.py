"""Where models come from: the embedded ``qeval-tiny`` and checks on user-given paths."""

from __future__ import annotations

import json
import math
from pathlib import Path

from qeval_plugins.core.errors import QevalError

EMBEDDED_DIR = Path(__file__).resolve().parent.parent / "embedded"
EMBEDDED_MODELS = {"qeval-tiny": EMBEDDED_DIR / "qeval-tiny"}
DEFAULT_MODEL = "qeval-tiny"

_DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
}
_TORCH_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}


def resolve_pretrained(pretrained: str) -> str:
    """Map an embedded short name to its directory; check that a local-looking path exists.

    Anything that is neither an embedded name nor a local path is passed on unchanged (a hub id).
    """
    name = str(pretrained)
    if name in EMBEDDED_MODELS:
        return str(EMBEDDED_MODELS[name])
    path = Path(name).expanduser()
    # hub ids are "name" or "org/name"; anything else that does not exist is a missing path
    looks_local = name.startswith((".", "/", "~")) or name.count("/") > 1
    if path.exists():
        if not (path / "config.json").exists():
            raise QevalError(
                f"model path '{name}' has no config.json; point pretrained= at a directory "
                f"written by save_pretrained()."
            )
        return str(path)
    if looks_local:
        raise QevalError(
            f"model path '{name}' does not exist; give an existing directory, a hub id, or "
            f"'{DEFAULT_MODEL}' for the embedded model."
        )
    return name


def local_folder(model: str, revision: str | None, download: bool = False) -> str:
    """A local folder as it is; a hub id's folder in the local hub cache (downloaded first only
    with ``download``, and never when ``HF_HUB_OFFLINE`` is set)."""
    if Path(model).is_dir():
        return model
    from huggingface_hub import snapshot_download

    return snapshot_download(model, revision=revision, local_files_only=not download)


def _tensor_headers(model_dir: str):
    """(name, dtype, shape) of every tensor in a local safetensors checkpoint, from headers
    only."""
    files = sorted(Path(model_dir).glob("*.safetensors")) if Path(model_dir).is_dir() else []
    for file in files:
        with open(file, "rb") as handle:
            header_len = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(header_len))
        for key, info in header.items():
            if key != "__metadata__":
                yield key, info["dtype"], info["shape"]


def tensor_shapes(model_dir: str) -> dict[str, list[int]]:
    """Name -> shape of every tensor in a local safetensors checkpoint (headers only); {} when
    ``model_dir`` holds none."""
    return {name: shape for name, _, shape in _tensor_headers(model_dir)}


def checkpoint_parameter_count(model_dir: str) -> int | None:
    """Number of values in a local safetensors checkpoint; None when there is none."""
    counts = [math.prod(shape) for _, _, shape in _tensor_headers(model_dir)]
    return sum(counts) if counts else None


def checkpoint_parameter_bytes(model_dir: str, dtype: str = "auto") -> int | None:
    """Bytes of all tensors in a local safetensors checkpoint, read from file headers only.

    With ``dtype`` other than ``auto``, floating-point tensors are counted at that dtype's size
    (what the unquantized model occupies once loaded that way). None when not a local
    safetensors checkpoint.
    """
    total = None
    for _, stored, shape in _tensor_headers(model_dir):
        size = _DTYPE_BYTES.get(stored, 4)
        if dtype in _TORCH_DTYPE_BYTES and stored in ("F32", "F16", "BF16", "F64"):
            size = _TORCH_DTYPE_BYTES[dtype]
        total = (total or 0) + math.prod(shape) * size
    return total


# quantization_config keys worth recording (the rest varies by library and can be large)
_QUANTIZATION_KEYS = (
    "quant_method",
    "bits",
    "group_size",
    "desc_act",
    "sym",
    "load_in_4bit",
    "load_in_8bit",
    "bnb_4bit_quant_type",
    "bnb_4bit_use_double_quant",
    "format",
    "version",
)


def checkpoint_quantization(pretrained: str, revision: str | None = None) -> dict | None:
    """The ``quantization_config`` a checkpoint was saved with (GPTQ, AWQ, bitsandbytes, ...).

    Read from ``config.json`` of a local folder, or of a hub id from the local hub cache only (no
    download). Returns the recorded subset of its keys (scalars only; ``quant_method: unknown``
    when none of them is there), or None when the checkpoint carries no quantization config or its
    config cannot be read here.
    """
    quantization = checkpoint_config(pretrained, revision).get("quantization_config")
    if not isinstance(quantization, dict) or not quantization:
        return None
    recorded = {
        key: quantization[key]
        for key in _QUANTIZATION_KEYS
        if isinstance(quantization.get(key), (str, int, bool))
    }
    return recorded or {"quant_method": "unknown"}


def checkpoint_config(pretrained: str, revision: str | None = None) -> dict:
    """The ``config.json`` of a local folder, or of a hub id from the local hub cache only (no
    download); {} when it is not here or not a JSON object."""
    path = Path(pretrained) / "config.json"
    if not path.is_file():
        path = _cached_hub_config(pretrained, revision)
    if path is None:
        return {}
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


PREQUANTIZED = "prequantized"  # the quantizer that evaluates such a checkpoint as it is


def checked_quantization(
    pretrained: str, quantizer: str, revision: str | None = None
) -> dict | None:
    """:func:`checkpoint_quantization` of ``pretrained``, checked against the quantizer.

    A checkpoint saved already quantized takes only ``quantizer=prequantized``; ``prequantized``
    takes only such a checkpoint. Anything else is a one-line QevalError saying what to use.
    """
    found = checkpoint_quantization(pretrained, revision)
    method = found.get("quant_method") if found else None
    if found and quantizer == "none":
        raise QevalError(
            f"model '{pretrained}' is already quantized (quant_method={method}), so quantizer="
            f"none would not evaluate an unquantized model; use quantizer={PREQUANTIZED} to "
            f"evaluate it as it is (add reference=UNQUANTIZED_MODEL to compare with its base)."
        )
    if found and quantizer != PREQUANTIZED:
        raise QevalError(
            f"model '{pretrained}' is already quantized (quant_method={method}); quantizer "
            f"'{quantizer}' cannot apply on top of it. Give the unquantized checkpoint, or "
            f"evaluate this one as it is with quantizer={PREQUANTIZED}."
        )
    if not found and quantizer == PREQUANTIZED:
        raise QevalError(
            f"model '{pretrained}' carries no quantization_config in its config.json: it is not "
            f"a quantized checkpoint; use quantizer=none for it, or another quantizer."
        )
    return found


def _cached_hub_config(repo_id: str, revision: str | None) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - a dependency of transformers
        return None
    try:
        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except Exception:  # an id the hub library rejects: not a hub model, nothing to read
        return None
    return found if isinstance(found, str) else None
