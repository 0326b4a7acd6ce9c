"""The offline API, shaped like vLLM's `LLM`."""

from __future__ import annotations

import itertools
from collections.abc import Sequence as SequenceABC
from typing import Any

from purellm.config import EngineConfig
from purellm.engine.llm_engine import LLMEngine
from purellm.logger import init_logging
from purellm.outputs import CompletionOutput, RequestOutput
from purellm.sampling_params import SamplingParams

_GENERATION_DEFAULTS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")


class LLM:
    """`LLM(model=None, dtype="auto", device="auto", max_model_len=None, ...)`; keyword
    arguments are EngineConfig fields. No model means the default SmolLM2-135M-Instruct."""

    def __init__(self, model: str | None = None, **kwargs: Any):
        init_logging()
        self.engine = LLMEngine(EngineConfig(model=model, **kwargs))
        self._ids = itertools.count()

    def get_tokenizer(self):
        return self.engine.tokenizer

    def get_default_sampling_params(self) -> SamplingParams:
        """SamplingParams with the model's generation_config.json defaults applied."""
        defaults = {
            k: v for k, v in self.engine.generation_config.items() if k in _GENERATION_DEFAULTS
        }
        return SamplingParams(**defaults)

    def generate(
        self,
        prompts: str | dict | SequenceABC[str | dict],
        sampling_params: SamplingParams | SequenceABC[SamplingParams] | None = None,
    ) -> list[RequestOutput]:
        """Prompts are strings or {"prompt": str} / {"prompt_token_ids": [...]} dicts."""
        if isinstance(prompts, (str, dict)):
            prompts = [prompts]
        if sampling_params is None:
            sampling_params = self.get_default_sampling_params()
        if isinstance(sampling_params, SamplingParams):
            sampling_params = [sampling_params] * len(prompts)
        if len(sampling_params) != len(prompts):
            raise ValueError("give one SamplingParams, or one per prompt")
        results: dict[str, RequestOutput] = {}
        try:
            for prompt, params in zip(prompts, sampling_params, strict=True):
                text, token_ids = self._tokenize(prompt)
                request_id = str(next(self._ids))
                self.engine.add_request(request_id, token_ids, params)
                outputs = [CompletionOutput(i) for i in range(params.n)]
                results[request_id] = RequestOutput(request_id, text, token_ids, outputs)
        except ValueError:
            for request_id in results:  # a refused prompt leaves nothing behind
                self.engine.abort_request(request_id)
            raise
        self._run(results)
        return list(results.values())

    def chat(
        self,
        messages: list[dict] | list[list[dict]],
        sampling_params: SamplingParams | None = None,
        chat_template: str | None = None,
        add_generation_prompt: bool = True,
        tools: list[dict] | None = None,
    ) -> list[RequestOutput]:
        """One conversation or a list of them, rendered with the model's chat template."""
        conversations = messages if messages and isinstance(messages[0], list) else [messages]
        tokenizer = self.engine.tokenizer
        prompts = [
            {
                "prompt_token_ids": list(
                    tokenizer.apply_chat_template(
                        conversation,
                        chat_template=chat_template,
                        tools=tools,
                        add_generation_prompt=add_generation_prompt,
                        tokenize=True,
                        return_dict=False,
                    )
                )
            }
            for conversation in conversations
        ]
        return self.generate(prompts, sampling_params)

    def _tokenize(self, prompt: str | dict) -> tuple[str | None, list[int]]:
        if isinstance(prompt, str):
            return prompt, self.engine.tokenizer.encode(prompt)
        if "prompt_token_ids" in prompt:
            return prompt.get("prompt"), list(prompt["prompt_token_ids"])
        if "prompt" in prompt:
            return prompt["prompt"], self.engine.tokenizer.encode(prompt["prompt"])
        raise ValueError("a prompt dict needs 'prompt' or 'prompt_token_ids'")

    def _run(self, results: dict[str, RequestOutput]) -> None:
        while self.engine.has_unfinished_requests():
            for delta in self.engine.step():
                result = results[delta.request_id]
                result.outputs[delta.index].add(delta)
                result.num_cached_tokens = max(result.num_cached_tokens, delta.num_cached_tokens)
