"""`purellm` command line. Nothing heavy is imported before the arguments are parsed, so
`--version` and `--help` work even when torch is missing or broken."""

from __future__ import annotations

import argparse
import sys


def _version() -> str:
    from purellm import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="purellm", description="OpenAI-compatible LLM inference in plain PyTorch"
    )
    parser.add_argument("-V", "--version", action="version", version=f"purellm {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    gen = commands.add_parser("generate", help="generate a completion for one prompt")
    gen.add_argument(
        "args", nargs="+", metavar="[MODEL] PROMPT", help="optional model, then the prompt"
    )
    gen.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    gen.add_argument("--max-tokens", type=int, default=128)
    gen.add_argument("--temperature", type=float, default=0.0)
    gen.add_argument("--dtype", default="auto")
    gen.add_argument("--device", default="auto")
    return parser


def _generate(args: argparse.Namespace) -> int:
    from purellm import LLM, SamplingParams

    model, prompt = (None, args.args[0]) if len(args.args) == 1 else args.args[:2]
    llm = LLM(model, dtype=args.dtype, device=args.device)
    params = SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens)
    if args.chat:
        outputs = llm.chat([{"role": "user", "content": prompt}], params)
    else:
        outputs = llm.generate(prompt, params)
    print(outputs[0].outputs[0].text)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "generate":
        return _generate(args)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
