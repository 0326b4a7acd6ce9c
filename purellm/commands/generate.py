"""`purellm generate [MODEL] PROMPT`: one completion, printed as it is generated."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("generate", help="generate a completion for one prompt")
    parser.add_argument(
        "args", nargs="+", metavar="[MODEL] PROMPT", help="optional model, then the prompt"
    )
    parser.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--device", default="auto")


def run(args: argparse.Namespace) -> int:
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
