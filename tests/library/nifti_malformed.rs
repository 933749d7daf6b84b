//! Every malformed NIfTI input gives a clear error naming the file and the problem, never a panic.

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use tracerd::io::nifti::{self, NiftiErrorKind};
use tracerd::{Geometry, Volume};

/// Byte offsets of header fields in an uncompressed NIfTI-1 file.
const DIM: usize = 40; // 8 × i16
const PIXDIM: usize = 76; // 8 × f32

/// A valid 6×5×4 float32 image, uncompressed, as bytes.
fn valid_bytes(dir: &Path) -> Vec<u8> {
    let g = Geometry::axial([6, 5, 4], [2.0, 2.0, 3.0], [0.0, 0.0, 0.0]);
    let v = Volume::new(g.clone(), (0..g.len()).map(|x| x as f32).collect()).unwrap();
    let p = dir.join("valid.nii");
    nifti::write_f32(&p, &v).unwrap();
    std::fs::read(p).unwrap()
}

fn put_i16(bytes: &mut [u8], offset: usize, v: i16) {
    bytes[offset..offset + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_f32(bytes: &mut [u8], offset: usize, v: f32) {
    bytes[offset..offset + 4].copy_from_slice(&v.to_le_bytes());
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Reads `path`, expecting an error whose message names the file and contains `needle`.
fn expect_error(path: &Path, needle: &str) -> NiftiErrorKind {
    let err = nifti::read_f32(path).expect_err("malformed input must not read");
    let message = err.to_string();
    let file = path.file_name().unwrap().to_str().unwrap();
    assert!(
        message.contains(file),
        "message does not name the file: {message}"
    );
    assert!(
        message.contains(needle),
        "expected {needle:?} in: {message}"
    );
    assert!(!message.contains('\n'), "not one line: {message}");
    err.kind
}

#[test]
fn missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let kind = expect_error(&dir.path().join("SUV.nii.gz"), "cannot open");
    assert!(matches!(kind, NiftiErrorKind::Open(_)));
}

#[test]
fn zero_byte_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "SUV.nii.gz", b"");
    assert!(matches!(
        expect_error(&p, "empty file (0 bytes)"),
        NiftiErrorKind::Empty
    ));
}

#[test]
fn not_a_nifti_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "SUV.nii", &[7u8; 600]);
    expect_error(&p, "not a NIfTI-1 file");
    let p = write(dir.path(), "short.nii", b"hello");
    expect_error(&p, "ends inside the 348-byte header");
}

#[test]
fn truncated_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let gz = gzip(&valid_bytes(dir.path()));
    let p = write(dir.path(), "SUV.nii.gz", &gz[..gz.len() / 2]);
    assert!(matches!(
        expect_error(&p, "gzip stream is corrupt or truncated"),
        NiftiErrorKind::Gzip(_)
    ));
    // Cut inside the header, too.
    let p = write(dir.path(), "CT.nii.gz", &gz[..40]);
    expect_error(&p, "gzip stream is corrupt or truncated");
}

#[test]
fn header_claims_more_data_than_the_file_holds() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = valid_bytes(dir.path());
    let data_bytes = 6 * 5 * 4 * 4;
    let short = &bytes[..bytes.len() - 100];
    let p = write(dir.path(), "SUV.nii", short);
    let kind = expect_error(
        &p,
        &format!(
            "truncated: the header declares {data_bytes} bytes of voxel data but the file holds {}",
            data_bytes - 100
        ),
    );
    assert!(matches!(kind, NiftiErrorKind::Truncated { .. }));
    // The same lie inside a well-formed gzip stream.
    let p = write(dir.path(), "SUV2.nii.gz", &gzip(short));
    expect_error(&p, &format!("the header declares {data_bytes} bytes"));
    // A header that claims a far bigger volume.
    let mut big = bytes.clone();
    put_i16(&mut big, DIM + 2 * 3, 400);
    let p = write(dir.path(), "SUV3.nii", &big);
    expect_error(&p, &format!("declares {} bytes", 6 * 5 * 400 * 4));
}

#[test]
fn four_and_five_dimensional_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = valid_bytes(dir.path());
    put_i16(&mut bytes, DIM, 4);
    put_i16(&mut bytes, DIM + 2 * 4, 2);
    let p = write(dir.path(), "dynamic.nii", &bytes);
    let kind = expect_error(&p, "4D image with extra dimensions [2]");
    assert!(matches!(kind, NiftiErrorKind::NotThreeD(_)));
    put_i16(&mut bytes, DIM, 5);
    put_i16(&mut bytes, DIM + 2 * 4, 1);
    put_i16(&mut bytes, DIM + 2 * 5, 3);
    let p = write(dir.path(), "five.nii.gz", &gzip(&bytes));
    expect_error(&p, "5D image with extra dimensions [1, 3]");
}

#[test]
fn two_dimensional_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = valid_bytes(dir.path());
    put_i16(&mut bytes, DIM, 2);
    let p = write(dir.path(), "slice.nii", &bytes);
    expect_error(&p, "2D image: tracerd needs a 3D volume");
}

#[test]
fn zero_negative_or_nan_pixdim() {
    let dir = tempfile::tempdir().unwrap();
    let valid = valid_bytes(dir.path());
    for (axis, value, needle) in [
        (2, 0.0f32, "pixdim[2] is 0"),
        (1, f32::NAN, "pixdim[1] is NaN"),
        (3, -3.0, "pixdim[3] is -3"),
        (3, f32::INFINITY, "pixdim[3] is inf"),
    ] {
        let mut bytes = valid.clone();
        put_f32(&mut bytes, PIXDIM + 4 * axis, value);
        let p = write(dir.path(), &format!("pixdim{axis}.nii.gz"), &gzip(&bytes));
        let kind = expect_error(&p, needle);
        assert!(matches!(kind, NiftiErrorKind::BadPixdim { .. }), "{needle}");
    }
}

#[test]
fn negative_dimension_and_unknown_datatype() {
    let dir = tempfile::tempdir().unwrap();
    let valid = valid_bytes(dir.path());
    let mut bytes = valid.clone();
    put_i16(&mut bytes, DIM + 2, -5);
    let p = write(dir.path(), "negdim.nii", &bytes);
    expect_error(&p, "dim[1] is -5, must be positive");
    let mut bytes = valid.clone();
    put_i16(&mut bytes, 70, 1234); // datatype
    let p = write(dir.path(), "dtype.nii", &bytes);
    expect_error(&p, "unsupported datatype code 1234");
}

#[test]
fn singular_sform() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = valid_bytes(dir.path());
    // srow_x starts at byte 280; zero the whole first column (srow_x[0], srow_y[0], srow_z[0]).
    for row in 0..3 {
        put_f32(&mut bytes, 280 + 16 * row, 0.0);
    }
    let p = write(dir.path(), "flat.nii", &bytes);
    expect_error(&p, "unusable sform");
}
