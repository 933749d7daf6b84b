//! Benchmark: what the result files beside `lesions.nii.gz` cost on a clinical study: the
//! overview picture (render, PNG), its Secondary Capture, the per-lesion SEG and the TID 1500 SR,
//! against writing the lesion mask itself (the peer: the output every study already had).
//!
//! Run with `cargo bench --bench results` (add `-- small` for a quick run). The study is the
//! held-out clinical phantom 100000 written as DICOM; its ground-truth lesions stand in for the
//! model's. Each step runs five times; the median is reported.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tracerd::io::{dicom, nifti};
use tracerd::models::l2snet::{lesion_ids, lesion_summary};
use tracerd::report::{self, Overview};
use tracerd::synth::{self, Size, SynthOptions};

fn median_ms(mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[2]
}

fn main() {
    let small = std::env::args().any(|a| a == "small");
    let (seed, size) = if small {
        (7, Size::Small)
    } else {
        (100000, Size::Clinical)
    };
    let dir = std::env::temp_dir().join(format!("tracerd-bench-results-{}", std::process::id()));
    let study = synth::generate(&SynthOptions { seed, size });
    tracerd::synth::dicom::write_dicom(&study, &dir.join("drop")).expect("write the DICOM study");
    let pet = dicom::assemble(dicom::scan_folder(&dir.join("drop")).expect("scan"))
        .remove(0)
        .result
        .expect("assemble")
        .pet;
    let ids = lesion_ids(&study.seg);
    let summary = lesion_summary(&ids, &study.pet);
    println!(
        "results benchmark: seed {seed}, PET {:?}, {} lesion(s), {} CPU(s)",
        study.pet.shape(),
        summary.count,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let out = |name: &str| -> PathBuf { dir.join(name) };
    let render = || {
        report::render(&Overview {
            key: "bench",
            pet: &study.pet,
            lesions: Some((&ids, &summary)),
            scores: None,
            models: &[],
            statuses: &[],
        })
    };
    let picture = render();
    let rows = [
        (
            "lesions.nii.gz (peer)",
            median_ms(|| nifti::write_u8(&out("m.nii.gz"), &study.seg).unwrap()),
        ),
        ("overview: render", median_ms(|| drop(render()))),
        (
            "overview: PNG encode+write",
            median_ms(|| std::fs::write(out("o.png"), picture.png()).unwrap()),
        ),
        (
            "overview.sc.dcm",
            median_ms(|| dicom::sc::write_sc(&pet, &picture.image, &out("o.sc.dcm")).unwrap()),
        ),
        (
            "lesions.seg.dcm",
            median_ms(|| {
                dicom::seg::write_seg(&pet, &ids, &out("l.seg.dcm")).unwrap();
            }),
        ),
        (
            "lesions.sr.dcm",
            median_ms(|| dicom::sr::write_sr(&pet, &summary, &out("l.sr.dcm")).unwrap()),
        ),
    ];
    let peer = rows[0].1;
    println!("{:<28} {:>9} {:>12}", "step", "ms", "× mask write");
    for (name, ms) in &rows {
        println!("{name:<28} {ms:>9.1} {:>12.2}", ms / peer);
    }
    let added: f64 = rows[1..]
        .iter()
        .filter(|r| r.0 != "lesions.seg.dcm")
        .map(|r| r.1)
        .sum();
    println!(
        "picture + SC + SR added per study: {added:.1} ms ({:.2} × the mask write)",
        added / peer
    );
    println!(
        "sizes: overview.png {} KiB, overview.sc.dcm {} KiB",
        kib(&out("o.png")),
        kib(&out("o.sc.dcm"))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn kib(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len() / 1024)
}
