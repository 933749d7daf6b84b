//! The `tracerd` binary as users run it: `synth` determinism and ground truth, `check` exit codes
//! and one-line errors.

use std::path::Path;
use std::process::{Command, Output};

use tracerd::io::nifti;

fn tracerd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tracerd"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run tracerd")
}

fn synth(out: &Path, seed: u64) {
    let o = tracerd(&[
        "synth",
        "--out",
        out.to_str().unwrap(),
        "--seed",
        &seed.to_string(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

const FILES: [&str; 4] = ["SUV.nii.gz", "CT.nii.gz", "SEG.nii.gz", "labels.json"];

#[test]
fn synth_same_seed_same_bytes_different_seed_different_data() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    synth(&a, 7);
    synth(&b, 7);
    synth(&c, 8);
    for f in FILES {
        let bytes = std::fs::read(a.join(f)).unwrap();
        assert_eq!(
            bytes,
            std::fs::read(b.join(f)).unwrap(),
            "{f} differs between runs"
        );
        assert_ne!(
            bytes,
            std::fs::read(c.join(f)).unwrap(),
            "{f} equal across seeds"
        );
    }
    // Nothing but the four files (no temporary debris).
    assert_eq!(std::fs::read_dir(&a).unwrap().count(), FILES.len());
}

/// For studies with lesions, SEG is non-empty and the voxels it marks are hotter than the shell
/// of voxels around them (dilated by 2 voxels, minus the mask).
#[test]
fn synth_ground_truth_marks_hot_voxels() {
    let dir = tempfile::tempdir().unwrap();
    let mut with_lesions = 0;
    for seed in [1u64, 2, 4, 5, 11, 12] {
        let out = dir.path().join(seed.to_string());
        synth(&out, seed);
        let labels: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("labels.json")).unwrap()).unwrap();
        let lesions = labels["lesions"].as_array().unwrap().len();
        let pet = nifti::read_f32(&out.join("SUV.nii.gz")).unwrap();
        let seg = nifti::read_u8(&out.join("SEG.nii.gz")).unwrap();
        assert_eq!(
            pet.geometry(),
            seg.geometry(),
            "SEG must be on the PET grid"
        );
        let marked = seg.data().iter().filter(|&&v| v == 1).count();
        assert_eq!(
            lesions > 0,
            marked > 0,
            "seed {seed}: {lesions} lesions, {marked} voxels"
        );
        if lesions == 0 {
            continue;
        }
        with_lesions += 1;
        let [nx, ny, nz] = seg.shape();
        let (mut inside, mut n_in, mut shell, mut n_shell) = (0f64, 0usize, 0f64, 0usize);
        for k in 0..nz {
            for j in 0..ny {
                for i in 0..nx {
                    let v = *pet.at(i, j, k) as f64;
                    if *seg.at(i, j, k) == 1 {
                        inside += v;
                        n_in += 1;
                        continue;
                    }
                    let near = (k.saturating_sub(2)..(k + 3).min(nz)).any(|kk| {
                        (j.saturating_sub(2)..(j + 3).min(ny)).any(|jj| {
                            (i.saturating_sub(2)..(i + 3).min(nx))
                                .any(|ii| *seg.at(ii, jj, kk) == 1)
                        })
                    });
                    if near {
                        shell += v;
                        n_shell += 1;
                    }
                }
            }
        }
        let (inside, shell) = (inside / n_in as f64, shell / n_shell as f64);
        assert!(
            inside > 1.3 * shell,
            "seed {seed}: lesion mean SUV {inside:.2} vs shell {shell:.2}"
        );
    }
    assert!(with_lesions >= 3, "too few lesion studies among the seeds");
}

#[test]
fn synth_reports_an_unwritable_destination_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let o = tracerd(&["synth", "--out", blocker.join("study").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("tracerd: error: "), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn check_passes_on_a_good_config_and_fails_on_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[paths]\ninbox = \"in\"\nwork = \"work\"\noutbox = \"out\"\nfailed = \"failed\"\n\
         archive = \"archive\"\nmodels = \"models\"\n[watch]\nsettle_seconds = 2\n",
    )
    .unwrap();
    let o = tracerd(&["check", "--config", good.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("settle_seconds = 2.0"), "{stdout}");
    assert!(stdout.contains("check passed"), "{stdout}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[paths]\ninbox = \"x\"\noutbox = \"x/out\"\n[watch]\nsettle_seconds = 0\n",
    )
    .unwrap();
    let o = tracerd(&["check", "--config", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("ERROR paths.outbox is inside paths.inbox"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ERROR watch.settle_seconds is 0"),
        "{stdout}"
    );
    // The error is the last line (log lines about the engines may precede it).
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        stderr.trim_end().lines().last(),
        Some("tracerd: error: check failed with 2 error(s)"),
        "{stderr}"
    );

    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "[watch]\nsettle = 3\n").unwrap();
    let o = tracerd(&["check", "--config", typo.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("line 2: unknown field `settle`"),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}
