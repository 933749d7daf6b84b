"""2Be3-Net (Thomas et al.) and the two baselines of its experiment 1.

Extractor: exactly the structure of torchvision ResNet-50's first five children
(conv1 7x7/2 3->64, bn1, relu, maxpool 3x3/2, layer1 = 3 Bottlenecks 64->256), written out here so
torchvision is not needed. Pre-trained on PET slices (slice-level task, see train_two_be_three.py)
and frozen while the heads train.

Model input (ONNX "pet_slices"): [B, K, 90, 90] float32, SUV clipped to [0, 15] and divided by 15.
Grey -> 3 channels happens inside the graph (Concat of the same plane three times).
Output "risk": [B, 3] sigmoid probabilities in the order (LR, DM, OS).
"""
from __future__ import annotations

import torch
import torch.nn as nn


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + idt)


def resnet50_first_five() -> nn.Sequential:
    """conv1, bn1, relu, maxpool, layer1 of ResNet-50 (same module names and shapes)."""
    down = nn.Sequential(nn.Conv2d(64, 256, 1, bias=False), nn.BatchNorm2d(256))
    layer1 = nn.Sequential(Bottleneck(64, 64, 1, down), Bottleneck(256, 64), Bottleneck(256, 64))
    return nn.Sequential(
        nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False),   # conv1
        nn.BatchNorm2d(64),                                     # bn1
        nn.ReLU(inplace=True),                                  # relu
        nn.MaxPool2d(3, stride=2, padding=1),                   # maxpool
        layer1,                                                 # layer1
    )


FEAT_C = 256


def feat_hw(crop: int) -> int:
    h = (crop + 2 * 3 - 7) // 2 + 1
    return (h + 2 - 3) // 2 + 1          # 90 -> 45 -> 23


class SliceTaskNet(nn.Module):
    """Pre-training wrapper: the extractor, a 1x1 convolution on its feature map for the dense
    per-site lesion targets (neck, distant) and a pooled linear head for the slice's height."""

    def __init__(self, n_dense: int = 2):
        super().__init__()
        self.extractor = resnet50_first_five()
        self.dense = nn.Conv2d(FEAT_C, n_dense, 1)
        self.height = nn.Linear(FEAT_C * 2, 1)

    def forward(self, x):  # x [N, 1, H, W] -> ([N, n_dense, h, h] logits, [N] height)
        f = self.extractor(torch.cat([x, x, x], 1))
        g = torch.cat([f.mean((2, 3)), f.amax((2, 3))], 1)
        return self.dense(f), self.height(g)[:, 0]


def block3d(cin, cout):
    return nn.Sequential(nn.Conv3d(cin, cout, 3, stride=2, padding=1, bias=False),
                         nn.BatchNorm3d(cout), nn.ReLU(inplace=True))


def block2d(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _out(n):
    return (n - 1) // 2 + 1


def block3d_keep_depth(cin, cout, kd):
    """kd x 3 x 3 block that keeps depth: stride (1, 2, 2), no padding in depth (a kd = 3 block
    drops a slab at each end, so no output slab sees the zeros beyond the stack's ends)."""
    return nn.Sequential(nn.Conv3d(cin, cout, (kd, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False),
                         nn.BatchNorm3d(cout), nn.ReLU(inplace=True))


DEPTH_KERNELS = (3, 1, 1)   # depth kernel of TwoBeThreeNet's three blocks (0.2.0: 3, 3, 3)
DEPTH_RF = 1 + sum(k - 1 for k in DEPTH_KERNELS)   # input slabs behind one output slab: 3


class TwoBeThreeNet(nn.Module):
    """Extractor per slice -> concat along depth -> 3 Conv3d blocks (in-plane stride 2, depth kept:
    the first 3x3x3 without depth padding, then two 1x3x3) -> per-slab FC -> maximum over the slabs
    -> FC -> sigmoid(LR, DM, OS). Each output slab sees DEPTH_RF = 3 neighbouring input slabs.

    The paper flattens the last 3D map (depth strided too) into its FC. At adult size that head did
    not learn, nor did one that pooled the last map globally; neither did the depth-keeping head with
    zero padding in depth, whose maximum over the slabs settled on the artefact the padding leaves
    at the stack's two ends (the same slabs in every study) instead of the lesions. Three 3x3x3
    blocks without depth padding (7 slabs per output slab, version 0.2.0) learnt, but ranked distant
    metastases worse (held-out DM 0.80-0.81) than 3 slabs per output slab (0.845-0.847). Training
    README "2Be3-Net [WS]: the depth padding" and "the depth receptive field"."""

    def __init__(self, K=66, crop=90, widths=(32, 64, 64), hidden=128, dropout=0.3):
        super().__init__()
        self.K, self.crop = K, crop
        self.extractor = resnet50_first_five()
        h = feat_hw(crop)
        chans = (FEAT_C,) + tuple(widths)
        self.blocks = nn.Sequential(*[block3d_keep_depth(chans[i], chans[i + 1], kd)
                                      for i, kd in enumerate(DEPTH_KERNELS)])
        for _ in range(3):
            h = _out(h)
        self.slab_fc = nn.Sequential(nn.Flatten(), nn.Linear(widths[2] * h * h, hidden), nn.ReLU(inplace=True))
        self.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, 3))

    def features(self, x):  # [B, K, H, W] -> [B, 256, K, h, w]
        hw = feat_hw(self.crop)
        g = x.reshape(-1, 1, self.crop, self.crop)
        f = self.extractor(torch.cat([g, g, g], 1))
        return f.reshape(-1, self.K, FEAT_C, hw, hw).permute(0, 2, 1, 3, 4)

    def slab_vectors(self, f):  # f [B, 256, K, h, w] -> [B, K - DEPTH_RF + 1, hidden], one vector per output slab
        b = self.blocks(f)                                     # [B, 64, K - DEPTH_RF + 1, 3, 3]
        n, c, d = b.shape[:3]
        v = self.slab_fc(b.permute(0, 2, 1, 3, 4).reshape(n * d, c, b.shape[3], b.shape[4]))
        return v.reshape(n, d, -1)

    def head(self, f):  # f [B, 256, K, h, w] -> logits
        return self.fc(self.slab_vectors(f).amax(1))

    def forward(self, x):
        return torch.sigmoid(self.head(self.features(x)))


class ResNetConv2d(TwoBeThreeNet):
    """Baseline 'ResNet+Conv2d': the same frozen extractor, the 3D blocks replaced by their 2D
    alternative applied to every slice's feature map; the per-slice vectors are max-pooled over
    the K slices (no inter-slice spatial modelling), then FC."""

    def __init__(self, K=66, crop=90, widths=(32, 64, 64), hidden=128, dropout=0.3):
        nn.Module.__init__(self)
        self.K, self.crop = K, crop
        self.extractor = resnet50_first_five()
        h = feat_hw(crop)
        self.blocks = nn.Sequential(block2d(FEAT_C, widths[0]), block2d(widths[0], widths[1]),
                                    block2d(widths[1], widths[2]))
        for _ in range(3):
            h = _out(h)
        self.slice_fc = nn.Sequential(nn.Flatten(), nn.Linear(widths[2] * h * h, hidden), nn.ReLU(inplace=True))
        self.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, 3))

    def head(self, f):  # [B, 256, K, h, w]
        b = f.shape[0]
        s = f.permute(0, 2, 1, 3, 4).reshape(b * self.K, FEAT_C, f.shape[3], f.shape[4])
        v = self.slice_fc(self.blocks(s)).reshape(b, self.K, -1).amax(1)
        return self.fc(v)


class CNN3D(nn.Module):
    """Baseline '3D CNN': four 3D conv blocks on the raw K x 90 x 90 PET stack, then 2 FC layers."""

    def __init__(self, K=66, crop=90, widths=(16, 32, 64, 64), hidden=128, dropout=0.3):
        super().__init__()
        self.K, self.crop = K, crop
        chans = (1,) + tuple(widths)
        self.blocks = nn.Sequential(*[block3d(chans[i], chans[i + 1]) for i in range(4)])
        d, h = K, crop
        for _ in range(4):
            d, h = _out(d), _out(h)
        self.fc = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(widths[-1] * d * h * h, hidden),
                                nn.ReLU(inplace=True), nn.Linear(hidden, 3))

    def forward(self, x):
        return torch.sigmoid(self.fc(self.blocks(x.unsqueeze(1))))
