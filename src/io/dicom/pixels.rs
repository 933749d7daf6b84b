//! Pixel data of a sorted series into a `Volume<f32>`: native 16-bit slices read straight from
//! their bytes, every other slice decoded with dicom-pixeldata (native, and the codecs it
//! carries here: JPEG baseline/lossless, RLE, deflate, JPEG 2000),
//! rescaled with that slice's own RescaleSlope/Intercept and multiplied by that slice's factor
//! (the SUV factor for PET, 1 for CT), in f64 before the one rounding to f32.

use dicom_dictionary_std::tags;
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::{ConvertOptions, ModalityLutOption, PixelDecoder};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use rayon::prelude::*;

use super::assemble::SeriesStack;
use super::part10::{Part10, parse_part10, pixel_data_span, read_part10};
use super::scan::{HEAD_BYTES, Instance, preflight_lengths};
use super::{DicomError, DicomErrorKind, Stage};
use crate::volume::Volume;

fn file_error(i: &Instance, kind: DicomErrorKind) -> DicomError {
    DicomError::new(Stage::Pixels, i.rel.display().to_string(), kind)
}

/// The slice's file, read once and checked before parsing: no element may declare more bytes
/// than the file holds, and the file may be no larger than a header and Rows × Columns pixels
/// of 8 bytes can need, so a damaged or hostile file cannot make tracerd read gigabytes.
fn read_slice_file(i: &Instance) -> Result<DefaultDicomObject, DicomError> {
    let unreadable = |why: String| file_error(i, DicomErrorKind::Unreadable(why));
    let max = HEAD_BYTES + (i.rows as usize) * (i.columns as usize) * 8;
    let file = read_part10(&i.path, max)
        .map_err(|e| unreadable(e.to_string()))?
        .ok_or_else(|| unreadable("the DICM marker is gone since the scan".into()))?;
    if file.len > file.bytes.len() {
        return Err(unreadable(format!(
            "the file has {} bytes, more than a header and a {}×{} slice can need",
            file.len, i.rows, i.columns
        )));
    }
    preflight_lengths(&file.bytes, file.len, true).map_err(unreadable)?;
    parse_part10(&file.bytes, false).map_err(unreadable)
}

/// Decodes one slice into `out` (rows × columns, first index fastest) as
/// `(stored · slope + intercept) · factor`.
fn load_slice(i: &Instance, factor: f64, out: &mut [f32]) -> Result<(), DicomError> {
    check_transfer_syntax(i)?;
    let transform = |v: f64| ((v * i.rescale_slope + i.rescale_intercept) * factor) as f32;
    if let Some(native) = &i.native {
        return native.read(i, out, transform);
    }
    let raw = decode_generic(i)?;
    if raw.len() != out.len() {
        return Err(file_error(
            i,
            DicomErrorKind::PixelDecode(format!(
                "{} values decoded, {} expected (pixel data truncated?)",
                raw.len(),
                out.len()
            )),
        ));
    }
    for (o, v) in out.iter_mut().zip(raw) {
        *o = transform(v);
    }
    Ok(())
}

/// Refuses a transfer syntax that dicom-rs cannot decode (or does not know).
fn check_transfer_syntax(i: &Instance) -> Result<(), DicomError> {
    let name = match TransferSyntaxRegistry.get(&i.transfer_syntax) {
        Some(ts) if ts.can_decode_all() => return Ok(()),
        Some(ts) => ts.name().to_string(),
        None => "unknown".into(),
    };
    Err(file_error(
        i,
        DicomErrorKind::UnsupportedTransferSyntax {
            uid: i.transfer_syntax.clone(),
            name,
        },
    ))
}

/// The stored values of the slice's single frame through dicom-pixeldata's decoders (any
/// transfer syntax it supports), without the modality LUT: one sample per pixel, the header's
/// matrix.
fn decode_generic(i: &Instance) -> Result<Vec<f64>, DicomError> {
    let bad = |kind| file_error(i, kind);
    let decode = |why: String| bad(DicomErrorKind::PixelDecode(why));
    let obj = read_slice_file(i)?;
    if obj.get(tags::PIXEL_DATA).is_none() {
        return Err(bad(DicomErrorKind::MissingPixelData));
    }
    let decoded = obj.decode_pixel_data().map_err(|e| decode(e.to_string()))?;
    if decoded.samples_per_pixel() != 1 {
        return Err(decode(format!(
            "{} samples per pixel; a PET or CT image has 1",
            decoded.samples_per_pixel()
        )));
    }
    if decoded.rows() != i.rows || decoded.columns() != i.columns {
        return Err(decode(format!(
            "decoded {}×{} but the header says {}×{}",
            decoded.rows(),
            decoded.columns(),
            i.rows,
            i.columns
        )));
    }
    decoded
        .to_vec_frame_with_options(
            0,
            &ConvertOptions::new().with_modality_lut(ModalityLutOption::None),
        )
        .map_err(|e| decode(e.to_string()))
}

/// Uncompressed little-endian single-sample 16-bit pixel data (how PET and CT scanners write),
/// located in its file by the header scan: the pixel pass reads exactly those bytes and converts
/// them, without parsing the file again or dicom-pixeldata's generic decode into f64. Anything
/// else (compressed, other bit depths, a layout the scan could not follow) takes the generic path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NativePixels {
    /// Where Pixel Data's value starts in the file, and its length.
    offset: u64,
    len: u64,
    /// The file's length at the scan: a file changed since is not trusted.
    file_len: u64,
    signed: bool,
    /// BitsStored: the bits above it are masked off (and the sign taken from its top bit).
    bits: u32,
}

impl NativePixels {
    /// The layout of `obj`'s pixels when they take the fast path; `file` is what the scan read.
    pub(crate) fn locate(
        obj: &DefaultDicomObject,
        i: &Instance,
        file: &Part10,
    ) -> Option<NativePixels> {
        const NATIVE_LE: [&str; 2] = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"];
        let int = |tag| obj.get(tag)?.to_int::<u32>().ok();
        let bits = int(tags::BITS_STORED)?;
        let usable = NATIVE_LE.contains(&i.transfer_syntax.as_str())
            && int(tags::BITS_ALLOCATED)? == 16
            && int(tags::SAMPLES_PER_PIXEL).unwrap_or(1) == 1
            && (1..=16).contains(&bits)
            && int(tags::HIGH_BIT)? == bits - 1;
        let signed = int(tags::PIXEL_REPRESENTATION)? == 1;
        let explicit = i.transfer_syntax == NATIVE_LE[1];
        let (at, len) = pixel_data_span(&file.bytes, explicit)?;
        usable.then_some(NativePixels {
            offset: at.checked_sub(file.added)? as u64,
            len: len as u64,
            file_len: (file.len - file.added) as u64,
            signed,
            bits,
        })
    }

    /// Reads the slice's pixels into `out`, each through `transform`.
    fn read(
        &self,
        i: &Instance,
        out: &mut [f32],
        transform: impl Fn(f64) -> f32,
    ) -> Result<(), DicomError> {
        use std::os::unix::fs::FileExt;
        let unreadable = |why: String| file_error(i, DicomErrorKind::Unreadable(why));
        let need = out.len() as u64 * 2;
        if self.len < need {
            return Err(file_error(
                i,
                DicomErrorKind::PixelDecode(format!(
                    "{} values stored, {} expected (pixel data truncated?)",
                    self.len / 2,
                    out.len()
                )),
            ));
        }
        let f = std::fs::File::open(&i.path).map_err(|e| unreadable(e.to_string()))?;
        let len = f.metadata().map_err(|e| unreadable(e.to_string()))?.len();
        if len != self.file_len || self.offset + need > len {
            return Err(unreadable(
                "the file changed since its headers were read".into(),
            ));
        }
        let mut bytes = vec![0u8; need as usize];
        f.read_exact_at(&mut bytes, self.offset)
            .map_err(|e| unreadable(e.to_string()))?;
        for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            *o = transform(self.value(u16::from_le_bytes([b[0], b[1]])));
        }
        Ok(())
    }

    /// The stored value of one 16-bit word: bits above BitsStored dropped, sign-extended from
    /// its top bit when signed.
    fn value(&self, word: u16) -> f64 {
        let shift = 16 - self.bits;
        let high = word << shift;
        if self.signed {
            ((high as i16) >> shift) as f64
        } else {
            (high >> shift) as f64
        }
    }
}

/// Loads every slice of `series`; `factors[k]` multiplies slice k (None: 1).
pub fn load_volume(
    series: &SeriesStack,
    factors: Option<&[f64]>,
) -> Result<Volume<f32>, DicomError> {
    let g = series.geometry.clone();
    let plane = g.shape[0] * g.shape[1];
    let mut data = vec![0f32; g.len()];
    data.par_chunks_mut(plane)
        .zip(series.slices.par_iter())
        .enumerate()
        .try_for_each(|(k, (out, inst))| load_slice(inst, factors.map_or(1.0, |f| f[k]), out))?;
    Volume::new(g, data).map_err(|e| {
        DicomError::new(
            Stage::Pixels,
            series.subject(),
            DicomErrorKind::Geometry(e.to_string()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::NativePixels;

    fn native16(signed: bool, bits: u32) -> NativePixels {
        NativePixels {
            offset: 0,
            len: 0,
            file_len: 0,
            signed,
            bits,
        }
    }

    /// Every slice of a synthetic export is located by the scan, and the fast path reads the
    /// same values as dicom-pixeldata's generic decode.
    #[test]
    fn the_located_pixels_equal_the_generic_decode() {
        let dir = tempfile::tempdir().unwrap();
        let study = crate::synth::generate(&crate::synth::SynthOptions {
            seed: 4,
            size: crate::synth::Size::Small,
        });
        crate::synth::dicom::write_dicom(&study, dir.path()).unwrap();
        let scan = crate::io::dicom::scan_folder(dir.path()).unwrap();
        assert!(scan.instances.len() > 100);
        for i in scan.instances.iter().step_by(7) {
            assert!(i.native.is_some(), "{}", i.rel.display());
            let n = (i.rows * i.columns) as usize;
            let (mut fast, mut generic) = (vec![0f32; n], vec![0f32; n]);
            super::load_slice(i, 1.5, &mut fast).unwrap();
            let mut slow = i.clone();
            slow.native = None;
            super::load_slice(&slow, 1.5, &mut generic).unwrap();
            assert_eq!(fast, generic, "{}", i.rel.display());
        }
    }

    #[test]
    fn stored_bits_are_masked_and_sign_extended() {
        let ct = native16(true, 12);
        assert_eq!(ct.value(0xF800), -2048.0); // overlay bits above 12 ignored
        assert_eq!(ct.value(0x07FF), 2047.0);
        let full = native16(true, 16);
        assert_eq!(full.value(0xFFFF), -1.0);
        let unsigned = native16(false, 16);
        assert_eq!(unsigned.value(0xFFFF), 65535.0);
        let u12 = native16(false, 12);
        assert_eq!(u12.value(0xF123), 0x123 as f64);
    }
}
