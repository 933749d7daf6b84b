//! Benchmark: assembling and converting a clinical-size DICOM study (300 PET slices of 192² and
//! 300 CT slices of 512², written by `synth --size clinical --format dicom`) with tracerd, against
//! dcm2niix (Debian package) on the same files in the same run.
//!
//! Run with `cargo bench --bench dicom_convert` (`-- small` for a quick run, `-- repeat N` for more
//! repetitions; the best of N is reported for each tool). The page cache is warm for both tools
//! (every tool reads the files once before timing starts).
//!
//! Compared: `tracerd convert` (scan, group, sort, decode with per-slice rescale, SUV, write
//! `pet_suv.nii.gz` + `ct.nii.gz` at gzip level 2 + `conversion.json`) against `dcm2niix -z y`
//! (gzip) and `dcm2niix -z n` (uncompressed, dcm2niix's fastest) writing both series; plus
//! tracerd's reading alone (scan, group, sort, decode, SUV; no output), to show where time goes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use tracerd::io::dicom;
use tracerd::synth::{self, Size, SynthOptions};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let size = if args.iter().any(|a| a == "small") {
        Size::Small
    } else {
        Size::Clinical
    };
    let repeat: usize = args
        .iter()
        .position(|a| a == "repeat")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let dir = std::env::temp_dir().join(format!("tracerd-dicom-bench-{}", std::process::id()));
    let drop = dir.join("drop");
    let t = Instant::now();
    let study = synth::generate(&SynthOptions { seed: 1, size });
    let summary = tracerd::synth::dicom::write_dicom(&study, &drop).expect("write DICOM");
    drop_study(study);
    println!(
        "dicom_convert benchmark, size {size}, {} CPU(s): {} PET + {} CT files written in {:.1} s",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        summary.pet_files,
        summary.ct_files,
        t.elapsed().as_secs_f64()
    );

    let ours = best(repeat, || {
        let out = fresh(&dir.join("tracerd"));
        let t = Instant::now();
        let results = dicom::convert(&drop, &out, &Default::default()).expect("convert");
        assert!(
            results.iter().all(|r| r.result.is_ok()),
            "conversion failed"
        );
        t.elapsed().as_secs_f64()
    });
    // The same without writing: scan, group, sort, decode, SUV (where the DICOM work is).
    let load = best(repeat, || {
        let t = Instant::now();
        let scan = dicom::scan_folder(&drop).expect("scan");
        for o in dicom::assemble(scan) {
            let study = o.result.expect("assemble");
            dicom::load_study(&study, &[]).expect("load");
        }
        t.elapsed().as_secs_f64()
    });
    let mut rows = vec![
        ("tracerd convert (nii.gz)".to_string(), ours),
        ("tracerd read only".to_string(), load),
    ];
    for (label, z) in [
        ("dcm2niix -z y (nii.gz)", "y"),
        ("dcm2niix -z n (nii)", "n"),
    ] {
        let secs = best(repeat, || {
            let out = fresh(&dir.join(format!("dcm2niix-{z}")));
            let t = Instant::now();
            let o = Command::new("dcm2niix")
                .args(["-b", "n", "-z", z, "-f", "%s", "-o"])
                .arg(&out)
                .arg(&summary.dicom_dir)
                .output()
                .expect("run dcm2niix (apt-get install dcm2niix)");
            assert!(o.status.success(), "dcm2niix failed");
            t.elapsed().as_secs_f64()
        });
        rows.push((label.to_string(), secs));
    }
    println!(
        "{:<28} {:>10} {:>22}",
        "tool", "best s", "tracerd / this tool"
    );
    for (label, secs) in &rows {
        println!("{label:<28} {secs:>10.2} {:>22.2}", ours / secs);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn drop_study(_s: synth::SyntheticStudy) {}

fn fresh(p: &Path) -> PathBuf {
    let _ = std::fs::remove_dir_all(p);
    std::fs::create_dir_all(p).expect("bench dir");
    p.to_path_buf()
}

/// Best of `n` runs after one warm-up run.
fn best(n: usize, mut f: impl FnMut() -> f64) -> f64 {
    f();
    (0..n.max(1)).map(|_| f()).fold(f64::INFINITY, f64::min)
}
