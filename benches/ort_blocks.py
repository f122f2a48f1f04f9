#!/usr/bin/env python3
"""Where cnnc's time goes against ONNX Runtime's, block by block.

Usage:

    /work/pyenv/bin/python benches/ort_blocks.py --cnnc $CARGO_TARGET_DIR/release/cnnc \\
        [--model mobilenet_v2 | resnet18] [--threads 1] [--iters 300]

Runs `cnnc bench examples/<model>.cnn --per-layer --json` and ONNX
Runtime's own profiler (`SessionOptions.enable_profiling`: per-node kernel
times) on torchvision's model exported to ONNX (opset 17), and prints the
median time per module block (`features.2`, `layer1.0`, `fc`, ...) of
both, with their ratio. cnnc's fused steps carry the first layer's name,
so a fused block falls into its block; ONNX Runtime's node names carry the
PyTorch module path (`/features/features.2/conv/conv.0/conv.0.0/Conv`).
Steps or nodes outside a block (cnnc's input reorder, ONNX Runtime's
reorders and flatten) are listed under their own names.

A profiler run costs ONNX Runtime a little against the `peers.py` timing;
the block ratios locate the gaps, `peers.py` gives the end-to-end figures.
Nothing is installed: without torch, torchvision or onnxruntime the script
says so and exits.
"""
import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cnnc_block(name):
    """`features.2.conv.0.0 + 1.0 + 2` -> `features.2`; `conv1` -> `conv1`."""
    parts = name.split(" ")[0].split(".")
    return ".".join(parts[:2]) if len(parts) > 2 else ".".join(parts)


def ort_block(name):
    """`/features/features.2/conv/conv.0/Conv_output_0` -> `features.2`."""
    scopes = name.strip("/").split("/")[:-1]
    if not scopes:
        return name.strip("/")
    return scopes[1] if len(scopes) > 1 else scopes[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cnnc", required=True)
    parser.add_argument("--model", default="mobilenet_v2", choices=["mobilenet_v2", "resnet18"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iters", type=int, default=300)
    args = parser.parse_args()
    try:
        import numpy as np
        import onnxruntime as ort
        import torch
        import torchvision
    except ImportError as error:
        print(f"skipped: {error}")
        return 0

    run = subprocess.run(
        [args.cnnc, "bench", os.path.join(ROOT, "examples", args.model + ".cnn"),
         "--threads", str(args.threads), "--warmup", "20", "--iters", str(args.iters),
         "--per-layer", "--json"],
        check=True, capture_output=True, text=True)
    ours = collections.defaultdict(float)
    for layer in json.loads(run.stdout)["layers"]:
        ours[cnnc_block(layer["name"])] += layer["median_ms"] * 1000

    with tempfile.TemporaryDirectory() as folder:
        model = getattr(torchvision.models, args.model)().eval()
        x = torch.randn(1, 3, 224, 224)
        path = os.path.join(folder, args.model + ".onnx")
        torch.onnx.export(model, (x,), path, opset_version=17, dynamo=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(folder, "profile")
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x.numpy()}
        for _ in range(args.iters):
            session.run(None, feed)
        with open(session.end_profiling()) as file:
            events = json.load(file)
    per_node = collections.defaultdict(list)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_node[event["name"][: -len("_kernel_time")]].append(event["dur"])
    theirs = collections.defaultdict(float)
    for node, times in per_node.items():
        theirs[ort_block(node)] += statistics.median(times)

    def order(block):
        head, _, tail = block.partition(".")
        return (head, int(tail) if tail.isdigit() else -1, block)

    print(f"{args.model}, {args.threads} thread(s), medians in µs; "
          f"cnnc {sum(ours.values()):.0f}, ONNX Runtime {sum(theirs.values()):.0f} (sums)")
    print(f"{'block':24s} {'cnnc':>8s} {'ORT':>8s} {'ratio':>6s}")
    for block in sorted(set(ours) | set(theirs), key=order):
        mine, other = ours.get(block, 0.0), theirs.get(block, 0.0)
        ratio = f"{mine / other:6.2f}" if mine and other else "     -"
        print(f"{block:24s} {mine:8.1f} {other:8.1f} {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
