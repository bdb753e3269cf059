#!/usr/bin/env python3
"""PyTorch references for birads-model's parity tests.

Rebuilds the original MyConvNeXt and MyDenseNet (from torchvision's ConvNeXt and DenseNet,
with the changes listed in SEED.md) at full size and in small configurations, with fixed
seeds and non-trivial weights (layer scales, BatchNorm statistics and affine parameters are
randomised so that every branch matters), and writes for each configuration:

  <name>.pth            the model's state_dict, exactly as torch.save writes it
  <name>.json           configuration, input/output shapes and file names
  <name>.input.bin      float32 little-endian input batch  [N, 3, H, W]
  <name>.output.bin     float32 little-endian eval-mode outputs

plus torchvision-layout checkpoints of the small backbones (`*_tv.pth`: convnext keys
without the wrapper level, densenet keys in the old `norm.1` style of torchvision's file).

    /tmp/ref/bin/python scripts/make_model_fixtures.py --out crates/birads-model/tests/fixtures        # small
    /tmp/ref/bin/python scripts/make_model_fixtures.py --full --out /tmp/birads-full                   # full size

The full-size models are checked against ../shared/spec/*.tsv (every key, dtype, shape).
"""
import argparse
import json
import os
import re
from functools import partial

import torch
from torch import nn
from torchvision.models.convnext import CNBlock, CNBlockConfig, ConvNeXt
from torchvision.models.densenet import DenseNet

HERE = os.path.dirname(os.path.abspath(__file__))


# ---------------------------------------------------------------- MyConvNeXt

class WithDropout(nn.Module):
    """An element of a ConvNeXt stage followed by Dropout (the original's wrapper: the
    element is stored as `block`, so keys gain a `.block` level)."""

    def __init__(self, block, p):
        super().__init__()
        self.block = block
        self.dropout = nn.Dropout(p)

    def forward(self, x):
        return self.dropout(self.block(x))


def my_convnext(dims=(96, 192, 384, 768), depths=(3, 3, 9, 3), num_classes=6, dropout=0.03, sd_rate=0.6):
    settings = [CNBlockConfig(dims[i], dims[i + 1] if i + 1 < len(dims) else None, depths[i]) for i in range(len(dims))]
    base = ConvNeXt(settings, stochastic_depth_prob=0.1)
    total = sum(depths)
    k = 0
    for stage in base.features:
        for i, element in enumerate(stage):
            if isinstance(element, CNBlock):
                p = sd_rate * k / (total - 1) if total > 1 else 0.0
                if p > 0:
                    element.stochastic_depth.p = p
                k += 1
            stage[i] = WithDropout(element, dropout)
    nf = dims[-1]
    base.classifier = nn.Sequential(
        nn.LayerNorm(nf), nn.Linear(nf, nf // 2), nn.GELU(), nn.Dropout(dropout), nn.Linear(nf // 2, num_classes)
    )

    class MyConvNeXt(nn.Module):
        def __init__(self):
            super().__init__()
            self.convnext_tiny = base

        def forward(self, x):
            x = self.convnext_tiny.avgpool(self.convnext_tiny.features(x))
            return self.convnext_tiny.classifier(torch.flatten(x, 1))

    return MyConvNeXt()


# ---------------------------------------------------------------- MyDenseNet

class ChannelAttention(nn.Module):
    def __init__(self, c, ratio):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.max_pool = nn.AdaptiveMaxPool2d(1)
        hidden = max(c // ratio, 1)  # as birads: at least one hidden channel in narrow models
        self.shared_MLP = nn.Sequential(nn.Conv2d(c, hidden, 1, bias=False), nn.ReLU(), nn.Conv2d(hidden, c, 1, bias=False))

    def forward(self, x):
        return torch.sigmoid(self.shared_MLP(self.avg_pool(x)) + self.shared_MLP(self.max_pool(x)))


class SpatialAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 7, padding=3, bias=False)

    def forward(self, x):
        return torch.sigmoid(self.conv(torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)))


class BlockWithCbam(nn.Module):
    def __init__(self, denseblock, c, ratio):
        super().__init__()
        self.denseblock = denseblock
        self.channel_attention = ChannelAttention(c, ratio)
        self.spatial_attention = SpatialAttention()

    def forward(self, x):
        x = self.denseblock(x)
        x = self.channel_attention(x) * x
        return self.spatial_attention(x) * x


class Decoupling(nn.Module):
    """Shared Linear(C/4, C/8) and per-task Linear(C/4, C/2 − C/8), concatenated to C/2 (the
    original's 128 + 384 = 512 for C = 1024; written in C so that any width matches birads)."""

    def __init__(self, nf, tasks):
        super().__init__()
        d, shared = nf // 4, nf // 8
        self.shared_proj = nn.Linear(d, shared)
        self.task_proj = nn.ModuleList([nn.Linear(d, nf // 2 - shared) for _ in range(tasks)])

    def forward(self, x):
        s = self.shared_proj(x)
        return [torch.cat([s, p(x)], 1) for p in self.task_proj]


def my_densenet(growth=32, blocks=(6, 12, 24, 16), init=64, bn_size=4, tasks=4, dp1=0.5, dp2=0.03, classes=0):
    """MyDenseNet; with `classes` > 0 one head of that many logits replaces the feature heads
    (birads' BI-RADS grader on this backbone), output [N, 1, classes]."""
    heads, width = (1, classes) if classes else (tasks, 2)
    base = DenseNet(growth_rate=growth, block_config=blocks, num_init_features=init, bn_size=bn_size)
    c = init
    for i, n in enumerate(blocks, start=1):
        block = getattr(base.features, f"denseblock{i}")
        for name, layer in list(block.named_children()):
            setattr(block, name, nn.Sequential(layer, nn.Dropout(dp2)))
        c += n * growth
        setattr(base.features, f"denseblock{i}", BlockWithCbam(block, c, 16 * (i + 1) // 2))
        if i < len(blocks):
            c //= 2
    nf = c

    class MyDenseNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.densenet = base
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Sequential(
                nn.LayerNorm(nf), nn.Linear(nf, nf // 2), nn.ReLU(), nn.Dropout(dp1), nn.Linear(nf // 2, nf // 4), nn.GELU()
            )
            self.decoupling = Decoupling(nf, heads)
            self.task_classifiers = nn.ModuleList(
                [nn.Sequential(nn.Linear(nf // 2, nf // 8), nn.ReLU(), nn.Linear(nf // 8, width)) for _ in range(heads)]
            )

        def forward(self, x):
            x = torch.flatten(self.avgpool(self.densenet.features(x)), 1)  # no ReLU after norm5
            feats = self.decoupling(self.classifier(x))
            return torch.stack([h(f) for f, h in zip(feats, self.task_classifiers)], 1)

    return MyDenseNet()


# ---------------------------------------------------------------- fixtures

def perturb(model, seed):
    """Make every parameter and statistic matter: random layer scales, BatchNorm stats."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("layer_scale"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.5)
            elif name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif re.search(r"norm\d?\.(weight|bias)$|norm\.(weight|bias)$", name):
                t.copy_(torch.randn(t.shape, generator=g) * 0.2 + (1.0 if name.endswith("weight") else 0.0))


def write(out, name, model, config, x):
    model.eval()
    with torch.no_grad():
        y = model(x)
    torch.save(model.state_dict(), os.path.join(out, name + ".pth"))
    x.numpy().astype("<f4").tofile(os.path.join(out, name + ".input.bin"))
    y.numpy().astype("<f4").tofile(os.path.join(out, name + ".output.bin"))
    with open(os.path.join(out, name + ".json"), "w") as f:
        json.dump({"config": config, "input_shape": list(x.shape), "output_shape": list(y.shape)}, f, indent=1)
    print(f"{name}: output {tuple(y.shape)}, |y| max {y.abs().max().item():.3f}")


def check_against_spec(model, tsv):
    want = {}
    with open(tsv) as f:
        next(f)
        for line in f:
            k, dtype, shape = line.rstrip("\n").split("\t")
            want[k] = (dtype, shape)
    got = {k: (str(v.dtype).replace("torch.", ""), str(list(v.shape))) for k, v in model.state_dict().items()}
    assert got == want, f"state_dict differs from {tsv}: missing {set(want) - set(got)}, extra {set(got) - set(want)}, " \
        f"shape {[k for k in want if k in got and got[k] != want[k]][:5]}"
    print(f"keys, dtypes and shapes match {os.path.basename(tsv)} ({len(want)} entries)")


def torchvision_layout_convnext(model):
    """The backbone as torchvision's convnext_tiny checkpoint names it (no wrapper level)."""
    sd = {}
    for k, v in model.convnext_tiny.state_dict().items():
        if k.startswith("classifier"):
            continue
        sd[re.sub(r"^(features\.\d+\.\d+)\.block\.", r"\1.", k)] = v
    return sd


def torchvision_layout_densenet(model):
    """The backbone as torchvision's densenet121 file names it: `norm.1`, `conv.2` style."""
    sd = {}
    for k, v in model.densenet.state_dict().items():
        if "attention" in k:
            continue
        k = re.sub(r"denseblock(\d+)\.denseblock\.(denselayer\d+)\.0\.", r"denseblock\1.\2.", k)
        k = re.sub(r"\.(norm|relu|conv)([12])\.", r".\1.\2.", k)
        sd[k] = v
    return sd


PREDICT_IMAGES = ["busbra_0001-l.jpg", "busbra_0002-r.jpg", "busbra_0004-l.jpg", "busbra_0010-l.jpg",
                  "busbra_0100-r.jpg", "busbra_0250-l.jpg", "busbra_0500-r.jpg", "busbra_1000-s.jpg"]


def predict_reference(out, busbra):
    """The original run.py chain (PIL RGB -> CenterCrop(672) -> Resize((224, 224)) -> ToTensor ->
    Normalize, batch 1, argmax) with the small checkpoints, on a few BUS-BRA images."""
    from PIL import Image
    from torchvision import transforms as T
    tf = T.Compose([T.CenterCrop(672), T.Resize((224, 224)), T.ToTensor(),
                    T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    conv = my_convnext(dims=(8, 16, 24, 32), depths=(1, 2, 2, 1))
    conv.load_state_dict(torch.load(os.path.join(out, "myconvnext_small.pth")))
    dense = my_densenet(growth=12, blocks=(2, 2, 2, 2), init=24, bn_size=2)
    dense.load_state_dict(torch.load(os.path.join(out, "mydensenet_small.pth")))
    conv.eval()
    dense.eval()
    names = [n for n in PREDICT_IMAGES if os.path.exists(os.path.join(busbra, "images", n))]
    with open(os.path.join(out, "predict_reference.csv"), "w") as f:
        f.write("img_name,label," + ",".join(f"p{i}" for i in range(6)) + ",b,c,d,s,pb,pc,pd,ps\n")
        for n in names:
            x = tf(Image.open(os.path.join(busbra, "images", n)).convert("RGB")).unsqueeze(0)
            with torch.no_grad():
                pc = torch.softmax(conv(x), 1)[0]
                pf = torch.softmax(dense(x), 2)[0]
            row = [n, str(int(pc.argmax()))] + [f"{v:.7f}" for v in pc.tolist()]
            row += [str(int(v)) for v in pf.argmax(1).tolist()] + [f"{v:.7f}" for v in pf[:, 1].tolist()]
            f.write(",".join(row) + "\n")
    print(f"predict_reference: {len(names)} images")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "..", "crates", "birads-model", "tests", "fixtures"))
    ap.add_argument("--full", action="store_true", help="full-size models (too large to commit)")
    ap.add_argument("--batch", type=int, default=2)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    spec = os.path.join(HERE, "..", "..", "shared", "spec")
    torch.manual_seed(0)
    if args.full:
        conv = my_convnext()
        check_against_spec(conv, os.path.join(spec, "myconvnext_state_dict.tsv"))
        perturb(conv, 1)
        write(args.out, "myconvnext_full", conv, {"kind": "convnext", "dims": [96, 192, 384, 768], "depths": [3, 3, 9, 3]},
              torch.randn(args.batch, 3, 224, 224))
        dense = my_densenet()
        check_against_spec(dense, os.path.join(spec, "mydensenet_state_dict.tsv"))
        perturb(dense, 2)
        write(args.out, "mydensenet_full", dense, {"kind": "densenet", "growth": 32, "blocks": [6, 12, 24, 16], "init": 64, "bn_size": 4},
              torch.randn(args.batch, 3, 224, 224))
        torch.save(torchvision_layout_convnext(conv), os.path.join(args.out, "convnext_full_tv.pth"))
        torch.save(torchvision_layout_densenet(dense), os.path.join(args.out, "densenet_full_tv.pth"))
        return
    small_conv = {"kind": "convnext", "dims": [8, 16, 24, 32], "depths": [1, 2, 2, 1]}
    conv = my_convnext(dims=small_conv["dims"], depths=small_conv["depths"])
    perturb(conv, 1)
    write(args.out, "myconvnext_small", conv, small_conv, torch.randn(args.batch, 3, 64, 64))
    torch.save(torchvision_layout_convnext(conv), os.path.join(args.out, "convnext_small_tv.pth"))
    # The same weights as safetensors with the original key names (what converters produce).
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in conv.state_dict().items()}, os.path.join(args.out, "myconvnext_small.safetensors"))
    small_dense = {"kind": "densenet", "growth": 12, "blocks": [2, 2, 2, 2], "init": 24, "bn_size": 2}
    dense = my_densenet(growth=12, blocks=(2, 2, 2, 2), init=24, bn_size=2)
    perturb(dense, 2)
    write(args.out, "mydensenet_small", dense, small_dense, torch.randn(args.batch, 3, 64, 64))
    torch.save(torchvision_layout_densenet(dense), os.path.join(args.out, "densenet_small_tv.pth"))
    # Training-mode BatchNorm: same weights, dropout off, one forward in train() mode; the
    # outputs use batch statistics and the running statistics move (momentum 0.1, unbiased).
    dense.load_state_dict(torch.load(os.path.join(args.out, "mydensenet_small.pth")))
    for m in dense.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    dense.train()
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        y = dense(x)
    x.numpy().astype("<f4").tofile(os.path.join(args.out, "mydensenet_small_train.input.bin"))
    y.numpy().astype("<f4").tofile(os.path.join(args.out, "mydensenet_small_train.output.bin"))
    sd = dense.state_dict()
    for key in ["densenet.features.norm0", "densenet.features.norm5"]:
        torch.cat([sd[key + ".running_mean"], sd[key + ".running_var"]]).numpy().astype("<f4").tofile(
            os.path.join(args.out, f"mydensenet_small_train.{key.split('.')[-1]}.bin"))
    print("mydensenet_small_train: output", tuple(y.shape))
    predict_reference(args.out, os.path.join(HERE, "..", "..", "shared", "data", "bus-bra"))


if __name__ == "__main__":
    main()
