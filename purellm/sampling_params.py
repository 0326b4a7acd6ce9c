"""Per-request sampling parameters, shaped like vLLM's `SamplingParams`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class StructuredOutputsParams:
    """Constrain the output to exactly one of: a JSON schema (`json`, a dict or its text), any
    JSON object (`json_object`), a regular expression, one of some strings (`choice`) or a
    Lark grammar. vLLM's shape; purellm compiles it with llguidance."""

    json: str | dict | None = None
    regex: str | None = None
    choice: list[str] | tuple[str, ...] | None = None
    grammar: str | None = None
    json_object: bool | None = None

    def __post_init__(self) -> None:
        given = self._given()
        if len(given) != 1:
            raise ValueError(
                "structured outputs take exactly one of json, regex, choice, grammar, "
                f"json_object; got {', '.join(given) or 'none'}"
            )
        if self.choice is not None and (not self.choice or not all(self.choice)):
            raise ValueError("choice must be a list of non-empty strings")

    def _given(self) -> list[str]:
        given = [k for k in ("json", "regex", "choice", "grammar") if getattr(self, k) is not None]
        return given + (["json_object"] if self.json_object else [])

    @property
    def kind(self) -> str:
        """Which constraint this is: json, regex, choice, grammar or json_object."""
        return self._given()[0]


@dataclass
class SamplingParams:
    """How to sample one request. Defaults follow vLLM (temperature 1.0, max_tokens 16).

    `max_tokens=None` means "up to the model's context limit".
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    """0 or -1 disables top-k."""
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    """Hugging Face style, over prompt and output tokens; 1.0 disables it."""
    presence_penalty: float = 0.0
    """OpenAI style, over output tokens."""
    frequency_penalty: float = 0.0
    """OpenAI style, over output tokens."""
    seed: int | None = None
    max_tokens: int | None = 16
    min_tokens: int = 0
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    logprobs: int | None = None
    """Number of top alternatives to return with each sampled token's logprob; None for none."""
    skip_special_tokens: bool = True
    logit_bias: dict[int, float] | None = None
    """OpenAI's: token id -> a bias in [-100, 100] added to its logit before sampling."""
    structured_outputs: StructuredOutputsParams | None = None
    """A grammar every output must follow (engine/structured.py)."""

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = list(self.stop or [])
        self.stop_token_ids = list(self.stop_token_ids or [])
        if self.top_k == -1:
            self.top_k = 0
        checks = [
            (self.n >= 1, "n must be at least 1"),
            (0 <= self.temperature < math.inf, "temperature must be non-negative and finite"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (self.top_k >= 0, "top_k must be -1 (disable) or a positive integer"),
            (0 <= self.min_p <= 1, "min_p must be in [0, 1]"),
            (0 < self.repetition_penalty < math.inf, "repetition_penalty must be positive, finite"),
            (-2 <= self.presence_penalty <= 2, "presence_penalty must be in [-2, 2]"),
            (-2 <= self.frequency_penalty <= 2, "frequency_penalty must be in [-2, 2]"),
            (self.max_tokens is None or self.max_tokens >= 1, "max_tokens must be at least 1"),
            (self.min_tokens >= 0, "min_tokens must be non-negative"),
            (
                self.max_tokens is None or self.min_tokens <= self.max_tokens,
                "min_tokens must not exceed max_tokens",
            ),
            (self.logprobs is None or self.logprobs >= 0, "logprobs must be non-negative"),
            (all(s for s in self.stop), "stop strings must not be empty"),
            (
                self.seed is None or -(2**63) <= self.seed <= 2**63 - self.n,
                f"seed must be in [-2**63, 2**63 - n] (one seed per choice); got {self.seed}",
            ),
        ]
        for token, bias in (self.logit_bias or {}).items():
            if isinstance(token, bool) or not isinstance(token, int) or token < 0:
                raise ValueError(f"logit_bias keys must be token ids; got {token!r}")
            if not -100 <= bias <= 100:
                raise ValueError(f"logit_bias values must be in [-100, 100]; got {bias}")
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1
