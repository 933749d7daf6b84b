//! The DIMSE messages tracerd sends and answers (PS3.7 §9.3): C-ECHO and C-STORE. Command sets
//! are always Implicit VR Little Endian, with their group length first.

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;

pub const VERIFICATION: &str = "1.2.840.10008.1.1";
pub const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
pub const PET_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.128";

/// Command Field (0000,0100) values.
const C_STORE_RQ: u16 = 0x0001;
const C_STORE_RSP: u16 = 0x8001;
const C_ECHO_RQ: u16 = 0x0030;
const C_ECHO_RSP: u16 = 0x8030;
/// Command Data Set Type (0000,0800): no data set follows.
const NO_DATA_SET: u16 = 0x0101;

/// DIMSE status codes tracerd answers with (PS3.7 Annex C, PS3.4 Table B.2-1).
pub mod status {
    pub const SUCCESS: u16 = 0x0000;
    /// Refused: out of resources (the disk is full or below its floor).
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    /// Error: data set does not match SOP class.
    pub const DATA_SET_MISMATCH: u16 = 0xA900;
    /// Error: cannot understand.
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
    /// Unrecognized operation.
    pub const UNRECOGNIZED_OPERATION: u16 = 0x0211;
}

/// A command received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Echo {
        message_id: u16,
    },
    Store {
        message_id: u16,
        sop_class: String,
        sop_instance: String,
    },
    /// Anything else (C-FIND, C-MOVE, N-…): answered "unrecognized operation".
    Other {
        field: u16,
        message_id: u16,
        has_data: bool,
    },
}

impl Command {
    /// Whether a data set follows this command.
    pub fn has_data(&self) -> bool {
        match self {
            Command::Echo { .. } => false,
            Command::Store { .. } => true,
            Command::Other { has_data, .. } => *has_data,
        }
    }
}

/// A response received: its command field and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    pub field: u16,
    pub message_id: u16,
    pub status: u16,
}

fn uid_value(uid: &str) -> PrimitiveValue {
    // UIDs are padded to even length with a NUL.
    let mut s = uid.to_string();
    if s.len() % 2 == 1 {
        s.push('\0');
    }
    PrimitiveValue::from(s)
}

/// Encodes a command set: `elements` plus Command Group Length.
fn encode(elements: Vec<DataElement<InMemDicomObject>>) -> Vec<u8> {
    let ts = IMPLICIT_VR_LITTLE_ENDIAN.erased();
    let body = InMemDicomObject::from_element_iter(elements.clone());
    let mut bytes = Vec::new();
    body.write_dataset_with_ts(&mut bytes, &ts)
        .expect("a command set always encodes");
    let mut with_length = vec![DataElement::new(
        tags::COMMAND_GROUP_LENGTH,
        VR::UL,
        PrimitiveValue::from(bytes.len() as u32),
    )];
    with_length.extend(elements);
    let mut out = Vec::with_capacity(bytes.len() + 12);
    InMemDicomObject::from_element_iter(with_length)
        .write_dataset_with_ts(&mut out, &ts)
        .expect("a command set always encodes");
    out
}

fn us(tag: Tag, v: u16) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::US, PrimitiveValue::from(v))
}

fn ui(tag: Tag, uid: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::UI, uid_value(uid))
}

pub fn echo_rq(message_id: u16) -> Vec<u8> {
    encode(vec![
        ui(tags::AFFECTED_SOP_CLASS_UID, VERIFICATION),
        us(tags::COMMAND_FIELD, C_ECHO_RQ),
        us(tags::MESSAGE_ID, message_id),
        us(tags::COMMAND_DATA_SET_TYPE, NO_DATA_SET),
    ])
}

pub fn echo_rsp(message_id: u16) -> Vec<u8> {
    encode(vec![
        ui(tags::AFFECTED_SOP_CLASS_UID, VERIFICATION),
        us(tags::COMMAND_FIELD, C_ECHO_RSP),
        us(tags::MESSAGE_ID_BEING_RESPONDED_TO, message_id),
        us(tags::COMMAND_DATA_SET_TYPE, NO_DATA_SET),
        us(tags::STATUS, status::SUCCESS),
    ])
}

pub fn store_rq(message_id: u16, sop_class: &str, sop_instance: &str) -> Vec<u8> {
    encode(vec![
        ui(tags::AFFECTED_SOP_CLASS_UID, sop_class),
        us(tags::COMMAND_FIELD, C_STORE_RQ),
        us(tags::MESSAGE_ID, message_id),
        us(tags::PRIORITY, 0),
        us(tags::COMMAND_DATA_SET_TYPE, 0x0000),
        ui(tags::AFFECTED_SOP_INSTANCE_UID, sop_instance),
    ])
}

pub fn store_rsp(message_id: u16, sop_class: &str, sop_instance: &str, status: u16) -> Vec<u8> {
    encode(vec![
        ui(tags::AFFECTED_SOP_CLASS_UID, sop_class),
        us(tags::COMMAND_FIELD, C_STORE_RSP),
        us(tags::MESSAGE_ID_BEING_RESPONDED_TO, message_id),
        us(tags::COMMAND_DATA_SET_TYPE, NO_DATA_SET),
        us(tags::STATUS, status),
        ui(tags::AFFECTED_SOP_INSTANCE_UID, sop_instance),
    ])
}

/// The answer to a command tracerd does not provide.
pub fn unrecognized_rsp(field: u16, message_id: u16) -> Vec<u8> {
    encode(vec![
        us(tags::COMMAND_FIELD, field | 0x8000),
        us(tags::MESSAGE_ID_BEING_RESPONDED_TO, message_id),
        us(tags::COMMAND_DATA_SET_TYPE, NO_DATA_SET),
        us(tags::STATUS, status::UNRECOGNIZED_OPERATION),
    ])
}

fn read(bytes: &[u8]) -> Result<InMemDicomObject, String> {
    let ts = IMPLICIT_VR_LITTLE_ENDIAN.erased();
    InMemDicomObject::read_dataset_with_ts(bytes, &ts).map_err(|e| format!("bad command set: {e}"))
}

fn get_u16(obj: &InMemDicomObject, tag: Tag, name: &str) -> Result<u16, String> {
    obj.get(tag)
        .and_then(|e| e.uint16().ok())
        .ok_or_else(|| format!("command set without {name}"))
}

fn get_uid(obj: &InMemDicomObject, tag: Tag, name: &str) -> Result<String, String> {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
        .ok_or_else(|| format!("command set without {name}"))
}

/// Parses a request's command set.
pub fn parse_command(bytes: &[u8]) -> Result<Command, String> {
    let obj = read(bytes)?;
    let field = get_u16(&obj, tags::COMMAND_FIELD, "Command Field")?;
    let message_id = get_u16(&obj, tags::MESSAGE_ID, "Message ID")?;
    let has_data =
        get_u16(&obj, tags::COMMAND_DATA_SET_TYPE, "Command Data Set Type")? != NO_DATA_SET;
    Ok(match field {
        C_ECHO_RQ => Command::Echo { message_id },
        C_STORE_RQ => Command::Store {
            message_id,
            sop_class: get_uid(&obj, tags::AFFECTED_SOP_CLASS_UID, "Affected SOP Class UID")?,
            sop_instance: get_uid(
                &obj,
                tags::AFFECTED_SOP_INSTANCE_UID,
                "Affected SOP Instance UID",
            )?,
        },
        field => Command::Other {
            field,
            message_id,
            has_data,
        },
    })
}

/// Parses a response's command set.
pub fn parse_response(bytes: &[u8]) -> Result<Response, String> {
    let obj = read(bytes)?;
    Ok(Response {
        field: get_u16(&obj, tags::COMMAND_FIELD, "Command Field")?,
        message_id: get_u16(
            &obj,
            tags::MESSAGE_ID_BEING_RESPONDED_TO,
            "Message ID Being Responded To",
        )?,
        status: get_u16(&obj, tags::STATUS, "Status")?,
    })
}

/// Whether a C-STORE status means the instance was stored (success, or a warning: coerced,
/// elements discarded, data set does not match SOP class).
pub fn stored(status: u16) -> bool {
    status == status::SUCCESS || matches!(status, 0x0001 | 0xB000 | 0xB006 | 0xB007)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_with_their_group_length() {
        let rq = store_rq(7, PET_IMAGE_STORAGE, "1.2.3.4");
        // (0000,0000) UL, length 4, value = the bytes after it.
        assert_eq!(&rq[..8], &[0, 0, 0, 0, 4, 0, 0, 0]);
        let len = u32::from_le_bytes(rq[8..12].try_into().unwrap()) as usize;
        assert_eq!(len, rq.len() - 12);
        assert_eq!(
            parse_command(&rq).unwrap(),
            Command::Store {
                message_id: 7,
                sop_class: PET_IMAGE_STORAGE.into(),
                sop_instance: "1.2.3.4".into()
            }
        );
        assert_eq!(
            parse_command(&echo_rq(3)).unwrap(),
            Command::Echo { message_id: 3 }
        );
        let rsp = parse_response(&store_rsp(7, PET_IMAGE_STORAGE, "1.2.3.4", 0xA700)).unwrap();
        assert_eq!(
            (rsp.field, rsp.message_id, rsp.status),
            (C_STORE_RSP, 7, 0xA700)
        );
        assert!(!stored(rsp.status));
        let rsp = parse_response(&echo_rsp(3)).unwrap();
        assert_eq!((rsp.field, rsp.status), (C_ECHO_RSP, 0));
        assert!(parse_command(b"\x01\x02").is_err());
    }
}
