//! The `tracerd` command line: parses arguments and calls into the library, nothing more.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tracerd::config::Config;
use tracerd::daemon::{self, RunOptions};
use tracerd::io::dicom;
use tracerd::outbox::OrAbsent;
use tracerd::process::{Processor, Published};
use tracerd::synth::{self, Size, SynthOptions};

/// Scanner-side PET/CT inference daemon: drop-folder in, lesion masks and risk scores out.
#[derive(Debug, Parser)]
#[command(name = "tracerd", version, about, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write one deterministic synthetic PET/CT study (SUV.nii.gz, CT.nii.gz, SEG.nii.gz,
    /// labels.json). Same options, same bytes.
    Synth {
        /// Folder to write the study into (created if missing; existing files are replaced).
        #[arg(long)]
        out: PathBuf,
        /// Random seed; each seed is a different patient.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// small: a half-scale body on PET 64×64×96, for quick tests; clinical: an adult drawn
        /// per seed on one scanner family's PET and CT grids (see docs/synthetic-studies.md).
        #[arg(long, value_enum, default_value_t = SizeArg::Small)]
        size: SizeArg,
        /// nifti: SUV/CT/SEG .nii.gz; dicom: PET (BQML) and CT series under DICOM/ in a
        /// shuffled, nested layout with a stray non-DICOM file, plus labels.json.
        #[arg(long, value_enum, default_value_t = FormatArg::Nifti)]
        format: FormatArg,
    },
    /// Convert a folder of DICOM PET/CT files into pet_suv.nii.gz (SUVbw), ct.nii.gz (HU) and
    /// conversion.json (the SUV factors and the tags they came from). A folder holding several
    /// studies gets one sub-folder per study key.
    Convert {
        /// Config file (TOML); only `[limits]` applies here. Default: embedded defaults.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Output folder (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Folder of DICOM files, any nesting; non-DICOM files are ignored.
        input: PathBuf,
    },
    /// Run one study through the models and publish OUTBOX/<key>/ (result.json, overview.png,
    /// lesions.nii.gz; for DICOM input also lesions.seg.dcm, lesions.sr.dcm, overview.sc.dcm)
    /// in one rename. INPUT is only read. Exit 0 when
    /// published; otherwise a one-line reason and nothing written.
    Process {
        /// Config file (TOML): engines, models folder, overlap. Default: embedded defaults.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Folder to publish into (created if missing).
        #[arg(long)]
        outbox: PathBuf,
        /// Study folder: SUV.nii.gz or PET.nii.gz (+ CT.nii.gz), or DICOM files in any nesting.
        input: PathBuf,
    },
    /// Run the daemon in the foreground: watch the inbox, process every complete study,
    /// publish to the outbox (systemd Type=notify; SIGTERM drains and exits 0, SIGHUP reloads
    /// the config and the models). Studies move inbox/ → work/ → outbox/ + archive/, or
    /// failed/ with error.json.
    #[command(after_long_help = RUN_HELP)]
    Run {
        /// Config file (TOML). Default: embedded defaults (folders under /var/lib/tracerd).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Demonstration: unless --config is given, use folders under ./tracerd-demo/ with a
        /// 1 s settle time; drop a synthetic study into the inbox, process it, print the
        /// result and exit.
        #[arg(long)]
        demo: bool,
    },
    /// Validate a configuration and the folders it names; exits non-zero on any error.
    Check {
        /// Config file (TOML); without it the embedded defaults are checked.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// `tracerd run --help`: what an operator needs at the console.
const RUN_HELP: &str = "\
Folders (paths.* in the config; packaged default /var/lib/tracerd/):
  inbox/    drop one folder per study (NIfTI: SUV.nii.gz or PET.nii.gz [+ CT.nii.gz]; or DICOM
            files in any nesting). Complete after [watch] settle_seconds without change, at once
            with a .complete file in it, or (DICOM) when the PET's ImageIndex values are all there
            and a CT covers the PET's extent.
  work/     claimed studies, queued or in progress; re-queued at every start.
  outbox/   <key>/result.json, overview.png, lesions.nii.gz (+ .seg.dcm, .sr.dcm, overview.sc.dcm
            for DICOM input); each folder appears in one rename.
  archive/  the inputs of published studies ([daemon] inputs_after_publish = \"delete\" to drop them).
  failed/   <name>/ = the untouched inputs + error.json {stage, error, hint}; fix the cause and
            move the folder back into the inbox to retry.

Under systemd:
  systemctl status tracerd      STATUS line: queue, done, failed, last latency, engine
  journalctl -u tracerd         the log (ENTRY=<8 hex> selects one study's lines)
  systemctl reload tracerd      SIGHUP: re-read the config and reload the models
  tracerd check --config FILE   validate before (re)starting

Documentation: /usr/share/doc/tracerd/docs/operations.md (install, configuration, the daemon).";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FormatArg {
    Nifti,
    Dicom,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SizeArg {
    Small,
    Clinical,
}

impl From<SizeArg> for Size {
    fn from(s: SizeArg) -> Size {
        match s {
            SizeArg::Small => Size::Small,
            SizeArg::Clinical => Size::Clinical,
        }
    }
}

fn main() -> ExitCode {
    tracerd::daemon::service::init_logging();
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("tracerd: error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one subcommand; an `Err` is the one-line reason printed before exiting with status 1.
fn run(command: Command) -> Result<ExitCode, String> {
    match command {
        Command::Synth {
            out,
            seed,
            size,
            format,
        } => synth_study(&out, seed, size, format),
        Command::Convert { config, out, input } => convert(config.as_deref(), &out, &input),
        Command::Process {
            config,
            outbox,
            input,
        } => process(config.as_deref(), &outbox, &input),
        Command::Run { config, demo } => run_daemon(config, demo),
        Command::Check { config } => check(config.as_deref()),
    }
}

fn load_config(path: Option<&Path>) -> Result<Config, String> {
    Config::load(path).map_err(|e| e.to_string())
}

/// `tracerd synth`: one study, and a line saying what it holds.
fn synth_study(
    out: &Path,
    seed: u64,
    size: SizeArg,
    format: FormatArg,
) -> Result<ExitCode, String> {
    let options = SynthOptions {
        seed,
        size: size.into(),
    };
    let study = synth::generate(&options);
    match format {
        FormatArg::Nifti => synth::write_nifti(&study, out).map_err(|e| e.to_string())?,
        FormatArg::Dicom => {
            tracerd::synth::dicom::write_dicom(&study, out).map_err(|e| e.to_string())?;
        }
    }
    let o = &study.labels.outcomes;
    println!(
        "wrote synthetic study seed {seed} ({}) to {}: {} lesion(s); outcomes lr={} dm={} os={}",
        options.size,
        out.display(),
        study.labels.lesions.len(),
        o.lr,
        o.dm,
        o.os
    );
    Ok(ExitCode::SUCCESS)
}

/// `tracerd convert`: every study found under `input`, one line each; fails if any failed.
fn convert(config: Option<&Path>, out: &Path, input: &Path) -> Result<ExitCode, String> {
    let loaded = load_config(config)?;
    let results = dicom::convert(input, out, &loaded.limits).map_err(|e| e.to_string())?;
    let mut failed = 0;
    for r in &results {
        match &r.result {
            Ok(report) => println!(
                "{}: converted PET {} slices (SUV factor {:.6e}){} into {}",
                r.key,
                report.pet.slices,
                report.suv.suv_factor,
                report
                    .ct
                    .as_ref()
                    .map(|c| format!(" and CT {} slices", c.slices))
                    .unwrap_or_default(),
                r.dir.display()
            ),
            Err(e) => {
                failed += 1;
                eprintln!("tracerd: error: {}: {} stage: {e}", r.key, e.stage);
            }
        }
    }
    if failed > 0 {
        return Err(format!("{failed} of {} studies failed", results.len()));
    }
    Ok(ExitCode::SUCCESS)
}

/// `tracerd process`: one study folder through the models into `outbox`.
fn process(config: Option<&Path>, outbox: &Path, input: &Path) -> Result<ExitCode, String> {
    let loaded = load_config(config)?;
    // The study first: a bad input fails fast, before the models load.
    let started = std::time::Instant::now();
    let key = tracerd::process::key_from_folder(input, loaded.outbox.nifti_key);
    let study = tracerd::study::load(input, &key, &loaded.limits, &loaded.scope)
        .map_err(|e| e.to_string())?;
    let ingest_ms = started.elapsed().as_secs_f64() * 1e3;
    let mut processor = Processor::new(&loaded).map_err(|e| e.to_string())?;
    let published = processor
        .process_study(study, ingest_ms, outbox)
        .map_err(|e| e.to_string())?;
    println!("{}", published_line(&published));
    Ok(ExitCode::SUCCESS)
}

/// `tracerd run [--demo]`: the daemon; with `--demo`, one synthetic study dropped, processed and
/// compared with its ground truth, then exit.
fn run_daemon(config: Option<PathBuf>, demo: bool) -> Result<ExitCode, String> {
    let mut loaded = load_config(config.as_deref())?;
    let mut options = RunOptions {
        config_path: config.clone(),
        exit_after: None,
    };
    let mut truth = None;
    if demo {
        if config.is_none() {
            loaded = demo_config();
        }
        truth = Some(drop_demo_study(&loaded.paths.inbox)?);
        options.exit_after = Some(1);
    }
    let summary = daemon::run(loaded, options).map_err(|e| e.to_string())?;
    let Some(truth) = &truth else {
        return Ok(ExitCode::SUCCESS);
    };
    let published = summary
        .last_published
        .as_ref()
        .ok_or("the demo study was not published; see the log above")?;
    println!("{}", published_line(published));
    println!("{}", demo_truth_line(published, truth));
    println!(
        "the picture: {}",
        published.dir.join(tracerd::outbox::OVERVIEW_FILE).display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `tracerd check`: the effective configuration, then every check's result.
fn check(config: Option<&Path>) -> Result<ExitCode, String> {
    let loaded = load_config(config)?;
    match config {
        Some(path) => println!("# effective configuration from {}", path.display()),
        None => println!("# effective configuration (embedded defaults)"),
    }
    print!("{}", loaded.to_toml());
    println!();
    let report = tracerd::check::check(&loaded);
    print!("{report}");
    if !report.passed() {
        return Err(format!("check failed with {} error(s)", report.errors()));
    }
    println!("check passed");
    Ok(ExitCode::SUCCESS)
}

/// `run --demo` without a config: every folder under ./tracerd-demo/, quick to settle.
fn demo_config() -> Config {
    let mut c = Config::default();
    let root = PathBuf::from("tracerd-demo");
    c.paths.inbox = root.join("inbox");
    c.paths.work = root.join("work");
    c.paths.outbox = root.join("outbox");
    c.paths.failed = root.join("failed");
    c.paths.archive = root.join("archive");
    c.watch.settle_seconds = 1.0;
    c.watch.rescan_seconds = 1.0;
    c.watch.min_free_mib = 64;
    c
}

/// The demo's study: a held-out clinical phantom (never trained on), an adult scanned from the
/// skull base to the feet on a Philips grid (144×144 at 4 mm), with three neck nodes.
const DEMO_SEED: u64 = 100003;

/// Writes synthetic study [`DEMO_SEED`] into `inbox/demo-study-N`: under a hidden name first, then
/// renamed, the way a well-behaved sender delivers a study. Returns its ground-truth mask.
fn drop_demo_study(inbox: &std::path::Path) -> Result<tracerd::volume::Volume<u8>, String> {
    let dest = inbox.join(format!("demo-study-{DEMO_SEED}"));
    let staging = inbox.join(format!(".demo-study-{DEMO_SEED}.incoming"));
    std::fs::create_dir_all(inbox).map_err(|e| format!("{}: {e}", inbox.display()))?;
    let study = synth::generate(&SynthOptions {
        seed: DEMO_SEED,
        size: Size::Clinical,
    });
    synth::write_nifti(&study, &staging).map_err(|e| e.to_string())?;
    std::fs::rename(&staging, &dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    let pet = study.pet.geometry();
    println!(
        "dropped synthetic clinical study seed {DEMO_SEED} ({} PET {}×{}×{} at {:.2}×{:.2}×{:.2} mm, \
         {} lesion(s)) into {}",
        study
            .labels
            .acquisition
            .as_ref()
            .map_or("?", |a| a.scanner.as_str()),
        pet.shape[0],
        pet.shape[1],
        pet.shape[2],
        pet.spacing.x,
        pet.spacing.y,
        pet.spacing.z,
        study.labels.lesions.len(),
        dest.display()
    );
    Ok(study.seg)
}

/// How the demo's mask compares with the phantom's ground truth (autoPET Dice).
fn demo_truth_line(published: &Published, truth: &tracerd::volume::Volume<u8>) -> String {
    match tracerd::io::nifti::read_u8(&published.dir.join("lesions.nii.gz")) {
        Ok(mask) if mask.shape() == truth.shape() => format!(
            "ground truth: {} lesion voxel(s); Dice of the published mask against it {:.3}",
            truth.data().iter().filter(|v| **v != 0).count(),
            tracerd::models::l2snet::dice(mask.data(), truth.data())
        ),
        Ok(_) => "ground truth: the published mask is not on the PET grid".to_string(),
        Err(e) => format!("ground truth: no mask to compare ({e})"),
    }
}

/// One line about a published study: `published DIR: lesions; scores [engine on device]`.
fn published_line(published: &Published) -> String {
    let r = &published.result;
    let lesions = match &r.lesions {
        OrAbsent::Present(l) => format!("{} lesion(s), MTV {:.2} ml", l.count, l.mtv_ml),
        OrAbsent::Absent { reason } => format!("no lesion mask ({reason})"),
    };
    let scores = match &r.scores {
        OrAbsent::Present(s) => format!(
            "risk LR {:.3} DM {:.3} OS {:.3}",
            s.scores.lr, s.scores.dm, s.scores.os
        ),
        OrAbsent::Absent { reason } => format!("no scores ({reason})"),
    };
    format!(
        "published {}: {lesions}; {scores} [{} on {}]",
        published.dir.display(),
        r.backend.engine,
        r.backend.device
    )
}
