//! Benchmark: time and peak memory of `synth --size clinical`, of writing its NIfTI files, and of
//! reading them back; plus the gzip level trade-off that decides `io::nifti::GZIP_LEVEL`.
//!
//! Run with `cargo bench --bench synth_io` (add `-- small` for a quick run). Each phase runs in a
//! child process of this same binary so that its peak resident memory (VmHWM) is its own.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use flate2::Compression;
use flate2::write::GzEncoder;
use tracerd::io::nifti;
use tracerd::synth::{self, Size, SynthOptions};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("phase") {
        phase(&args[1], Path::new(&args[2]), &args[3]);
        return;
    }
    let size = if args.iter().any(|a| a == "small") {
        "small"
    } else {
        "clinical"
    };
    let dir = tempdir();
    println!(
        "synth_io benchmark, size {size}, {} CPU(s), dir {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        dir.display()
    );
    println!("{:<28} {:>10} {:>14}", "phase", "wall s", "peak RSS MiB");
    for name in ["generate", "generate+write", "read", "gzip-levels"] {
        let exe = std::env::current_exe().expect("own path");
        let out = Command::new(exe)
            .args(["phase", name])
            .arg(&dir)
            .arg(size)
            .output()
            .expect("spawn phase");
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            eprintln!("{name} failed: {}", String::from_utf8_lossy(&out.stderr));
            std::process::exit(1);
        }
        print!("{stdout}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tracerd-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    dir
}

fn report(name: &str, seconds: f64) {
    println!(
        "{name:<28} {seconds:>10.2} {:>14.0}",
        common::peak_rss_mib()
    );
}

fn phase(name: &str, dir: &Path, size: &str) {
    let options = SynthOptions {
        seed: 7,
        size: if size == "small" {
            Size::Small
        } else {
            Size::Clinical
        },
    };
    match name {
        "generate" => {
            let t = Instant::now();
            let study = synth::generate(&options);
            report("generate", t.elapsed().as_secs_f64());
            std::hint::black_box(study);
        }
        "generate+write" => {
            let t = Instant::now();
            let study = synth::generate(&options);
            let generated = t.elapsed().as_secs_f64();
            synth::write_nifti(&study, dir).expect("write study");
            report("generate+write (synth)", t.elapsed().as_secs_f64());
            println!(
                "{:<28} {:>10.2}",
                "  of which write",
                t.elapsed().as_secs_f64() - generated
            );
            for f in ["SUV.nii.gz", "CT.nii.gz", "SEG.nii.gz"] {
                let bytes = std::fs::metadata(dir.join(f)).map_or(0, |m| m.len());
                println!("  {f:<26} {:>10.1} MiB", bytes as f64 / 1048576.0);
            }
        }
        "read" => {
            let t = Instant::now();
            let pet = nifti::read_f32(&dir.join("SUV.nii.gz")).expect("read SUV");
            let ct = nifti::read_f32(&dir.join("CT.nii.gz")).expect("read CT");
            let seg = nifti::read_u8(&dir.join("SEG.nii.gz")).expect("read SEG");
            report("read SUV+CT+SEG", t.elapsed().as_secs_f64());
            std::hint::black_box((pet, ct, seg));
        }
        "gzip-levels" => {
            let pet = nifti::read_f32(&dir.join("SUV.nii.gz")).expect("read SUV");
            let ct = nifti::read_f32(&dir.join("CT.nii.gz")).expect("read CT");
            for (label, vol) in [("SUV", &pet), ("CT", &ct)] {
                let raw: &[u8] = bytemuck::cast_slice(vol.data());
                for level in [1, 2, 3, 6] {
                    let t = Instant::now();
                    let mut enc = GzEncoder::new(Vec::new(), Compression::new(level));
                    enc.write_all(raw).expect("compress");
                    let out = enc.finish().expect("compress");
                    println!(
                        "  gzip {label} level {level}: {:>6.2} s, {:>6.1} MiB → {:>6.1} MiB ({:.0}%)",
                        t.elapsed().as_secs_f64(),
                        raw.len() as f64 / 1048576.0,
                        out.len() as f64 / 1048576.0,
                        100.0 * out.len() as f64 / raw.len() as f64
                    );
                }
            }
        }
        other => panic!("unknown phase {other}"),
    }
}
