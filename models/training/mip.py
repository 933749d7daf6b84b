"""Coronal and sagittal maximum-intensity projections of a study, with a mask's outline over them,
as a PNG (numpy and the standard library only): the quickest way to look at what the generator
or the pipeline produced.

usage: mip.py STUDY_DIR OUT.png [MASK.nii.gz]
STUDY_DIR holds SUV.nii.gz (or PET.nii.gz) and, unless MASK is given, may hold SEG.nii.gz. The
PET is shown in inverted grey over SUV [0, 8] at 1 mm per pixel; the mask's projection is outlined
in red, the ground truth (SEG.nii.gz, when MASK is given too) in green.
"""
from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np


def png(path: Path, rgb: np.ndarray) -> None:
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].astype(np.uint8).tobytes() for y in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def stretch(img: np.ndarray, px_mm: tuple[float, float]) -> np.ndarray:
    """Nearest-neighbour resize of [rows, cols] so that one pixel is 1 mm."""
    r = np.minimum((np.arange(int(img.shape[0] * px_mm[0])) / px_mm[0]).astype(int), img.shape[0] - 1)
    c = np.minimum((np.arange(int(img.shape[1] * px_mm[1])) / px_mm[1]).astype(int), img.shape[1] - 1)
    return img[r][:, c]


def outline(m: np.ndarray) -> np.ndarray:
    inner = m.copy()
    inner[1:-1, 1:-1] = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    return m & ~inner


def render(pet, sp, masks):
    """pet [z, y, x]; sp (sz, sy, sx); masks [(array [z, y, x], colour)]. Coronal | sagittal."""
    panels = []
    for axis, px in ((1, (sp[0], sp[2])), (2, (sp[0], sp[1]))):
        grey = stretch(pet.max(axis)[::-1], px)
        v = 255 - np.clip(grey / 8.0, 0, 1) * 255
        rgb = np.stack([v, v, v], -1)
        for m, colour in masks:
            o = outline(stretch(m.any(axis)[::-1], px))
            rgb[o] = colour
        panels.append(rgb)
    h = max(p.shape[0] for p in panels)
    padded = [np.pad(p, ((0, h - p.shape[0]), (0, 8), (0, 0)), constant_values=255) for p in panels]
    return np.concatenate(padded, 1)


def main(study: Path, out: Path, mask: Path | None) -> None:
    pet_file = study / "SUV.nii.gz" if (study / "SUV.nii.gz").exists() else study / "PET.nii.gz"
    img = nib.load(pet_file)
    zyx = lambda f: np.asarray(nib.load(f).dataobj).transpose(2, 1, 0)
    pet = np.asarray(img.dataobj, dtype=np.float32).transpose(2, 1, 0)
    zooms = img.header.get_zooms()[:3]
    masks = []
    if (study / "SEG.nii.gz").exists():
        masks.append((zyx(study / "SEG.nii.gz") > 0, (0, 170, 0) if mask else (220, 0, 0)))
    if mask:
        masks.append((zyx(mask) > 0, (220, 0, 0)))
    png(out, render(pet, (zooms[2], zooms[1], zooms[0]), masks))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]) if len(sys.argv) > 3 else None)
