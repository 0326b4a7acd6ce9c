"""Tiny random checkpoints written with transformers' own `save_pretrained`, and a small
trained BPE tokenizer, for token-for-token comparisons with Hugging Face."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "What is the capital of France? The capital of France is Paris.",
    "Paged attention stores keys and values in fixed-size blocks.",
    "Continuous batching lets requests join and leave at every step.",
] * 20

QWEN3_MOE = dict(
    model_type="qwen3_moe",
    num_key_value_heads=2,
    head_dim=32,
    num_experts=8,
    num_experts_per_tok=2,
    moe_intermediate_size=32,
    norm_topk_prob=True,
)
ARCHITECTURES = {
    "llama": dict(model_type="llama", tie_word_embeddings=True),
    "llama-untied-gqa": dict(model_type="llama", num_key_value_heads=2),
    "llama-mqa-bias": dict(model_type="llama", num_key_value_heads=1, attention_bias=True),
    "llama-headdim": dict(model_type="llama", head_dim=32, num_key_value_heads=2),
    "llama3-rope": dict(
        model_type="llama",
        num_key_value_heads=2,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
    ),
    "mistral": dict(model_type="mistral", num_key_value_heads=2, sliding_window=None),
    "qwen2": dict(model_type="qwen2", num_key_value_heads=2, tie_word_embeddings=True),
    "qwen3": dict(model_type="qwen3", num_key_value_heads=2, head_dim=32),
    "qwen3-moe": QWEN3_MOE,
    "qwen3-moe-top4-dense-layer": {
        **QWEN3_MOE,
        "head_dim": 16,
        "num_experts_per_tok": 4,
        "norm_topk_prob": False,
        "mlp_only_layers": [1],
    },
    "mixtral": dict(
        model_type="mixtral",
        num_key_value_heads=2,
        num_local_experts=8,
        num_experts_per_tok=2,
        sliding_window=None,
    ),
}


@lru_cache(maxsize=1)
def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(CORPUS, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>")
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    return tok


def write_checkpoint(folder: Path, arch: str, seed: int = 0) -> Path:
    """Save a random model of `arch` (a key of ARCHITECTURES) plus the tokenizer to `folder`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    options = dict(ARCHITECTURES[arch])
    model_type = options.pop("model_type")
    tok = tokenizer()
    config = AutoConfig.for_model(
        model_type,
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=256,
        eos_token_id=tok.eos_token_id,
        bos_token_id=None,
        initializer_range=0.2,
        **options,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def hf_greedy(folder: Path, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    """Greedy continuation by transformers itself, float32, eager attention, ignoring EOS."""
    import torch

    model = _hf_model(str(folder))
    ids = torch.tensor([prompt_ids])
    with torch.no_grad():
        out = model.generate(
            ids,
            max_new_tokens=max_new_tokens,
            min_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )
    return out[0, len(prompt_ids) :].tolist()


@lru_cache(maxsize=4)
def _hf_model(folder: str):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32, attn_implementation="eager"
    ).eval()
