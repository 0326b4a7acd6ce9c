"""Incremental detokenization and stop-string handling for one output sequence.

Text grows with vLLM's prefix_offset / read_offset scheme: decode a short window of earlier
tokens with and without the new ones and keep the difference, so each step costs two small
decodes however long the sequence is, and a character split over several byte tokens is only
emitted once complete.
"""

from __future__ import annotations

from typing import Any

from purellm.sampling_params import SamplingParams

_INITIAL_CONTEXT_TOKENS = 5
"""Prompt tokens decoded as context before the first output token (vLLM uses 5)."""
_REPLACEMENT_CHAR = "\ufffd"


class IncrementalDetokenizer:
    """Builds the output text of one sequence token by token and watches for stop strings.

    `tokenizer` is a transformers tokenizer. Stop strings are only looked for once more than
    `params.min_tokens` tokens have been generated, as in vLLM.
    """

    def __init__(self, tokenizer: Any, prompt_token_ids: list[int], params: SamplingParams) -> None:
        self._tokenizer = tokenizer
        self._params = params
        self._token_ids = list(prompt_token_ids)
        self._num_prompt_tokens = len(self._token_ids)
        self._prefix_offset = max(len(self._token_ids) - _INITIAL_CONTEXT_TOKENS, 0)
        self._read_offset = len(self._token_ids)
        self._text = ""
        self._num_handed_out = 0
        self._stop_strings = list(params.stop)
        self.stop_string: str | None = None
        """The stop string that ended the sequence, once one has."""

    @property
    def text(self) -> str:
        """The output text so far (truncated at the stop string once one matched)."""
        return self._text

    @property
    def output_token_ids(self) -> list[int]:
        return self._token_ids[self._num_prompt_tokens :]

    def update(self, new_token_ids: list[int]) -> str | None:
        """Append output tokens and extend the text; return the stop string that matched, if any.

        After a stop string matched, further calls change nothing and return None.
        """
        if self.stop_string is not None:
            return None
        check_from = len(self._text)
        for token_id in new_token_ids:
            self._token_ids.append(token_id)
            self._text += self._decode_next()
            if len(self._token_ids) - self._num_prompt_tokens <= self._params.min_tokens:
                check_from = len(self._text)
        return self._check_stop(check_from)

    def pop_delta(self, finished: bool) -> str:
        """The text not handed out yet. Until `finished` (or a stop string matched), trailing
        characters that could begin a stop string are held back."""
        end = len(self._text)
        if not finished and self.stop_string is None:
            end -= self._held_back()
        end = max(end, self._num_handed_out)
        delta = self._text[self._num_handed_out : end]
        self._num_handed_out = end
        return delta

    def _decode(self, token_ids: list[int]) -> str:
        return self._tokenizer.decode(
            token_ids,
            skip_special_tokens=self._params.skip_special_tokens,
            clean_up_tokenization_spaces=False,
        )

    def _decode_next(self) -> str:
        """New text from the tokens past read_offset; '' while it would end mid-character."""
        prefix_text = self._decode(self._token_ids[self._prefix_offset : self._read_offset])
        full_text = self._decode(self._token_ids[self._prefix_offset :])
        if len(full_text) <= len(prefix_text) or full_text.endswith(_REPLACEMENT_CHAR):
            return ""
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._token_ids)
        return full_text[len(prefix_text) :]

    def _check_stop(self, check_from: int) -> str | None:
        """Find the earliest stop string that ends past `check_from` and truncate there."""
        if not self._stop_strings or check_from >= len(self._text):
            return None
        best: tuple[int, str] | None = None
        for stop in self._stop_strings:
            index = self._text.find(stop, max(check_from - len(stop) + 1, 0))
            if index != -1 and (best is None or index < best[0]):
                best = (index, stop)
        if best is None:
            return None
        index, stop = best
        keep = index + len(stop) if self._params.include_stop_str_in_output else index
        self._text = self._text[:keep]
        self.stop_string = stop
        return stop

    def _held_back(self) -> int:
        """Length of the longest unhanded-out suffix that is a proper prefix of a stop string."""
        if not self._stop_strings or self._params.include_stop_str_in_output:
            return 0
        pending = len(self._text) - self._num_handed_out
        longest = max(len(s) for s in self._stop_strings) - 1
        for size in range(min(pending, longest), 0, -1):
            tail = self._text[-size:]
            if any(len(s) > size and s.startswith(tail) for s in self._stop_strings):
                return size
        return 0
