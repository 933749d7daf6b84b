//! tracerd as a DICOM client: C-ECHO (for `tracerd check`) and C-STORE of result files
//! (delivery), each over one association.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use dicom_ul::association::client::{ClientAssociation, ClientAssociationOptions};

use super::dimse;
use super::message::{Incoming, Reader, send_command};

/// Where and as whom to associate.
#[derive(Debug, Clone)]
pub struct Peer {
    /// `host:port`.
    pub address: String,
    pub called: String,
    pub calling: String,
    pub timeout: Duration,
}

/// A Part-10 file split into what C-STORE needs.
#[derive(Debug)]
pub struct Instance {
    pub name: String,
    pub sop_class: String,
    pub sop_instance: String,
    pub transfer_syntax: String,
    /// The data set (after the file meta group).
    pub data: Vec<u8>,
}

impl Instance {
    /// Splits a Part-10 file: its meta group's UIDs, and the data set after it.
    pub fn from_part10(name: &str, bytes: &[u8]) -> Result<Instance, String> {
        let bad = |why: &str| format!("{name}: not a DICOM Part 10 file ({why})");
        if bytes.len() < 144 || &bytes[128..132] != b"DICM" {
            return Err(bad("no DICM marker"));
        }
        let meta = dicom_object::FileMetaTable::from_reader(&bytes[128..])
            .map_err(|e| bad(&e.to_string()))?;
        // (0002,0000) UL: the group's length after it.
        let group = u32::from_le_bytes(bytes[140..144].try_into().expect("4 bytes")) as usize;
        let start = 144 + group;
        let data = bytes
            .get(start..)
            .ok_or_else(|| bad("truncated meta group"))?;
        let uid = |s: &str| s.trim_end_matches(['\0', ' ']).to_string();
        Ok(Instance {
            name: name.to_string(),
            sop_class: uid(&meta.media_storage_sop_class_uid),
            sop_instance: uid(&meta.media_storage_sop_instance_uid),
            transfer_syntax: uid(&meta.transfer_syntax),
            data: data.to_vec(),
        })
    }
}

fn connect(
    options: ClientAssociationOptions<'_>,
    peer: &Peer,
) -> Result<ClientAssociation<TcpStream>, String> {
    options
        .calling_ae_title(peer.calling.to_string())
        .called_ae_title(peer.called.to_string())
        .connection_timeout(peer.timeout)
        .read_timeout(peer.timeout)
        .write_timeout(peer.timeout)
        .establish(peer.address.as_str())
        .map_err(|e| format!("association with {} ({}): {e}", peer.called, peer.address))
}

/// The response to the message just sent.
fn response(
    assoc: &mut ClientAssociation<TcpStream>,
    reader: &mut Reader,
) -> Result<dimse::Response, String> {
    match reader.command(assoc).map_err(|e| e.to_string())? {
        Incoming::Command { bytes, .. } => dimse::parse_response(&bytes),
        Incoming::Released | Incoming::Aborted => Err("the peer ended the association".into()),
    }
}

/// C-ECHO: whether the node answers, and as what we expect.
pub fn echo(peer: &Peer) -> Result<(), String> {
    let options = ClientAssociationOptions::new().with_abstract_syntax(dimse::VERIFICATION);
    let mut assoc = connect(options, peer)?;
    let context = assoc
        .presentation_contexts()
        .first()
        .map(|pc| pc.id)
        .ok_or("Verification not accepted")?;
    send_command(&mut assoc, context, dimse::echo_rq(1)).map_err(|e| e.to_string())?;
    let rsp = response(&mut assoc, &mut Reader::default())?;
    let _ = assoc.release();
    match rsp.status {
        dimse::status::SUCCESS => Ok(()),
        s => Err(format!("C-ECHO answered with status {s:#06x}")),
    }
}

/// C-STORE of `instances` over one association; `confirmed` is called for each instance the
/// node confirms, as it does. The first refusal or failure ends the association with an error
/// (instances confirmed before it stay confirmed).
pub fn store(
    peer: &Peer,
    instances: &[Instance],
    mut confirmed: impl FnMut(&Instance),
) -> Result<(), String> {
    let mut options = ClientAssociationOptions::new();
    for i in instances {
        options =
            options.with_presentation_context(i.sop_class.clone(), vec![i.transfer_syntax.clone()]);
    }
    let mut assoc = connect(options, peer)?;
    let mut reader = Reader::default();
    for (n, i) in instances.iter().enumerate() {
        let context = assoc
            .presentation_contexts()
            .iter()
            .find(|pc| pc.abstract_syntax == i.sop_class && pc.transfer_syntax == i.transfer_syntax)
            .map(|pc| pc.id)
            .ok_or_else(|| {
                format!(
                    "{}: {} does not accept its SOP class or transfer syntax",
                    i.name, peer.called
                )
            })?;
        let message_id = (n + 1) as u16;
        send_command(
            &mut assoc,
            context,
            dimse::store_rq(message_id, &i.sop_class, &i.sop_instance),
        )
        .map_err(|e| e.to_string())?;
        let mut writer = assoc.send_pdata(context);
        writer
            .write_all(&i.data)
            .and_then(|()| writer.finish())
            .map_err(|e| format!("{}: sending: {e}", i.name))?;
        let rsp = response(&mut assoc, &mut reader)?;
        if !dimse::stored(rsp.status) {
            let _ = assoc.abort();
            return Err(format!(
                "{}: C-STORE refused with status {:#06x}",
                i.name, rsp.status
            ));
        }
        confirmed(i);
    }
    assoc.release().map_err(|e| format!("release: {e}"))
}
