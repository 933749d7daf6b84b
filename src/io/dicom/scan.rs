//! Walking a drop folder: every regular file in any nesting, parsed up to (not including) its
//! pixel data. Files that are neither Part 10 nor a bare data set ([`super::part10`]) are
//! *ignored* (listed, kept with the study); DICOM files that do not parse are *unreadable* (listed with the reason; the series they
//! belonged to then usually fails its completeness or spacing check).

use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use rayon::prelude::*;

use super::part10::{parse_part10, read_part10};
use super::pixels::NativePixels;
use super::strict::{BadTag, Strict};
use super::suv::SuvTags;
use super::tags_ext as t;
use super::tracer::TracerTags;
use super::{DicomError, DicomErrorKind, Stage};

/// The header values tracerd uses from one DICOM file (never patient identifiers).
#[derive(Debug, Clone)]
pub struct Instance {
    /// Absolute path.
    pub path: PathBuf,
    /// Path relative to the drop folder, for messages.
    pub rel: PathBuf,
    pub transfer_syntax: String,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub study_uid: String,
    pub series_uid: String,
    pub modality: String,
    pub frame_of_reference_uid: Option<String>,
    pub image_type: Vec<String>,
    pub series_description: Option<String>,
    pub rows: u32,
    pub columns: u32,
    pub number_of_frames: u32,
    pub pixel_spacing: Option<[f64; 2]>,
    pub image_position: Option<[f64; 3]>,
    pub image_orientation: Option<[f64; 6]>,
    pub acquisition_number: Option<i64>,
    pub instance_number: Option<i64>,
    pub rescale_slope: f64,
    pub rescale_intercept: f64,
    /// PET: ImageIndex (0054,1330) and NumberOfSlices (0054,0081).
    pub image_index: Option<i64>,
    pub number_of_slices: Option<i64>,
    /// PET only.
    pub suv: Option<SuvTags>,
    /// PET only: radionuclide, radiopharmaceutical and device (for the scope rule).
    pub tracer: Option<TracerTags>,
    /// Tags present with a value that cannot be used (never replaced by a default): a series
    /// that uses this file fails naming the first one.
    pub bad_tags: Vec<BadTag>,
    /// Uncompressed 16-bit pixels: where they are in the file, found while reading the
    /// headers, so the pixel pass reads them without parsing the file again.
    pub native: Option<NativePixels>,
}

#[cfg(test)]
impl Instance {
    /// A 1×1 single-frame PT image with no geometry, numbering or SUV tags, for tests to fill in.
    pub(crate) fn for_tests() -> Instance {
        Instance {
            path: PathBuf::new(),
            rel: PathBuf::new(),
            transfer_syntax: String::new(),
            sop_class_uid: String::new(),
            sop_instance_uid: String::new(),
            study_uid: String::new(),
            series_uid: String::new(),
            modality: "PT".into(),
            frame_of_reference_uid: None,
            image_type: vec![],
            series_description: None,
            rows: 1,
            columns: 1,
            number_of_frames: 1,
            pixel_spacing: None,
            image_position: None,
            image_orientation: None,
            acquisition_number: None,
            instance_number: None,
            rescale_slope: 1.0,
            rescale_intercept: 0.0,
            bad_tags: Vec::new(),
            native: None,
            image_index: None,
            number_of_slices: None,
            suv: None,
            tracer: None,
        }
    }
}

/// What a folder holds.
#[derive(Debug, Default)]
pub struct ScanResult {
    pub root: PathBuf,
    pub instances: Vec<Instance>,
    /// Not DICOM (relative paths).
    pub ignored: Vec<PathBuf>,
    /// DICOM marker present but unparsable: (relative path, reason).
    pub unreadable: Vec<(PathBuf, String)>,
}

/// All regular files under `root`, sorted (the scan result must not depend on directory order).
fn walk(root: &Path) -> Result<Vec<PathBuf>, DicomError> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rd = std::fs::read_dir(&dir).map_err(|e| {
            DicomError::new(
                Stage::Scan,
                dir.display().to_string(),
                DicomErrorKind::Io(e),
            )
        })?;
        for entry in rd {
            let entry = entry.map_err(|e| {
                DicomError::new(
                    Stage::Scan,
                    dir.display().to_string(),
                    DicomErrorKind::Io(e),
                )
            })?;
            let ft = entry.file_type().map_err(|e| {
                DicomError::new(
                    Stage::Scan,
                    entry.path().display().to_string(),
                    DicomErrorKind::Io(e),
                )
            })?;
            let name = entry.file_name();
            if name.to_string_lossy().starts_with(crate::fsio::TEMP_PREFIX) {
                continue;
            }
            if ft.is_dir() {
                stack.push(entry.path());
            } else if ft.is_file() {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Checks, before a DICOM parser sees the file, that no element declares a value longer than
/// the bytes left in the file: the parser allocates the declared length first, so one damaged
/// length field (up to 4 GiB) would make it reserve gigabytes. Walks the file meta group and the
/// data set (explicit or implicit VR little endian) header by header, into sequences and
/// items, over Pixel Data (its fragments, when encapsulated) to the end: trailing elements
/// are parsed too. Other transfer syntaxes are left to the parser.
///
/// `bytes` is the start of the file (headers beyond it are not checked) and `file_len` its
/// length.
/// `whole`: also Pixel Data and what follows it (before decoding pixels); without it the walk
/// ends at Pixel Data (before reading headers, which stop there).
pub(crate) fn preflight_lengths(bytes: &[u8], file_len: usize, whole: bool) -> Result<(), String> {
    let mut pos = 132; // preamble and "DICM"
    let mut explicit = true;
    let mut in_meta = true;
    let mut encapsulated = false;
    while pos + 8 <= bytes.len() {
        let group = u16::from_le_bytes([bytes[pos], bytes[pos + 1]]);
        let element = u16::from_le_bytes([bytes[pos + 2], bytes[pos + 3]]);
        if in_meta && group != 0x0002 {
            in_meta = false;
            explicit = !transfer_syntax_is(bytes, b"1.2.840.10008.1.2\0")
                && !transfer_syntax_is(bytes, b"1.2.840.10008.1.2");
            if !transfer_syntax_is_little_endian(bytes) {
                return Ok(());
            }
        }
        let vr = [bytes[pos + 4], bytes[pos + 5]];
        let (len, header) = element_length(bytes, pos, explicit)?;
        pos += header;
        if !whole && (group, element) == (0x7FE0, 0x0010) {
            return Ok(());
        }
        let left = file_len.saturating_sub(pos);
        if len != u32::MAX && len as usize > left {
            return Err(format!(
                "element ({group:04X},{element:04X}) declares {len} bytes, but only {left} remain in \
                 the file"
            ));
        }
        match (group, element) {
            // Encapsulated Pixel Data: its items are raw fragments, skipped below.
            (0x7FE0, 0x0010) if len == u32::MAX => encapsulated = true,
            (0xFFFE, 0xE0DD) => encapsulated = false,
            (0xFFFE, 0xE000) if encapsulated => {
                pos += len as usize;
                continue;
            }
            _ => {}
        }
        let is_sequence = group == 0xFFFE || (explicit && &vr == b"SQ");
        if len == u32::MAX || is_sequence {
            continue; // undefined length, a sequence or an item: its content follows
        }
        pos += len as usize;
    }
    Ok(())
}

/// The declared value length of the element whose tag starts at `pos`, and the size of its
/// header: items and delimiters 8, implicit VR 8, explicit VR 8 for the 2-byte-length VRs and 12
/// for the rest.
fn element_length(bytes: &[u8], pos: usize, explicit: bool) -> Result<(u32, usize), String> {
    // VRs with a 2-byte length in explicit VR; every other one, unknown ones included (a
    // parser reads those as UN), has 2 reserved bytes and a 4-byte length.
    const SHORT: [&[u8; 2]; 21] = [
        b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN",
        b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
    ];
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let group = u16::from_le_bytes([bytes[pos], bytes[pos + 1]]);
    let vr = [bytes[pos + 4], bytes[pos + 5]];
    if group == 0xFFFE || !explicit {
        return Ok((u32_at(pos + 4), 8));
    }
    if SHORT.contains(&&vr) {
        return Ok((
            u16::from_le_bytes([bytes[pos + 6], bytes[pos + 7]]) as u32,
            8,
        ));
    }
    if pos + 12 > bytes.len() {
        let element = u16::from_le_bytes([bytes[pos + 2], bytes[pos + 3]]);
        return Err(format!(
            "element ({group:04X},{element:04X}) ends inside its header"
        ));
    }
    Ok((u32_at(pos + 8), 12))
}

/// The file meta group's Transfer Syntax UID equals `uid` (searched after the preamble, in
/// the first 4 KiB).
fn transfer_syntax_is(bytes: &[u8], uid: &[u8]) -> bool {
    let head = &bytes[bytes.len().min(132)..bytes.len().min(4096)];
    head.windows(8)
        .position(|w| w[..4] == [0x02, 0x00, 0x10, 0x00])
        .and_then(|i| {
            let len = u16::from_le_bytes([head.get(i + 6).copied()?, head.get(i + 7).copied()?]);
            head.get(i + 8..i + 8 + len as usize)
        })
        .is_some_and(|v| v == uid)
}

/// Explicit or implicit VR little endian (the deflated and big-endian syntaxes are not walked).
fn transfer_syntax_is_little_endian(bytes: &[u8]) -> bool {
    !transfer_syntax_is(bytes, b"1.2.840.10008.1.2.1.99")
        && !transfer_syntax_is(bytes, b"1.2.840.10008.1.2.2\0")
}

/// How much of a file the header scan reads: far more than any DICOM header.
pub(crate) const HEAD_BYTES: usize = 16 << 20;

enum One {
    Instance(Box<Instance>),
    Ignored(PathBuf),
    Unreadable(PathBuf, String),
}

/// Reads one file's headers: an instance, a file that is not DICOM, or the reason it cannot be
/// read.
fn scan_one(root: &Path, path: &Path) -> One {
    let rel = path.strip_prefix(root).unwrap_or(path).to_path_buf();
    let file = match read_part10(path, HEAD_BYTES) {
        Ok(Some(read)) => read,
        Ok(None) => return One::Ignored(rel),
        Err(e) => return One::Unreadable(rel, e.to_string()),
    };
    if let Err(why) = preflight_lengths(&file.bytes, file.len, false) {
        return One::Unreadable(rel, why);
    }
    let obj = match parse_part10(&file.bytes, true) {
        Ok(obj) => obj,
        Err(why) => return One::Unreadable(rel, why),
    };
    let ts = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    match instance_from(&obj, path.to_path_buf(), rel.clone(), ts) {
        Ok(mut i) => {
            i.native = NativePixels::locate(&obj, &i, &file);
            One::Instance(Box::new(i))
        }
        Err(why) => One::Unreadable(rel, why),
    }
}

/// Walks `root` and parses every DICOM header, in parallel.
pub fn scan_folder(root: &Path) -> Result<ScanResult, DicomError> {
    let files = walk(root)?;
    let results: Vec<One> = files.par_iter().map(|p| scan_one(root, p)).collect();
    let mut scan = ScanResult {
        root: root.to_path_buf(),
        ..Default::default()
    };
    for r in results {
        match r {
            One::Instance(i) => scan.instances.push(*i),
            One::Ignored(p) => scan.ignored.push(p),
            One::Unreadable(p, why) => scan.unreadable.push((p, why)),
        }
    }
    Ok(scan)
}

/// Extracts an [`Instance`]; `Err` when a UID that grouping needs is absent. Numeric and time
/// tags that feed geometry, pixels or SUV are read strictly ([`super::strict`]): unusable values
/// land in `bad_tags`, to fail the series that uses this file.
pub fn instance_from(
    obj: &InMemDicomObject,
    path: PathBuf,
    rel: PathBuf,
    transfer_syntax: String,
) -> Result<Instance, String> {
    let need = |tag, name: &str| t::string(obj, tag).ok_or_else(|| format!("{name} missing"));
    let modality = t::string(obj, tags::MODALITY)
        .unwrap_or_default()
        .to_ascii_uppercase();
    let mut bad_tags = Vec::new();
    let modality_is_pt = modality == "PT";
    let suv = modality_is_pt.then(|| SuvTags::read(obj, &mut bad_tags));
    let mut geo = Strict {
        obj,
        stage: Stage::Geometry,
        bad: &mut bad_tags,
    };
    let pixel_spacing = geo.array(tags::PIXEL_SPACING, ("PixelSpacing", "(0028,0030)"));
    let image_position = geo.array(
        tags::IMAGE_POSITION_PATIENT,
        ("ImagePositionPatient", "(0020,0032)"),
    );
    let image_orientation = geo.array(
        tags::IMAGE_ORIENTATION_PATIENT,
        ("ImageOrientationPatient", "(0020,0037)"),
    );
    let mut pix = Strict {
        obj,
        stage: Stage::Pixels,
        bad: &mut bad_tags,
    };
    let rescale_slope = pix.slope(tags::RESCALE_SLOPE, ("RescaleSlope", "(0028,1053)"));
    let rescale_intercept =
        pix.number(tags::RESCALE_INTERCEPT, ("RescaleIntercept", "(0028,1052)"));
    Ok(Instance {
        transfer_syntax,
        sop_class_uid: t::string(obj, tags::SOP_CLASS_UID).unwrap_or_default(),
        sop_instance_uid: need(tags::SOP_INSTANCE_UID, "SOPInstanceUID (0008,0018)")?,
        study_uid: need(tags::STUDY_INSTANCE_UID, "StudyInstanceUID (0020,000D)")?,
        series_uid: need(tags::SERIES_INSTANCE_UID, "SeriesInstanceUID (0020,000E)")?,
        frame_of_reference_uid: t::string(obj, tags::FRAME_OF_REFERENCE_UID),
        image_type: t::strings(obj, tags::IMAGE_TYPE)
            .into_iter()
            .map(|s| s.to_ascii_uppercase())
            .collect(),
        series_description: t::string(obj, tags::SERIES_DESCRIPTION),
        rows: t::int(obj, tags::ROWS).unwrap_or(0).max(0) as u32,
        columns: t::int(obj, tags::COLUMNS).unwrap_or(0).max(0) as u32,
        number_of_frames: t::int(obj, tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1) as u32,
        pixel_spacing,
        image_position,
        image_orientation,
        acquisition_number: t::int(obj, tags::ACQUISITION_NUMBER),
        instance_number: t::int(obj, tags::INSTANCE_NUMBER),
        // Absent means identity (PS3.3 C.11.1.1.2); present and unusable is in `bad_tags`.
        rescale_slope: rescale_slope.unwrap_or(1.0),
        rescale_intercept: rescale_intercept.unwrap_or(0.0),
        image_index: t::int(obj, tags::IMAGE_INDEX),
        number_of_slices: t::int(obj, tags::NUMBER_OF_SLICES),
        modality,
        suv,
        tracer: modality_is_pt.then(|| TracerTags::read(obj)),
        bad_tags,
        native: None,
        path,
        rel,
    })
}
