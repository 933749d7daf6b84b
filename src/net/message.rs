//! Whole DIMSE messages over an association: a command set and, when the command says one
//! follows, its data set, each reassembled from P-DATA fragments (PS3.8 §9.3.5, Annex E).

use std::collections::VecDeque;

use dicom_ul::association::{CloseSocket, SyncAssociation};
use dicom_ul::pdu::{PDataValue, PDataValueType, Pdu};

/// The largest data set received (1 GiB): bounds what one association can make tracerd hold
/// in memory.
pub const MAX_DATA_SET: usize = 1 << 30;

/// What arrived next on an association.
#[derive(Debug)]
pub enum Incoming {
    /// A command set, on presentation context `context`.
    Command { context: u8, bytes: Vec<u8> },
    /// The peer asked to release the association (already answered).
    Released,
    /// The peer aborted the association.
    Aborted,
}

/// Reassembles messages from the PDUs of one association.
#[derive(Debug, Default)]
pub struct Reader {
    pending: VecDeque<PDataValue>,
}

/// Errors reading a message: the association cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Link(#[from] dicom_ul::association::Error),
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl Reader {
    /// The next P-DATA value; `Err(Incoming)` when the association ends instead.
    fn next_value<S, A>(&mut self, assoc: &mut A) -> Result<Result<PDataValue, Incoming>, ReadError>
    where
        S: std::io::Read + std::io::Write + CloseSocket,
        A: SyncAssociation<S>,
    {
        loop {
            if let Some(v) = self.pending.pop_front() {
                return Ok(Ok(v));
            }
            match SyncAssociation::receive(assoc)? {
                Pdu::PData { data } => self.pending.extend(data),
                Pdu::ReleaseRQ => {
                    SyncAssociation::send(assoc, &Pdu::ReleaseRP)?;
                    return Ok(Err(Incoming::Released));
                }
                Pdu::AbortRQ { .. } => return Ok(Err(Incoming::Aborted)),
                other => {
                    return Err(ReadError::Protocol(format!(
                        "unexpected {}",
                        other.short_description()
                    )));
                }
            }
        }
    }

    /// The next command set, whole.
    pub fn command<S, A>(&mut self, assoc: &mut A) -> Result<Incoming, ReadError>
    where
        S: std::io::Read + std::io::Write + CloseSocket,
        A: SyncAssociation<S>,
    {
        let mut bytes = Vec::new();
        loop {
            let v = match self.next_value(assoc)? {
                Ok(v) => v,
                Err(end) if bytes.is_empty() => return Ok(end),
                Err(_) => return Err(ReadError::Protocol("association ended mid-command".into())),
            };
            if v.value_type != PDataValueType::Command {
                return Err(ReadError::Protocol(
                    "data fragment where a command was expected".into(),
                ));
            }
            bytes.extend_from_slice(&v.data);
            if v.is_last {
                return Ok(Incoming::Command {
                    context: v.presentation_context_id,
                    bytes,
                });
            }
        }
    }

    /// The data set following a command, whole; one larger than [`MAX_DATA_SET`] ends the
    /// association (a PET or CT slice is well under a megabyte).
    pub fn data<S, A>(&mut self, assoc: &mut A, context: u8) -> Result<Vec<u8>, ReadError>
    where
        S: std::io::Read + std::io::Write + CloseSocket,
        A: SyncAssociation<S>,
    {
        let mut bytes = Vec::new();
        loop {
            let v = self.next_value(assoc)?.map_err(|_| {
                ReadError::Protocol("association ended in the middle of a data set".into())
            })?;
            if v.value_type != PDataValueType::Data || v.presentation_context_id != context {
                return Err(ReadError::Protocol(
                    "a command or another context's fragment inside a data set".into(),
                ));
            }
            if bytes.len() + v.data.len() > MAX_DATA_SET {
                return Err(ReadError::Protocol(format!(
                    "a data set over {} MiB",
                    MAX_DATA_SET >> 20
                )));
            }
            if bytes.is_empty() {
                bytes = v.data;
            } else {
                bytes.extend_from_slice(&v.data);
            }
            if v.is_last {
                return Ok(bytes);
            }
        }
    }
}

/// Sends a command set on `context`.
pub fn send_command<S, A>(assoc: &mut A, context: u8, bytes: Vec<u8>) -> Result<(), ReadError>
where
    S: std::io::Read + std::io::Write + CloseSocket,
    A: SyncAssociation<S>,
{
    SyncAssociation::send(
        assoc,
        &Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: context,
                value_type: PDataValueType::Command,
                is_last: true,
                data: bytes,
            }],
        },
    )?;
    Ok(())
}
