"""The mixture-of-experts block equals transformers' own blocks on the same weights (float32),
for Qwen3-MoE (with and without `norm_topk_prob`) and Mixtral, and loads per-expert tensors."""

import pytest
import torch

from purellm.layers.moe import FusedMoE, MoEOptions

HIDDEN, INTER, EXPERTS = 64, 32, 8


def _hf_block(model_type: str, top_k: int, norm: bool):
    from transformers import AutoConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock
    from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock

    if model_type == "mixtral":
        config = AutoConfig.for_model(
            "mixtral", hidden_size=HIDDEN, intermediate_size=INTER, num_local_experts=EXPERTS,
            num_experts_per_tok=top_k,
        )  # fmt: skip
        block = MixtralSparseMoeBlock(config)
    else:
        config = AutoConfig.for_model(
            "qwen3_moe", hidden_size=HIDDEN, moe_intermediate_size=INTER, num_experts=EXPERTS,
            num_experts_per_tok=top_k, norm_topk_prob=norm,
        )  # fmt: skip
        block = Qwen3MoeSparseMoeBlock(config)
    torch.manual_seed(0)
    for param in block.parameters():
        torch.nn.init.normal_(param, std=0.2)
    return block.eval()


@pytest.mark.parametrize(
    ("model_type", "top_k", "norm"),
    [("qwen3_moe", 2, True), ("qwen3_moe", 4, False), ("mixtral", 2, True)],
)
@pytest.mark.parametrize("tokens", [1, 3, 57])
def test_moe_block_equals_transformers(model_type, top_k, norm, tokens):
    hf = _hf_block(model_type, top_k, norm)
    options = MoEOptions(EXPERTS, top_k, INTER, norm, float32_scores=model_type == "mixtral")
    ours = FusedMoE(options, HIDDEN, torch.float32)
    with torch.no_grad():
        ours.gate.weight.copy_(hf.gate.weight)
        ours.experts.w13.copy_(hf.experts.gate_up_proj)
        ours.experts.w2.copy_(hf.experts.down_proj)
        x = torch.randn(tokens, HIDDEN, generator=torch.Generator().manual_seed(tokens))
        expected = hf(x[None])[0]  # [1, T, hidden] -> [T, hidden]
        got = ours(x)
    assert torch.equal(got, expected)
    ids, _ = ours.route(x)
    if tokens == 57:
        assert len(ids.unique()) == EXPERTS  # every expert is exercised


def test_expert_loader_fills_gate_up_and_down_rows():
    moe = FusedMoE(MoEOptions(EXPERTS, 2, INTER, True), HIDDEN, torch.float32)
    experts = moe.experts
    gate, up, down = (
        torch.randn(INTER, HIDDEN),
        torch.randn(INTER, HIDDEN),
        torch.randn(HIDDEN, INTER),
    )
    experts.w13.weight_loader(experts.w13, gate, 0, expert=3)
    experts.w13.weight_loader(experts.w13, up, 1, expert=3)
    experts.w2.weight_loader(experts.w2, down, None, expert=3)
    assert torch.equal(experts.w13[3], torch.cat((gate, up)))
    assert torch.equal(experts.w2[3], down)
    with pytest.raises(ValueError, match="expert index 8"):
        experts.w2.weight_loader(experts.w2, down, None, expert=8)
    with pytest.raises(ValueError, match="expert 2: checkpoint shape"):
        experts.w13.weight_loader(experts.w13, down, 0, expert=2)
    slots = experts.expected_slots("m.experts")
    assert len(slots) == 3 * EXPERTS and ("m.experts.w13", 1, 7) in slots


def test_bad_options():
    with pytest.raises(ValueError, match="top_k 9"):
        MoEOptions(8, 9, 32, True)


@pytest.mark.parametrize(("kind", "form"), [("Q4_0", "KernelInt4"), ("Q8_0", "KernelInt8")])
@pytest.mark.parametrize("tokens", [1, 3, 40])
def test_gguf_experts_in_cpu_kernel_form_stay_close_to_their_blocks(kind, form, tokens):
    from gguf import GGMLQuantizationType as Q
    from gguf.quants import quantize

    from purellm.layers.quant.base import Scratch
    from purellm.layers.quant.gguf_experts import GGUFExperts
    from purellm.layers.quant.gguf_method import GGUFRaw

    options = MoEOptions(EXPERTS, 2, INTER, True)
    qtype = getattr(Q, kind)
    generator = torch.Generator().manual_seed(0)
    stacks = [
        torch.randn(EXPERTS, INTER, HIDDEN, generator=generator) * 0.2,
        torch.randn(EXPERTS, INTER, HIDDEN, generator=generator) * 0.2,
        torch.randn(EXPERTS, HIDDEN, INTER, generator=generator) * 0.2,
    ]
    built = []
    for kernels in (False, True):
        experts = GGUFExperts(options, HIDDEN, [kind] * 3, Scratch(), kernels)
        for (param, shard), stack in zip(
            ((experts.w13, 0), (experts.w13, 1), (experts.w2, None)), stacks, strict=True
        ):
            raw = torch.from_numpy(quantize(stack.numpy(), qtype))  # [E, rows, row_bytes]
            param.weight_loader(param, GGUFRaw(raw, kind, stack.shape[-1]), shard)
        experts.process_after_loading()
        built.append(experts)
    portable, kernel = built
    assert type(kernel.forms[0]).__name__ == form and not hasattr(kernel, "w13")
    x = torch.randn(tokens, HIDDEN, generator=generator)
    ids = torch.randint(0, EXPERTS, (tokens, 2), generator=generator)
    weights = torch.full((tokens, 2), 0.5)
    with torch.no_grad():
        expected = portable(x, ids, weights)
        got = kernel(x.bfloat16(), ids, weights.bfloat16()).float()
    torch.testing.assert_close(got, expected, rtol=0.05, atol=0.05 * expected.abs().max().item())
