//! The DICOM listener (`[dicom_listener]`): a C-STORE and C-ECHO service class provider.
//!
//! Associations are accepted from the configured calling AE titles only, for the called AE
//! title of this node, with presentation contexts for PET and CT Image Storage and
//! Verification in the configured transfer syntaxes; any other SOP class is refused at
//! negotiation. Each instance is written to its study's staging folder ([`super::staging`])
//! exactly as received (the sender's data set behind a file meta group), `fsync`ed and
//! renamed into place *before* the C-STORE response is sent: what was acknowledged survives a
//! crash. Instances are named by a hash of their SOP Instance UID, so a sender that retries
//! stores each instance once. Nothing that identifies the patient is logged.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use dicom_dictionary_std::tags;
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::association::server::{AccessControl, ServerAssociation, ServerAssociationOptions};
use dicom_ul::pdu::{AssociationRJServiceUserReason, UserIdentity};

use super::dimse::{self, Command, status};
use super::message::{Incoming, Reader, send_command};
use super::staging::{Staging, study_folder};
use crate::config::DicomListener;
use crate::daemon::journal::name_hash;
use crate::daemon::metrics::Metrics;
use crate::fsio;
use crate::io::dicom::write::file_meta;

/// An association silent for this long is dropped (its slot is freed; what it sent is kept).
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// The running listener; [`Listener::stop`] ends it.
pub struct Listener {
    pub address: SocketAddr,
    stopping: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    promoter: Option<JoinHandle<()>>,
    stop_promoter: Option<crossbeam_channel::Sender<()>>,
}

/// Which calling AE titles may associate, and the called title that must be ours.
struct Allowed {
    callers: Vec<String>,
}

impl AccessControl for Allowed {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        if called_ae_title.trim() != this_ae_title.trim() {
            tracing::warn!(
                called = called_ae_title.trim(),
                "association refused: not our AE title"
            );
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        let calling = calling_ae_title.trim();
        if self.callers.iter().any(|c| c == "*" || c.trim() == calling) {
            Ok(())
        } else {
            tracing::warn!(
                calling,
                "association refused: calling AE title not in dicom_listener.allowed_calling_ae_titles"
            );
            Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized)
        }
    }
}

/// What every association thread shares.
struct Context {
    options: ServerAssociationOptions<
        'static,
        Allowed,
        dicom_ul::association::server::DefaultNegotiation,
    >,
    staging: Arc<Staging>,
    /// Free space (bytes) the inbox's filesystem must keep; below it instances are refused.
    min_free: u64,
    active: AtomicUsize,
    max_associations: usize,
    metrics: Arc<Metrics>,
}

impl Listener {
    /// Binds `config.listen` and starts accepting associations into `inbox`'s staging folder;
    /// `settle` gives the current `watch.settle_seconds`.
    pub fn start(
        config: &DicomListener,
        inbox: &Path,
        min_free_mib: u64,
        metrics: Arc<Metrics>,
        settle: impl Fn() -> Duration + Send + 'static,
    ) -> io::Result<Listener> {
        let socket = TcpListener::bind(&config.listen)?;
        let address = socket.local_addr()?;
        let (staging, changes) = Staging::open(inbox)?;
        let context = Arc::new(Context {
            options: options(config),
            staging: staging.clone(),
            min_free: min_free_mib.saturating_mul(1 << 20),
            active: AtomicUsize::new(0),
            max_associations: config.max_associations,
            metrics,
        });
        let stopping = Arc::new(AtomicBool::new(false));
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let promoter = std::thread::Builder::new()
            .name("dicom-promoter".into())
            .spawn(move || staging.run_promoter(settle, changes, stop_rx))?;
        let flag = stopping.clone();
        let accept = std::thread::Builder::new()
            .name("dicom-listener".into())
            .spawn(move || accept_loop(socket, context, flag))?;
        Ok(Listener {
            address,
            stopping,
            accept: Some(accept),
            promoter: Some(promoter),
            stop_promoter: Some(stop_tx),
        })
    }

    /// Stops accepting (associations in progress finish on their own threads).
    pub fn stop(mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&wake_address(self.address), Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        drop(self.stop_promoter.take());
        if let Some(t) = self.promoter.take() {
            let _ = t.join();
        }
    }
}

/// Where to connect to reach our own socket (an unspecified bind address is reached on
/// loopback).
fn wake_address(a: SocketAddr) -> SocketAddr {
    let ip = match a.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    SocketAddr::new(ip, a.port())
}

fn options(
    config: &DicomListener,
) -> ServerAssociationOptions<'static, Allowed, dicom_ul::association::server::DefaultNegotiation> {
    let mut o = ServerAssociationOptions::new()
        .ae_access_control(Allowed {
            callers: config.allowed_calling_ae_titles.clone(),
        })
        .ae_title(config.ae_title.clone())
        .with_abstract_syntax(dimse::VERIFICATION)
        .with_abstract_syntax(dimse::PET_IMAGE_STORAGE)
        .with_abstract_syntax(dimse::CT_IMAGE_STORAGE)
        .read_timeout(IDLE_TIMEOUT)
        .write_timeout(IDLE_TIMEOUT);
    for ts in &config.transfer_syntaxes {
        o = o.with_transfer_syntax(ts.clone());
    }
    o
}

fn accept_loop(socket: TcpListener, context: Arc<Context>, stopping: Arc<AtomicBool>) {
    for stream in socket.incoming() {
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let stream = match stream {
            Ok(s) => s,
            Err(error) => {
                tracing::warn!(%error, "cannot accept a DICOM connection");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let peer = stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        if context.active.fetch_add(1, Ordering::SeqCst) >= context.max_associations {
            context.active.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!(%peer, limit = context.max_associations, "too many DICOM associations at once; connection closed");
            continue;
        }
        let ctx = context.clone();
        let spawned = std::thread::Builder::new()
            .name("dicom-association".into())
            .spawn(move || {
                serve(stream, &ctx, &peer);
                ctx.active.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(error) = spawned {
            context.active.fetch_sub(1, Ordering::SeqCst);
            tracing::error!(%error, "cannot start a thread for a DICOM association");
        }
    }
}

/// The studies one association has written to; left when it ends, however it ends.
struct Touched<'a> {
    staging: &'a Staging,
    studies: HashSet<String>,
}

impl Touched<'_> {
    fn dir(&mut self, study: &str) -> io::Result<PathBuf> {
        if !self.studies.contains(study) {
            let dir = self.staging.enter(study)?;
            self.studies.insert(study.to_string());
            return Ok(dir);
        }
        Ok(self.staging.dir(study))
    }
}

impl Drop for Touched<'_> {
    fn drop(&mut self) {
        for study in &self.studies {
            self.staging.leave(study);
        }
    }
}

/// One association, from negotiation to release.
fn serve(stream: TcpStream, ctx: &Context, peer: &str) {
    let _ = stream.set_nodelay(true);
    let mut assoc = match ctx.options.establish(stream) {
        Ok(a) => a,
        Err(error) => {
            tracing::info!(%peer, %error, "DICOM association not established");
            return;
        }
    };
    let calling = dicom_ul::association::Association::peer_ae_title(&assoc)
        .trim()
        .to_string();
    tracing::debug!(%peer, calling = %calling, "DICOM association accepted");
    let mut touched = Touched {
        staging: &ctx.staging,
        studies: HashSet::new(),
    };
    let mut stored = 0usize;
    let mut reader = Reader::default();
    let end = loop {
        match next(&mut assoc, &mut reader, ctx, &mut touched) {
            Ok(Some(n)) => stored += n,
            Ok(None) => break "released",
            Err(error) => {
                tracing::warn!(%peer, calling = %calling, %error, stored, "DICOM association ended abnormally");
                let _ = assoc.abort();
                return;
            }
        }
    };
    tracing::info!(%peer, calling = %calling, stored, studies = touched.studies.len(), "DICOM association {end}");
}

/// Reads and answers one message; `Ok(None)` when the association has ended (released or
/// aborted by the peer), else how many instances were stored (0 or 1).
fn next(
    assoc: &mut ServerAssociation<TcpStream>,
    reader: &mut Reader,
    ctx: &Context,
    touched: &mut Touched,
) -> Result<Option<usize>, String> {
    let (context, bytes) = match reader.command(assoc).map_err(|e| e.to_string())? {
        Incoming::Command { context, bytes } => (context, bytes),
        Incoming::Released | Incoming::Aborted => return Ok(None),
    };
    let command = dimse::parse_command(&bytes)?;
    let data = match command.has_data() {
        true => Some(reader.data(assoc, context).map_err(|e| e.to_string())?),
        false => None,
    };
    let (reply, stored) = match command {
        Command::Echo { message_id } => (dimse::echo_rsp(message_id), 0),
        Command::Store {
            message_id,
            sop_class,
            sop_instance,
        } => {
            let ts = transfer_syntax(assoc, context)?;
            let data = data.unwrap_or_default();
            let code = store(ctx, touched, &ts, &sop_class, &sop_instance, data);
            ctx.metrics.instance(code == status::SUCCESS);
            let reply = dimse::store_rsp(message_id, &sop_class, &sop_instance, code);
            (reply, usize::from(code == status::SUCCESS))
        }
        Command::Other {
            field, message_id, ..
        } => (dimse::unrecognized_rsp(field, message_id), 0),
    };
    send_command(assoc, context, reply).map_err(|e| e.to_string())?;
    Ok(Some(stored))
}

fn transfer_syntax(assoc: &ServerAssociation<TcpStream>, context: u8) -> Result<String, String> {
    assoc
        .presentation_contexts()
        .iter()
        .find(|pc| pc.id == context)
        .map(|pc| pc.transfer_syntax.trim_end_matches(['\0', ' ']).to_string())
        .ok_or_else(|| format!("message on unknown presentation context {context}"))
}

/// Stores one instance; the C-STORE status to answer.
fn store(
    ctx: &Context,
    touched: &mut Touched,
    ts: &str,
    sop_class: &str,
    sop_instance: &str,
    data: Vec<u8>,
) -> u16 {
    if free_bytes(ctx.staging.root()).is_ok_and(|free| free < ctx.min_free) {
        tracing::warn!("instance refused: the inbox's filesystem is below watch.min_free_mib");
        return status::OUT_OF_RESOURCES;
    }
    let study_uid = match study_uid(ts, &data, sop_class, sop_instance) {
        Ok(uid) => uid,
        Err((code, why)) => {
            tracing::warn!(reason = %why, "instance refused");
            return code;
        }
    };
    let written = touched
        .dir(&study_folder(&study_uid))
        .and_then(|dir| write_instance(&dir, ts, sop_class, sop_instance, &data));
    match written {
        Ok(()) => status::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "cannot write a received instance; refused");
            status::OUT_OF_RESOURCES
        }
    }
}

/// The StudyInstanceUID of a received data set, checked against the command's SOP class and
/// instance.
fn study_uid(
    ts: &str,
    data: &[u8],
    sop_class: &str,
    sop_instance: &str,
) -> Result<String, (u16, String)> {
    let syntax = TransferSyntaxRegistry.get(ts).ok_or((
        status::CANNOT_UNDERSTAND,
        format!("unknown transfer syntax {ts}"),
    ))?;
    let obj = InMemDicomObject::read_dataset_with_ts(data, syntax).map_err(|e| {
        (
            status::CANNOT_UNDERSTAND,
            format!("unreadable data set: {e}"),
        )
    })?;
    let text = |tag| {
        obj.get(tag)
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
    };
    if text(tags::SOP_INSTANCE_UID).as_deref() != Some(sop_instance)
        || text(tags::SOP_CLASS_UID).as_deref() != Some(sop_class)
    {
        return Err((
            status::DATA_SET_MISMATCH,
            "the data set's SOP Class/Instance UID differ from the command's".into(),
        ));
    }
    text(tags::STUDY_INSTANCE_UID)
        .filter(|u| !u.is_empty())
        .ok_or((status::CANNOT_UNDERSTAND, "no StudyInstanceUID".into()))
}

/// Writes `<dir>/<hash of the SOP Instance UID>.dcm`: preamble, `DICM`, file meta group, and
/// the data set's bytes as received; durable before this returns.
fn write_instance(
    dir: &Path,
    ts: &str,
    sop_class: &str,
    sop_instance: &str,
    data: &[u8],
) -> io::Result<()> {
    let meta = file_meta(sop_class, sop_instance, ts)?;
    let name = name_hash(sop_instance, 8);
    fsio::write_atomic(&dir.join(format!("{name}.dcm")), |tmp| {
        let mut f = io::BufWriter::new(File::create(tmp)?);
        f.write_all(&[0u8; 128])?;
        f.write_all(b"DICM")?;
        meta.write(&mut f).map_err(io::Error::other)?;
        f.write_all(data)?;
        f.into_inner().map_err(|e| e.into_error())?.flush()
    })
}

fn free_bytes(path: &Path) -> io::Result<u64> {
    let s = rustix::fs::statvfs(path)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}
