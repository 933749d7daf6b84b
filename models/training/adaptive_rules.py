"""The adaptive-threshold rules side by side on extra held-out studies (seeds 100100..100399, never
used for training or the cards' main metrics): the 3D U-Net alone (0.5), the shipped lowering-only rule
(pipeline.adaptive_threshold: 0.1 where the cue > 0.5, else 0.5) and the paper's "and vice versa"
(the same with 0.9 outside the cue).
Writes runs/adaptive_extended_100100_100399.json, which make_cards.py quotes. Not part of build_all.sh
(about 15 min on one thread, 300 more studies generated into cache/)."""
import json

import data
import pipeline
from evaluate import autopet, summarise

SEEDS = range(100100, 100400)
RESULT = data.RUNS / f"adaptive_extended_{SEEDS[0]}_{SEEDS[-1]}.json"
VICE_VERSA = 0.9   # the paper's raised threshold outside the cue (README "adaptive threshold")


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
        rows["lower_only"].append(autopet(s.seg, pipeline.adaptive_threshold(prob, cue), s.voxel_ml))
        rows["full"].append(autopet(s.seg, pipeline.adaptive_threshold(prob, cue, VICE_VERSA), s.voxel_ml))
    out = {k: summarise(v) for k, v in rows.items()}
    RESULT.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
