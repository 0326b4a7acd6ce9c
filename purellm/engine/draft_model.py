"""Drafts from a small model with the target's vocabulary ("draft_model"), served by an engine
of its own: its KV cache, scheduler and prefix cache. Each step every drafting sequence's tokens
go in as a greedy request for k tokens, all batched together; the prefix cache holds their past,
so a request computes only its last, partly filled block and the tokens since the last step,
then decodes k tokens. Greedy drafts are one-hot, which is what verification assumes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from purellm.config import EngineConfig
from purellm.sampling_params import SamplingParams

MIN_KV_BYTES = 64 << 20


class DraftModelProposer:
    def __init__(self, target: EngineConfig, target_tokenizer, vocab_size: int, kv_bytes: int):
        """`kv_bytes`: the target's KV-cache size; the draft takes an eighth of it."""
        from purellm.engine.llm_engine import LLMEngine

        spec = target.speculative_config
        config = replace(
            target,
            model=spec.model,
            speculative_config=None,
            quantization=None,
            dense_copies=None,
            chat_template=None,
            generation_config="vllm",
            max_num_seqs=spec.disable_by_batch_size,
            max_num_batched_tokens=None,
            kv_cache_memory=max(MIN_KV_BYTES, kv_bytes // 8),
        )
        self.engine = LLMEngine(config)
        check_vocabulary(self.engine, target_tokenizer, vocab_size)

    def propose_all(self, wanted: list[tuple[int, np.ndarray, int]]) -> list[list[int]]:
        """Drafts for each (sequence key, its tokens, how many at most); none for a sequence
        longer than the draft model's context (its own, or what its KV cache holds)."""
        for key, tokens, k in wanted:
            if len(tokens) + k >= self.engine.max_model_len:
                continue
            params = SamplingParams(temperature=0, max_tokens=k, ignore_eos=True)
            self.engine.add_request(f"draft-{key}", tokens.tolist(), params)
        drafts: dict[str, list[int]] = {}
        while self.engine.has_unfinished_requests():
            for delta in self.engine.step():
                drafts.setdefault(delta.request_id, []).extend(delta.token_ids)
        return [drafts.get(f"draft-{key}", []) for key, _, _ in wanted]


def check_vocabulary(draft, target_tokenizer, vocab_size: int) -> None:
    """ValueError unless the draft model reads and writes the target's token ids."""
    ours, theirs = draft.runner.vocab_size, vocab_size
    if ours != theirs or draft.tokenizer.get_vocab() != target_tokenizer.get_vocab():
        raise ValueError(
            f"the draft model {draft.files.name} has another vocabulary than the target "
            f"({ours} against {theirs} token ids, or other tokens): speculative decoding needs "
            "the same tokenizer"
        )
