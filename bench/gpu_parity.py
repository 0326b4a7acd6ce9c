"""Greedy decoding on a device vs transformers on the same device, float32, for every test
architecture (tiny random checkpoints from tests/checkpoints.py) and each attention backend.
Prints one line per case and exits 1 on any difference. Not a test: the suite runs on CPUs.

    python bench/gpu_parity.py                 # cuda
    python bench/gpu_parity.py --device cpu    # the same check on the CPU
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.checkpoints import ARCHITECTURES, write_checkpoint  # noqa: E402

NEW_TOKENS = 24


@torch.inference_mode()
def hf_greedy(folder: Path, prompts: list[list[int]], device: str) -> list[list[int]]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32, attn_implementation="eager"
    )
    model = model.to(device).eval()
    outs = []
    for ids in prompts:
        out = model.generate(
            torch.tensor([ids], device=device),
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )
        outs.append(out[0, len(ids) :].tolist())
    return outs


def purellm_greedy(folder: Path, prompts, device: str, backend: str) -> list[list[int]]:
    from purellm import LLM, SamplingParams

    llm = LLM(
        str(folder),
        device=device,
        dtype="float32",
        attention_backend=backend,
        kv_cache_memory=64 << 20,
        max_num_batched_tokens=32,  # the long prompts go in chunks
    )
    params = SamplingParams(temperature=0, max_tokens=NEW_TOKENS, ignore_eos=True)
    outs = llm.generate([{"prompt_token_ids": ids} for ids in prompts], params)
    return [list(o.outputs[0].token_ids) for o in outs]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    args = p.parse_args()
    rng = random.Random(0)
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for arch in ARCHITECTURES:
            folder = write_checkpoint(Path(tmp) / arch, arch)
            vocab = 250
            prompts = [[rng.randrange(3, vocab) for _ in range(n)] for n in (5, 17, 40, 70)]
            want = hf_greedy(folder, prompts, args.device)
            for backend in ("sdpa", "matmul", "hybrid"):
                got = purellm_greedy(folder, prompts, args.device, backend)
                same = sum(g == w for g, w in zip(got, want, strict=True))
                failures += same != len(prompts)
                print(f"{arch:<18}{backend:<8}{same}/{len(prompts)} prompts identical", flush=True)
    print(f"greedy parity on {args.device}: {'PASS' if not failures else f'{failures} FAILED'}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
