"""Prometheus metrics, written by hand in the text exposition format (version 0.0.4), named
like vLLM's with the `purellm:` prefix. Gauges and counters are read from the engine when
scraped; the latency histograms are observed by the server as requests finish."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
                7.5, 10.0, 20.0, 40.0, 80.0)  # fmt: skip
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
               120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)  # fmt: skip
FINISH_REASONS = ("stop", "length", "abort", "error")


@dataclass
class Histogram:
    name: str
    help: str
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.buckets, value)
        if index < len(self.counts):
            self.counts[index] += 1
        self.total += value
        self.count += 1

    def render(self, labels: str) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        cumulative = 0
        for bound, n in zip(self.buckets, self.counts, strict=True):
            cumulative += n
            lines.append(f'{self.name}_bucket{{{labels},le="{bound}"}} {cumulative}')
        lines.append(f'{self.name}_bucket{{{labels},le="+Inf"}} {self.count}')
        lines.append(f"{self.name}_sum{{{labels}}} {self.total}")
        lines.append(f"{self.name}_count{{{labels}}} {self.count}")
        return lines


class Metrics:
    def __init__(self) -> None:
        self.ttft = Histogram(
            "purellm:time_to_first_token_seconds", "Time to first token.", TTFT_BUCKETS
        )
        self.tpot = Histogram(
            "purellm:time_per_output_token_seconds", "Time per output token.", TPOT_BUCKETS
        )
        self.e2e = Histogram(
            "purellm:e2e_request_latency_seconds", "End-to-end request latency.", E2E_BUCKETS
        )

    def observe_request(self, ttft: float | None, e2e: float, num_output_tokens: int) -> None:
        """One finished request: arrival to first token, arrival to end, tokens per choice."""
        if ttft is None:
            return
        self.ttft.observe(ttft)
        self.e2e.observe(e2e)
        if num_output_tokens > 1:
            self.tpot.observe((e2e - ttft) / (num_output_tokens - 1))

    def render(self, model_name: str, engine) -> str:
        """The exposition text; `engine` is the LLMEngine, or None while it loads."""
        labels = f'model_name="{_escape(model_name)}"'
        lines: list[str] = []
        for name, kind, help_text, value in _engine_values(engine):
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            lines.append(f"{name}{{{labels}}} {value}")
        lines += _request_success(engine, labels)
        lines += _accepted_per_position(engine, labels)
        for histogram in (self.ttft, self.tpot, self.e2e):
            lines += histogram.render(labels)
        return "\n".join(lines) + "\n"


def _engine_values(engine) -> list[tuple[str, str, str, float]]:
    scheduler = engine.scheduler if engine else None
    blocks = engine.block_manager if engine else None
    stats = engine.stats if engine else None
    return [
        ("purellm:num_requests_running", "gauge", "Sequences running (decoding or prefilling).",
         len(scheduler.running) if scheduler else 0),
        ("purellm:num_requests_waiting", "gauge", "Sequences waiting to be scheduled.",
         len(scheduler.waiting) if scheduler else 0),
        ("purellm:kv_cache_usage_perc", "gauge", "Fraction of KV-cache blocks in use (0 to 1).",
         blocks.usage if blocks else 0.0),
        ("purellm:prefix_cache_queries_total", "counter", "Prompt tokens looked up in the "
         "prefix cache.", blocks.prefix_cache_queries if blocks else 0),
        ("purellm:prefix_cache_hits_total", "counter", "Prompt tokens found in the prefix cache.",
         blocks.prefix_cache_hits if blocks else 0),
        ("purellm:num_preemptions_total", "counter", "Sequences preempted.",
         scheduler.num_preemptions if scheduler else 0),
        ("purellm:prompt_tokens_total", "counter", "Prompt tokens received.",
         stats.prompt_tokens if stats else 0),
        ("purellm:generation_tokens_total", "counter", "Tokens generated.",
         stats.generation_tokens if stats else 0),
        ("purellm:structured_output_requests_total", "counter", "Requests whose output "
         "followed a grammar.", stats.constrained_requests if stats else 0),
        ("purellm:grammar_mask_seconds_total", "counter", "Seconds spent computing grammar "
         "masks.", stats.grammar_mask_seconds if stats else 0.0),
        ("purellm:spec_decode_num_drafts_total", "counter", "Sequence steps that verified "
         "speculated tokens.", stats.spec_drafts if stats else 0),
        ("purellm:spec_decode_num_draft_tokens_total", "counter", "Speculated tokens verified.",
         stats.spec_draft_tokens if stats else 0),
        ("purellm:spec_decode_num_accepted_tokens_total", "counter", "Speculated tokens "
         "accepted.", stats.spec_accepted_tokens if stats else 0),
    ]  # fmt: skip


def _request_success(engine, labels: str) -> list[str]:
    name = "purellm:request_success_total"
    finished = dict(engine.stats.finished) if engine else {}
    lines = [f"# HELP {name} Finished sequences by finish reason.", f"# TYPE {name} counter"]
    for reason in sorted(set(FINISH_REASONS) | set(finished)):
        lines.append(f'{name}{{{labels},finished_reason="{reason}"}} {finished.get(reason, 0)}')
    return lines


def _accepted_per_position(engine, labels: str) -> list[str]:
    name = "purellm:spec_decode_num_accepted_tokens_per_pos"
    counts = engine.stats.spec_accepted_per_pos if engine else []
    lines = [f"# HELP {name} Speculated tokens accepted, by position in the draft (0 first).",
             f"# TYPE {name} counter"]  # fmt: skip
    lines += [f'{name}{{{labels},position="{i}"}} {n}' for i, n in enumerate(counts)]
    return lines


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
