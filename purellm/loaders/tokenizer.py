"""Tokenizer facts the engine needs: end-of-sequence ids and the chat template."""

from __future__ import annotations

from pathlib import Path


def eos_token_ids(tokenizer, generation_config: dict) -> set[int]:
    """EOS from the tokenizer and from generation_config.json (an int or a list)."""
    ids: set[int] = set()
    configured = generation_config.get("eos_token_id")
    if isinstance(configured, int):
        ids.add(configured)
    elif isinstance(configured, list):
        ids.update(int(t) for t in configured)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


def apply_chat_template_override(tokenizer, template: str | None) -> None:
    """`template` is Jinja text or the path of a file holding it; None keeps the model's."""
    if template is None:
        return
    path = Path(template).expanduser()
    if "{" not in template and path.is_file():
        template = path.read_text()
    tokenizer.chat_template = template
