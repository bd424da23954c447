"""Set a loaded model up for prediction in bf16 on the hardware that runs it natively.

Autocast casts every linear layer's fp32 weights to bf16 on every forward pass. For a small model
decoding a few tokens per pass on a CPU, that cast, and the oneDNN kernels' re-packing of each
weight into their blocked (AMX) layout on every call, cost more than the matmuls themselves. So
for prediction we cast the weights once, and on a CPU with oneDNN we also pack them once
(`PackedLinear`). The numerics are autocast's: the same bf16 weights, fp32 accumulation, bf16
outputs, embeddings and norms in fp32; only the packed kernel's summation order differs, so scores
can differ at bf16 rounding level (tests/test_inference_precision.py).
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


class PackedLinear(torch.nn.Module):
    """A bf16 `nn.Linear` whose weight oneDNN has packed once (torch's own prepacked linear, the one
    `torch.compile` uses for frozen CPU models). Inputs are cast to bf16, as autocast would."""

    def __init__(self, linear: torch.nn.Linear, rows_hint: int = 16):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().to(torch.bfloat16)
        self.register_buffer("packed", torch.ops.mkldnn._reorder_linear_weight(weight, rows_hint),
                             persistent=False)
        bias = linear.bias.detach().to(torch.bfloat16) if linear.bias is not None else None
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x.to(torch.bfloat16), self.packed, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bf16 packed"


def _can_pack() -> bool:
    """oneDNN bf16 linear with packed weights is there (a CPU build of torch with mkldnn)."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return False
    try:
        w = torch.ops.mkldnn._reorder_linear_weight(torch.ones(4, 4, dtype=torch.bfloat16), 1)
        y = torch.ops.mkldnn._linear_pointwise(torch.ones(1, 4, dtype=torch.bfloat16), w, None, "none", [], "")
        return bool(torch.all(y == 4))
    except RuntimeError:
        return False


def prepare_for_inference(model, dtype: torch.dtype, pack: bool = True) -> torch.dtype | None:
    """Set `model` up to predict under autocast to `dtype`; returns the autocast dtype to use (None
    for fp32). For bf16/fp16 the linear layers' weights are cast to `dtype` once, in place; on a
    CPU with oneDNN and bf16 (`pack`), the decoder's linear layers become `PackedLinear`. The output
    head stays a plain linear layer (constrained decoding reads rows of its weight); a head tied to
    the input embeddings gets its own copy, so the embeddings stay fp32. Only for a model that is
    used to predict, not trained or saved afterwards."""
    model.eval()
    if dtype == torch.float32:
        return None
    head = model.get_output_embeddings()
    embed = model.get_input_embeddings()
    if head is not None and embed is not None and head.weight is embed.weight:
        head.weight = torch.nn.Parameter(embed.weight.detach().to(dtype), requires_grad=False)
    device = next(model.parameters()).device
    pack = pack and dtype == torch.bfloat16 and device.type == "cpu" and _can_pack()
    packed = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not torch.nn.Linear:
                continue
            if pack and child is not head:
                setattr(parent, name, PackedLinear(child))
                packed += 1
            else:
                child.weight.data = child.weight.data.to(dtype)
                if child.bias is not None:
                    child.bias.data = child.bias.data.to(dtype)
    log.debug("prepared for %s inference: %d linear layers packed", dtype, packed)
    return dtype
