"""The PyTorch side of @resnet/webgpu's models: the same classes, child names and state-dict keys.

`ShortcutProjection`, `ResidualBlock`, `BottleneckResidualBlock` and `ResNetBase` are the
annotated PyTorch ResNet from labml.ai (https://nn.labml.ai/resnet/index.html), the code this
library started from ("the seed"), written against `torch.nn.Module` instead of labml_helpers'
`Module`, with three keyword options whose defaults keep the seed's behaviour: `first_stride`
(the stem's stride; the seed's 2), `stage_strides` (the stride of each stage's first block; the
seed's rule is 2 in the very first block only) and `stem_activation` (a ReLU after the stem; the
seed has none). The paper's CIFAR network uses `first_stride=1, stage_strides=[1, 2, 2],
stem_activation=True`.

`build(name)` makes the model `deno task train --model NAME` trains (`resnet<6n+2>` or `labml`),
and `load_checkpoint(path)` reads a checkpoint of `deno task train` (or any safetensors file) into
a state dict without the `safetensors` package, leaving out the optimizer's `optimizer.` keys.

    python3 resnet_labml.py runs/<date>/best.safetensors [resnet20|labml]

loads a checkpoint into its model with `strict=True` and prints the eval-mode output's shape.
Written for PyTorch 1.13 and later; no other dependency.
"""

import json
import struct
import sys
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn


class ShortcutProjection(nn.Module):
    """Linear projection of the shortcut: 1x1 conv (bias on, PyTorch's default) with the stride,
    then BatchNorm."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor):
        return self.bn(self.conv(x))


class ResidualBlock(nn.Module):
    """Two 3x3 convs with BatchNorm; ReLU after the first and after adding the shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = ShortcutProjection(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Identity()
        self.act2 = nn.ReLU()

    def forward(self, x: torch.Tensor):
        shortcut = self.shortcut(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        return self.act2(x + shortcut)


class BottleneckResidualBlock(nn.Module):
    """1x1 conv down to the bottleneck, 3x3 conv with the stride, 1x1 conv up; BatchNorm after
    each, ReLU after the first two and after adding the shortcut."""

    def __init__(self, in_channels: int, bottleneck_channels: int, out_channels: int,
                 stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, bottleneck_channels, kernel_size=1, stride=1)
        self.bn1 = nn.BatchNorm2d(bottleneck_channels)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(bottleneck_channels, bottleneck_channels, kernel_size=3,
                               stride=stride, padding=1)
        self.bn2 = nn.BatchNorm2d(bottleneck_channels)
        self.act2 = nn.ReLU()
        self.conv3 = nn.Conv2d(bottleneck_channels, out_channels, kernel_size=1, stride=1)
        self.bn3 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = ShortcutProjection(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Identity()
        self.act3 = nn.ReLU()

    def forward(self, x: torch.Tensor):
        shortcut = self.shortcut(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        return self.act3(x + shortcut)


class ResNetBase(nn.Module):
    """The seed's ResNetBase, extended with keyword options whose defaults keep its behaviour:

    - first_stride: stride of the stem conv (seed: 2).
    - stage_strides: stride of the first block of each stage; None keeps the seed's rule
      (stride 2 for the very first block only, 1 elsewhere). Other blocks always stride 1.
    - stem_activation: True applies ReLU after the stem's BatchNorm (functional, so the state
      dict keys do not change); the seed has none.
    """

    def __init__(self, n_blocks: List[int], n_channels: List[int],
                 bottlenecks: Optional[List[int]] = None,
                 img_channels: int = 3, first_kernel_size: int = 7, *,
                 first_stride: int = 2, stage_strides: Optional[List[int]] = None,
                 stem_activation: bool = False):
        super().__init__()
        assert len(n_blocks) == len(n_channels)
        assert bottlenecks is None or len(bottlenecks) == len(n_channels)
        assert stage_strides is None or len(stage_strides) == len(n_channels)
        self.conv = nn.Conv2d(img_channels, n_channels[0], kernel_size=first_kernel_size,
                              stride=first_stride, padding=first_kernel_size // 2)
        self.bn = nn.BatchNorm2d(n_channels[0])
        self.stem_activation = stem_activation
        blocks = []
        prev_channels = n_channels[0]
        for i, channels in enumerate(n_channels):
            if stage_strides is None:
                stride = 2 if len(blocks) == 0 else 1
            else:
                stride = stage_strides[i]
            if bottlenecks is None:
                blocks.append(ResidualBlock(prev_channels, channels, stride=stride))
            else:
                blocks.append(BottleneckResidualBlock(prev_channels, bottlenecks[i], channels,
                                                      stride=stride))
            prev_channels = channels
            for _ in range(n_blocks[i] - 1):
                if bottlenecks is None:
                    blocks.append(ResidualBlock(channels, channels, stride=1))
                else:
                    blocks.append(BottleneckResidualBlock(channels, bottlenecks[i], channels,
                                                          stride=1))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor):
        x = self.bn(self.conv(x))
        if self.stem_activation:
            x = F.relu(x)
        x = self.blocks(x)
        x = x.view(x.shape[0], x.shape[1], -1)
        return x.mean(dim=-1)


def build(name: str, num_classes: int = 10) -> nn.Module:
    """The model `deno task train --model NAME` trains: `resnet<6n+2>` (the paper's CIFAR
    network) or `labml` (the seed's experiment: bottlenecks [8, 16, 16], blocks [6, 6, 6])."""
    if name == "labml":
        base = ResNetBase([6, 6, 6], [16, 32, 64], bottlenecks=[8, 16, 16], first_kernel_size=3)
        return nn.Sequential(base, nn.Linear(64, num_classes))
    depth = int(name[len("resnet"):]) if name.startswith("resnet") and name[6:].isdigit() else -1
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"unknown model {name!r}: use resnet<6n+2> (resnet20, resnet56, ...) or labml")
    n = (depth - 2) // 6
    base = ResNetBase([n, n, n], [16, 32, 64], first_kernel_size=3, first_stride=1,
                      stage_strides=[1, 2, 2], stem_activation=True)
    return nn.Sequential(base, nn.Linear(64, num_classes))


_DTYPES = {
    "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16,
    "F16": torch.float16, "BF16": torch.bfloat16, "I32": torch.int32, "F32": torch.float32,
    "F64": torch.float64, "I64": torch.int64,
}


def load_checkpoint(path: str):
    """(state dict, metadata) of a safetensors file; keys starting with `optimizer.` are left out.
    The metadata of a `deno task train` checkpoint holds `extra` (JSON: the run's flags, the data
    set, ...)."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = raw[8 + n:]
    metadata = header.pop("__metadata__", None) or {}
    state = {}
    for name, info in header.items():
        if name.startswith("optimizer."):
            continue
        begin, end = info["data_offsets"]
        chunk = bytearray(data[begin:end])
        dtype = _DTYPES[info["dtype"]]
        t = torch.frombuffer(chunk, dtype=dtype) if chunk else torch.empty(0, dtype=dtype)
        state[name] = t.reshape(info["shape"]).clone()
    return state, metadata


# Inputs are normalized as in training: (x / 255 - mean) / std per channel, NCHW, 32x32.
CIFAR10_MEAN = [0.4914, 0.4822, 0.4465]
CIFAR10_STD = [0.2470, 0.2435, 0.2616]


def main(argv: List[str]) -> int:
    if len(argv) not in (2, 3):
        print("usage: resnet_labml.py CHECKPOINT [resnet<6n+2>|labml]", file=sys.stderr)
        return 2
    state, metadata = load_checkpoint(argv[1])
    flags = json.loads(metadata.get("extra", "{}")).get("flags", {})
    name = argv[2] if len(argv) == 3 else flags.get("model", "resnet20")
    model = build(name, num_classes=state["1.weight"].shape[0])
    model.load_state_dict(state, strict=True)
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 32, 32))
    print(f"OK: {len(state)} tensors loaded into {name} (strict); eval output {list(out.shape)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
