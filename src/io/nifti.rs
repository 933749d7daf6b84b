//! NIfTI-1 reading and writing (`.nii`, `.nii.gz`) on top of the `nifti` crate.
//!
//! Reading accepts any scalar datatype the crate decodes (float32/64, int8/16/32, uint8/16/32…),
//! applies `scl_slope`/`scl_inter`, and takes the voxel→world affine from the sform when
//! `sform_code > 0`, else from the qform when `qform_code > 0`, else the centred "base" affine
//! nibabel also falls back to. The header is parsed and checked *before* any voxel data is
//! allocated, so a lying header fails fast with a message naming the field.
//!
//! Writing produces float32 images and uint8 masks with **both** sform and qform set (code 1,
//! scanner-based), millimetre units, through [`crate::fsio::write_atomic`].
//!
//! Gzip is zlib-rs at level 2, chosen by measurement (`benches/synth_io.rs`, clinical CT of
//! 300 MiB, 2 cores): level 1 is zlib-rs's "quick" strategy with static Huffman codes, 1.1 s but
//! 54 % of the raw size; level 2 takes 2.0 s for 32 %; level 6 takes 17.6 s for 27 %. Large
//! inputs are written once and read a few times, so the middle point wins. An image over 16 MiB
//! is written as several gzip members compressed in parallel (one stream to every reader).
//!
//! The RAS↔LPS conversion lives in [`Geometry::to_nifti_affine`]/[`Geometry::from_nifti_affine`].

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use bytemuck::Pod;
use flate2::Compression;
use flate2::read::MultiGzDecoder;
use nalgebra::Matrix4;
use ndarray::{ArrayView3, ShapeBuilder};
use nifti::writer::WriterOptions;
use nifti::{DataElement, InMemNiftiVolume, IntoNdArray, NiftiHeader, NiftiType, XForm};

use crate::fsio;
use crate::volume::{Geometry, GeometryError, Volume};

/// Gzip level for everything tracerd writes (see the module header for why 2).
pub const GZIP_LEVEL: u32 = 2;

/// Largest extent accepted per axis: far beyond any PET or CT matrix, small enough that a corrupt
/// header cannot make us reserve absurd amounts of memory.
const MAX_AXIS: usize = 8192;

/// Largest header + extensions accepted before the voxel data (16 MiB): extensions hold
/// metadata, never megabytes, and skipping them must not mean decompressing a bomb.
const MAX_VOX_OFFSET: f32 = (16 << 20) as f32;

/// A NIfTI file could not be read or written. Displays as `<file>: <problem>`.
#[derive(Debug, thiserror::Error)]
#[error("{}: {kind}", path.display())]
pub struct NiftiError {
    pub path: PathBuf,
    #[source]
    pub kind: NiftiErrorKind,
}

/// What exactly is wrong with a NIfTI file.
#[derive(Debug, thiserror::Error)]
pub enum NiftiErrorKind {
    #[error("cannot open: {0}")]
    Open(#[source] io::Error),
    #[error("empty file (0 bytes)")]
    Empty,
    #[error("not a NIfTI-1 file: {0}")]
    NotNifti(String),
    #[error("file ends inside the 348-byte header")]
    TruncatedHeader,
    #[error("gzip stream is corrupt or truncated ({0})")]
    Gzip(#[source] io::Error),
    #[error(
        "truncated: the header declares {expected} bytes of voxel data but the file holds {got}"
    )]
    Truncated { expected: u64, got: u64 },
    #[error("{0}")]
    NotThreeD(String),
    #[error("pixdim[{axis}] is {value}: voxel sizes must be finite and positive")]
    BadPixdim { axis: usize, value: f32 },
    #[error("unsupported datatype code {0} (tracerd reads scalar integer and float images)")]
    Datatype(i16),
    #[error("unusable {form}: {detail}")]
    Affine { form: &'static str, detail: String },
    #[error("voxel data cannot be decoded: {0}")]
    Decode(String),
    #[error("cannot write: {0}")]
    Write(String),
    #[error("cannot write: {0}")]
    WriteFile(#[source] io::Error),
    #[error(
        "the header declares {voxels} voxels ({shape}), more than the {limit} this study may \
         hold ([limits] in the config)"
    )]
    TooLarge {
        voxels: u64,
        shape: String,
        limit: u64,
    },
}

impl NiftiError {
    fn new(path: &Path, kind: NiftiErrorKind) -> Self {
        NiftiError {
            path: path.to_path_buf(),
            kind,
        }
    }
}

/// Reads a 3D NIfTI image as float32 values (scaling applied) on its LPS geometry.
pub fn read_f32(path: &Path) -> Result<Volume<f32>, NiftiError> {
    read_f32_within(path, u64::MAX)
}

/// Reads a 3D NIfTI label image (a mask) as uint8: scaled values are rounded, and anything
/// outside 0..=255 is an error rather than silently wrapped.
pub fn read_u8(path: &Path) -> Result<Volume<u8>, NiftiError> {
    let vol = read_f32(path)?;
    if let Some(bad) = vol
        .data()
        .iter()
        .find(|v| !(v.is_finite() && **v >= 0.0 && **v <= 255.0))
    {
        return Err(NiftiError::new(
            path,
            NiftiErrorKind::Decode(format!("label value {bad} does not fit a uint8 mask")),
        ));
    }
    Ok(vol.map(|v| v.round() as u8))
}

/// The parts of a header tracerd reads, validated.
struct Checked {
    header: NiftiHeader,
    shape: [usize; 3],
    geometry: Geometry,
}

/// [`read_f32`], refusing an image whose header declares more than `max_voxels` voxels before
/// anything is allocated or decompressed (decompression always stops at the declared size).
pub fn read_f32_within(path: &Path, max_voxels: u64) -> Result<Volume<f32>, NiftiError> {
    let err = |kind| NiftiError::new(path, kind);
    let (mut stream, source) = open(path).map_err(err)?;
    let header = NiftiHeader::from_reader(&mut stream).map_err(|e| {
        err(match e {
            nifti::NiftiError::Io(e) => source.io_kind(e),
            nifti::NiftiError::InvalidFormat => {
                NiftiErrorKind::NotNifti("bad magic or header size".into())
            }
            other => NiftiErrorKind::NotNifti(other.to_string()),
        })
    })?;
    let checked = check_header(header).map_err(err)?;
    check_size(&checked, max_voxels).map_err(err)?;
    skip_to_voxels(&mut stream, &checked, source).map_err(err)?;
    let data =
        read_voxels(&mut stream, &checked.header, checked.shape, source.gzipped).map_err(err)?;
    Volume::new(checked.geometry, data).map_err(|e| {
        err(NiftiErrorKind::Affine {
            form: "geometry",
            detail: e.to_string(),
        })
    })
}

/// What the file is: gzip or plain (from its content, not its name), and its length.
#[derive(Debug, Clone, Copy)]
struct Source {
    gzipped: bool,
    len: u64,
}

impl Source {
    /// A read error of the stream: a damaged or short gzip stream, or a short plain file.
    fn io_kind(self, e: io::Error) -> NiftiErrorKind {
        if self.gzipped && e.kind() != io::ErrorKind::UnexpectedEof {
            NiftiErrorKind::Gzip(e)
        } else if self.gzipped {
            NiftiErrorKind::Gzip(io::Error::new(e.kind(), "stream ends early"))
        } else {
            NiftiErrorKind::TruncatedHeader
        }
    }
}

/// The file as a stream of header and voxels, decompressed when its first bytes are gzip's
/// magic: scanners and scripts misname files.
fn open(path: &Path) -> Result<(Box<dyn Read>, Source), NiftiErrorKind> {
    let file = File::open(path).map_err(NiftiErrorKind::Open)?;
    let len = file.metadata().map_err(NiftiErrorKind::Open)?.len();
    if len == 0 {
        return Err(NiftiErrorKind::Empty);
    }
    let mut file = BufReader::new(file);
    let mut magic = [0u8; 2];
    let gzipped = len >= 2 && {
        file.read_exact(&mut magic).map_err(NiftiErrorKind::Open)?;
        magic == [0x1f, 0x8b]
    };
    let prefix: &[u8] = if gzipped || len < 2 { &[] } else { &magic };
    let stream: Box<dyn Read> = if gzipped {
        Box::new(MultiGzDecoder::new(io::Cursor::new(magic).chain(file)))
    } else {
        Box::new(io::Cursor::new(prefix.to_vec()).chain(file))
    };
    Ok((stream, Source { gzipped, len }))
}

/// Refuses a header that declares more than `max_voxels` voxels.
fn check_size(checked: &Checked, max_voxels: u64) -> Result<(), NiftiErrorKind> {
    let voxels = checked.shape.iter().map(|&n| n as u64).product::<u64>();
    if voxels > max_voxels {
        let [x, y, z] = checked.shape;
        return Err(NiftiErrorKind::TooLarge {
            voxels,
            shape: format!("{x}×{y}×{z}"),
            limit: max_voxels,
        });
    }
    Ok(())
}

/// Skips the extender and any extensions unread (their sizes are not trusted: a damaged esize
/// made the nifti crate allocate gigabytes): voxel data starts at vox_offset. A plain file must
/// hold every declared voxel byte.
fn skip_to_voxels(
    stream: &mut dyn Read,
    checked: &Checked,
    source: Source,
) -> Result<(), NiftiErrorKind> {
    let header = &checked.header;
    let skip = (header.vox_offset as u64).saturating_sub(348);
    let skipped =
        io::copy(&mut stream.take(skip), &mut io::sink()).map_err(|e| source.io_kind(e))?;
    let expected = voxel_bytes(header, &checked.shape);
    if skipped < skip {
        return Err(NiftiErrorKind::Truncated { expected, got: 0 });
    }
    let available = source.len.saturating_sub(header.vox_offset as u64);
    if !source.gzipped && available < expected {
        return Err(NiftiErrorKind::Truncated {
            expected,
            got: available,
        });
    }
    Ok(())
}

/// The voxel data as float32 (scaling applied), decoded one z slice at a time: the raw bytes of
/// a clinical CT (0.2 GiB of int16) are never held beside its float32 copy (0.4 GiB), which
/// set the daemon's peak memory while a study was read.
fn read_voxels(
    stream: &mut dyn Read,
    header: &NiftiHeader,
    [nx, ny, nz]: [usize; 3],
    gzipped: bool,
) -> Result<Vec<f32>, NiftiErrorKind> {
    let datatype = header
        .data_type()
        .map_err(|_| NiftiErrorKind::Datatype(header.datatype))?;
    let slice_bytes = (nx * ny * datatype.size_of()) as u64;
    let expected = slice_bytes * nz as u64;
    let dim = [2, nx as u16, ny as u16, 1, 1, 1, 1, 1];
    let mut data = Vec::with_capacity(nx * ny * nz);
    for z in 0..nz as u64 {
        let mut raw = Vec::with_capacity(slice_bytes as usize);
        let got = stream
            .take(slice_bytes)
            .read_to_end(&mut raw)
            .map_err(|e| match gzipped {
                true => NiftiErrorKind::Gzip(e),
                false => NiftiErrorKind::Decode(e.to_string()),
            })? as u64;
        if got < slice_bytes {
            let got = z * slice_bytes + got;
            return Err(NiftiErrorKind::Truncated { expected, got });
        }
        let slice = InMemNiftiVolume::from_raw_fields(
            dim,
            datatype,
            header.scl_slope,
            header.scl_inter,
            raw,
            header.endianness,
        )
        .and_then(|v| v.into_ndarray::<f32>())
        .map_err(|e| NiftiErrorKind::Decode(e.to_string()))?;
        data.extend(slice.into_raw_vec_and_offset().0);
    }
    Ok(data)
}

fn voxel_bytes(header: &NiftiHeader, shape: &[usize; 3]) -> u64 {
    let per_voxel = (header.bitpix.max(8) as u64) / 8;
    shape.iter().map(|&n| n as u64).product::<u64>() * per_voxel
}

/// Validates everything about the header that reading relies on, and computes the geometry.
fn check_header(mut header: NiftiHeader) -> Result<Checked, NiftiErrorKind> {
    if &header.magic == b"ni1\0" {
        return Err(NiftiErrorKind::NotNifti(
            "a .hdr/.img pair header; give tracerd single-file .nii or .nii.gz".into(),
        ));
    }
    let shape = check_shape(&header)?;
    check_storage(&header)?;
    // A NaN, infinite or zero slope means "no scaling" (as in nibabel).
    if !header.scl_slope.is_finite() || header.scl_slope == 0.0 {
        header.scl_slope = 0.0;
        header.scl_inter = 0.0;
    } else if !header.scl_inter.is_finite() {
        header.scl_inter = 0.0;
    }
    let affine = pick_affine(&mut header)?;
    let geometry = Geometry::from_nifti_affine(shape, &affine).map_err(|e: GeometryError| {
        NiftiErrorKind::Affine {
            form: if header.sform_code > 0 {
                "sform"
            } else {
                "qform"
            },
            detail: e.to_string(),
        }
    })?;
    Ok(Checked {
        header,
        shape,
        geometry,
    })
}

/// The three axes of a single 3D volume (dimensions beyond the third must be 1).
fn check_shape(header: &NiftiHeader) -> Result<[usize; 3], NiftiErrorKind> {
    let ndim = header.dim[0] as i16;
    if !(1..=7).contains(&ndim) {
        return Err(NiftiErrorKind::NotNifti(format!(
            "dim[0] is {ndim}, must be 1..7"
        )));
    }
    let ndim = ndim as usize;
    let dims: Vec<i64> = (1..=ndim).map(|a| header.dim[a] as i16 as i64).collect();
    if let Some((axis, d)) = dims.iter().enumerate().find(|(_, d)| **d < 1) {
        return Err(NiftiErrorKind::NotNifti(format!(
            "dim[{}] is {d}, must be positive",
            axis + 1
        )));
    }
    if ndim < 3 {
        return Err(NiftiErrorKind::NotThreeD(format!(
            "{ndim}D image: tracerd needs a 3D volume"
        )));
    }
    let extra: Vec<i64> = dims[3..].to_vec();
    if extra.iter().any(|&d| d > 1) {
        return Err(NiftiErrorKind::NotThreeD(format!(
            "{ndim}D image with extra dimensions {extra:?} (e.g. several frames): tracerd needs a \
             single 3D volume"
        )));
    }
    let shape = [dims[0] as usize, dims[1] as usize, dims[2] as usize];
    if let Some(n) = shape.iter().find(|&&n| n > MAX_AXIS) {
        return Err(NiftiErrorKind::NotNifti(format!(
            "an axis of {n} voxels exceeds the {MAX_AXIS} tracerd accepts"
        )));
    }
    Ok(shape)
}

/// A readable scalar datatype, positive voxel sizes and the voxels where a single file has them.
fn check_storage(header: &NiftiHeader) -> Result<(), NiftiErrorKind> {
    match header.data_type() {
        Ok(NiftiType::Rgb24 | NiftiType::Rgba32 | NiftiType::Complex64 | NiftiType::Complex128)
        | Ok(NiftiType::Complex256 | NiftiType::Float128)
        | Err(_) => return Err(NiftiErrorKind::Datatype(header.datatype)),
        Ok(_) => {}
    }
    for axis in 1..=3 {
        let value = header.pixdim[axis];
        if !(value.is_finite() && value > 0.0) {
            return Err(NiftiErrorKind::BadPixdim { axis, value });
        }
    }
    if !(352.0..=MAX_VOX_OFFSET).contains(&header.vox_offset) {
        return Err(NiftiErrorKind::NotNifti(format!(
            "vox_offset is {}, must be 352 to {MAX_VOX_OFFSET} in a single-file NIfTI",
            header.vox_offset
        )));
    }
    Ok(())
}

/// sform if its code says it is valid, else qform, else the base affine (as nibabel).
fn pick_affine(header: &mut NiftiHeader) -> Result<Matrix4<f64>, NiftiErrorKind> {
    if header.sform_code > 0 {
        let rows = [header.srow_x, header.srow_y, header.srow_z];
        if rows.iter().flatten().any(|v| !v.is_finite()) {
            return Err(NiftiErrorKind::Affine {
                form: "sform",
                detail: "srow_x/y/z hold a non-finite value".into(),
            });
        }
        return Ok(header.sform_affine::<f64>());
    }
    if header.qform_code > 0 {
        let q = [header.quatern_b, header.quatern_c, header.quatern_d];
        let offsets = [header.quatern_x, header.quatern_y, header.quatern_z];
        if q.iter().chain(&offsets).any(|v| !v.is_finite()) {
            return Err(NiftiErrorKind::Affine {
                form: "qform",
                detail: "quaternion or offset is not finite".into(),
            });
        }
        let norm2: f64 = q.iter().map(|&v| (v as f64).powi(2)).sum();
        if norm2 > 1.0 + 1e-4 {
            return Err(NiftiErrorKind::Affine {
                form: "qform",
                detail: format!("quaternion (b, c, d) has squared norm {norm2:.6} > 1"),
            });
        }
        if norm2 > 1.0 {
            // Rounding in the writer: a 180° rotation (a = 0) stored a hair over unit length.
            let s = (1.0 / norm2).sqrt() as f32;
            header.quatern_b *= s;
            header.quatern_c *= s;
            header.quatern_d *= s;
        }
        // NIfTI: qfac is -1 when pixdim[0] is -1 and 1 otherwise (0 is common in the wild).
        if header.pixdim[0] != -1.0 {
            header.pixdim[0] = 1.0;
        }
        return Ok(header.qform_affine::<f64>());
    }
    Ok(header.affine::<f64>())
}

/// Writes a float32 image atomically (see the module header for the header fields set).
pub fn write_f32(path: &Path, volume: &Volume<f32>) -> Result<(), NiftiError> {
    write(path, volume, "tracerd float32")
}

/// Writes a uint8 mask atomically with the same header conventions as [`write_f32`].
pub fn write_u8(path: &Path, volume: &Volume<u8>) -> Result<(), NiftiError> {
    write(path, volume, "tracerd uint8 mask")
}

fn write<T>(path: &Path, volume: &Volume<T>, description: &str) -> Result<(), NiftiError>
where
    T: DataElement + Pod,
{
    let err = |kind| NiftiError::new(path, kind);
    let header = header_for(volume.geometry(), description)
        .map_err(|e| err(NiftiErrorKind::Write(e.to_string())))?;
    let [nx, ny, nz] = volume.shape();
    let view = ArrayView3::from_shape((nx, ny, nz).f(), volume.data())
        .map_err(|e| err(NiftiErrorKind::Write(e.to_string())))?;
    let compressed = path.to_string_lossy().ends_with(".gz");
    let large = std::mem::size_of_val(volume.data()) > GZIP_MEMBER_BYTES;
    fsio::write_atomic(path, |tmp| {
        let write_nifti = |file: &Path, compression: Option<Compression>| {
            let mut options = WriterOptions::new(file).reference_header(&header);
            options = match compression {
                Some(level) => options.compression_level(level),
                None => options.compress(false),
            };
            options.write_nifti(&view).map_err(|e| match e {
                nifti::NiftiError::Io(e) => e,
                other => io::Error::other(other.to_string()),
            })
        };
        if !(compressed && large) {
            return write_nifti(tmp, compressed.then(|| Compression::new(GZIP_LEVEL)));
        }
        // A large image: the plain file first, then gzip members compressed in parallel.
        // `….nii.gz` → `….nii` (the nifti crate derives its output name from the last two
        // extensions, so the plain file must be named exactly so).
        let plain = tmp.with_extension("");
        let result = write_nifti(&plain, None)
            .and_then(|()| std::fs::read(&plain))
            .and_then(|bytes| std::fs::write(tmp, gzip_parallel(&bytes)?));
        let _ = std::fs::remove_file(&plain);
        result
    })
    .map_err(|e| err(NiftiErrorKind::WriteFile(e)))
}

/// Uncompressed bytes per gzip member of a large image.
const GZIP_MEMBER_BYTES: usize = 16 << 20;

/// `bytes` as a multi-member gzip stream (RFC 1952 §2.2: members simply follow one another;
/// zlib's gzread, Python's gzip, nibabel and [`MultiGzDecoder`] read it as one stream), each
/// member of [`GZIP_MEMBER_BYTES`] compressed on its own thread at [`GZIP_LEVEL`]. Deterministic:
/// the same bytes give the same stream on any number of threads.
fn gzip_parallel(bytes: &[u8]) -> io::Result<Vec<u8>> {
    use rayon::prelude::*;
    use std::io::Write;
    let members: Vec<Vec<u8>> = bytes
        .par_chunks(GZIP_MEMBER_BYTES)
        .map(|chunk| {
            let mut gz = flate2::write::GzEncoder::new(
                Vec::with_capacity(chunk.len() / 3),
                Compression::new(GZIP_LEVEL),
            );
            gz.write_all(chunk)?;
            gz.finish()
        })
        .collect::<io::Result<_>>()?;
    Ok(members.concat())
}

/// A header carrying `geometry` in both sform and qform, with millimetre units.
fn header_for(geometry: &Geometry, description: &str) -> nifti::Result<NiftiHeader> {
    let affine = geometry.to_nifti_affine();
    let mut header = NiftiHeader::default();
    header.set_sform(&affine, XForm::ScannerAnat);
    header.set_qform(&affine, XForm::ScannerAnat);
    // set_qform stores the column norms, which for an orthonormal direction are the spacings;
    // write the spacings themselves so a sheared sform still has truthful pixdims.
    for a in 0..3 {
        header.pixdim[a + 1] = geometry.spacing[a] as f32;
    }
    header.xyzt_units = 2 | 8; // NIFTI_UNITS_MM | NIFTI_UNITS_SEC
    header.set_description_str(description)?;
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::{Rotation3, Vector3};

    fn sample() -> Volume<f32> {
        let g = Geometry {
            shape: [5, 4, 3],
            spacing: Vector3::new(2.0, 2.5, 3.0),
            origin: Vector3::new(-100.0, 50.5, 7.25),
            direction: *Rotation3::from_euler_angles(0.1, 0.0, -0.2).matrix(),
        };
        let data = (0..g.len()).map(|v| v as f32 * 0.5 - 3.0).collect();
        Volume::new(g, data).unwrap()
    }

    /// Issue 16 row 5: the writer's I/O error kind reaches the caller (a full disk must read
    /// as `StorageFull` to the code that decides to retry, not as `Other`).
    #[test]
    fn a_write_error_keeps_its_io_kind() {
        let e = write_f32(Path::new("/dev/null/x.nii.gz"), &sample()).unwrap_err();
        assert!(matches!(e.kind, NiftiErrorKind::WriteFile(_)), "{e}");
        assert_eq!(
            crate::fsio::keep_kind(e).kind(),
            io::ErrorKind::NotADirectory
        );
    }

    #[test]
    fn float_round_trip_keeps_data_and_geometry() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a.nii", "a.nii.gz"] {
            let path = dir.path().join(name);
            let v = sample();
            write_f32(&path, &v).unwrap();
            let back = read_f32(&path).unwrap();
            assert_eq!(back.data(), v.data());
            let d = (back.geometry().affine_lps() - v.geometry().affine_lps())
                .abs()
                .max();
            assert!(d < 1e-4, "{name}: affine differs by {d}");
        }
    }

    #[test]
    fn a_large_image_is_written_as_gzip_members_that_read_back_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.nii.gz");
        // 5 M voxels = 20 MiB: two members.
        let g = Geometry::axial([200, 250, 100], [2.0; 3], [0.0; 3]);
        let data = (0..g.len()).map(|v| (v % 997) as f32).collect();
        let v = Volume::new(g, data).unwrap();
        write_f32(&path, &v).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        // A single-member decoder stops after the first member: 16 MiB of the 20 MiB.
        let mut first = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut first)
            .unwrap();
        assert_eq!(first.len(), GZIP_MEMBER_BYTES);
        assert_eq!(read_f32(&path).unwrap().data(), v.data());
        // Deterministic, like every other write.
        let again = dir.path().join("again.nii.gz");
        write_f32(&again, &v).unwrap();
        assert_eq!(std::fs::read(&again).unwrap(), bytes);
    }

    #[test]
    fn mask_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.nii.gz");
        let v = sample().map(|x| (*x > 0.0) as u8);
        write_u8(&path, &v).unwrap();
        assert_eq!(read_u8(&path).unwrap().data(), v.data());
    }
}
