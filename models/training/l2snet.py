"""L2SNet (Cai et al.): phase 1 = 2D U-Net with a Res2Net-style encoder on coronal PET slices
(the location cue); phase 2 = 3D U-Net on 2-channel PET+CT patches.

ONNX contracts (see models/l2snet/model.toml):
  loc2d: "pet_coronal" [B, 1, Zp, Xp] (multiples of 32) -> "cue" [B, 1, Zp, Xp] sigmoid probability
  seg3d: "petct_patch" [B, 2, Pz, Py, Px] (multiples of 8) -> "prob" [B, 1, Pz, Py, Px] sigmoid
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------------------------
# Phase 1: Res2Net-style encoder + U-Net decoder (320, 256, 128, 64, 32), bilinear up-sampling
# ----------------------------------------------------------------------------------------------

class Bottle2neck(nn.Module):
    """Res2Net bottleneck: 1x1 conv, split into `scale` groups, hierarchical 3x3 convs
    y1 = x1 (or avg-pooled x1 in a stage's first, strided block), y_i = K_i(x_i + y_{i-1}),
    concat, 1x1 conv, residual."""
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, base_width=26, scale=4, first=False):
        super().__init__()
        width = max(4, planes * base_width // 64)
        self.width, self.scale, self.first = width, scale, first
        self.conv1 = nn.Conv2d(inplanes, width * scale, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width * scale)
        self.convs = nn.ModuleList([nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
                                    for _ in range(scale - 1)])
        self.bns = nn.ModuleList([nn.BatchNorm2d(width) for _ in range(scale - 1)])
        self.pool = nn.AvgPool2d(3, stride=stride, padding=1) if first else None
        self.conv3 = nn.Conv2d(width * scale, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if first:
            self.down = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False),
                                      nn.BatchNorm2d(planes * 4))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        xs = torch.split(out, self.width, 1)
        ys = []
        sp = None
        for i in range(self.scale - 1):
            sp = xs[i] if (i == 0 or self.first) else sp + xs[i]
            sp = self.relu(self.bns[i](self.convs[i](sp)))
            ys.append(sp)
        ys.append(self.pool(xs[-1]) if self.first else xs[-1])
        out = self.bn3(self.conv3(torch.cat(ys, 1)))
        idt = x if self.down is None else self.down(x)
        return self.relu(out + idt)


def conv_bn_relu(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class DecoderStage(nn.Module):
    def __init__(self, cin, cskip, cout):
        super().__init__()
        self.convs = nn.Sequential(conv_bn_relu(cin + cskip, cout), conv_bn_relu(cout, cout))

    def forward(self, x, skip=None):
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        if skip is not None:
            x = torch.cat([x, skip], 1)
        return self.convs(x)


class Loc2D(nn.Module):
    def __init__(self, stem=32, planes=(16, 32, 64, 128), blocks=(1, 1, 2, 1), base_width=26, scale=4,
                 dec=(320, 256, 128, 64, 32)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, stem, 7, stride=2, padding=3, bias=False),
                                  nn.BatchNorm2d(stem), nn.ReLU(inplace=True))
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        layers, cin = [], stem
        for i, (p, n) in enumerate(zip(planes, blocks)):
            stride = 1 if i == 0 else 2
            mods = [Bottle2neck(cin, p, stride, base_width, scale, first=True)]
            cin = p * 4
            mods += [Bottle2neck(cin, p, 1, base_width, scale) for _ in range(n - 1)]
            layers.append(nn.Sequential(*mods))
        self.layers = nn.ModuleList(layers)
        enc = [p * 4 for p in planes]        # /4, /8, /16, /32
        self.d1 = DecoderStage(enc[3], enc[2], dec[0])   # -> /16
        self.d2 = DecoderStage(dec[0], enc[1], dec[1])   # -> /8
        self.d3 = DecoderStage(dec[1], enc[0], dec[2])   # -> /4
        self.d4 = DecoderStage(dec[2], stem, dec[3])     # -> /2
        self.d5 = DecoderStage(dec[3], 0, dec[4])        # -> /1
        self.out = nn.Conv2d(dec[4], 1, 1)

    def logits(self, x):
        s = self.stem(x)                 # /2
        e = self.pool(s)
        feats = []
        for layer in self.layers:
            e = layer(e)
            feats.append(e)
        d = self.d1(feats[3], feats[2])
        d = self.d2(d, feats[1])
        d = self.d3(d, feats[0])
        d = self.d4(d, s)
        d = self.d5(d)
        return self.out(d)

    def forward(self, x):
        return torch.sigmoid(self.logits(x))


# ----------------------------------------------------------------------------------------------
# Phase 2: 3D U-Net, 4 levels, 16 first filters, (conv3 + InstanceNorm + ReLU) x 2, max-pool down
# ----------------------------------------------------------------------------------------------

def block3(cin, cout):
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, padding=1, bias=False), nn.InstanceNorm3d(cout, affine=True), nn.ReLU(inplace=True),
        nn.Conv3d(cout, cout, 3, padding=1, bias=False), nn.InstanceNorm3d(cout, affine=True), nn.ReLU(inplace=True))


class UNet3D(nn.Module):
    def __init__(self, cin=2, f=16, levels=4):
        super().__init__()
        ch = [f * 2 ** i for i in range(levels)]          # 16, 32, 64, 128
        self.enc = nn.ModuleList([block3(cin if i == 0 else ch[i - 1], ch[i]) for i in range(levels)])
        self.pool = nn.MaxPool3d(2)
        self.up = nn.ModuleList([nn.ConvTranspose3d(ch[i + 1], ch[i], 2, stride=2) for i in range(levels - 1)])
        self.dec = nn.ModuleList([block3(2 * ch[i], ch[i]) for i in range(levels - 1)])
        self.out = nn.Conv3d(ch[0], 1, 1)

    def logits(self, x):
        skips = []
        for i, b in enumerate(self.enc):
            x = b(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips[-1]
        for i in reversed(range(len(self.dec))):
            x = self.dec[i](torch.cat([self.up[i](x), skips[i]], 1))
        return self.out(x)

    def forward(self, x):
        return torch.sigmoid(self.logits(x))


# ----------------------------------------------------------------------------------------------
# Losses and post-processing
# ----------------------------------------------------------------------------------------------

def bce_dice(logits, target, weight=None, eps=1.0):
    """BCE + soft Dice (lambda = 1); `weight` (same shape) = 1 + location cue for phase 2."""
    w = torch.ones_like(target) if weight is None else weight
    bce = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * w).sum() / w.sum()
    p = torch.sigmoid(logits)
    inter = (w * p * target).sum()
    dice = 1 - (2 * inter + eps) / ((w * p).sum() + (w * target).sum() + eps)
    return bce + dice
