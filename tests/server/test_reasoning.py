"""Reasoning parser: <think> splitting, the same in any chunking, tags never leaking."""

import random

import pytest

from purellm.server.reasoning import ReasoningParser, split_reasoning
from tests.server.test_tool_parsers import chunkings


def stream(chunks: list[str], starts_in_reasoning: bool) -> tuple[str, str]:
    parser = ReasoningParser(starts_in_reasoning)
    parts = [parser.feed(chunk) for chunk in chunks] + [parser.finish()]
    return "".join(r for r, _ in parts), "".join(c for _, c in parts)


@pytest.mark.parametrize(
    ("text", "starts", "reasoning", "content"),
    [
        (
            "<think>\nLet me think.\n</think>\n\nThe answer is 4.",
            False,
            "Let me think.",
            "The answer is 4.",
        ),
        ("\n<think>a < b </thi nk></think>\n\n", False, "a < b </thi nk>", ""),
        ("Just an answer, no <think> here.", False, None, "Just an answer, no <think> here."),
        ("<thinking> is not the tag", False, None, "<thinking> is not the tag"),
        ("  ", False, None, "  "),
        ("<think>\n\n</think>\n\nHi", False, None, "Hi"),
        ("<think>\ncut short by max_tokens </thin", False, "cut short by max_tokens </thin", ""),
        (
            "Step 1.\nStep 2.\n</think>\n\n    indented()\n",
            True,
            "Step 1.\nStep 2.",
            "    indented()\n",
        ),
        ("<think>\nDuplicated open tag.</think>Ok", True, "Duplicated open tag.", "Ok"),
        ("still thinking", True, "still thinking", ""),
        ("<think>r</think>\n\nA <think>x</think> B", False, "r", "A <think>x</think> B"),
        ("héllo 🌍 </think>\n\n日本語", True, "héllo 🌍", "日本語"),
    ],
)
def test_split_and_stream(text, starts, reasoning, content):
    assert split_reasoning(text, starts) == (reasoning, content)
    for chunks in chunkings(text):
        assert stream(chunks, starts) == (reasoning or "", content), chunks


def test_partial_tags_are_held_back():
    parser = ReasoningParser()
    assert parser.feed("<thi") == ("", "")
    assert parser.feed("nk>\nplan ") == ("plan", "")  # trailing space held: it may end reasoning
    assert parser.feed("more</th") == (" more", "")
    assert parser.feed("ink>\n\nAns") == ("", "Ans")
    assert parser.feed("wer") == ("", "wer")
    assert parser.finish() == ("", "")


def test_plain_text_streams_at_once():
    parser = ReasoningParser()
    assert parser.feed("Hello") == ("", "Hello")
    assert parser.feed(" <think>") == ("", " <think>")


def test_random_texts_stream_like_they_split():
    pieces = ["<think>", "</think>", "<th", "</thi", "<", "/", "\n", " ", "a", "é"]
    rng = random.Random(2)
    for _ in range(200):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 20)))
        for starts in (False, True):
            reasoning, content = split_reasoning(text, starts)
            for chunks in list(chunkings(text))[1:4]:
                assert stream(chunks, starts) == (reasoning or "", content), chunks
            assert "</think>" not in (reasoning or "")
