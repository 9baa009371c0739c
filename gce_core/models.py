"""Networks of the lab. Every model maps images (N, C, H, W) to logits (N, num_classes); the loss
is the experiment, so it stays outside the model.

| name      | what                                                         | for          |
|-----------|--------------------------------------------------------------|--------------|
| mlp       | flatten -> 256 -> 256 -> classes, ReLU                       | digits, CPU  |
| cnn       | two 3x3 conv blocks (32, 64 channels) -> global pool -> linear | CPU demos   |
| lenet     | LeNet-style: 5x5 conv 16 and 32, stride 2 -> 128 -> classes  | mnist5k, CPU |
| resnet18  | CIFAR ResNet-18: 3x3 stem, no max-pool, [2, 2, 2, 2] blocks  | Fashion-MNIST |
| resnet34  | CIFAR ResNet-34: 3x3 stem, no max-pool, [3, 4, 6, 3] blocks  | CIFAR (paper) |
"""

from __future__ import annotations

import torch
from torch import nn

MODEL_NAMES = ("mlp", "cnn", "lenet", "resnet18", "resnet34")


class MLP(nn.Module):
    """in_features -> hidden -> hidden -> num_classes with ReLU."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """Two conv blocks and a linear head; works on any image size >= 4x4."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32):
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            )

        self.features = nn.Sequential(
            block(in_channels, width), nn.MaxPool2d(2), block(width, 2 * width)
        )
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class LeNet(nn.Module):
    """A small LeNet-style CNN, fast on a CPU (about 0.7 MFLOPs forward for a 28x28 image):
    5x5 conv 16 stride 2 -> ReLU -> 5x5 conv 32 stride 2 -> ReLU -> 128 -> classes.
    Strided convolutions instead of pooling: a third of the time of conv + max-pool on a CPU.
    Needs images of at least 16x16 pixels."""

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int, hidden: int = 128):
        super().__init__()
        c, h, w = image_shape
        if min(h, w) < 16:
            raise ValueError(f"lenet needs images of at least 16x16 pixels, got {h}x{w}; use mlp or cnn")

        def out(n: int) -> int:
            return ((n - 5) // 2 + 1 - 5) // 2 + 1

        self.features = nn.Sequential(
            nn.Conv2d(c, 16, 5, stride=2), nn.ReLU(inplace=True),
            nn.Conv2d(16, 32, 5, stride=2), nn.ReLU(inplace=True),
        )  # fmt: skip
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * out(h) * out(w), hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs: 3x3 stem with stride 1 and no max-pool (the paper's variant)."""

    def __init__(self, blocks: tuple[int, int, int, int], in_channels: int, num_classes: int):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(True)
        )
        layers, cin = [], 64
        for i, (count, width) in enumerate(zip(blocks, (64, 128, 256, 512), strict=True)):
            for j in range(count):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(BasicBlock(cin, width, stride))
                cin = width
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def build_model(name: str, image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Build the named model (see MODEL_NAMES) for images of shape (C, H, W)."""
    c, h, w = image_shape
    if name == "mlp":
        return MLP(c * h * w, num_classes)
    if name == "cnn":
        return SmallCNN(c, num_classes)
    if name == "lenet":
        return LeNet(image_shape, num_classes)
    if name == "resnet18":
        return CifarResNet((2, 2, 2, 2), c, num_classes)
    if name == "resnet34":
        return CifarResNet((3, 4, 6, 3), c, num_classes)
    raise ValueError(f"unknown model {name!r}; allowed: {', '.join(MODEL_NAMES)}")


def init_seeded(name: str, image_shape: tuple[int, int, int], num_classes: int, seed: int):
    """Build the model with weights drawn from a seeded RNG, without touching global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(name, image_shape, num_classes)


def parameter_count(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def has_batch_norm(model: nn.Module) -> bool:
    """True if the model holds BatchNorm layers (they keep running statistics as buffers)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def flops_hint(name: str, image_shape: tuple[int, int, int], num_classes: int) -> float:
    """Rough forward FLOPs per image (multiply-adds x 2), used for run-time estimates."""
    c, h, w = image_shape
    if name == "mlp":
        return 2.0 * (c * h * w * 256 + 256 * 256 + 256 * num_classes)
    if name == "cnn":
        hw = h * w
        return 2.0 * 9 * (c * 32 * hw + 32 * 32 * hw + (32 * 64 + 64 * 64) * hw / 4)
    if name == "lenet":
        h1, w1 = (h - 5) // 2 + 1, (w - 5) // 2 + 1
        h2, w2 = (h1 - 5) // 2 + 1, (w1 - 5) // 2 + 1
        return 2.0 * (25 * c * 16 * h1 * w1 + 25 * 16 * 32 * h2 * w2 + 32 * h2 * w2 * 128 + 128 * num_classes)
    # ResNet-18 ~0.56 GFLOPs, ResNet-34 ~1.16 GFLOPs forward at 32x32 (x2 for FLOPs).
    base = {"resnet18": 0.56e9, "resnet34": 1.16e9}[name] * 2
    return base * (h * w) / 1024.0
