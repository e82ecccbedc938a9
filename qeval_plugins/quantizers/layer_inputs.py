"""Calibration inputs of every linear layer, block by block, as GPTQ collects them.

:func:`quantize_blocks` runs the calibration windows through a decoder-only model one decoder
block at a time, so only one block's activations are ever held:

1. a pre-hook on the first block records its positional and keyword arguments (hidden states,
   attention mask, position ids and embeddings, ...) for each window and stops the forward pass
   (the embeddings run, nothing after them);
2. for each block, its ``nn.Linear`` layers are quantized *true-sequentially*: a first pass on
   one window records the order they run in and groups consecutive ones that read the same
   input tensor (Llama: q/k/v, o, gate/up, down); for each group in turn, hooks accumulate every
   member's Hessian ``H = (2/n) Σ_t x_t x_tᵀ`` over all windows' ``n`` input rows (float32,
   running mean, so memory is one ``[in, in]`` matrix per member) with the block's earlier
   groups already quantized, then each member's weight is replaced by ``solve(name, module, H)``;
3. the block, now quantized, runs once more on the same inputs; its outputs are the next
   block's inputs (errors of earlier blocks are thus seen by later ones, as in GPTQ).

Windows run one at a time (batch 1). A linear layer that no window reaches (an unused expert)
gets ``H = I``, for which GPTQ is plain round-to-nearest. Linear layers outside the decoder
blocks (``lm_head``) are not touched.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from qeval_plugins import decoder_layers

Solve = Callable[[str, torch.nn.Linear, torch.Tensor], torch.Tensor]


def block_linears(block: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    """Name (within the block) -> every ``nn.Linear`` of a decoder block."""
    return {
        name: module
        for name, module in block.named_modules()
        if isinstance(module, torch.nn.Linear)
    }


def decoder_linears(model: Any) -> list[tuple[str, torch.nn.Linear]]:
    """(name in the model, module) of every ``nn.Linear`` inside the decoder blocks."""
    inside = {id(module) for block in decoder_layers(model) for module in block.modules()}
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and id(module) in inside
    ]


@dataclass
class BlockCall:
    """The arguments a decoder block is called with for one window."""

    args: tuple
    kwargs: dict[str, Any]

    def run(self, block: torch.nn.Module) -> torch.Tensor:
        """The block's output hidden states for these arguments."""
        output = block(*self.args, **self.kwargs)
        return output[0] if isinstance(output, tuple | list) else output

    def with_hidden(self, hidden: torch.Tensor) -> BlockCall:
        """The same call with ``hidden`` as the input hidden states."""
        if self.args:
            return BlockCall((hidden, *self.args[1:]), self.kwargs)
        return BlockCall((), {**self.kwargs, "hidden_states": hidden})


class _Captured(Exception):
    """Raised by the first block's pre-hook to end a forward pass once its inputs are known."""


def first_block_calls(model: Any, block: torch.nn.Module, input_ids: torch.Tensor) -> list:
    """The :class:`BlockCall` of the first decoder ``block`` for each row of ``input_ids``."""
    calls: list[BlockCall] = []

    def capture(module, args, kwargs):
        calls.append(BlockCall(tuple(args), dict(kwargs)))
        raise _Captured

    device = next(model.parameters()).device
    handle = block.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        for row in input_ids:
            with contextlib.suppress(_Captured):
                model(row[None].to(device), use_cache=False)
    finally:
        handle.remove()
    return calls


class HessianAccumulator:
    """Running ``H = (2/n) Σ_t x_t x_tᵀ`` over the ``n`` input rows seen so far (float32).

    Adding ``m`` rows ``X`` ``[m, in]``: ``H ← H · n/(n+m) + (2/(n+m)) XᵀX``, ``n ← n + m``.
    """

    def __init__(self, in_features: int, device: torch.device) -> None:
        self.hessian = torch.zeros(in_features, in_features, dtype=torch.float32, device=device)
        self.rows = 0

    def add(self, inputs: torch.Tensor) -> None:
        x = inputs.detach().reshape(-1, self.hessian.shape[0]).to(torch.float32)
        total = self.rows + x.shape[0]
        self.hessian.mul_(self.rows / total)
        x = x * math.sqrt(2.0 / total)
        self.hessian.addmm_(x.T, x)
        self.rows = total

    def result(self) -> torch.Tensor:
        """H, or the identity when no input was seen (GPTQ then rounds to nearest)."""
        if self.rows == 0:
            return torch.eye(self.hessian.shape[0], device=self.hessian.device)
        return self.hessian


def linear_groups(block: torch.nn.Module, call: BlockCall) -> list[list[str]]:
    """The block's linear layers in the order one forward pass runs them, consecutive layers
    that read the same input tensor grouped together; layers that did not run come last."""
    linears = block_linears(block)
    seen: list[tuple[str, torch.Tensor]] = []

    def record(name):
        def hook(module, args):
            seen.append((name, args[0]))  # keeps the tensor alive so identities stay distinct

        return hook

    handles = [module.register_forward_pre_hook(record(n)) for n, module in linears.items()]
    try:
        call.run(block)
    finally:
        for handle in handles:
            handle.remove()
    groups: list[list[str]] = []
    last: torch.Tensor | None = None
    for name, tensor in seen:
        if any(name in group for group in groups):
            continue
        if last is not None and tensor is last:
            groups[-1].append(name)
        else:
            groups.append([name])
        last = tensor
    ran = {name for group in groups for name in group}
    return groups + [[name] for name in linears if name not in ran]


def group_hessians(
    block: torch.nn.Module, names: list[str], calls: list[BlockCall]
) -> dict[str, torch.Tensor]:
    """Name -> the Hessian of each named linear's inputs over all ``calls`` of ``block``."""
    linears = block_linears(block)
    sums = {
        name: HessianAccumulator(linears[name].in_features, linears[name].weight.device)
        for name in names
    }
    handles = [
        linears[name].register_forward_pre_hook(lambda module, args, s=sums[name]: s.add(args[0]))
        for name in names
    ]
    try:
        for call in calls:
            call.run(block)
    finally:
        for handle in handles:
            handle.remove()
    return {name: accumulator.result() for name, accumulator in sums.items()}


def quantize_block(block: torch.nn.Module, prefix: str, calls: list[BlockCall], solve: Solve):
    """Quantize the block's linear layers true-sequentially (see the module docstring)."""
    linears = block_linears(block)
    for names in linear_groups(block, calls[0]):
        hessians = group_hessians(block, names, calls)
        for name in names:
            module = linears[name]
            module.weight.data = solve(f"{prefix}.{name}", module, hessians.pop(name))


def quantize_blocks(
    model: Any, input_ids: torch.Tensor, solve: Solve, *, progress: Callable = iter
) -> None:
    """Quantize every decoder block's linear layers on the windows ``input_ids`` [samples, seq].

    ``solve(name, linear, H)`` returns the linear's new weight (same shape and dtype);
    ``progress`` wraps the iteration over the blocks (e.g. a tqdm). The model must have decoder
    blocks (:func:`decoder_layers`; ValueError otherwise).
    """
    layers = decoder_layers(model)
    if not layers:
        raise ValueError("no decoder blocks found (a ModuleList of config.num_hidden_layers)")
    names = {id(module): name for name, module in model.named_modules()}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            calls = first_block_calls(model, layers[0], input_ids)
            for block in progress(layers):
                quantize_block(block, names[id(block)], calls, solve)
                for index, call in enumerate(calls):  # one window's activations at a time
                    calls[index] = call.with_hidden(call.run(block))
    finally:
        model.train(was_training)
