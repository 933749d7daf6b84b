//! A seeded mutation fuzzer over ingest (issue 16): NIfTI headers and voxel data, gzip streams
//! and DICOM files are truncated, bit-flipped, spliced, given overlong lengths and bad VRs, and
//! every mutant goes through `study::load` as the daemon calls it. Never a panic, and never an
//! allocation beyond the configured limits: this binary's global allocator records the peak of
//! live heap bytes. CI runs a short run (150 mutants); a long one is the same test with
//! `TRACERD_FUZZ_ITERS=20000` (see docs/benchmarks.md); `TRACERD_FUZZ_DICOM=<folder>` mutates
//! real scanner files instead of tracerd's own DICOM export. A failure prints the seed and iteration
//! that reproduce it; each one found becomes a regression test.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tracerd::config::Limits;
use tracerd::synth::{self, Size, SynthOptions};

/// The system allocator, counting live and peak heap bytes.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Limits far below the defaults, so that an over-budget allocation would stand out.
const LIMITS: Limits = Limits {
    max_voxels_per_volume: 4_000_000,
    max_study_mib: 64,
};
/// Peak live heap allowed during one load: the study budget, plus decoding and geometry
/// overhead (about 3× the decoded volumes at most).
const PEAK_ALLOWED: usize = (4 * 64) << 20;

fn iterations() -> usize {
    std::env::var("TRACERD_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150)
}

/// One mutation of `bytes`, chosen by `rng`.
fn mutate(bytes: &mut Vec<u8>, rng: &mut ChaCha8Rng, header_len: usize) {
    let n = bytes.len().max(1);
    match rng.random_range(0..6) {
        0 => bytes.truncate(rng.random_range(0..n)),
        1 => {
            for _ in 0..rng.random_range(1..16) {
                let i = rng.random_range(0..n.min(bytes.len().max(1)));
                if let Some(b) = bytes.get_mut(i) {
                    *b ^= 1 << rng.random_range(0..8);
                }
            }
        }
        2 => {
            // Splice: a chunk of the file copied over another place.
            let len = rng.random_range(1..=n.min(4096));
            let from = rng.random_range(0..=n - len);
            let to = rng.random_range(0..=n - len);
            let chunk = bytes[from..from + len].to_vec();
            bytes[to..to + len].copy_from_slice(&chunk);
        }
        3 => {
            // An overlong or extreme 16/32-bit field in the header region.
            let i = rng.random_range(0..header_len.min(n).saturating_sub(4).max(1));
            let v: [u8; 4] = match rng.random_range(0..4) {
                0 => [0xff; 4],
                1 => [0; 4],
                2 => 0x7fff_ffffu32.to_le_bytes(),
                _ => rng.random::<u32>().to_le_bytes(),
            };
            let end = (i + 4).min(bytes.len());
            bytes[i..end].copy_from_slice(&v[..end - i]);
        }
        4 => {
            // A bad VR: two letters of a DICOM element header replaced.
            let i = rng.random_range(0..n.saturating_sub(2).max(1));
            if i + 2 <= bytes.len() {
                bytes[i] = b'A' + rng.random_range(0..26u8);
                bytes[i + 1] = b'A' + rng.random_range(0..26u8);
            }
        }
        _ => {
            // Random bytes appended (trailing garbage, a second gzip member that is not one).
            let extra: Vec<u8> = (0..rng.random_range(1..512))
                .map(|_| rng.random())
                .collect();
            bytes.extend(extra);
        }
    }
}

/// Loads `dir` as the daemon would; a panic or an allocation beyond the budget fails the test
/// with what reproduces it. Returns whether the study was refused (with a reason).
fn load_checked(dir: &Path, what: &str) -> bool {
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
    let base = LIVE.load(Ordering::Relaxed);
    let result = std::panic::catch_unwind(|| {
        tracerd::study::load(dir, "fuzz", &LIMITS, &Default::default())
    });
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    assert!(result.is_ok(), "{what}: ingest panicked");
    assert!(
        peak <= PEAK_ALLOWED,
        "{what}: peak heap {} MiB over the {} MiB allowed",
        peak >> 20,
        PEAK_ALLOWED >> 20
    );
    match result {
        Ok(Err(e)) => {
            assert!(!e.error.contains('\n'), "{what}: not one line: {}", e.error);
            true
        }
        _ => false,
    }
}

#[test]
fn mutated_nifti_and_dicom_never_panic_nor_exceed_the_budget() {
    let study = synth::generate(&SynthOptions {
        seed: 7,
        size: Size::Small,
    });
    let root = tempfile::tempdir().unwrap();
    let nifti = root.path().join("nifti");
    synth::write_nifti(&study, &nifti).unwrap();
    let dicom = dicom_corpus(&study, root.path());
    let dicom_files: Vec<_> = walkdir(&dicom);
    let seed = 20261201u64;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut nifti_n, mut dicom_n, mut rejected) = (0, 0, 0);
    for it in 0..iterations() {
        let what = format!("seed {seed} iteration {it}");
        let work = root.path().join("mutant");
        let _ = std::fs::remove_dir_all(&work);
        if rng.random_bool(0.6) {
            // NIfTI: the PET (gzip stream, header inside) or the CT.
            copy_dir(&nifti, &work);
            let name = if rng.random_bool(0.7) {
                "SUV.nii.gz"
            } else {
                "CT.nii.gz"
            };
            let path = work.join(name);
            let mut bytes = std::fs::read(&path).unwrap();
            if rng.random_bool(0.5) {
                // Mutate the decompressed file (header fields, voxel data) and re-compress.
                let mut raw = Vec::new();
                use std::io::Read;
                flate2::read::MultiGzDecoder::new(&bytes[..])
                    .read_to_end(&mut raw)
                    .unwrap();
                mutate(&mut raw, &mut rng, 352);
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                std::io::Write::write_all(&mut gz, &raw).unwrap();
                bytes = gz.finish().unwrap();
            } else {
                mutate(&mut bytes, &mut rng, 64);
            }
            std::fs::write(&path, bytes).unwrap();
            nifti_n += 1;
        } else {
            copy_dir(&dicom, &work);
            for _ in 0..rng.random_range(1..4) {
                let f = &dicom_files[rng.random_range(0..dicom_files.len())];
                let path = work.join(f.strip_prefix(&dicom).unwrap());
                let mut bytes = std::fs::read(&path).unwrap();
                mutate(&mut bytes, &mut rng, 1024);
                std::fs::write(&path, bytes).unwrap();
            }
            dicom_n += 1;
        }
        if load_checked(&work, &what) {
            rejected += 1;
        }
    }
    println!(
        "{} mutants ({nifti_n} NIfTI, {dicom_n} DICOM), {rejected} rejected with a reason, none \
         panicked; peak heap per load within {} MiB",
        nifti_n + dicom_n,
        PEAK_ALLOWED >> 20
    );
}

/// Found by the fuzzer (seed 20261201, iteration 11): bit flips set the NIfTI extender flag
/// and a huge extension size, and the nifti crate allocated 1.5 GB for the extension before
/// reading any voxel. Extensions are now skipped unread, up to `vox_offset`.
#[test]
fn an_overlong_extension_size_allocates_nothing() {
    let study = synth::generate(&SynthOptions {
        seed: 7,
        size: Size::Small,
    });
    let dir = tempfile::tempdir().unwrap();
    tracerd::io::nifti::write_f32(&dir.path().join("x.nii"), &study.pet).unwrap();
    let mut bytes = std::fs::read(dir.path().join("x.nii")).unwrap();
    bytes[348] = 1; // extender: extensions follow
    bytes[352..356].copy_from_slice(&0x5fff_fff0i32.to_le_bytes()); // esize: 1.5 GB
    bytes[356..360].copy_from_slice(&4i32.to_le_bytes()); // ecode
    std::fs::remove_file(dir.path().join("x.nii")).unwrap();
    std::fs::write(dir.path().join("SUV.nii"), bytes).unwrap();
    load_checked(dir.path(), "extension esize 0x5ffffff0");
}

/// The DICOM study the mutants start from: the synthetic study exported by tracerd, or the
/// folder `TRACERD_FUZZ_DICOM` names (real scanner files: one series small enough for `LIMITS`,
/// e.g. 60 consecutive slices; docs/benchmarks.md says which were used).
fn dicom_corpus(study: &synth::SyntheticStudy, root: &Path) -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("TRACERD_FUZZ_DICOM") {
        let dir = std::path::PathBuf::from(dir);
        assert!(
            !load_checked(&dir, "the unmutated TRACERD_FUZZ_DICOM study"),
            "the unmutated corpus must load"
        );
        return dir;
    }
    let dicom = root.join("dicom");
    tracerd::synth::dicom::write_dicom(study, &dicom).unwrap();
    dicom
}

fn walkdir(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walkdir(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}
