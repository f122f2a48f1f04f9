"""Trains examples/lenet5.cnn on synthetic hand-drawn digits and writes its
weights and the app's sample inputs.

There is no MNIST on a machine without network access, so the digits are
drawn here: each digit is a few pen strokes (polylines on a unit square),
rendered at 28x28 with a random pen width, slant, rotation, scale, shift
and jitter of every control point, plus a little noise. The network learns
to read them; `cargo run --release -p lenet5-app` then reads ten fresh ones.

Writes (all reproducible from the seed; torch and numpy only):
  examples/lenet5.safetensors                weights under the .cnn's names
  examples/lenet5-app/data/digits.f32        10 samples [10, 1, 28, 28], little-endian f32
  examples/lenet5-app/data/expected.f32      PyTorch's logits for them [10, 10] (float64 → f32)

    /work/pyenv/bin/python examples/lenet5-app/train.py
"""

import math
import pathlib

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

ROOT = pathlib.Path(__file__).resolve().parents[2]
SEED = 5

# Pen strokes of each digit, (x, y) with y down, in [0, 1].
def arc(cx, cy, rx, ry, start, end, steps=12):
    return [
        (cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a)))
        for a in np.linspace(start, end, steps)
    ]

STROKES = {
    0: [arc(0.5, 0.5, 0.28, 0.4, 0, 360, 24)],
    1: [[(0.3, 0.25), (0.52, 0.1), (0.52, 0.9)]],
    2: [arc(0.5, 0.32, 0.27, 0.22, 200, 380) + [(0.22, 0.9), (0.8, 0.9)]],
    3: [arc(0.48, 0.3, 0.25, 0.2, 210, 450), arc(0.48, 0.7, 0.28, 0.2, 270, 510)],
    4: [[(0.62, 0.9), (0.62, 0.1), (0.18, 0.65), (0.82, 0.65)]],
    5: [[(0.75, 0.1), (0.3, 0.1), (0.27, 0.45)] + arc(0.48, 0.65, 0.27, 0.24, 230, 500)],
    6: [[(0.7, 0.1), (0.4, 0.35)] + arc(0.5, 0.66, 0.25, 0.24, 200, 560)],
    7: [[(0.2, 0.1), (0.8, 0.1), (0.4, 0.9)]],
    8: [arc(0.5, 0.3, 0.22, 0.2, 0, 360, 20), arc(0.5, 0.7, 0.27, 0.21, 0, 360, 20)],
    9: [arc(0.5, 0.34, 0.25, 0.24, 0, 360, 20) + [(0.75, 0.34), (0.6, 0.9)]],
}

def draw(digit, rng):
    """One 28x28 image of `digit` in [0, 1]."""
    angle = math.radians(rng.uniform(-14, 14))
    slant = rng.uniform(-0.3, 0.3)
    scale = rng.uniform(0.75, 1.05) * 20.0
    aspect = rng.uniform(0.8, 1.15)
    shift = rng.uniform(-2.5, 2.5, size=2)
    width = rng.uniform(0.9, 2.1)
    cos, sin = math.cos(angle), math.sin(angle)
    segments = []
    for stroke in STROKES[digit]:
        points = np.array(stroke) - 0.5
        points += rng.normal(0, 0.025, size=points.shape)
        x = (points[:, 0] + slant * -points[:, 1]) * scale * aspect
        y = points[:, 1] * scale
        px = cos * x - sin * y + 14 + shift[0]
        py = sin * x + cos * y + 14 + shift[1]
        pts = np.stack([px, py], axis=1)
        segments.extend(zip(pts[:-1], pts[1:]))
    a = np.array([s[0] for s in segments])[:, None, :]
    b = np.array([s[1] for s in segments])[:, None, :]
    grid = np.stack(np.meshgrid(np.arange(28) + 0.5, np.arange(28) + 0.5), -1).reshape(1, -1, 2)
    ab = b - a
    t = np.clip(((grid - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-9), 0, 1)
    d = np.linalg.norm(grid - (a + t[..., None] * ab), axis=-1).min(0)
    image = np.clip(width + 0.5 - d, 0, 1).reshape(28, 28)
    image = np.clip(image * rng.uniform(0.7, 1.0) + rng.normal(0, 0.04, size=image.shape), 0, 1)
    return image.astype(np.float32)

def dataset(n, rng):
    labels = rng.integers(0, 10, size=n)
    images = np.stack([draw(int(d), rng) for d in labels])[:, None]
    return torch.from_numpy(images), torch.from_numpy(labels)

class LeNet5(nn.Module):
    """Mirrors examples/lenet5.cnn (same module names)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(400, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2, 2)
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)

def main():
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    rng = np.random.default_rng(SEED)
    train_x, train_y = dataset(24000, rng)
    test_x, test_y = dataset(2000, rng)
    model = LeNet5()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for epoch in range(4):
        order = torch.randperm(len(train_x))
        for start in range(0, len(order), 64):
            batch = order[start:start + 64]
            loss = nn.functional.cross_entropy(model(train_x[batch]), train_y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            accuracy = (model(test_x).argmax(1) == test_y).float().mean().item()
        print(f"epoch {epoch + 1}: loss {loss.item():.4f}, test accuracy {accuracy:.4f}")

    weights = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(ROOT / "examples/lenet5.safetensors"))

    # Ten fresh digits, 0 to 9 in order, and PyTorch's logits in float64.
    samples = np.stack([draw(d, rng) for d in range(10)])[:, None]
    data = ROOT / "examples/lenet5-app/data"
    data.mkdir(exist_ok=True)
    samples.astype("<f4").tofile(data / "digits.f32")
    with torch.no_grad():
        logits = model.double()(torch.from_numpy(samples).double()).numpy()
    logits.astype("<f4").tofile(data / "expected.f32")
    print("predictions of the shipped digits:", logits.argmax(1).tolist())

if __name__ == "__main__":
    main()
