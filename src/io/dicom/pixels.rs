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
use super::part10::{parse_part10, read_part10};
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
    let (bytes, len) = read_part10(&i.path, max)
        .map_err(|e| unreadable(e.to_string()))?
        .ok_or_else(|| unreadable("the DICM marker is gone since the scan".into()))?;
    if len > bytes.len() {
        return Err(unreadable(format!(
            "the file has {len} bytes, more than a header and a {}×{} slice can need",
            i.rows, i.columns
        )));
    }
    preflight_lengths(&bytes, len, true).map_err(unreadable)?;
    parse_part10(&bytes, false).map_err(unreadable)
}

/// Decodes one slice into `out` (rows × columns, first index fastest) as
/// `(stored · slope + intercept) · factor`.
fn load_slice(i: &Instance, factor: f64, out: &mut [f32]) -> Result<(), DicomError> {
    let ts_ok = TransferSyntaxRegistry
        .get(&i.transfer_syntax)
        .map(|ts| (ts.can_decode_all(), ts.name().to_string()));
    match ts_ok {
        Some((true, _)) => {}
        Some((false, name)) => {
            return Err(file_error(
                i,
                DicomErrorKind::UnsupportedTransferSyntax {
                    uid: i.transfer_syntax.clone(),
                    name,
                },
            ));
        }
        None => {
            return Err(file_error(
                i,
                DicomErrorKind::UnsupportedTransferSyntax {
                    uid: i.transfer_syntax.clone(),
                    name: "unknown".into(),
                },
            ));
        }
    }
    let obj = read_slice_file(i)?;
    if obj.element_opt(tags::PIXEL_DATA).ok().flatten().is_none() {
        return Err(file_error(i, DicomErrorKind::MissingPixelData));
    }
    let transform = |v: f64| ((v * i.rescale_slope + i.rescale_intercept) * factor) as f32;
    if let Some(layout) = Native16::of(&obj, i) {
        return layout.decode(&obj, i, out, transform);
    }
    let decoded = obj
        .decode_pixel_data()
        .map_err(|e| file_error(i, DicomErrorKind::PixelDecode(e.to_string())))?;
    if decoded.samples_per_pixel() != 1 {
        return Err(file_error(
            i,
            DicomErrorKind::PixelDecode(format!(
                "{} samples per pixel; a PET or CT image has 1",
                decoded.samples_per_pixel()
            )),
        ));
    }
    if decoded.rows() != i.rows || decoded.columns() != i.columns {
        return Err(file_error(
            i,
            DicomErrorKind::PixelDecode(format!(
                "decoded {}×{} but the header says {}×{}",
                decoded.rows(),
                decoded.columns(),
                i.rows,
                i.columns
            )),
        ));
    }
    let raw: Vec<f64> = decoded
        .to_vec_frame_with_options(
            0,
            &ConvertOptions::new().with_modality_lut(ModalityLutOption::None),
        )
        .map_err(|e| file_error(i, DicomErrorKind::PixelDecode(e.to_string())))?;
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

/// Uncompressed little-endian single-sample 16-bit pixel data (how PET and CT scanners write):
/// read straight from the element's bytes, without dicom-pixeldata's generic decode into a
/// vector of f64. Anything else takes the generic path.
struct Native16 {
    signed: bool,
    /// BitsStored: the bits above it are masked off (and the sign taken from its top bit).
    bits: u32,
}

impl Native16 {
    fn of(obj: &DefaultDicomObject, i: &Instance) -> Option<Native16> {
        const NATIVE_LE: [&str; 2] = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"];
        let int = |tag| obj.element_opt(tag).ok().flatten()?.to_int::<u32>().ok();
        let bits = int(tags::BITS_STORED)?;
        let usable = NATIVE_LE.contains(&i.transfer_syntax.as_str())
            && int(tags::BITS_ALLOCATED)? == 16
            && int(tags::SAMPLES_PER_PIXEL).unwrap_or(1) == 1
            && (1..=16).contains(&bits)
            && int(tags::HIGH_BIT)? == bits - 1;
        let signed = int(tags::PIXEL_REPRESENTATION)? == 1;
        usable.then_some(Native16 { signed, bits })
    }

    fn decode(
        &self,
        obj: &DefaultDicomObject,
        i: &Instance,
        out: &mut [f32],
        transform: impl Fn(f64) -> f32,
    ) -> Result<(), DicomError> {
        let element = obj
            .element(tags::PIXEL_DATA)
            .map_err(|e| file_error(i, DicomErrorKind::PixelDecode(e.to_string())))?;
        let bytes = element
            .to_bytes()
            .map_err(|e| file_error(i, DicomErrorKind::PixelDecode(e.to_string())))?;
        if bytes.len() < out.len() * 2 {
            return Err(file_error(
                i,
                DicomErrorKind::PixelDecode(format!(
                    "{} values stored, {} expected (pixel data truncated?)",
                    bytes.len() / 2,
                    out.len()
                )),
            ));
        }
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
    use super::Native16;

    #[test]
    fn stored_bits_are_masked_and_sign_extended() {
        let ct = Native16 {
            signed: true,
            bits: 12,
        };
        assert_eq!(ct.value(0xF800), -2048.0); // overlay bits above 12 ignored
        assert_eq!(ct.value(0x07FF), 2047.0);
        let full = Native16 {
            signed: true,
            bits: 16,
        };
        assert_eq!(full.value(0xFFFF), -1.0);
        let unsigned = Native16 {
            signed: false,
            bits: 16,
        };
        assert_eq!(unsigned.value(0xFFFF), 65535.0);
        let u12 = Native16 {
            signed: false,
            bits: 12,
        };
        assert_eq!(u12.value(0xF123), 0x123 as f64);
    }
}
