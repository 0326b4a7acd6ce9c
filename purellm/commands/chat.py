"""`purellm chat [MODEL]`: a conversation in the terminal, streamed as it is generated. Reads
one message per line from stdin; /exit (or end of input) quits, /reset forgets the history."""

from __future__ import annotations

import argparse
import itertools
import sys

from purellm.commands.serve import parse_size


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("chat", help="chat with a model in the terminal")
    p.add_argument("model", nargs="?", metavar="MODEL", help="folder, .gguf, HF id, Ollama name")
    p.add_argument("--system", help="a system message to start the conversation")
    p.add_argument("--max-tokens", type=int, help="per reply (default: up to the context limit)")
    p.add_argument("--temperature", type=float, help="default: the model's generation config")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--max-model-len", type=int)
    p.add_argument("--kv-cache-memory", type=parse_size, metavar="BYTES", help="e.g. 1GiB")
    p.add_argument("--chat-template", help="Jinja text or a file; overrides the model's")


def run(args: argparse.Namespace) -> int:
    from purellm import LLM

    llm = LLM(
        args.model,
        dtype=args.dtype,
        device=args.device,
        max_model_len=args.max_model_len,
        kv_cache_memory=args.kv_cache_memory,
        chat_template=args.chat_template,
    )
    params = llm.get_default_sampling_params()
    params.max_tokens = args.max_tokens
    if args.temperature is not None:
        params.temperature = args.temperature
    session = _Session(llm, params, args.system)
    interactive = sys.stdin.isatty()
    print(f"purellm chat: {llm.engine.files.name}. /exit to quit, /reset to start over.")
    while True:
        if interactive:
            print("> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line or line.strip() in ("/exit", "/quit"):
            return 0
        if line.strip() == "/reset":
            session.reset()
        elif line.strip():
            session.reply(line.rstrip("\n"))


class _Session:
    def __init__(self, llm, params, system: str | None):
        self.engine = llm.engine
        self.tokenizer = llm.get_tokenizer()
        self.params = params
        self.system = [{"role": "system", "content": system}] if system else []
        self.history: list[dict] = []
        self.ids = itertools.count()

    def reset(self) -> None:
        self.history = []

    def _prompt(self) -> list[int] | None:
        """The conversation's token ids, dropping the oldest turns until it fits."""
        while self.history:
            text = self.tokenizer.apply_chat_template(
                self.system + self.history, add_generation_prompt=True, tokenize=False
            )
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            if len(ids) < self.engine.max_model_len:
                return ids
            self.history = self.history[2:] if len(self.history) > 1 else []
        return None

    def reply(self, message: str) -> None:
        self.history.append({"role": "user", "content": message})
        ids = self._prompt()
        if ids is None:
            print("(that message is longer than the model's context)", file=sys.stderr)
            return
        request_id = str(next(self.ids))
        self.engine.add_request(request_id, ids, self.params)
        parts: list[str] = []
        try:
            while self.engine.has_unfinished_requests():
                for delta in self.engine.step():
                    print(delta.text, end="", flush=True)
                    parts.append(delta.text)
        except KeyboardInterrupt:
            self.engine.abort_request(request_id)
            print(" [interrupted]", end="")
        print(flush=True)
        self.history.append({"role": "assistant", "content": "".join(parts)})
