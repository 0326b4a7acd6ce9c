"""Owns the model and its KV cache: prepares a step's tensors, runs the model, samples."""

from __future__ import annotations

import logging
from dataclasses import replace

import torch

from purellm.config import EngineConfig
from purellm.layers.quant.config import QuantConfig, resolve
from purellm.layers.sampler import Sampler, SamplingBatch
from purellm.loaders.model_files import ModelFiles
from purellm.platform import (
    attention_group_bytes,
    batched_tokens_default,
    choose_device,
    configure_threads,
    kv_cache_budget,
    release_freed_memory,
    resolve_dtype,
)
from purellm.platform.memory import uses_kernels
from purellm.runner.inputs import prepare_inputs
from purellm.runner.kv_cache import allocate_kv_cache, bytes_per_block
from purellm.runner.model_loader import build_model, held_bytes
from purellm.step import SampledToken, SampleSpec, SeqWork

log = logging.getLogger("purellm")


class ModelRunner:
    def __init__(self, config: EngineConfig, files: ModelFiles):
        choice = choose_device(config.device)
        self.device = choice.device
        self.dtype = resolve_dtype(config.dtype, choice, _checkpoint_dtype(files.config))
        if self.device.type == "cpu":
            configure_threads()
        self.block_size = config.block_size
        self.max_num_batched_tokens = config.max_num_batched_tokens or batched_tokens_default(
            self.device, config.max_num_seqs
        )
        model_max = getattr(files.config, "max_position_embeddings", None) or 4096
        max_model_len = config.max_model_len or model_max
        self.quant = quant_config(config, files, self.device, self.dtype)
        self.quantization = self.quant.method
        max_position = max(max_model_len, model_max)
        self.model = build_model(files, self.device, self.dtype, max_position, self.quant)
        self.vocab_size = files.config.vocab_size
        layers = self.model.attention_layers()
        budget = kv_cache_budget(self.device, config.kv_cache_memory, config.gpu_memory_utilization)
        self.kv_cache_bytes = budget
        self.num_blocks = budget // bytes_per_block(layers, self.block_size, self.dtype)
        capacity = self.num_blocks * self.block_size
        if capacity < 2:
            raise ValueError(f"the KV-cache budget ({budget} bytes) holds no block")
        if config.max_model_len is not None and capacity < config.max_model_len:
            raise ValueError(
                f"max_model_len {config.max_model_len} exceeds the KV cache ({capacity} tokens); "
                "raise kv_cache_memory or lower max_model_len"
            )
        self.max_model_len = min(max_model_len, capacity)
        allocate_kv_cache(layers, self.num_blocks, self.block_size, self.dtype, self.device)
        group_bytes = attention_group_bytes(self.device)
        per_key = max(bytes_per_block([a], 1, self.dtype) for a in layers)  # K and V, a layer
        self.max_group_keys = group_bytes // per_key if group_bytes else None
        backend = _attention_backend(config.attention_backend, choice, self.dtype)
        for attn in layers:
            attn.backend = backend
        self.sampler = Sampler()
        self._generators: dict[int, torch.Generator] = {}
        """Seeded sequences' generators by key, created on their first sample (their state
        carries across steps and preemptions) and dropped when the engine releases the key."""
        if self.device.type == "cpu":
            release_freed_memory()
        log.info(
            "device %s (%s), dtype %s, %s attention, KV cache %d tokens",
            self.device,
            choice.reason,
            str(self.dtype).removeprefix("torch."),
            backend,
            capacity,
        )

    def weight_bytes(self) -> int:
        """The bytes the loaded weights (and the scratch, as grown so far) take."""
        return held_bytes(self.model)

    def release_freed_memory(self) -> None:
        """Give the heap's free pages back to the OS (CPU: a long-running server's step
        tensors of ever-changing sizes leave them behind)."""
        if self.device.type == "cpu":
            release_freed_memory()

    def release(self, keys: list[int]) -> None:
        """Forget the per-sequence state of finished sequences."""
        for key in keys:
            self._generators.pop(key, None)

    def _generator(self, spec: SampleSpec) -> torch.Generator | None:
        if spec.seed is None:
            return None
        generator = self._generators.get(spec.key)
        if generator is None:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(spec.seed)
            self._generators[spec.key] = generator
        return generator

    @torch.inference_mode()
    def run(self, work: list[SeqWork]) -> list[SampledToken]:
        """Compute the step's tokens; for each sequence that samples, in order, one sampled
        token, or one per position after its last known token when it has drafts."""
        inputs = prepare_inputs(
            work,
            self.block_size,
            self.device,
            self.dtype,
            self.model.sliding_window,
            self.max_group_keys,
        )
        hidden = self.model(inputs.input_ids, inputs.positions, inputs.meta)
        if not inputs.sampling:
            return []
        logits = self.model.compute_logits(hidden[inputs.logits_indices]).float()
        specs = [row for w in inputs.sampling for row in _row_specs(w)]
        out = self.sampler(logits, self._sampling_batch(specs))
        token_ids = out.token_ids.tolist()  # the step's one host sync
        if out.logprobs is None:
            return [SampledToken(t) for t in token_ids]
        return _with_logprobs(token_ids, out, specs)

    def _sampling_batch(self, specs: list[SampleSpec]) -> SamplingBatch:
        return SamplingBatch.build(
            params=[s.params for s in specs],
            prompt_ids=[s.prompt_token_ids for s in specs],
            output_ids=[s.output_token_ids for s in specs],
            generators=[self._generator(s) for s in specs],
            banned_ids=[s.banned_token_ids for s in specs],
            vocab_size=self.vocab_size,
            device=self.device,
            allowed=[s.allowed_tokens for s in specs],
        )


def _row_specs(work: SeqWork) -> list[SampleSpec]:
    """One sampling row per sampled position: after draft i, the drafts before it count as
    output (for penalties)."""
    spec, drafts = work.sample, work.draft_token_ids
    if not drafts:
        return [spec]
    return [spec] + [
        replace(spec, output_token_ids=spec.output_token_ids + drafts[: i + 1])
        for i in range(len(drafts))
    ]


def _attention_backend(name: str, choice, dtype: torch.dtype) -> str:
    """matmul on gfx9 GPUs (no fused attention kernels); hybrid on CPUs in half precision
    (measured in BENCHMARKS.md); sdpa elsewhere."""
    if name != "auto":
        return name
    if choice.arch and choice.arch.startswith("gfx9"):
        return "matmul"
    if choice.device.type == "cpu" and dtype != torch.float32:
        return "hybrid"
    return "sdpa"


def quant_config(
    config: EngineConfig, files: ModelFiles, device: torch.device, dtype: torch.dtype
) -> QuantConfig:
    """The checkpoint's own quantization unless asked otherwise. A GGUF's Q4/K-quant linears use
    torch's CPU int4/int8 kernels (bf16 activations) on the CPU in bf16, and in float32 where
    `auto` chose it (a CPU without native bf16: 3x faster batch-1 decode than dequantizing); an
    explicit float32 takes the exact dequantize-then-matmul path, as every GPU does."""
    checkpoint = files.quantization
    kernels = hasattr(torch, "_weight_int4pack_mm_for_cpu") and uses_kernels(  # torch 2.5+
        device.type, str(dtype).removeprefix("torch."), config.dtype
    )
    weights = checkpoint.linear_weights if checkpoint is not None else 0
    quant = resolve(config.quantization, checkpoint, kernels, weights, config.dense_copies)
    log.info(
        "quantization %s%s%s",
        quant.method,
        ", CPU int4/int8 kernels" if quant.kernels else "",
        ", dense copies for large steps" if quant.dense_copies else "",
    )
    return quant


def _checkpoint_dtype(model_config) -> torch.dtype | None:
    """The dtype the checkpoint was saved in (`dtype` in transformers 5, `torch_dtype` before)."""
    fields = vars(model_config)
    value = fields.get("dtype") or fields.get("torch_dtype")
    return getattr(torch, value) if isinstance(value, str) else value


def _with_logprobs(token_ids, out, specs: list[SampleSpec]) -> list[SampledToken]:
    logprobs = out.logprobs.tolist()
    top_values = out.top_logprobs.tolist() if out.top_logprobs is not None else None
    top_ids = out.top_token_ids.tolist() if out.top_token_ids is not None else None
    results = []
    for i, (token, spec) in enumerate(zip(token_ids, specs, strict=False)):
        wanted = spec.params.logprobs
        if wanted is None:
            results.append(SampledToken(token))
            continue
        top = (
            list(zip(top_ids[i][:wanted], top_values[i][:wanted], strict=False)) if top_ids else []
        )
        results.append(SampledToken(token, logprobs[i], top))
    return results
