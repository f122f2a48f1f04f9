#!/usr/bin/env python3
"""cnnc against its peers on whole networks or on single layers, in one session.

Usage:

    /work/pyenv/bin/python benches/peers.py --cnnc $CARGO_TARGET_DIR/release/cnnc \\
        [--tract $CARGO_TARGET_DIR/release/cnnc-tract] \\
        [--models resnet18 mobilenet_v2 | --layers [NAME ...]] \\
        [--threads 1 2] [--batch 1] [--iters 50] [--warmup 10] [--rounds 3] \\
        [--check] [--json OUT.json]

Models (the default): torchvision's `resnet18()` / `mobilenet_v2()` at
`--batch`, with random weights (the speed does not depend on their values).
Layers (`--layers`, all seven or the named ones): the seven layers of the
performance targets at batch 1, the same list as `LAYERS` in
`benches/src/lib.rs` (a test there checks that the two lists agree), each
as a one-layer network.

Engines, each timed on one forward pass:

- **cnnc**: `cnnc bench NET.cnn --threads T --json --per-layer` (the
  interpreter's fast mode: the execution plan and kernels generated code
  runs; random weights). A model is `examples/<model>.cnn`; a layer is a
  one-layer `.cnn` written to a temporary folder (the source text of
  `LayerSpec::source`). cnnc's whole forward pass includes the NCHW <-> NHWC
  reorders at the network's edges (the peers also take and give NCHW); for
  a layer the table also gives the layer's own step of the plan with its
  GFLOP/s (Gcmp/s for the max-pool), and the edge reorders' steps.
- **PyTorch** (eager, `torch.inference_mode()`, `torch.set_num_threads`), if
  `torch` (and for models `torchvision`) import; the layers are
  `nn.Conv2d` / `nn.Linear` / `nn.MaxPool2d` modules in eval mode.
- **ONNX Runtime** (CPU execution provider, all graph optimizations,
  `intra_op_num_threads`, sequential), if `onnxruntime` imports; the PyTorch
  module is exported to ONNX (opset 17, static shapes) by this script into
  a temporary folder.
- **tract** (`tract-onnx`, optimized plan), with `--tract PATH` (the
  `cnnc-tract` binary of this package: `cargo build --release -p
  cnnc-benches --features tract --bin cnnc-tract`) on the same ONNX file;
  tract runs on one thread, so it is timed at `--threads 1` only.

Nothing is installed; a peer that cannot be imported or run is skipped.
The machine may be shared: every measurement is repeated in `--rounds`
rounds that interleave the engines (cnnc, torch, ort, tract, cnnc, ...), so
a busy moment hits all of them; the reported figure is the median over the
rounds of each round's median, with the 1-minute load average before and
after. The ratio printed is cnnc's whole forward pass divided by the
fastest peer's (below 1: cnnc is faster). The Python peers are timed around
their Python call (a few microseconds of interpreter overhead, which
matters only for the smallest layers); cnnc and tract are timed inside
their own processes.

`--check` only compares tract's output with ONNX Runtime's on the same
input, for every selected model or layer, and prints the largest absolute
difference (cnnc's own conformance against PyTorch is tested elsewhere).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Layer:
    """One benchmarked layer: the fields of `LayerSpec` in lib.rs, and the
    same layer as a PyTorch module."""

    def __init__(self, name, description, input, layer, ops, module):
        self.name = name
        self.description = description
        self.input = input
        self.layer = layer
        self.ops = ops
        self.module = module

    def source(self):
        """The one-layer `.cnn` network: `LayerSpec::source` in lib.rs."""
        dims = ", ".join(str(d) for d in self.input)
        return (f"# {self.description}: one layer, for benchmarks.\n"
                f"network {self.name} {{\n    input x: [{dims}]\n"
                f"    layer = {self.layer}\n    output layer\n}}\n")


# The seven layers, batch 1: `LAYERS` in benches/src/lib.rs, in its order
# (name, description, per-sample input, cnnc layer, FLOPs, torch module).
# FLOPs are 2 x MACs, or one comparison per window element for the pooling.
LAYERS = [
    Layer("conv3x3_64_64_56", "conv 3x3 64→64 @56x56 pad 1", (64, 56, 56), "conv2d(64, 3, padding=1)", 231211008,
          lambda nn: nn.Conv2d(64, 64, 3, padding=1)),
    Layer("conv3x3_256_256_14", "conv 3x3 256→256 @14x14 pad 1", (256, 14, 14), "conv2d(256, 3, padding=1)", 231211008,
          lambda nn: nn.Conv2d(256, 256, 3, padding=1)),
    Layer("conv1x1_256_1024_14", "conv 1x1 256→1024 @14x14", (256, 14, 14), "conv2d(1024, 1)", 102760448,
          lambda nn: nn.Conv2d(256, 1024, 1)),
    Layer("conv7x7s2_3_64_224", "conv 7x7/2 3→64 @224x224 pad 3", (3, 224, 224), "conv2d(64, 7, stride=2, padding=3)", 236027904,
          lambda nn: nn.Conv2d(3, 64, 7, stride=2, padding=3)),
    Layer("dw3x3_144_56", "depthwise 3x3 144 ch @56x56 pad 1", (144, 56, 56), "conv2d(144, 3, padding=1, groups=144)", 8128512,
          lambda nn: nn.Conv2d(144, 144, 3, padding=1, groups=144)),
    Layer("linear_4096_1000", "linear 4096→1000", (4096,), "linear(1000)", 8192000,
          lambda nn: nn.Linear(4096, 1000)),
    Layer("maxpool3x3s2_64_112", "maxpool 3x3/2 pad 1, 64 ch @112x112", (64, 112, 112), "maxpool2d(3, stride=2, padding=1)", 1806336,
          lambda nn: nn.MaxPool2d(3, stride=2, padding=1)),
]


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
    return {"median": statistics.median(times), "min": min(times)}


def module_flops(module, shape, torch):
    """FLOPs of one forward pass of `module` on `shape`, counted from the
    module itself (a check of the FLOPs written in LAYERS)."""
    nn = torch.nn
    with torch.inference_mode():
        out = module(torch.zeros(shape))
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return 2 * out.numel() * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return 2 * out.numel() * module.in_features
    if isinstance(module, nn.MaxPool2d):
        k = module.kernel_size
        return out.numel() * (k * k if isinstance(k, int) else k[0] * k[1])
    raise ValueError(f"no FLOP count for {module}")


class Work:
    """One thing to time: a model or a layer, with its `.cnn` file, the
    input shape (NCHW with the batch) and, lazily, the PyTorch module and
    its ONNX export."""

    def __init__(self, name, kind, cnn, shape, ops=None, build=None):
        self.name = name
        self.kind = kind
        self.cnn = cnn
        self.shape = shape
        self.ops = ops
        # Pooling does comparisons, not floating-point arithmetic.
        self.unit = "Gcmp/s" if name.startswith("maxpool") else "GFLOP/s"
        self.build = build
        self.module = None
        self.onnx = None


class Exporter:
    """PyTorch modules and their ONNX files (shared by the torch, ORT and
    tract peers); `None` when torch is missing."""

    def __init__(self, folder):
        import torch
        self.torch = torch
        self.version = torch.__version__
        self.folder = folder

    def module(self, work):
        if work.module is None:
            self.torch.manual_seed(0)
            work.module = work.build(self.torch).eval()
            if work.ops is not None:
                counted = module_flops(work.module, work.shape, self.torch)
                if counted != work.ops:
                    raise ValueError(f"{work.name}: the module does {counted} FLOPs, "
                                     f"LAYERS says {work.ops}")
        return work.module

    def onnx(self, work):
        if work.onnx is None:
            torch = self.torch
            path = os.path.join(self.folder, work.name + ".onnx")
            x = torch.randn(*work.shape)
            kwargs = dict(opset_version=17, input_names=["x"], output_names=["y"])
            # The legacy (TorchScript) exporter: the dynamo one needs
            # onnxscript; its deprecation warning is noise here.
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                try:
                    torch.onnx.export(self.module(work), (x,), path, dynamo=False, **kwargs)
                except TypeError:
                    torch.onnx.export(self.module(work), (x,), path, **kwargs)
            work.onnx = path
        return work.onnx


class Cnnc:
    name = "cnnc"

    def __init__(self, binary):
        self.binary = binary
        self.tier = None
        try:
            out = subprocess.run([binary, "--version"], capture_output=True, text=True)
            self.version = out.stdout.strip() or None
        except OSError:
            self.version = None

    def prepare(self, work, threads):
        self.work = work
        self.args = [self.binary, "bench", work.cnn, "--batch", str(work.shape[0]),
                     "--threads", str(threads), "--json", "--per-layer"]
        return True

    def measure(self, warmup, iters):
        out = subprocess.run(
            self.args + ["--warmup", str(warmup), "--iters", str(iters)],
            check=True, capture_output=True, text=True,
        )
        report = json.loads(out.stdout)
        self.tier = report["tier"]
        result = {"median": report["median_ms"] / 1e3, "min": report["min_ms"] / 1e3}
        if self.work.kind == "layer":
            steps = report.get("layers", [])
            layer = [s for s in steps if s["name"] == "layer"]
            if layer:
                result["step"] = layer[0]["median_ms"] / 1e3
                result["algorithm"] = layer[0].get("algorithm")
            # The NCHW <-> NHWC reorders at the network's edges.
            result["edges"] = sum(s["median_ms"] for s in steps if s["op"] == "reorder") / 1e3
        return result


class Torch:
    name = "pytorch"

    def __init__(self, exporter):
        self.exporter = exporter
        self.torch = exporter.torch
        self.version = exporter.version

    def prepare(self, work, threads):
        self.torch.set_num_threads(threads)
        self.net = self.exporter.module(work)
        self.x = self.torch.randn(*work.shape)
        return True

    def measure(self, warmup, iters):
        with self.torch.inference_mode():
            return time_calls(lambda: self.net(self.x), warmup, iters)


class OnnxRuntime:
    name = "onnxruntime"

    def __init__(self, exporter):
        import numpy as np
        import onnxruntime as ort
        self.np = np
        self.ort = ort
        self.version = ort.__version__
        self.exporter = exporter

    def session(self, path, threads):
        ort = self.ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def prepare(self, work, threads):
        self.session_ = self.session(self.exporter.onnx(work), threads)
        self.feed = {"x": self.np.random.default_rng(0).standard_normal(
            work.shape).astype(self.np.float32)}
        return True

    def measure(self, warmup, iters):
        return time_calls(lambda: self.session_.run(None, self.feed), warmup, iters)


class Tract:
    name = "tract"

    def __init__(self, binary, exporter):
        self.binary = binary
        self.exporter = exporter
        self.version = "tract-onnx 0.23"

    def command(self, work):
        return [self.binary, self.exporter.onnx(work),
                "--shape", ",".join(str(d) for d in work.shape)]

    def prepare(self, work, threads):
        if threads != 1:
            return False
        self.args = self.command(work)
        return True

    def measure(self, warmup, iters):
        out = subprocess.run(
            self.args + ["--warmup", str(warmup), "--iters", str(iters), "--json"],
            check=True, capture_output=True, text=True,
        )
        report = json.loads(out.stdout)
        return {"median": report["median_ms"] / 1e3, "min": report["min_ms"] / 1e3}


def check(tract, ort, works, folder):
    """Prints the largest difference between tract's and ORT's outputs."""
    np = ort.np
    worst = 0.0
    for work in works:
        x = np.random.default_rng(1).standard_normal(work.shape).astype(np.float32)
        inp = os.path.join(folder, work.name + ".in.f32")
        out = os.path.join(folder, work.name + ".tract.f32")
        x.astype("<f4").tofile(inp)
        subprocess.run(tract.command(work) + ["--warmup", "0", "--iters", "1",
                                             "--input", inp, "--output", out],
                       check=True, capture_output=True, text=True)
        got = np.fromfile(out, dtype="<f4")
        want = ort.session(ort.exporter.onnx(work), 1).run(None, {"x": x})[0].ravel()
        if got.shape != want.shape:
            print(f"{work.name}: tract gives {got.size} values, onnxruntime {want.size}")
            worst = float("inf")
            continue
        diff = float(np.max(np.abs(got - want)))
        scale = float(np.max(np.abs(want)))
        worst = max(worst, diff)
        print(f"{work.name:<22} tract vs onnxruntime: max abs diff {diff:.3g}, "
              f"{diff / scale if scale > 0 else 0.0:.3g} of the largest output "
              f"({scale:.3g}; {want.size} values)")
    return worst


def model_works(models, batch):
    works = []
    for model in models:
        def build(torch, model=model):
            import torchvision
            return getattr(torchvision.models, model)(weights=None)
        works.append(Work(model, "model", os.path.join(ROOT, "examples", model + ".cnn"),
                          (batch, 3, 224, 224), build=build))
    return works


def layer_works(names, folder):
    known = {layer.name: layer for layer in LAYERS}
    unknown = [n for n in names if n not in known]
    if unknown:
        sys.exit(f"unknown layers {unknown}; known: {list(known)}")
    works = []
    for layer in LAYERS:
        if names and layer.name not in names:
            continue
        path = os.path.join(folder, layer.name + ".cnn")
        with open(path, "w") as f:
            f.write(layer.source())
        works.append(Work(layer.name, "layer", path, (1, *layer.input), ops=layer.ops,
                          build=lambda torch, layer=layer: layer.module(torch.nn)))
    return works


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cnnc", default=os.path.join(ROOT, "target", "release", "cnnc"))
    parser.add_argument("--tract", help="the cnnc-tract binary (tract is skipped without it)")
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"])
    parser.add_argument("--layers", nargs="*", metavar="NAME",
                        help="time the seven layers (or the named ones) instead of models")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--batch", type=int, default=1, help="the models' batch (layers: 1)")
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--check", action="store_true",
                        help="compare tract's outputs with onnxruntime's, and time nothing")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    # The .cnn, ONNX and check files live only as long as the run.
    with tempfile.TemporaryDirectory(prefix="cnnc-peers-") as folder:
        run(args, folder)


def run(args, folder):
    """Times (or with `--check` compares) the engines on the selected
    networks; `folder` holds the generated files."""
    if args.layers is not None:
        works = layer_works(args.layers, folder)
    else:
        works = model_works(args.models, args.batch)

    engines = []
    if os.path.exists(args.cnnc):
        engines.append(Cnnc(args.cnnc))
    else:
        print(f"skipping cnnc: no binary at {args.cnnc}", file=sys.stderr)
    exporter = None
    try:
        exporter = Exporter(folder)
    except ImportError as e:
        print(f"skipping pytorch: {e}", file=sys.stderr)
    if exporter is not None and args.layers is None:
        try:
            import torchvision  # noqa: F401  (the models come from it)
        except ImportError as e:
            print(f"skipping pytorch: {e}", file=sys.stderr)
            exporter = None
    if exporter is not None:
        engines.append(Torch(exporter))
    ort = None
    if exporter is not None:
        try:
            ort = OnnxRuntime(exporter)
            engines.append(ort)
        except ImportError as e:
            print(f"skipping onnxruntime: {e}", file=sys.stderr)
    else:
        print("skipping onnxruntime: exporting to ONNX needs pytorch", file=sys.stderr)
    tract = None
    if args.tract is None:
        print("skipping tract: no --tract binary given", file=sys.stderr)
    elif not os.path.exists(args.tract):
        print(f"skipping tract: no binary at {args.tract}", file=sys.stderr)
    elif exporter is None:
        print("skipping tract: exporting to ONNX needs pytorch", file=sys.stderr)
    else:
        tract = Tract(args.tract, exporter)
        engines.append(tract)

    if args.check:
        if tract is None or ort is None:
            sys.exit("--check needs tract (--tract PATH) and onnxruntime")
        worst = check(tract, ort, works, folder)
        print(f"largest difference over {len(works)} networks: {worst:.3g}")
        return

    load_before = load_average()
    results = []
    for work in works:
        for threads in args.threads:
            runs = {e.name: [] for e in engines}
            for _ in range(args.rounds):
                for engine in engines:
                    try:
                        if not engine.prepare(work, threads):
                            continue
                        runs[engine.name].append(engine.measure(args.warmup, args.iters))
                    except (subprocess.CalledProcessError, OSError, ValueError,
                            RuntimeError) as e:
                        detail = getattr(e, "stderr", None) or e
                        print(f"{engine.name} failed on {work.name}: {detail}", file=sys.stderr)
            row = summarize(work, threads, engines, runs)
            results.append(row)
            print_row(row, engines)
    load_after = load_average()
    cnnc = next((e for e in engines if e.name == "cnnc"), None)
    info = {
        "mode": "layers" if args.layers is not None else "models",
        "load_average_before": load_before,
        "load_average_after": load_after,
        "versions": {e.name: getattr(e, "version", None) for e in engines},
        "cnnc_tier": getattr(cnnc, "tier", None),
        "iters": args.iters, "warmup": args.warmup, "rounds": args.rounds,
        "results": results,
    }
    print(f"load average: {load_before} before, {load_after} after; "
          f"versions: {info['versions']}; cnnc tier: {info['cnnc_tier']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(info, f, indent=1)


def summarize(work, threads, engines, runs):
    """The row of one network at one thread count: per engine the median
    of the round medians (ms), the minimum, and for cnnc on a layer the
    layer's own step and the GFLOP/s."""
    row = {work.kind: work.name, "threads": threads, "batch": work.shape[0]}
    if work.ops:
        row["ops"] = work.ops
        row["rate_unit"] = work.unit
    for engine in engines:
        rounds = runs[engine.name]
        if not rounds:
            continue
        r = {
            "median_ms": statistics.median(x["median"] for x in rounds) * 1e3,
            "min_ms": min(x["min"] for x in rounds) * 1e3,
            "round_medians_ms": [x["median"] * 1e3 for x in rounds],
        }
        if work.ops:
            r["gflops"] = work.ops / (r["median_ms"] / 1e3) / 1e9
        steps = [x["step"] for x in rounds if "step" in x]
        if steps:
            r["step_median_ms"] = statistics.median(steps) * 1e3
            r["algorithm"] = rounds[0].get("algorithm")
            if work.ops:
                r["step_gflops"] = work.ops / (r["step_median_ms"] / 1e3) / 1e9
        edges = [x["edges"] for x in rounds if "edges" in x]
        if edges:
            r["edges_median_ms"] = statistics.median(edges) * 1e3
        row[engine.name] = r
    peers = [(row[e.name]["median_ms"], e.name) for e in engines
             if e.name != "cnnc" and e.name in row]
    if "cnnc" in row and peers:
        best, name = min(peers)
        row["fastest_peer"] = name
        row["ratio_to_fastest_peer"] = row["cnnc"]["median_ms"] / best
    return row


def print_row(row, engines):
    name = row.get("model") or row.get("layer")
    parts = [f"{name:<20} batch {row['batch']} threads {row['threads']}:"]
    for engine in engines:
        r = row.get(engine.name)
        if r is None:
            parts.append(f"{engine.name} -")
            continue
        unit = row.get("rate_unit", "GFLOP/s")
        text = f"{engine.name} {r['median_ms']:8.3f} ms (min {r['min_ms']:.3f})"
        if "gflops" in r:
            text += f" {r['gflops']:.1f} {unit}"
        if "step_median_ms" in r:
            text += (f" [layer step {r['step_median_ms']:.3f} ms, {r['step_gflops']:.1f} {unit},"
                     f" {r.get('algorithm') or '-'}; edge reorders"
                     f" {r.get('edges_median_ms', 0.0):.3f} ms]")
        parts.append(text)
    if "ratio_to_fastest_peer" in row:
        parts.append(f"cnnc/fastest peer ({row['fastest_peer']}) {row['ratio_to_fastest_peer']:.2f}")
    print("  ".join(parts), flush=True)


if __name__ == "__main__":
    main()
