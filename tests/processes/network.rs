//! tracerd on the network, against real DICOM software: DCMTK's `storescu`/`echoscu` and
//! pynetdicom send studies to the listener (shuffled over two associations, two studies in one
//! association, and with the daemon killed mid-association), and Orthanc (with its DICOMweb plugin) receives the results
//! by C-STORE and STOW-RS, once, also when it is down for a minute and tracerd restarts
//! meanwhile.

use crate::common;

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::daemon::{Settings, Spool, serial, signal, wait_exit, wait_until};
use tracerd::synth::{self, Size, SynthOptions};

/// A port free on loopback now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A small synthetic PET/CT study as a scanner's DICOM export, and its files.
fn dicom_study(dir: &Path, seed: u64) -> Vec<PathBuf> {
    let study = synth::generate(&SynthOptions {
        seed,
        size: Size::Small,
    });
    synth::dicom::write_dicom(&study, dir).unwrap();
    common::files_below(dir)
        .into_iter()
        .filter(|p| fs::read(p).is_ok_and(|b| b.len() > 132 && &b[128..132] == b"DICM"))
        .collect()
}

/// `files` in a seeded shuffle, cut in two.
fn shuffled_halves(mut files: Vec<PathBuf>, seed: u64) -> (Vec<PathBuf>, Vec<PathBuf>) {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    files.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    let rest = files.split_off(files.len() / 2);
    (files, rest)
}

/// A daemon with `settle_seconds` and a `[dicom_listener]` on a free loopback port for
/// `callers` (a TOML list), started and listening.
fn listening(settle_seconds: f64, callers: &str) -> (Spool, u16, Child) {
    let spool = Spool::new(&Settings {
        settle_seconds,
        ..Settings::default()
    });
    let port = free_port();
    let mut text = fs::read_to_string(&spool.config).unwrap();
    text.push_str(&format!(
        "\n[dicom_listener]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\nae_title = \"TRACERD\"\n\
         allowed_calling_ae_titles = {callers}\n"
    ));
    fs::write(&spool.config, text).unwrap();
    let daemon = spool.spawn(&[]);
    wait_until(&spool, Duration::from_secs(60), "the listener", || {
        spool.log().contains("DICOM listener ready")
    });
    (spool, port, daemon)
}

fn storescu(port: u16, calling: &str, files: &[PathBuf]) -> std::process::Output {
    Command::new("storescu")
        .args([
            "-v",
            "-aec",
            "TRACERD",
            "-aet",
            calling,
            "127.0.0.1",
            &port.to_string(),
        ])
        .args(files)
        .output()
        .expect("storescu (Debian dcmtk) must be installed")
}

/// Results in the outbox, with their `result.json`.
fn results(spool: &Spool) -> Vec<serde_json::Value> {
    spool
        .studies("outbox")
        .iter()
        .map(|k| common::read_json(&spool.dir("outbox").join(k).join("result.json")))
        .collect()
}

#[test]
fn dcmtk_and_pynetdicom_each_send_a_study_over_two_associations_processed_once() {
    let _serial = serial();
    let (spool, port, mut daemon) = listening(20.0, r#"["STORESCU", "PYNETDICOM"]"#);
    let echo = Command::new("echoscu")
        .args([
            "-aec",
            "TRACERD",
            "-aet",
            "STORESCU",
            "127.0.0.1",
            &port.to_string(),
        ])
        .status()
        .unwrap();
    assert!(echo.success(), "C-ECHO");
    let refused = Command::new("echoscu")
        .args([
            "-aec",
            "TRACERD",
            "-aet",
            "INTRUDER",
            "127.0.0.1",
            &port.to_string(),
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Calling AE Title Not Recognized"));

    // DCMTK: study 1 in two associations.
    let (a, b) = shuffled_halves(dicom_study(&spool.dir("src1"), 91), 1);
    for half in [&a, &b] {
        let out = storescu(port, "STORESCU", half);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // pynetdicom: study 2 in two associations from one process, the second carrying all of
    // study 3 too (several studies in one association).
    let (c, mut d) = shuffled_halves(dicom_study(&spool.dir("src2"), 92), 2);
    let e = dicom_study(&spool.dir("src3"), 95);
    d.extend(e.iter().cloned());
    let lists: Vec<PathBuf> = [("c", &c), ("d", &d)]
        .iter()
        .map(|(n, files)| {
            let list = spool.dir(&format!("list-{n}.txt"));
            let text: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
            fs::write(&list, text.join("\n")).unwrap();
            list
        })
        .collect();
    let py = Command::new(common::python())
        .arg(common::repo_root().join("tests/oracle/net_send.py"))
        .args(["127.0.0.1", &port.to_string(), "TRACERD", "PYNETDICOM"])
        .args(&lists)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&py.stdout);
    assert!(
        py.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&py.stderr)
    );
    assert_eq!(said.matches("stored").count(), 2, "{said}");

    wait_until(&spool, Duration::from_secs(300), "three results", || {
        spool.studies("outbox").len() == 3 && spool.studies("archive").len() == 3
    });
    std::thread::sleep(Duration::from_secs(2));
    let log = spool.log();
    assert_eq!(
        log.matches(" published ").count(),
        3,
        "each study once:\n{log}"
    );
    assert!(
        spool.studies("failed").is_empty(),
        "{:?}",
        spool.studies("failed")
    );
    assert!(spool.studies("inbox").is_empty());
    for r in results(&spool) {
        assert_eq!(r["inputs"]["format"], "dicom", "{r}");
        assert!(
            r["outputs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|o| o == "overview.sc.dcm")
        );
    }
    for archived in spool.studies("archive") {
        assert!(archived.starts_with("dicom-"), "{archived}");
        let n = common::files_below(&spool.dir("archive").join(&archived))
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
            .count();
        let sent = [a.len() + b.len(), c.len() + d.len() - e.len(), e.len()];
        assert!(sent.contains(&n), "every instance, once: {n} of {sent:?}");
    }

    let metrics = spool.scrape();
    let stored = a.len() + b.len() + c.len() + d.len(); // d holds study 3
    let line = format!("tracerd_dicom_instances_total{{outcome=\"stored\"}} {stored}");
    assert!(metrics.contains(&line), "{line}\n{metrics}");

    // A non-image SOP class (the SR just published) is refused at negotiation.
    let key = &spool.studies("outbox")[0];
    let sr = spool.dir("outbox").join(key).join("lesions.sr.dcm");
    let out = storescu(port, "STORESCU", &[sr]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("No presentation context"), "{err}");
    let staged = common::files_below(&spool.dir("inbox"));
    assert!(staged.is_empty(), "nothing stored: {staged:?}");

    // No identifier of the patient or the study in the log.
    let uid_like = log
        .split_whitespace()
        .any(|w| w.contains("2.25.") && w.len() > 30);
    assert!(!uid_like, "{log}");
    signal(&daemon, "TERM");
    assert_eq!(wait_exit(&mut daemon, Duration::from_secs(60)), Some(0));
}

/// Files in the listener's staging folder.
fn staged(spool: &Spool) -> usize {
    let root = spool.dir("inbox").join(tracerd::net::staging::STAGING_DIR);
    if !root.is_dir() {
        return 0;
    }
    common::files_below(&root)
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .count()
}

#[test]
fn a_kill_during_an_association_loses_nothing_acknowledged_and_the_retry_completes_the_study() {
    let _serial = serial();
    let (spool, port, mut daemon) = listening(30.0, r#"["STORESCU"]"#);
    let files = dicom_study(&spool.dir("src"), 93);
    let sender: Child = Command::new("storescu")
        .args([
            "-v",
            "-aec",
            "TRACERD",
            "-aet",
            "STORESCU",
            "127.0.0.1",
            &port.to_string(),
        ])
        .args(&files)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the daemon once a few dozen instances are in.
    wait_until(
        &spool,
        Duration::from_secs(60),
        "instances arriving",
        || staged(&spool) >= 30,
    );
    signal(&daemon, "KILL");
    let _ = wait_exit(&mut daemon, Duration::from_secs(10));
    let out = sender.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "the sender saw the association break"
    );
    let acknowledged = String::from_utf8_lossy(&out.stderr)
        .matches("Received Store Response (Success)")
        .count();
    let on_disk = staged(&spool);
    assert!(
        acknowledged >= 30 && acknowledged < files.len(),
        "{acknowledged}"
    );
    assert!(
        on_disk >= acknowledged,
        "acknowledged {acknowledged}, on disk {on_disk}"
    );

    // Restarted; the sender retries everything (DCMTK sends the whole list again).
    let mut daemon = spool.spawn(&[]);
    wait_until(
        &spool,
        Duration::from_secs(60),
        "the listener again",
        || spool.log().matches("DICOM listener ready").count() == 2,
    );
    let out = storescu(port, "STORESCU", &files);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(&spool, Duration::from_secs(180), "the result", || {
        spool.studies("outbox").len() == 1 && spool.studies("archive").len() == 1
    });
    std::thread::sleep(Duration::from_secs(2));
    let archived = spool.dir("archive").join(&spool.studies("archive")[0]);
    let n = common::files_below(&archived)
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .count();
    assert_eq!(n, files.len(), "each instance once");
    assert_eq!(spool.log().matches(" published ").count(), 1);
    assert!(spool.studies("failed").is_empty());
    assert_eq!(staged(&spool), 0);
    signal(&daemon, "TERM");
    assert_eq!(wait_exit(&mut daemon, Duration::from_secs(60)), Some(0));
}

/// An Orthanc server with its own temporary storage and config, DICOMweb plugin loaded;
/// killed when dropped.
struct Orthanc {
    dir: tempfile::TempDir,
    http: u16,
    dicom: u16,
    child: Option<Child>,
}

impl Orthanc {
    fn new() -> Orthanc {
        let dir = tempfile::tempdir().unwrap();
        let (http, dicom) = (free_port(), free_port());
        let config = serde_json::json!({
            "Name": "tracerd-test",
            "StorageDirectory": dir.path().join("db"),
            "IndexDirectory": dir.path().join("db"),
            "HttpPort": http,
            "DicomPort": dicom,
            "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": false,
            "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
            "DicomWeb": {"Enable": true, "Root": "/dicom-web/"}
        });
        fs::write(dir.path().join("orthanc.json"), config.to_string()).unwrap();
        Orthanc {
            dir,
            http,
            dicom,
            child: None,
        }
    }

    fn start(&mut self) {
        let log = fs::File::create(self.dir.path().join("orthanc.log")).unwrap();
        // Debian installs it in /usr/sbin, which a non-root PATH may lack.
        let binary = ["/usr/sbin/Orthanc", "Orthanc"]
            .into_iter()
            .find(|b| Path::new(b).exists())
            .unwrap_or("Orthanc");
        let child = Command::new(binary)
            .arg(self.dir.path().join("orthanc.json"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("Orthanc (Debian orthanc, orthanc-dicomweb) must be installed");
        self.child = Some(child);
        for _ in 0..100 {
            if self.get("/system").is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("Orthanc did not start");
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn get(&self, path: &str) -> Option<serde_json::Value> {
        let mut r = ureq::get(format!("http://127.0.0.1:{}{path}", self.http))
            .call()
            .ok()?;
        let text = r.body_mut().read_to_string().ok()?;
        serde_json::from_str(&text).ok()
    }

    /// SOP Instance UID → (SOP Class UID, NumberOfFrames) of every instance stored.
    fn instances(&self) -> Vec<(String, String, Option<String>)> {
        let ids = self.get("/instances").unwrap();
        ids.as_array()
            .unwrap()
            .iter()
            .map(|id| {
                let t = self
                    .get(&format!(
                        "/instances/{}/simplified-tags",
                        id.as_str().unwrap()
                    ))
                    .unwrap();
                let s = |k: &str| t[k].as_str().map(str::to_string);
                (
                    s("SOPInstanceUID").unwrap(),
                    s("SOPClassUID").unwrap(),
                    s("NumberOfFrames"),
                )
            })
            .collect()
    }

    /// How many instances Orthanc took in as new.
    fn new_instance_events(&self) -> usize {
        let changes = self.get("/changes?limit=1000").unwrap();
        changes["Changes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["ChangeType"] == "NewInstance")
            .count()
    }
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// SOP Class UID, SOP Instance UID and NumberOfFrames of a Part-10 file.
fn uids(path: &Path) -> (String, String, Option<String>) {
    let obj = dicom_object::open_file(path).unwrap();
    let s = |t| {
        obj.element(t)
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches('\0')
            .to_string()
    };
    let frames = obj
        .element_opt(dicom_dictionary_std::tags::NUMBER_OF_FRAMES)
        .unwrap()
        .map(|e| e.to_str().unwrap().trim().to_string());
    use dicom_dictionary_std::tags::{SOP_CLASS_UID, SOP_INSTANCE_UID};
    (s(SOP_INSTANCE_UID), s(SOP_CLASS_UID), frames)
}

#[test]
fn orthanc_receives_the_results_by_c_store_and_stow_rs_exactly_once_through_an_outage_and_a_restart()
 {
    let _serial = serial();
    let spool = Spool::new(&Settings::default());
    let mut dimse = Orthanc::new();
    let mut web = Orthanc::new();
    dimse.start();
    let mut text = fs::read_to_string(&spool.config).unwrap();
    text.push_str(&format!(
        "\n[delivery]\nretry_initial_seconds = 5\nretry_max_seconds = 10\ntimeout_seconds = 5\n\n\
         [[delivery.destinations]]\nname = \"pacs\"\nprotocol = \"c-store\"\n\
         address = \"127.0.0.1:{}\"\nae_title = \"ORTHANC\"\n\n\
         [[delivery.destinations]]\nname = \"web\"\nprotocol = \"stow-rs\"\n\
         url = \"http://127.0.0.1:{}/dicom-web\"\n",
        dimse.dicom, web.http
    ));
    fs::write(&spool.config, text).unwrap();
    // `tracerd check`: the C-STORE node answers C-ECHO; the DICOMweb one, still down, is a
    // warning (results wait for it), not an error.
    let check = Command::new(env!("CARGO_BIN_EXE_tracerd"))
        .args(["check", "--config"])
        .arg(&spool.config)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{said}");
    assert!(
        said.contains("ok    delivery to pacs: answers C-ECHO (ORTHANC at 127.0.0.1:"),
        "{said}"
    );
    assert!(said.contains("warn  delivery to web: "), "{said}");
    dicom_study(&spool.dir("inbox/study"), 94);
    let mut daemon = spool.spawn(&[]);
    wait_until(&spool, Duration::from_secs(180), "the result", || {
        spool.studies("outbox").len() == 1
    });
    let key = spool.studies("outbox")[0].clone();
    let result = spool.dir("outbox").join(&key).join("result.json");
    let state = |name: &str| {
        let r = common::read_json(&result);
        r["delivery"]["destinations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .unwrap()
            .clone()
    };
    wait_until(&spool, Duration::from_secs(60), "C-STORE delivery", || {
        state("pacs")["state"] == "delivered"
    });
    // The DICOMweb server is down: tries fail and are recorded.
    wait_until(&spool, Duration::from_secs(60), "two failed tries", || {
        state("web")["attempts"].as_u64() >= Some(2)
    });
    let w = state("web");
    assert_eq!(w["state"], "pending", "{w}");
    assert!(w["last_error"].as_str().unwrap().contains("POST"), "{w}");
    // A restart while it is still down.
    signal(&daemon, "TERM");
    assert_eq!(wait_exit(&mut daemon, Duration::from_secs(60)), Some(0));
    let mut daemon = spool.spawn(&[]);
    std::thread::sleep(Duration::from_secs(50));
    web.start();
    wait_until(&spool, Duration::from_secs(60), "STOW-RS delivery", || {
        state("web")["state"] == "delivered"
    });
    let outputs = ["lesions.seg.dcm", "lesions.sr.dcm", "overview.sc.dcm"];
    let mut expected: Vec<_> = outputs
        .iter()
        .map(|f| uids(&spool.dir("outbox").join(&key).join(f)))
        .collect();
    expected.sort();
    for orthanc in [&dimse, &web] {
        let mut got = orthanc.instances();
        got.sort();
        assert_eq!(got, expected, "UIDs and frame counts as written");
        assert_eq!(orthanc.new_instance_events(), outputs.len(), "each once");
    }
    let seg_frames = expected
        .iter()
        .find(|e| e.1 == "1.2.840.10008.5.1.4.1.1.66.4")
        .unwrap();
    assert!(
        seg_frames
            .2
            .as_deref()
            .is_some_and(|n| n.parse::<u32>().unwrap() > 0)
    );
    let log = spool.log();
    assert_eq!(
        log.matches("results delivered destination=pacs").count(),
        1,
        "{log}"
    );
    assert_eq!(
        log.matches("results delivered destination=web").count(),
        1,
        "{log}"
    );
    assert!(log.contains("delivery failed; will retry"));
    assert_eq!(
        state("pacs")["attempts"],
        1,
        "nothing sent twice after the restart"
    );
    signal(&daemon, "TERM");
    assert_eq!(wait_exit(&mut daemon, Duration::from_secs(60)), Some(0));
}
