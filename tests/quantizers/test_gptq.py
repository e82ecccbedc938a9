"""The ``gptq`` quantizer: real GPTQ through GPTQModel on the embedded model (CPU, float32).

One quantization (16 calibration windows of 128 tokens from 30 of ``qeval_sqnr``'s passages) is
shared by the module; the other 10 passages are the held-out text the logits are compared on.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

import pytest
from conftest import unpack_gptq_int4

pytest.importorskip(
    "gptqmodel", reason="the gptq quantizer needs GPTQModel: pip install 'qeval[gptq]'"
)

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from qeval_plugins import LoadContext, QevalError
from qeval_plugins.core.calibration import build_calibration
from qeval_plugins.core.options import resolve_options
from qeval_plugins.core.registry import get_registry
from qeval_plugins.formats.rounding import quantize_dequantize
from qeval_plugins.paths import tasks_path
from qeval_plugins.quantizers import gptq

MODEL = Path(gptq.__file__).resolve().parent.parent / "embedded" / "qeval-tiny"
PASSAGES = tasks_path() / "qeval_sqnr" / "passages.jsonl"
CALIBRATION = {"calibration_samples": 16, "calibration_seqlen": 128}


def sqnr_db(reference: torch.Tensor, other: torch.Tensor) -> float:
    """``10·log10(Σx² / Σ(x − x̂)²)`` in float64."""
    x, y = reference.double(), other.double()
    return (10 * torch.log10((x**2).sum() / ((x - y) ** 2).sum())).item()


def gptq_options(**given):
    quantizer = gptq.GptqQuantizer()
    return quantizer.finalize_options(resolve_options("gptq", quantizer.options, given))


@pytest.fixture(scope="module")
def texts():
    lines = [json.loads(line)["text"] for line in PASSAGES.read_text().splitlines() if line]
    return lines[:30], lines[30:]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(MODEL)


@pytest.fixture(scope="module")
def held_out(texts, tokenizer):
    """Four held-out passages, 96 tokens each, ``[4, 96]``."""
    return torch.tensor([tokenizer(text)["input_ids"][:96] for text in texts[1][:4]])


@pytest.fixture(scope="module")
def reference(held_out):
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32).eval()
    with torch.no_grad():
        return model, model(held_out).logits


@pytest.fixture(scope="module")
def run(tmp_path_factory, texts, tokenizer):
    """Quantize once from an empty working folder, recording what GPTQModel calibrated on."""
    import gptqmodel.models.base as gptq_base

    tmp = tmp_path_factory.mktemp("gptq")
    calibration_file = tmp / "calibration.jsonl"
    calibration_file.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[0]))
    options = gptq_options(calibration_file=str(calibration_file), **CALIBRATION)
    context = LoadContext(
        device="cpu",
        dtype="float32",
        checkpoint=str(MODEL),
        tokenizer=tokenizer,
        calibration=build_calibration(tokenizer, options),
        cache_dir=str(tmp / "cache"),
    )
    seen = []
    original = gptq_base.prepare_calibration_dataset

    def recording(*args, **kwargs):
        batches = original(*args, **kwargs)
        seen.extend(batches)
        return batches

    unquantized = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32)
    cwd, workdir = Path.cwd(), tmp / "cwd"
    workdir.mkdir()
    gptq_base.prepare_calibration_dataset = recording
    os.chdir(workdir)
    try:
        model = gptq.GptqQuantizer().quantize(unquantized, options, context)
    finally:
        os.chdir(cwd)
        gptq_base.prepare_calibration_dataset = original
    return {
        "model": model,
        "options": options,
        "context": context,
        "seen": seen,
        "unquantized": unquantized,
        "workdir": workdir,
        "tmp": tmp,
    }


def test_registered_with_aliases_and_contract():
    registered = get_registry().get("autogptq")
    quantizer = registered.quantizer
    assert quantizer.name == "gptq"
    assert (quantizer.calibrated, quantizer.cache_quantized, quantizer.simulated) == (
        True,
        True,
        False,
    )
    assert quantizer.requires == ("gptqmodel",) and quantizer.extra == "gptq"


def test_linear_layers_become_packed_gptqmodel_layers(run):
    model = run["model"]
    packed = dict(gptq.packed_layers(model))
    assert len(packed) == 4 * 7  # q, k, v, o, gate, up, down in each of the 4 layers
    layer = packed["model.layers.0.mlp.down_proj"]  # in 384, out 128
    assert layer.qweight.dtype == torch.int32
    assert layer.qweight.shape == (384 * 4 // 32, 128)
    assert type(model.lm_head) is torch.nn.Linear  # kept, as the scheme says
    assert type(model.model.embed_tokens) is torch.nn.Embedding
    assert model.dtype == torch.float32 and model.device.type == "cpu"
    # the unquantized model handed in was released (meta tensors hold no memory)
    assert all(p.device.type == "meta" for p in run["unquantized"].parameters())


def test_gptqmodel_calibrates_on_qeval_windows_unchanged(run):
    windows = run["context"].calibration.input_ids
    seen = torch.cat([batch["input_ids"] for batch in run["seen"]])
    assert torch.equal(seen, windows)  # same tokens, same order, none dropped or cut


def test_gptqmodel_writes_nothing_into_the_working_folder(run):
    assert list(run["workdir"].iterdir()) == []
    work = Path(getattr(run["model"], gptq.FOLDER_ATTRIBUTE)).parent
    assert work.parent == Path(run["context"].cache_dir)
    assert (work / gptq.LOG_NAME).stat().st_size > 0  # GPTQModel's output, kept off the console
    assert list((work / "logs").glob("gptq_log_*.log"))


def test_a_logging_handler_made_during_gptqmodel_calls_is_not_left_on_its_log(tmp_path):
    """An import that runs ``logging.basicConfig`` inside the redirect binds stderr = the log."""
    import logging

    handler = None
    with gptq._gptqmodel_output(tmp_path):
        handler = logging.StreamHandler()  # what basicConfig makes: bound to sys.stderr now
        logging.getLogger("qeval-test-basicconfig").addHandler(handler)
    try:
        assert handler.stream is sys.__stderr__
        assert (tmp_path / gptq.LOG_NAME).is_file()
    finally:
        logging.getLogger("qeval-test-basicconfig").removeHandler(handler)


def test_saved_config_pins_gptqmodel_defaults(run):
    folder = Path(getattr(run["model"], gptq.FOLDER_ATTRIBUTE))
    config = json.loads((folder / "quantize_config.json").read_text())
    meta = config["meta"]
    assert (config["bits"], config["group_size"], config["desc_act"], config["sym"]) == (
        4,
        128,
        False,
        True,
    )
    assert meta["damp_percent"] == 0.05 and meta["true_sequential"] and meta["act_group_aware"]
    assert meta["offload_to_disk"] is False
    assert meta.get("fallback") is None  # no layer silently quantized by round-to-nearest
    # GPTQModel's per-layer log: every projection GPTQ-solved on all 16 × 128 tokens
    rows = (folder / "quant_log.csv").read_text().splitlines()[1:]
    assert len(rows) == 28 and all(row.split(",")[3] == "2048" for row in rows)


def test_generation_config_of_the_checkpoint_is_kept(run, held_out):
    model = run["model"]
    assert model.generation_config.do_sample is False  # GPTQModel's rewrite set it to true
    out = model.generate(held_out[:1, :16], max_new_tokens=4, do_sample=False)
    assert 16 < out.shape[1] <= 20 and torch.equal(out[:, :16], held_out[:1, :16])


def independent_dense_weights(folder: Path) -> dict[str, torch.Tensor]:
    """``W[o, i] = scales[g, o] · (q[i, o] − z[g, o])``, g = g_idx[i], from the saved file."""
    dense = {}
    for name, (codes, zeros, scales, groups) in unpack_gptq_int4(folder).items():
        dense[name] = (scales[groups] * (codes - zeros[groups]).double()).t()
    return dense


def test_dequantize_hook_matches_independent_unpacking(run, held_out):
    folder = Path(getattr(run["model"], gptq.FOLDER_ATTRIBUTE))
    expected = independent_dense_weights(folder)
    fresh = gptq.GptqQuantizer().load_quantized(folder, run["options"], run["context"])
    layers = dict(gptq.packed_layers(fresh))
    assert set(layers) == set(expected)
    before = {name: gptq.qeval_dequantize_weight(module) for name, module in layers.items()}
    for name, weight in before.items():  # plain GPTQ layout: GPTQModel's own unpacking
        assert weight.shape == expected[name].shape
        torch.testing.assert_close(weight.double(), expected[name], rtol=0, atol=1e-6)
    with torch.no_grad():
        fresh(held_out)  # the CPU kernels repack at the first forward pass
    assert {getattr(m, "linear_mode", None) for m in layers.values()} != {None}
    for name, module in layers.items():  # repacked: probed with the identity matrix
        after = gptq.qeval_dequantize_weight(module)
        assert sqnr_db(expected[name], after) > 40, name
    assert gptq.qeval_dequantize_weight(torch.nn.Linear(4, 4)) is None


def test_logits_beat_round_to_nearest_on_held_out_text(run, reference, held_out):
    unquantized, logits = reference
    with torch.no_grad():
        gptq_logits = run["model"](held_out).logits
    rtn = copy.deepcopy(unquantized)
    for name, module in rtn.named_modules():
        if isinstance(module, torch.nn.Linear) and name != "lm_head":
            module.weight.data = quantize_dequantize(
                module.weight.data, "int", bits=4, group_size=128
            )
    with torch.no_grad():
        rtn_logits = rtn(held_out).logits
    gptq_db, rtn_db = sqnr_db(logits, gptq_logits), sqnr_db(logits, rtn_logits)
    # measured: gptq 18.6 dB, rtn int4 g128 16.7 dB
    assert gptq_db > rtn_db + 1.0, (gptq_db, rtn_db)


def test_save_and_load_round_trip_gives_identical_logits(run, held_out):
    quantizer, options, context = gptq.GptqQuantizer(), run["options"], run["context"]
    folder = run["tmp"] / "saved"
    folder.mkdir()
    quantizer.save_quantized(run["model"], folder, options, context)
    assert {"model.safetensors", "quantize_config.json", "config.json"} <= {
        p.name for p in folder.iterdir()
    }
    loaded = quantizer.load_quantized(folder, options, context)
    with torch.no_grad():
        assert torch.equal(loaded(held_out).logits, run["model"](held_out).logits)


def test_transformers_loads_the_saved_checkpoint(run, held_out):
    pytest.importorskip("optimum", reason="transformers loads GPTQ checkpoints through optimum")
    folder = Path(getattr(run["model"], gptq.FOLDER_ATTRIBUTE))
    model = AutoModelForCausalLM.from_pretrained(folder, device_map="cpu", dtype=torch.float32)
    layers = dict(gptq.packed_layers(model))
    assert len(layers) == 28
    expected = independent_dense_weights(folder)
    for name, module in layers.items():
        assert sqnr_db(expected[name], gptq.qeval_dequantize_weight(module)) > 40, name
    with torch.no_grad():
        ours, theirs = run["model"](held_out).logits, model(held_out).logits
    assert sqnr_db(ours, theirs) > 30  # the CPU kernel transformers picks computes in bfloat16


def test_save_refuses_a_model_it_did_not_quantize(tmp_path):
    with pytest.raises(QevalError, match="not quantized by qeval's gptq"):
        gptq.GptqQuantizer().save_quantized(torch.nn.Linear(2, 2), tmp_path, {}, LoadContext())


def test_calibration_longer_than_the_context_is_refused(tokenizer, texts, tmp_path):
    calibration_file = tmp_path / "calibration.jsonl"
    calibration_file.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[0]))
    options = gptq_options(
        calibration_file=str(calibration_file), calibration_samples=2, calibration_seqlen=600
    )
    context = LoadContext(
        checkpoint=str(MODEL), calibration=build_calibration(tokenizer, options), dtype="float32"
    )
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32)
    with pytest.raises(QevalError, match=r"calibration_seqlen=600 is longer.*\(512 tokens\)"):
        gptq.GptqQuantizer().quantize(model, options, context)


def test_quantize_without_calibration_is_one_clear_error():
    with pytest.raises(QevalError, match="needs the checkpoint folder and calibration"):
        gptq.GptqQuantizer().quantize(torch.nn.Linear(2, 2), gptq_options(), LoadContext())


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"bits": 5}, "bits"),
        ({"group_size": 100}, "group_size"),
        ({"damp_percent": 0}, "damp_percent"),
        ({"kernel": "cuda"}, "kernel"),
    ],
)
def test_bad_options_are_one_line_errors(given, message):
    with pytest.raises(QevalError, match=message) as caught:
        gptq_options(**given)
    assert "\n" not in str(caught.value)


def test_options_scheme_and_effective_bits():
    quantizer = gptq.GptqQuantizer()
    default = gptq_options()
    assert (default["damp_percent"], default["act_group_aware"]) == (0.05, True)
    assert quantizer.scheme(default).weights == "int4 g128"
    assert quantizer.effective_bits(default) == 4 + (16 + 4) / 128
    act_order = gptq_options(desc_act=True, sym=False, bits=3, group_size=0)
    assert act_order["act_group_aware"] is False  # GPTQModel allows one ordering at a time
    assert quantizer.scheme(act_order).weights == "int3 per-channel act-order asym"
    assert quantizer.scheme(act_order).kept == ("lm_head", "embeddings")
    assert quantizer.effective_bits(act_order) == 3.0


def small_context(tmp_path, texts, tokenizer, checkpoint=MODEL, **given):
    """Options and context of a 2 × 32-token calibration into ``tmp_path/cache``."""
    calibration_file = tmp_path / "calibration.jsonl"
    calibration_file.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[0]))
    options = gptq_options(
        calibration_file=str(calibration_file),
        calibration_samples=2,
        calibration_seqlen=32,
        **given,
    )
    context = LoadContext(
        dtype="float32",
        checkpoint=str(checkpoint),
        calibration=build_calibration(tokenizer, options),
        cache_dir=str(tmp_path / "cache"),
    )
    return options, context


def test_a_failure_after_quantizing_removes_the_work_folder(tmp_path, texts, tokenizer):
    options, context = small_context(tmp_path, texts, tokenizer)
    quantizer, seen = gptq.GptqQuantizer(), []

    def failing_load(folder, options, context):  # the saved model is there, then loading fails
        seen.append((Path(folder) / "model.safetensors").is_file())
        raise KeyboardInterrupt

    quantizer.load_quantized = failing_load
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32)
    with pytest.raises(KeyboardInterrupt):
        quantizer.quantize(model, options, context)
    assert seen == [True]
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_gptqmodel_failure_removes_the_work_folder(tmp_path, texts, tokenizer):
    checkpoint = tmp_path / "broken"
    checkpoint.mkdir()
    for file in MODEL.iterdir():
        if file.is_file():
            (checkpoint / file.name).write_bytes(file.read_bytes())
    (checkpoint / "model.safetensors").write_bytes(b"not a safetensors file")
    options, context = small_context(tmp_path, texts, tokenizer, checkpoint)
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32)
    with pytest.raises(QevalError, match="gptq: GPTQModel failed") as caught:
        gptq.GptqQuantizer().quantize(model, options, context)
    assert "\n" not in str(caught.value) and "gptq-" not in str(caught.value)
    assert list((tmp_path / "cache").iterdir()) == []


CPU_HINT = "use kernel=auto or torch_fused on CPU."
HALF = "computes in float16 or bfloat16 only"


@pytest.mark.parametrize(
    ("kernel", "device", "dtype", "message"),
    [
        ("marlin", "cpu", "float32", f"needs a CUDA GPU (this run is on cpu); {CPU_HINT}"),
        ("triton", "cpu", "bfloat16", f"needs a CUDA GPU (this run is on cpu); {CPU_HINT}"),
        ("exllama_v2", "cpu", "float16", "needs a CUDA GPU"),
        (
            "torch_fused",
            "cuda:0",
            "bfloat16",
            "runs on CPU or Intel XPU only (this run is on cuda:0)",
        ),
        (
            "torch_aten",
            "cuda",
            "bfloat16",
            "runs on CPU only (this run is on cuda); use kernel=auto.",
        ),
        (
            "torch",
            "cpu",
            "float32",
            f"{HALF} (this run is float32); use dtype=bfloat16, or kernel=",
        ),
        ("torch_aten", "cpu", "auto", f"{HALF} (this run is float32)"),  # auto on CPU: float32
        (
            "marlin",
            "cuda",
            "float32",
            f"{HALF} (this run is float32); use dtype=bfloat16, or kernel=auto.",
        ),
    ],
)
def test_a_kernel_the_run_cannot_use_is_refused_before_loading(kernel, device, dtype, message):
    context = LoadContext(device=device, dtype=dtype)
    with pytest.raises(QevalError) as caught:
        gptq.GptqQuantizer().load_kwargs(gptq_options(kernel=kernel), context)
    assert str(caught.value).startswith(f"gptq: kernel={kernel} ")
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("kernel", "device", "dtype"),
    [
        ("auto", "cpu", "float32"),
        ("torch_fused", "cpu", "float32"),
        ("torch", "cpu", "bfloat16"),
        ("torch_aten", "cpu", "float16"),
        ("marlin", "cuda:1", "bfloat16"),
        ("torch", "cuda", "auto"),
    ],
)
def test_a_kernel_the_run_can_use_is_accepted(kernel, device, dtype):
    context = LoadContext(device=device, dtype=dtype)
    assert gptq.GptqQuantizer().load_kwargs(gptq_options(kernel=kernel), context) == {}


def test_kernel_support_table_matches_gptqmodel():
    from gptqmodel.quantization import FORMAT, METHOD
    from gptqmodel.utils.backend import BACKEND
    from gptqmodel.utils.importer import get_kernel_for_backend

    assert set(gptq.KERNEL_SUPPORT) == set(gptq.KERNELS) - {"auto"}
    for kernel, (devices, dtypes) in gptq.KERNEL_SUPPORT.items():
        cls = get_kernel_for_backend(BACKEND(f"gptq_{kernel}"), METHOD.GPTQ, FORMAT.GPTQ)
        theirs = [device.value for device in cls.SUPPORTS_DEVICES]
        assert (theirs == ["all"]) if devices is None else (tuple(theirs) == devices), kernel
        assert {getattr(torch, d) for d in dtypes} == set(cls.SUPPORTS_DTYPES), kernel


def test_quantize_and_cached_load_refuse_a_cuda_kernel_on_cpu_first(run, tmp_path):
    options = dict(run["options"], kernel="marlin")
    context = LoadContext(
        device="cpu",
        dtype="float32",
        checkpoint=str(MODEL),
        calibration=run["context"].calibration,
        cache_dir=str(tmp_path / "cache"),
    )
    unquantized = torch.nn.Linear(2, 2)
    with pytest.raises(QevalError, match="kernel=marlin needs a CUDA GPU"):
        gptq.GptqQuantizer().quantize(unquantized, options, context)
    assert not (tmp_path / "cache").exists()  # refused before any work
    assert unquantized.weight.device.type == "cpu"
    folder = Path(getattr(run["model"], gptq.FOLDER_ATTRIBUTE))
    with pytest.raises(QevalError, match="kernel=marlin needs a CUDA GPU") as caught:
        gptq.GptqQuantizer().load_quantized(folder, options, context)
    assert str(folder.parent) not in str(caught.value)


DISK_LINES = {  # GPTQModel's disk throughput warning, as its log writes it (both levels)
    "fast disk": "",
    "slow disk": "WARN  Disk subsystem write throughput detected at 177.2 MB/s; quantization may "
    "be slowed by IO.\n",
    "very slow disk": "ERROR Disk subsystem write throughput detected at 42.0 MB/s; quantization "
    "may be severely slowed by IO.\n",
}


@pytest.mark.parametrize("disk", DISK_LINES)
def test_only_actionable_gptqmodel_warnings_reach_qevals_logger(
    run, tmp_path, monkeypatch, caplog, disk
):
    """The real log of a run, with this machine's disk warning (if any) taken out and each
    variant's put in: the relayed lines are the same whatever the disk."""
    import logging

    monkeypatch.setattr(gptq, "_RELAYED", set())
    work = Path(getattr(run["model"], gptq.FOLDER_ATTRIBUTE)).parent
    real = (work / gptq.LOG_NAME).read_text()
    assert "Calibration dataset size should be more than 256" in real  # 16 windows
    real = "".join(line for line in real.splitlines(True) if "Disk subsystem" not in line)
    log = tmp_path / gptq.LOG_NAME
    log.write_text(
        "WARN  Python GIL is enabled: Multi-gpu quant acceleration for MoE models is sub-optimal\n"
        + real
        + DISK_LINES[disk]
        + "WARN  Model config has no rope scaling: check it.\n"
    )
    assert ("Disk subsystem" in log.read_text()) is bool(DISK_LINES[disk])
    with caplog.at_level(logging.WARNING):
        gptq._relay_warnings(log)
        gptq._relay_warnings(log)  # once per process
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        ("qeval", "gptq: GPTQModel: Model config has no rope scaling: check it.")
    ]


@pytest.mark.parametrize(
    ("speed", "level"), [(1000.0, None), (177.2, "WARN"), (42.0, "ERROR")], ids=str
)
def test_the_disk_throughput_warning_is_never_relayed(
    run, tokenizer, speed, level, monkeypatch, caplog
):
    """GPTQModel times a write to the temp folder once per process and warns below 200 MB/s
    (ERROR below 100): forced both ways here, whatever this machine's disk, through the
    measurement GPTQModel caches. Offloading is off in qeval, so qeval's logger never shows it."""
    import logging

    from gptqmodel.looper import module_looper

    monkeypatch.setattr(module_looper, "_IO_WRITE_SPEED_MB", speed)
    monkeypatch.setattr(gptq, "_RELAYED", set())
    context = copy.copy(run["context"])
    unquantized = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32)
    with caplog.at_level(logging.WARNING):
        model = gptq.GptqQuantizer().quantize(unquantized, run["options"], context)
    log = (Path(getattr(model, gptq.FOLDER_ATTRIBUTE)).parent / gptq.LOG_NAME).read_text()
    disk = [line for line in log.splitlines() if "Disk subsystem write throughput" in line]
    if level is None:
        assert not any(line.startswith(("WARN", "ERROR")) for line in disk), disk
    else:
        assert [line.split()[0] for line in disk] == [level], disk
        assert f"detected at {speed:.1f} MB/s; quantization may be" in disk[0]
    relayed = [r.getMessage() for r in caplog.records if r.name == "qeval"]
    assert not any("Disk subsystem" in message for message in relayed), relayed
    assert all(message.startswith("gptq: ") for message in relayed if "GPTQModel" in message)


def test_tokenicer_info_is_silenced_during_gptqmodel_calls(run, caplog):
    import logging

    root, tokenicer = logging.getLogger(), logging.getLogger("tokenicer")
    folder = Path(getattr(run["model"], gptq.FOLDER_ATTRIBUTE))
    with caplog.at_level(logging.INFO):
        levels = root.level, tokenicer.level
        gptq.GptqQuantizer().load_quantized(folder, run["options"], run["context"])
        assert (root.level, tokenicer.level) == levels  # restored
    assert [r.getMessage() for r in caplog.records if r.name.startswith("tokenicer")] == []


def test_3_bit_layers_gptqmodel_cannot_pack_are_one_line_before_it_runs(tmp_path, tokenizer):
    """GPTQModel packs 3-bit weights 32 output rows at a time; a 16-row k_proj made its worker
    thread end the process with os._exit(1) and no message. qeval refuses it first."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=96, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    model.save_pretrained(tmp_path / "narrow")
    options = gptq_options(bits=3, group_size=32, calibration_samples=2, calibration_seqlen=32)
    context = LoadContext(
        checkpoint=str(tmp_path / "narrow"),
        calibration=build_calibration(tokenizer, options),
        dtype="float32",
        cache_dir=str(tmp_path / "cache"),
    )
    message = r"bits=3 packs 32 output rows at a time, but layer 'model.layers.0.self_attn.k_proj'"
    with pytest.raises(QevalError, match=message):
        gptq.GptqQuantizer().quantize(model, options, context)
    assert not (tmp_path / "cache").exists()  # GPTQModel never started
    gptq._check_packable(model, 4, set())  # 4 bits pack these rows
    gptq._check_packable(model, 3, {f"model.layers.0.self_attn.{p}_proj" for p in "kv"})
