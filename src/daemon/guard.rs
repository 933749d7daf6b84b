//! Panics are bugs in tracerd, never a study's fault and never the daemon's end: each study's
//! work in a stage runs behind [`guarded`], which turns a panic into that study's error. The
//! panic hook logs where it happened (file and line only: a panic message can quote input, and
//! input may name a patient).

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};

use crate::study::{Stage, StudyError};

/// Thread names of the daemon's stages; their panics are logged by [`install_hook`].
const STAGE_THREADS: [&str; 4] = ["scanner", "ingest-", "inference", "publisher"];

thread_local! {
    /// Where the last panic on this thread happened (`file:line`).
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Logs panics on stage threads by location (not message) and remembers it for [`guarded`];
/// panics on other threads go to the hook that was there before.
pub(super) fn install_hook() {
    let previous = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("");
        if !STAGE_THREADS.iter().any(|s| name.starts_with(s)) {
            return previous(info);
        }
        let at = info.location().map_or_else(
            || "an unknown place".to_string(),
            |l| format!("{}:{}", l.file(), l.line()),
        );
        tracing::error!(thread = name, at = %at, "internal error: tracerd panicked");
        LAST_PANIC.with(|p| *p.borrow_mut() = Some(at));
    }));
}

/// Runs one study's `work` in `stage`; a panic becomes the study's error (non-transient: the
/// same input would panic again) and the stage goes on with the next study.
pub(super) fn guarded<T>(
    stage: Stage,
    name: &str,
    work: impl FnOnce() -> Result<T, StudyError>,
) -> Result<T, StudyError> {
    panic::catch_unwind(AssertUnwindSafe(|| {
        fault::maybe_panic(stage, name);
        work()
    }))
    .unwrap_or_else(|_| {
        let at = LAST_PANIC
            .with(|p| p.borrow_mut().take())
            .unwrap_or_else(|| "an unknown place".into());
        Err(StudyError::new(
            stage,
            format!("internal error: tracerd panicked at {at}"),
            "a bug in tracerd, not necessarily in this study: report it with the log \
             (journalctl -u tracerd); move the folder back into the inbox to try again after an update",
        ))
    })
}

/// Fault injection for tests, compiled into debug builds only: `TRACERD_TEST_PANIC=<stage>:<name>`
/// makes `stage` panic on the study whose inbox name starts with `name`
/// (`TRACERD_TEST_ABORT=…` aborts the whole process there instead, as an allocation failure
/// or the OOM killer would; `TRACERD_TEST_HANG=…` blocks the stage for good, as a hung network
/// share would); `TRACERD_TEST_PANIC=thread:<stage>` ends that stage's thread outside any
/// study.
pub(super) mod fault {
    use crate::study::Stage;

    #[cfg(debug_assertions)]
    fn wanted(what: &str) -> bool {
        std::env::var("TRACERD_TEST_PANIC").is_ok_and(|v| v == what)
    }

    /// Panics (or aborts the process) when the test asked for it in `stage` on study `name`.
    pub fn maybe_panic(stage: Stage, name: &str) {
        #[cfg(debug_assertions)]
        for var in [
            "TRACERD_TEST_PANIC",
            "TRACERD_TEST_ABORT",
            "TRACERD_TEST_HANG",
        ] {
            if let Ok(v) = std::env::var(var)
                && let Some((s, prefix)) = v.split_once(':')
                && s == stage.to_string()
                && name.starts_with(prefix)
            {
                match var {
                    "TRACERD_TEST_ABORT" => std::process::abort(),
                    "TRACERD_TEST_HANG" => loop {
                        std::thread::sleep(std::time::Duration::from_secs(1));
                    },
                    _ => panic!("injected by {var} in {stage}"),
                }
            }
        }
        let _ = (stage, name);
    }

    /// Panics outside any study when the test asked for `thread:<stage>`.
    pub fn maybe_kill_thread(stage: &str) {
        #[cfg(debug_assertions)]
        if wanted(&format!("thread:{stage}")) {
            panic!("injected by TRACERD_TEST_PANIC: thread {stage}");
        }
        let _ = stage;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_in_a_study_is_that_studys_error_with_the_place_not_the_message() {
        install_hook();
        let r = std::thread::Builder::new()
            .name("ingest-9".into())
            .spawn(|| {
                guarded::<()>(Stage::Ingest, "x", || {
                    let uid = "1.2.3é4";
                    let _ = &uid[..6]; // the slicing bug of issue 16 row 1: quotes the input
                    Ok(())
                })
            })
            .unwrap()
            .join()
            .expect("the panic stays inside the guard");
        let e = r.unwrap_err();
        assert_eq!(e.stage, Stage::Ingest);
        assert!(
            e.error
                .starts_with("internal error: tracerd panicked at src/daemon/guard.rs:"),
            "{}",
            e.error
        );
        assert!(
            !e.error.contains("1.2.3"),
            "the message is not quoted: {}",
            e.error
        );
        assert!(!e.transient);
    }

    #[test]
    fn work_that_does_not_panic_passes_through() {
        assert_eq!(guarded(Stage::Publish, "x", || Ok(7)).unwrap(), 7);
        let e = guarded::<()>(Stage::Publish, "x", || {
            Err(StudyError::new(Stage::Publish, "full", "free space"))
        });
        assert_eq!(e.unwrap_err().error, "full");
    }
}
