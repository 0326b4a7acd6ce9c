"""Resident weights of a model as purellm loads it: the bytes of the tensors the loaded model
holds after one step (parameters and buffers, the rotary tables aside, and the scratch buffer
that the dequantize-then-matmul path fills before each matmul), against the file's tensor bytes and
what `purellm doctor` predicts (layers/quant/footprint.py). Peak RSS while loading is checked
by tests/runner/test_load_memory.py. Not a test.

    python bench/resident.py --model FILE.gguf                 # dtype auto: the CPU kernels
    python bench/resident.py --model FILE.gguf --dtype float32 # the portable path (gfx906's)
"""

from __future__ import annotations

import argparse


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--dtype", default="auto")
    args = p.parse_args()

    from purellm import LLM, SamplingParams
    from purellm.platform.memory import weight_bytes
    from purellm.platform.modelinfo import read_model_facts

    facts = read_model_facts(args.model)
    llm = LLM(args.model, dtype=args.dtype, device="cpu", kv_cache_memory=16 << 20)
    llm.generate([{"prompt_token_ids": [1, 2, 3]}], SamplingParams(max_tokens=1))
    runner = llm.engine.runner
    dtype = str(runner.dtype).removeprefix("torch.")
    predicted = weight_bytes(facts, dtype, "cpu", runner.quant.kernels)
    tensors = sum(t.nbytes for t in facts.tensors)
    print(f"model {facts.name}, dtype {dtype}, quantization {runner.quantization}, "
          f"kernels {runner.quant.kernels}, dense copies {runner.quant.dense_copies}")  # fmt: skip
    print("| measure | MB | x file tensors |\n|---|---|---|")
    rows = [("file tensor bytes", tensors), ("tensors held", runner.weight_bytes())]
    for label, value in [*rows, ("doctor's prediction", predicted)]:
        print(f"| {label} | {value / 1e6:,.1f} | {value / tensors:.3f}x |")


if __name__ == "__main__":
    main()
