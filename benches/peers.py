#!/usr/bin/env python3
"""cnnc against its peers on ResNet-18 and MobileNetV2, in one session.

Usage:

    /work/pyenv/bin/python benches/peers.py --cnnc target/release/cnnc \
        [--models resnet18 mobilenet_v2] [--threads 1 2] [--batch 1] \
        [--iters 50] [--warmup 10] [--rounds 3] [--json OUT.json]

Measures, for every model and thread count, the median latency of one
forward pass at the given batch of:

- **cnnc**: `cnnc bench examples/<model>.cnn --json` (the interpreter's fast
  mode: the same execution plan and kernels generated code runs), random
  weights (speed does not depend on their values);
- **PyTorch** (eager, `torch.inference_mode()`, `torch.set_num_threads`), if
  `torch` and `torchvision` import;
- **ONNX Runtime** (CPU execution provider, all graph optimizations,
  `intra_op_num_threads`), if `onnxruntime` imports; the model is exported
  to ONNX by this script (`torch.onnx.export`, opset 17) into a temporary
  folder.

Nothing is installed; a peer that cannot be imported is skipped. The
machine may be shared: every measurement is repeated in `--rounds` rounds
that interleave the engines (cnnc, torch, ort, cnnc, torch, ort, ...), so a
busy moment hits all of them; the reported figure is the median over the
rounds of each round's median, with the 1-minute load average before and
after. The ratio printed is cnnc's time divided by the faster peer's
(below 1: cnnc is faster).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_average():
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except OSError:
        return None


def time_calls(call, warmup, iters):
    for _ in range(warmup):
        call()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


class Cnnc:
    name = "cnnc"

    def __init__(self, binary):
        self.binary = binary

    def prepare(self, model, batch, threads):
        self.args = [
            self.binary, "bench", os.path.join(ROOT, "examples", model + ".cnn"),
            "--batch", str(batch), "--threads", str(threads), "--json",
        ]
        return True

    def measure(self, warmup, iters):
        out = subprocess.run(
            self.args + ["--warmup", str(warmup), "--iters", str(iters)],
            check=True, capture_output=True, text=True,
        )
        report = json.loads(out.stdout)
        self.tier = report["tier"]
        return report["median_ms"] / 1e3, report["min_ms"] / 1e3


class Torch:
    name = "pytorch"

    def __init__(self):
        import torch
        import torchvision
        self.torch = torch
        self.torchvision = torchvision
        self.version = torch.__version__
        self.models = {}

    def model(self, name):
        if name not in self.models:
            self.torch.manual_seed(0)
            m = getattr(self.torchvision.models, name)(weights=None).eval()
            self.models[name] = m
        return self.models[name]

    def prepare(self, model, batch, threads):
        torch = self.torch
        torch.set_num_threads(threads)
        self.net = self.model(model)
        self.x = torch.randn(batch, 3, 224, 224)
        return True

    def measure(self, warmup, iters):
        torch = self.torch
        with torch.inference_mode():
            return time_calls(lambda: self.net(self.x), warmup, iters)


class OnnxRuntime:
    name = "onnxruntime"

    def __init__(self, torch_peer, folder):
        import numpy as np
        import onnxruntime as ort
        self.np = np
        self.ort = ort
        self.version = ort.__version__
        self.torch_peer = torch_peer
        self.folder = folder
        self.paths = {}

    def export(self, model):
        if model not in self.paths:
            torch = self.torch_peer.torch
            path = os.path.join(self.folder, model + ".onnx")
            net = self.torch_peer.model(model)
            x = torch.randn(1, 3, 224, 224)
            kwargs = dict(opset_version=17, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
            try:
                torch.onnx.export(net, (x,), path, dynamo=False, **kwargs)
            except TypeError:
                torch.onnx.export(net, (x,), path, **kwargs)
            self.paths[model] = path
        return self.paths[model]

    def prepare(self, model, batch, threads):
        ort = self.ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            self.export(model), options, providers=["CPUExecutionProvider"])
        self.feed = {"x": self.np.random.default_rng(0).standard_normal(
            (batch, 3, 224, 224)).astype(self.np.float32)}
        return True

    def measure(self, warmup, iters):
        return time_calls(lambda: self.session.run(None, self.feed), warmup, iters)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cnnc", default=os.path.join(ROOT, "target", "release", "cnnc"))
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    engines = []
    if os.path.exists(args.cnnc):
        engines.append(Cnnc(args.cnnc))
    else:
        print(f"skipping cnnc: no binary at {args.cnnc}", file=sys.stderr)
    torch_peer = None
    try:
        torch_peer = Torch()
        engines.append(torch_peer)
    except ImportError as e:
        print(f"skipping pytorch: {e}", file=sys.stderr)
    folder = tempfile.mkdtemp(prefix="cnnc-peers-")
    if torch_peer is not None:
        try:
            engines.append(OnnxRuntime(torch_peer, folder))
        except ImportError as e:
            print(f"skipping onnxruntime: {e}", file=sys.stderr)
    else:
        print("skipping onnxruntime: exporting to ONNX needs pytorch", file=sys.stderr)

    load_before = load_average()
    results = []
    for model in args.models:
        for threads in args.threads:
            medians = {e.name: [] for e in engines}
            minima = {e.name: [] for e in engines}
            for _ in range(args.rounds):
                for engine in engines:
                    engine.prepare(model, args.batch, threads)
                    median, minimum = engine.measure(args.warmup, args.iters)
                    medians[engine.name].append(median)
                    minima[engine.name].append(minimum)
            row = {"model": model, "threads": threads, "batch": args.batch}
            for engine in engines:
                row[engine.name] = {
                    "median_ms": statistics.median(medians[engine.name]) * 1e3,
                    "min_ms": min(minima[engine.name]) * 1e3,
                    "round_medians_ms": [m * 1e3 for m in medians[engine.name]],
                }
            peers = [row[e.name]["median_ms"] for e in engines if e.name != "cnnc"]
            if "cnnc" in row and peers:
                row["ratio_to_best_peer"] = row["cnnc"]["median_ms"] / min(peers)
            results.append(row)
            print_row(row, engines)
    load_after = load_average()
    info = {
        "load_average_before": load_before,
        "load_average_after": load_after,
        "versions": {e.name: getattr(e, "version", None) for e in engines},
        "cnnc_tier": next((getattr(e, "tier", None) for e in engines if e.name == "cnnc"), None),
        "iters": args.iters, "warmup": args.warmup, "rounds": args.rounds,
        "results": results,
    }
    print(f"load average: {load_before} before, {load_after} after; "
          f"versions: {info['versions']}; cnnc tier: {info['cnnc_tier']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(info, f, indent=1)


def print_row(row, engines):
    parts = [f"{row['model']:<13} batch {row['batch']} threads {row['threads']}:"]
    for engine in engines:
        r = row[engine.name]
        parts.append(f"{engine.name} {r['median_ms']:8.2f} ms (min {r['min_ms']:.2f})")
    if "ratio_to_best_peer" in row:
        parts.append(f"cnnc/best peer {row['ratio_to_best_peer']:.2f}")
    print("  ".join(parts), flush=True)


if __name__ == "__main__":
    main()
