//! `tracerd-synthgen OUT_ROOT FIRST LAST [small|clinical]`: writes `OUT_ROOT/<seed>/{SUV,CT,SEG}.nii.gz`
//! and `labels.json` for every seed in `FIRST..=LAST`, skipping seeds whose `labels.json` exists.
use std::path::PathBuf;

use rayon::prelude::*;
use tracerd::synth::{generate, write_nifti, Size, SynthOptions};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: tracerd-synthgen OUT_ROOT FIRST LAST [small|clinical]");
        std::process::exit(2);
    }
    let root = PathBuf::from(&args[1]);
    let first: u64 = args[2].parse().expect("FIRST");
    let last: u64 = args[3].parse().expect("LAST");
    let size: Size = args.get(4).map(|s| s.parse().expect("size")).unwrap_or(Size::Small);
    let seeds: Vec<u64> = (first..=last).collect();
    // Studies are generated one after another (each uses rayon inside); outer loop sequential.
    for seed in seeds.iter().copied() {
        let dir = root.join(seed.to_string());
        if dir.join("labels.json").exists() {
            continue;
        }
        let study = generate(&SynthOptions { seed, size });
        write_nifti(&study, &dir).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
    let _ = seeds.par_iter().count();
}
