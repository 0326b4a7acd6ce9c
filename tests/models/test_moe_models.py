"""MoE checkpoints: GGUF files (stacked experts, float or quantized) decode like transformers
or like their dequantized selves; a missing expert tensor is reported by its checkpoint name;
quantized HF experts are refused clearly (the HF parity matrix is in test_hf_parity.py)."""

import json

import pytest
import torch
from gguf import GGMLQuantizationType as Q
from safetensors.torch import load_file, save_file

from purellm import LLM, SamplingParams
from tests.checkpoints import write_checkpoint
from tests.loaders.test_gguf import LLAMA_META, VOCAB, hf_to_gguf, write_gguf


@pytest.mark.parametrize(
    ("arch", "missing"),
    [
        ("qwen3-moe", "model.layers.1.mlp.experts.3.up_proj.weight"),
        ("mixtral", "model.layers.0.block_sparse_moe.experts.5.w3.weight"),
    ],
)
def test_a_missing_expert_is_named(tmp_path, arch, missing):
    folder = write_checkpoint(tmp_path / arch, arch)
    path = folder / "model.safetensors"
    tensors = load_file(path)
    del tensors[missing]
    save_file(tensors, path, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=f"lacks 1 tensors, e.g. {missing}"):
        LLM(str(folder), dtype="float32", device="cpu", kv_cache_memory=4 << 20)


def test_quantized_experts_are_refused(tmp_path):
    folder = write_checkpoint(tmp_path / "moe", "qwen3-moe")
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "awq", "bits": 4, "group_size": 32}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="experts stored awq-quantized are not supported yet"):
        LLM(str(folder), dtype="float32", device="cpu", kv_cache_memory=4 << 20)


def _tiny_moe(model_type: str):
    """A random 2-layer MoE in LLAMA_META's shapes: 8 experts, top-2, weights N(0, 0.2)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    experts = (
        {"num_local_experts": 8, "intermediate_size": 32}
        if model_type == "mixtral"
        else {"num_experts": 8, "moe_intermediate_size": 32, "head_dim": 16, "norm_topk_prob": True}
    )
    config = AutoConfig.for_model(
        model_type, vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, num_experts_per_tok=2,
        rms_norm_eps=1e-5, max_position_embeddings=256, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, **experts,
    )  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" not in name:
                param.normal_(std=0.2)
    return model


def _gguf(model, model_type: str, path, qtype=None):
    """The model as llama.cpp writes it (Mixtral as `llama` with experts): in F32, with every
    matrix in F16, or with the experts in another `qtype`."""
    from gguf.quants import quantize

    arch = "llama" if model_type == "mixtral" else "qwen3moe"
    tensors = hf_to_gguf(model, arch)
    for name, (array, _) in tensors.items():
        if qtype == Q.F16 and array.ndim >= 2 or qtype is not None and "_exps" in name:
            tensors[name] = (quantize(array, qtype), qtype)
    meta = {**LLAMA_META, "expert_count": 8, "expert_used_count": 2}
    if arch == "llama":  # Mixtral's feed_forward_length is its experts'
        meta["feed_forward_length"] = 32
    if arch == "qwen3moe":
        meta |= {"expert_feed_forward_length": 32, "attention.key_length": 16}
        meta |= {"attention.value_length": 16}
    return write_gguf(path, arch, meta, tensors)


def _hf_greedy(model, ids: list[int], new: int) -> list[int]:
    with torch.no_grad():
        out = model.generate(
            torch.tensor([ids]), max_new_tokens=new, min_new_tokens=new, do_sample=False,
            eos_token_id=None, pad_token_id=0,
        )  # fmt: skip
    return out[0, len(ids) :].tolist()


IDS = [[5, 70, 200, 9, 31, 8], [1, 2, 3], [40, 41, 42, 43, 44, 45, 46, 47, 48]]


def _greedy(llm: LLM, ids, new: int = 10) -> list[list[int]]:
    params = SamplingParams(temperature=0, max_tokens=new, ignore_eos=True)
    outs = llm.generate([{"prompt_token_ids": i} for i in ids], params)
    return [o.outputs[0].token_ids for o in outs]


@pytest.mark.parametrize("model_type", ["qwen3_moe", "mixtral"])
def test_a_gguf_moe_decodes_like_transformers_and_keeps_its_quantized_experts(tmp_path, model_type):
    model = _tiny_moe(model_type)
    expected = [_hf_greedy(model, i, 10) for i in IDS]
    options = dict(dtype="float32", device="cpu", kv_cache_memory=4 << 20)
    floats = LLM(str(_gguf(model, model_type, tmp_path / "f32.gguf")), **options)
    assert _greedy(floats, IDS) == expected
    with torch.no_grad():  # F16 matrices: transformers on the same rounded weights
        for param in model.parameters():
            if param.dim() >= 2:
                param.copy_(param.half().float())
    halves = LLM(str(_gguf(model, model_type, tmp_path / "f16.gguf", Q.F16)), **options)
    assert _greedy(halves, IDS) == [_hf_greedy(model, i, 10) for i in IDS]
    path = _gguf(model, model_type, tmp_path / "q8.gguf", Q.Q8_0)
    kept = LLM(str(path), **options)
    experts = kept.engine.runner.model.model.layers[0].mlp.experts
    assert type(experts).__name__ == "GGUFExperts" and experts.w13.dtype == torch.uint8
    reference = _greedy(LLM(str(path), quantization="none", **options), IDS)
    assert _greedy(kept, IDS) == reference
    assert [_greedy(kept, [i])[0] for i in IDS] == reference
    assert _greedy(LLM(str(path), max_num_batched_tokens=4, **options), IDS) == reference


@pytest.mark.parametrize("dtype", ["auto", "float32"])
def test_doctor_counts_a_gguf_moe_as_the_runner_holds_it(tmp_path, dtype):
    from purellm.platform.memory import weight_bytes
    from purellm.platform.modelinfo import read_model_facts
    from tests.models.test_quantized_parity import _held_bytes

    path = _gguf(_tiny_moe("qwen3_moe"), "qwen3_moe", tmp_path / "q8.gguf", Q.Q8_0)
    llm = LLM(str(path), dtype=dtype, device="cpu", kv_cache_memory=4 << 20)
    _greedy(llm, IDS[:1], 2)
    runner = llm.engine.runner
    facts = read_model_facts(str(path))
    assert 0 < facts.active_params < facts.params
    expected = weight_bytes(
        facts, str(runner.dtype).removeprefix("torch."), "cpu", runner.quant.kernels
    )
    assert _held_bytes(llm) == expected


def test_serve_banner_names_the_experts(tmp_path):
    from tests.server.remote import RemoteServer

    folder = write_checkpoint(tmp_path / "moe", "qwen3-moe")
    server = RemoteServer([str(folder), "--dtype", "float32", "--kv-cache-memory", "4MiB"])
    try:
        server.health_codes()
        assert "mixture of experts: 8 experts, 2 active per token, all resident" in server.output
    finally:
        server.stop()
