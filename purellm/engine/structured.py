"""Grammar-constrained decoding with llguidance (a Rust core, no torch, runs on any CPU).

A request's StructuredOutputsParams becomes one llguidance grammar, checked when the request
arrives (a server does that on its tokenizing thread); each of its sequences gets a matcher
that gives the next step's allowed tokens as a bitmask (32 tokens per little-endian int32 word)
and consumes the token sampled under it. The runner only applies the masks."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any

from purellm.sampling_params import StructuredOutputsParams

MAX_GRAMMAR_CHARS = 1 << 18
"""Longest schema, regex or grammar text accepted (Roo Code's whole tool set is ~30k)."""
CACHED_GRAMMARS = 64
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
"""Compact JSON: one space after ',' and ':' and nowhere else. llguidance's flexible
whitespace lets a small model pad a tool call with newlines until max_tokens."""


class GrammarError(ValueError):
    """A schema, regex, choice or grammar that cannot constrain decoding."""


def grammar_text(spec: StructuredOutputsParams) -> str:
    """The llguidance grammar for `spec`; ValueError for text that is not JSON or too long."""
    from llguidance import LLMatcher

    kind = spec.kind
    if kind == "json_object":
        return LLMatcher.grammar_from_json_schema({"type": "object"}, overrides=JSON_OPTIONS)
    if kind == "choice":
        return LLMatcher.grammar_from_lark("start: " + " | ".join(map(json.dumps, spec.choice)))
    source = getattr(spec, kind)
    text = source if isinstance(source, str) else json.dumps(source)
    if len(text) > MAX_GRAMMAR_CHARS:
        raise GrammarError(f"the {kind} is {len(text)} characters; at most {MAX_GRAMMAR_CHARS}")
    if kind == "regex":
        return LLMatcher.grammar_from_regex(text)
    if kind == "grammar":
        return LLMatcher.grammar_from_lark(text)
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GrammarError(f"the JSON schema is not valid JSON: {exc}") from None
    if not isinstance(schema, dict):
        raise GrammarError("the JSON schema must be a JSON object")
    return LLMatcher.grammar_from_json_schema(schema, overrides=JSON_OPTIONS)


class Grammars:
    """Grammars for one model's tokenizer. The llguidance tokenizer is built on first use
    (~1 s for a 150k vocabulary); compiled grammars are kept (an agent sends the same tool
    schemas with every request), so the engine's thread only copies them. Thread-safe."""

    def __init__(self, hf_tokenizer: Any, vocab_size: int, eos_ids: set[int]):
        self._hf_tokenizer, self._vocab_size, self._eos_ids = hf_tokenizer, vocab_size, eos_ids
        self._tokenizer = None
        self._compiled: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def _llg_tokenizer(self):
        with self._lock:
            if self._tokenizer is None:
                from llguidance.hf import from_tokenizer

                eos = sorted(self._eos_ids)
                self._tokenizer = from_tokenizer(
                    self._hf_tokenizer, n_vocab=self._vocab_size, eos_token=eos
                )
            return self._tokenizer

    def check(self, spec: StructuredOutputsParams) -> None:
        """Compile `spec` (kept for its requests), or GrammarError naming what is wrong."""
        self._compile(spec)

    def matchers(self, spec: StructuredOutputsParams, count: int) -> list[Matcher]:
        """`count` matchers at the start of the grammar (one per choice of a request)."""
        compiled = self._compile(spec)
        return [Matcher(compiled.deep_copy()) for _ in range(count)]

    def _compile(self, spec: StructuredOutputsParams):
        from llguidance import LLMatcher

        grammar = grammar_text(spec)
        with self._lock:
            compiled = self._compiled.get(grammar)
            if compiled is not None:
                self._compiled.move_to_end(grammar)
                return compiled
        compiled = LLMatcher(self._llg_tokenizer(), grammar, log_level=0)
        if compiled.is_error():
            raise GrammarError(f"invalid {spec.kind}: {compiled.get_error()}")
        with self._lock:
            self._compiled[grammar] = compiled
            while len(self._compiled) > CACHED_GRAMMARS:
                self._compiled.popitem(last=False)
        return compiled


class Matcher:
    """One sequence's place in its grammar."""

    def __init__(self, inner: Any):
        self._inner = inner

    def allowed_tokens(self) -> bytes:
        """The bitmask of tokens the grammar allows next."""
        return self._inner.compute_bitmask()

    def accept(self, token_id: int) -> None:
        self._inner.consume_token(token_id)

    @property
    def is_done(self) -> bool:
        """The grammar is complete (or broken): nothing more may be generated."""
        return self._inner.is_stopped() or self._inner.is_error()
