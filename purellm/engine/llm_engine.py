"""The engine: requests in, token deltas out. `step()` is schedule -> run -> postprocess."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from purellm.config import EngineConfig
from purellm.engine.block_manager import BlockManager
from purellm.engine.detokenizer import IncrementalDetokenizer
from purellm.engine.ngram import NgramProposer
from purellm.engine.scheduler import ScheduledSeq, Scheduler, SchedulerOutput
from purellm.engine.sequence import Sequence
from purellm.engine.speculator import Speculator
from purellm.engine.stats import EngineStats
from purellm.engine.structured import Grammars
from purellm.loaders.model_files import ModelFiles
from purellm.outputs import DeltaOutput, TokenLogprob
from purellm.sampling_params import SamplingParams
from purellm.step import SampledToken, SampleSpec, SeqWork

log = logging.getLogger("purellm")

TRIM_SECONDS = 30.0
"""How often a busy engine hands freed heap memory back to the OS (a few ms each time)."""


@dataclass
class _Tracked:
    seq: Sequence
    detokenizer: IncrementalDetokenizer


class LLMEngine:
    def __init__(self, config: EngineConfig, files: ModelFiles | None = None):
        from purellm.loaders.resolve import resolve_model
        from purellm.loaders.tokenizer import apply_chat_template_override, eos_token_ids
        from purellm.runner.model_runner import ModelRunner

        self.config = config
        self.files = files or resolve_model(config.model)
        log.info("model %s: %s", self.files.name, self.files.source)
        self.tokenizer = self.files.tokenizer
        apply_chat_template_override(self.tokenizer, config.chat_template)
        use_generation_config = config.generation_config != "vllm"
        self.generation_config = self.files.generation_config if use_generation_config else {}
        self.eos_ids = eos_token_ids(self.tokenizer, self.generation_config)
        self.runner = ModelRunner(config, self.files)
        self.max_model_len = self.runner.max_model_len
        self.block_manager = BlockManager(
            self.runner.num_blocks, config.block_size, config.enable_prefix_caching
        )
        self.scheduler = Scheduler(
            self.block_manager, config.max_num_seqs, self.runner.max_num_batched_tokens
        )
        self.grammars = Grammars(self.tokenizer, self.runner.vocab_size, self.eos_ids)
        self.speculator = None
        if config.speculative_config is not None:
            self.speculator = Speculator(
                config.speculative_config, self.max_model_len, self._proposer()
            )
            log.info("%s", config.speculative_config.describe())
        self.tracked: dict[int, _Tracked] = {}
        self.requests: dict[str, list[Sequence]] = {}
        self.stats = EngineStats()
        self._trimmed = time.monotonic()

    def _proposer(self):
        spec = self.config.speculative_config
        if spec.method == "draft_model":
            from purellm.engine.draft_model import DraftModelProposer

            vocab, kv_bytes = self.runner.vocab_size, self.runner.kv_cache_bytes
            return DraftModelProposer(self.config, self.tokenizer, vocab, kv_bytes)
        return NgramProposer(spec.prompt_lookup_min, spec.prompt_lookup_max)

    @property
    def kv_capacity_tokens(self) -> int:
        return self.runner.num_blocks * self.config.block_size

    def add_request(
        self, request_id: str, prompt_token_ids: list[int], params: SamplingParams
    ) -> None:
        """Queue a request; ValueError when it cannot be served (nothing is queued then)."""
        if request_id in self.requests:
            raise ValueError(f"request id {request_id!r} is already running")
        self._check_limits(prompt_token_ids, params)
        room = self.max_model_len - len(prompt_token_ids)
        max_tokens = room if params.max_tokens is None else min(params.max_tokens, room)
        matchers = [None] * params.n
        if params.structured_outputs is not None:
            matchers = self.grammars.matchers(params.structured_outputs, params.n)
            self.stats.constrained_requests += 1
        tracked = []  # every choice built before any is queued: all or nothing
        for index in range(params.n):
            seq = Sequence(list(prompt_token_ids), params, request_id, index, max_tokens=max_tokens)
            seq.matcher = matchers[index]
            detok = IncrementalDetokenizer(self.tokenizer, seq.prompt_token_ids, params)
            tracked.append(_Tracked(seq, detok))
        for entry in tracked:
            self.tracked[entry.seq.seq_id] = entry
            self.scheduler.add(entry.seq)
        self.requests[request_id] = [entry.seq for entry in tracked]
        self.stats.on_add(len(prompt_token_ids))

    def check_request(self, prompt_token_ids: list[int], params: SamplingParams) -> None:
        """ValueError for a request add_request would refuse. Thread-safe, so a server calls it
        on another thread before it builds anything per choice; a grammar it compiles is kept
        for add_request."""
        self._check_limits(prompt_token_ids, params)
        if params.structured_outputs is not None:
            self.grammars.check(params.structured_outputs)

    def _check_limits(self, prompt_token_ids: list[int], params: SamplingParams) -> None:
        if not prompt_token_ids:
            raise ValueError("the prompt is empty")
        if params.n > self.config.max_n:
            raise ValueError(f"n must be at most {self.config.max_n} (--max-n); got {params.n}")
        vocab = self.runner.vocab_size
        if any(not isinstance(t, int) or not 0 <= t < vocab for t in prompt_token_ids):
            raise ValueError(f"prompt token ids must be in [0, {vocab})")
        if any(token >= vocab for token in params.logit_bias or {}):
            raise ValueError(f"logit_bias token ids must be in [0, {vocab})")
        if any(not 0 <= token < vocab for token in params.stop_token_ids):
            raise ValueError(f"stop_token_ids must be in [0, {vocab})")
        if len(prompt_token_ids) >= self.max_model_len:
            raise ValueError(
                f"the prompt has {len(prompt_token_ids)} tokens; this model's context is "
                f"{self.max_model_len} tokens, which leaves no room to generate"
            )
        if params.logprobs is not None and params.logprobs > 20:
            raise ValueError("logprobs must be at most 20")

    def abort_request(self, request_id: str) -> None:
        """Stop a request and free its KV blocks at once."""
        for seq in self.requests.pop(request_id, []):
            if not seq.is_finished:
                self.scheduler.finish(seq, "abort")
                self.stats.on_finish("abort")
            self._release(seq)

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    def step(self) -> list[DeltaOutput]:
        if self.speculator is not None:
            self.speculator.propose(self.scheduler.running)
        out = self.scheduler.schedule()
        if not out.scheduled:
            return []
        if time.monotonic() - self._trimmed > TRIM_SECONDS:
            self.runner.release_freed_memory()
            self._trimmed = time.monotonic()
        work = self._work(out)
        try:
            sampled = self.runner.run(work)
        except Exception:
            log.exception("model step failed; failing the requests in it")
            return self._fail(out)
        self.scheduler.update(out)
        return self._postprocess(out, sampled)

    def _work(self, out: SchedulerOutput) -> list[SeqWork]:
        """The step for the runner: each scheduled sequence's new tokens, and what sampling
        its next token needs when it samples."""
        work = []
        for item in out.scheduled:
            seq, start = item.seq, item.seq.num_computed_tokens
            tokens = seq.token_slice(start, start + item.num_new_tokens)
            tokens += item.draft_token_ids
            sample = self._sample_spec(seq) if item.samples else None
            num_drafts = len(item.draft_token_ids)
            work.append(SeqWork(tokens, start, seq.block_table, sample, num_drafts))
        return work

    def _sample_spec(self, seq: Sequence) -> SampleSpec:
        params = seq.params
        banned = []
        if seq.num_output_tokens < params.min_tokens:
            banned = sorted(self.eos_ids | set(params.stop_token_ids))
        return SampleSpec(
            key=seq.seq_id,
            params=params,
            seed=None if params.seed is None else params.seed + seq.index,
            prompt_token_ids=seq.prompt_token_ids,
            output_token_ids=seq.output_token_ids,
            banned_token_ids=banned,
            allowed_tokens=self._mask(seq),
        )

    def _mask(self, seq: Sequence) -> bytes | None:
        """The tokens a constrained sequence's grammar allows next."""
        if seq.matcher is None:
            return None
        start = time.perf_counter()
        mask = seq.matcher.allowed_tokens()
        self.stats.grammar_mask_seconds += time.perf_counter() - start
        return mask

    def _postprocess(self, out: SchedulerOutput, sampled: list[SampledToken]) -> list[DeltaOutput]:
        deltas, tokens = [], iter(sampled)
        for item in out.scheduled:
            if item.samples:
                row = [next(tokens) for _ in range(len(item.draft_token_ids) + 1)]
                deltas.append(self._emit(item, row))
        return deltas

    def _emit(self, item: ScheduledSeq, sampled: list[SampledToken]) -> DeltaOutput:
        """Output the sampled token, or with drafts: the drafts that equal the samples after
        their predecessors, then the sample after the last of them."""
        seq, drafts = item.seq, item.draft_token_ids
        accepted = 0
        while accepted < len(drafts) and sampled[accepted].token_id == drafts[accepted]:
            accepted += 1
        kept = []
        for token in sampled[: accepted + 1]:
            kept.append(token)
            if self._append(seq, token):
                break
        if drafts:
            self.stats.on_verified(len(drafts), accepted)
            self.speculator.verified(seq, len(drafts), accepted)
            if not seq.is_finished:
                self.scheduler.accept_drafts(seq, len(kept) - 1)
        return self._delta(seq, kept)

    def _append(self, seq: Sequence, token: SampledToken) -> bool:
        """One new output token; True when it ends the sequence."""
        seq.output_token_ids.append(token.token_id)
        if seq.matcher is not None:
            seq.matcher.accept(token.token_id)
        self.stats.generation_tokens += 1
        stop_string = self.tracked[seq.seq_id].detokenizer.update([token.token_id])
        reason = self._finish_reason(seq, token.token_id, stop_string)
        if reason is None:
            return False
        self.scheduler.finish(seq, reason)
        self.stats.on_finish(reason)
        return True

    def _finish_reason(self, seq: Sequence, token_id: int, stop_string: str | None) -> str | None:
        params = seq.params
        if seq.num_output_tokens >= params.min_tokens:
            if token_id in self.eos_ids and not params.ignore_eos:
                return "stop"
            if token_id in params.stop_token_ids:
                seq.stop_reason = token_id
                return "stop"
            if stop_string is not None:
                seq.stop_reason = stop_string
                return "stop"
        if seq.matcher is not None and seq.matcher.is_done:
            return "stop"
        if seq.num_output_tokens >= seq.max_tokens or seq.num_tokens >= self.max_model_len:
            return "length"
        return None

    def _delta(self, seq: Sequence, tokens: list[SampledToken]) -> DeltaOutput:
        finished = seq.is_finished
        logprobs = [
            TokenLogprob(t.token_id, t.logprob, t.top_logprobs or [])
            for t in tokens
            if t.logprob is not None
        ]
        delta = DeltaOutput(
            request_id=seq.request_id,
            index=seq.index,
            token_ids=[t.token_id for t in tokens],
            text=self.tracked[seq.seq_id].detokenizer.pop_delta(finished),
            logprobs=logprobs or None,
            finish_reason=seq.finish_reason,
            stop_reason=seq.stop_reason,
            num_prompt_tokens=seq.num_prompt_tokens,
            num_cached_tokens=seq.num_cached_tokens or 0,
        )
        if finished:
            self._forget(seq)
        return delta

    def _forget(self, seq: Sequence) -> None:
        self._release(seq)
        seqs = self.requests.get(seq.request_id, [])
        if all(s.is_finished for s in seqs):
            self.requests.pop(seq.request_id, None)

    def _release(self, seq: Sequence) -> None:
        """Drop what the engine, the speculator and the runner keep for a finished sequence."""
        self.tracked.pop(seq.seq_id, None)
        self.runner.release([seq.seq_id])
        if self.speculator is not None:
            self.speculator.forget(seq.seq_id)

    def _fail(self, out: SchedulerOutput) -> list[DeltaOutput]:
        deltas = []
        for request_id in {item.seq.request_id for item in out.scheduled}:
            for seq in self.requests.get(request_id, []):
                if seq.is_finished:
                    continue
                self.scheduler.finish(seq, "error")
                self.stats.on_finish("error")
                deltas.append(DeltaOutput(request_id, seq.index, [], "", finish_reason="error"))
                self._forget(seq)
        return deltas
