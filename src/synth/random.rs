//! Seeded random numbers: the study generator, sub-generators per (volume, slice), and the
//! draws every other part makes.

use super::*;

/// Tags for the per-slice and label-noise generators, so no two streams coincide.
pub(super) const TAG_PET_NOISE: u64 = 0x5045_545f_4e4f_4953;
pub(super) const TAG_CT_NOISE: u64 = 0x4354_5f4e_4f49_5345;
pub(super) const TAG_LABEL_NOISE: u64 = 0x4c41_4245_4c5f_4e53;

pub(super) fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A generator for one (purpose, slice) of one seed, independent of every other.
pub(super) fn sub_rng(seed: u64, tag: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(splitmix64(seed ^ splitmix64(tag)));
    rng.set_stream(stream);
    rng
}

/// Uniform in `[lo, hi)`, or `lo` for an empty range (never panics).
pub(super) fn uni(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    if hi > lo {
        rng.random_range(lo..hi)
    } else {
        lo
    }
}

pub(super) fn log_uni(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    uni(rng, lo.ln(), hi.ln()).exp()
}

/// A factor `1 ± a`.
pub(super) fn jit(rng: &mut ChaCha8Rng, a: f64) -> f64 {
    1.0 + uni(rng, -a, a)
}

pub(super) fn normal(rng: &mut ChaCha8Rng) -> f64 {
    rng.sample(StandardNormal)
}

/// Approximately standard normal from one 64-bit draw: the sum of four 16-bit uniforms
/// (Irwin–Hall). Tails stop at ±3.5σ, which is irrelevant for image noise, and it is several
/// times cheaper than an exact sampler on the 78 M CT voxels.
#[inline]
pub(super) fn fast_normal(bits: u64) -> f32 {
    let s = (bits & 0xffff) + ((bits >> 16) & 0xffff) + ((bits >> 32) & 0xffff) + (bits >> 48);
    (s as f32 - 131_070.0) * (1.0 / 37_837.23)
}

pub(super) fn random_rotation(rng: &mut ChaCha8Rng) -> Matrix3<f64> {
    let q = Quaternion::new(normal(rng), normal(rng), normal(rng), normal(rng));
    if q.norm() < 1e-9 {
        return Matrix3::identity();
    }
    *UnitQuaternion::from_quaternion(q)
        .to_rotation_matrix()
        .matrix()
}

/// `v` rounded to `decimals` places; dividing by the power of ten (rather than multiplying by
/// a step like 2) yields the double nearest the decimal, so JSON shows `11.74`, not
/// `11.740000000000002`.
pub(super) fn round_dp(v: f64, decimals: i32) -> f64 {
    let m = 10f64.powi(decimals);
    (v * m).round() / m
}
