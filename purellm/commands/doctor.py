"""`purellm doctor [MODEL] [--json]`: what purellm would run on, and why, or why not.

torch is only ever imported by probe subprocesses, so the doctor finishes even when torch is
missing, raises on import or dies with a signal. Exit status: 0 when `purellm serve` would
start (and MODEL fits), 1 when the platform cannot serve, 3 when MODEL cannot be read or does
not fit the chosen device."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="report the platform (torch, GPUs, CPU) and whether a model fits",
        description=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument(
        "model", nargs="?", default=None, metavar="MODEL", help="a model to check; '-' = default"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="auto", help="auto, float32, float16 or bfloat16")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    parser.add_argument("--kv-cache-memory", type=int, default=None, help="KV-cache bytes")


def run(args: argparse.Namespace) -> int:
    import json

    from purellm.platform.render import render
    from purellm.platform.report import DoctorRequest, build_report

    request = DoctorRequest(
        model=None if args.model in (None, "-") else args.model,
        with_model=args.model is not None,
        device=args.device,
        dtype=args.dtype,
        gpu_memory_utilization=args.gpu_memory_utilization,
        kv_cache_memory=args.kv_cache_memory,
    )
    report = build_report(request)
    print(json.dumps(report, indent=2) if args.json else render(report))
    return report["exit_code"]
