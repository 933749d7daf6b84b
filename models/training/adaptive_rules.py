"""The adaptive-threshold rules side by side on extra held-out studies (seeds 100100..100399, never
used for training, selection or the cards' main metrics): the 3D U-Net alone (0.5), the lowering-only
rule (0.1 where the cue > 0.5, else 0.5) and the card's rule (pipeline.adaptive_threshold).
Writes runs/adaptive_extended_100100_100399.json, which make_cards.py quotes. Not part of build_all.sh
(about 15 min on one thread, 300 more studies generated into cache/)."""
import json

import numpy as np

import data
import pipeline
from evaluate import autopet, summarise

SEEDS = range(100100, 100400)


def main():
    d = data.MODELS_OUT / "l2snet"
    seg = pipeline.session(d / "seg3d.fp32.onnx", 1)
    loc = pipeline.session(d / "loc2d.fp32.onnx", 1)
    p = data.L2SNET
    rows = {"plain": [], "lower_only": [], "full": []}
    data.ensure(list(SEEDS))
    for sd in SEEDS:
        s = data.load(sd)
        prob = pipeline.sliding_window(seg, pipeline.petct_input(s.pet, s.ct))
        cue = pipeline.location_cue(loc, s.pet)
        rows["plain"].append(autopet(s.seg, prob > p["threshold"], s.voxel_ml))
        lowered = np.where(cue > p["cue_threshold"], p["lowered_threshold"], p["threshold"])
        rows["lower_only"].append(autopet(s.seg, prob > lowered, s.voxel_ml))
        rows["full"].append(autopet(s.seg, pipeline.adaptive_threshold(prob, cue), s.voxel_ml))
    out = {k: summarise(v) for k, v in rows.items()}
    (data.RUNS / f"adaptive_extended_{SEEDS[0]}_{SEEDS[-1]}.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
