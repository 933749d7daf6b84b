//! The images: PET (sub-sampled tissue, texture, lesions, noise, point-spread blur), CT on its own
//! grid, and the ground-truth mask.

use super::*;

/// Smooth random field (trilinear interpolation of a coarse Gaussian lattice) for PET texture.
pub(super) struct Texture {
    pub(super) origin: Vector3<f64>,
    pub(super) step: f64,
    pub(super) dims: [usize; 3],
    pub(super) values: Vec<f32>,
}

impl Texture {
    pub(super) fn new(rng: &mut ChaCha8Rng, g: &Geometry, step: f64) -> Texture {
        let origin = g.origin.add_scalar(-step);
        let dims: [usize; 3] = std::array::from_fn(|a| {
            ((g.shape[a] as f64 * g.spacing[a]) / step).ceil() as usize + 3
        });
        let values = (0..dims.iter().product::<usize>())
            .map(|_| normal(rng) as f32)
            .collect();
        Texture {
            origin,
            step,
            dims,
            values,
        }
    }

    pub(super) fn sample(&self, x: f64, y: f64, z: f64) -> f32 {
        let p = [x, y, z];
        let mut i0 = [0usize; 3];
        let mut t = [0f32; 3];
        for a in 0..3 {
            let u = ((p[a] - self.origin[a]) / self.step).clamp(0.0, (self.dims[a] - 2) as f64);
            let f = u.floor();
            i0[a] = f as usize;
            t[a] = (u - f) as f32;
        }
        let at = |i: usize, j: usize, k: usize| {
            self.values[i0[0] + i + self.dims[0] * (i0[1] + j + self.dims[1] * (i0[2] + k))]
        };
        let lerp = |a: f32, b: f32, t: f32| a + (b - a) * t;
        let c00 = lerp(at(0, 0, 0), at(1, 0, 0), t[0]);
        let c10 = lerp(at(0, 1, 0), at(1, 1, 0), t[0]);
        let c01 = lerp(at(0, 0, 1), at(1, 0, 1), t[0]);
        let c11 = lerp(at(0, 1, 1), at(1, 1, 1), t[0]);
        lerp(lerp(c00, c10, t[1]), lerp(c01, c11, t[1]), t[2])
    }
}

/// Study-level PET physics parameters.
pub(super) struct PetPhysics {
    pub(super) texture: Texture,
    pub(super) texture_amplitude: f32,
    /// Variance per unit activity of the Poisson-like noise.
    pub(super) noise_k: f64,
    /// Point-spread blur along x, y and z.
    pub(super) kernels: [Vec<f32>; 3],
}

pub(super) fn gaussian_kernel(fwhm_mm: f64, spacing_mm: f64) -> Vec<f32> {
    let sigma = fwhm_mm / (8.0 * 2f64.ln()).sqrt() / spacing_mm;
    let radius = (3.0 * sigma).ceil().max(1.0) as i64;
    let w: Vec<f64> = (-radius..=radius)
        .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f64 = w.iter().sum();
    w.iter().map(|v| (v / sum) as f32).collect()
}

/// Blurs `data` (shape `n`) along `axis` with `kernel`, replicating edge voxels.
pub(super) fn blur_axis(data: &mut [f32], n: [usize; 3], axis: usize, kernel: &[f32]) {
    let r = (kernel.len() / 2) as isize;
    let plane = n[0] * n[1];
    if axis == 2 {
        let src = data.to_vec();
        data.par_chunks_mut(plane).enumerate().for_each(|(k, out)| {
            for (idx, o) in out.iter_mut().enumerate() {
                let mut acc = 0f32;
                for (d, w) in kernel.iter().enumerate() {
                    let kk = (k as isize + d as isize - r).clamp(0, n[2] as isize - 1) as usize;
                    acc += w * src[kk * plane + idx];
                }
                *o = acc;
            }
        });
        return;
    }
    data.par_chunks_mut(plane).for_each(|slice| {
        let src = slice.to_vec();
        let (len, stride) = if axis == 0 { (n[0], 1) } else { (n[1], n[0]) };
        let lines = plane / len;
        for line in 0..lines {
            let base = if axis == 0 { line * n[0] } else { line };
            for i in 0..len {
                let mut acc = 0f32;
                for (d, w) in kernel.iter().enumerate() {
                    let ii = (i as isize + d as isize - r).clamp(0, len as isize - 1) as usize;
                    acc += w * src[base + ii * stride];
                }
                slice[base + i * stride] = acc;
            }
        }
    });
}

/// Lesions whose bounding box meets the slab `[z_lo, z_hi]`.
pub(super) fn lesions_in_slab(
    lesions: &[PlacedLesion],
    z_lo: f64,
    z_hi: f64,
) -> Vec<&PlacedLesion> {
    lesions
        .iter()
        .filter(|l| {
            let h = l.shape.half_extent().z;
            l.shape.c.z + h >= z_lo && l.shape.c.z - h <= z_hi
        })
        .collect()
}

pub(super) fn make_pet(
    anatomy: &Anatomy,
    lesions: &[PlacedLesion],
    g: &Geometry,
    physics: &PetPhysics,
    seed: u64,
) -> Vec<f32> {
    let [nx, ny, _] = g.shape;
    let sp = g.spacing;
    let sub = Plane::of(g, 2);
    let tables = &anatomy.tables;
    let mut data = vec![0f32; g.len()];
    data.par_chunks_mut(nx * ny).enumerate().for_each_init(
        || (vec![tissue::AIR; sub.nx * sub.ny], vec![0f32; nx * ny]),
        |(labels, gained), (k, slice)| {
            let z = g.origin.z + k as f64 * sp.z;
            slice.fill(0.0);
            gained.fill(0.0);
            // 2×2×2 sub-samples per voxel: organ edges get partial-volume values.
            for dz in [-0.25 * sp.z, 0.25 * sp.z] {
                anatomy.paint(z + dz, &sub, labels);
                for j in 0..ny {
                    for i in 0..nx {
                        let mut s = 0f32;
                        let mut t = 0f32;
                        for (a, b) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                            let l = labels[(2 * i + a) + sub.nx * (2 * j + b)] as usize;
                            s += tables.suv[l];
                            t += tables.suv[l] * tables.texture_gain[l];
                        }
                        slice[i + nx * j] += s;
                        gained[i + nx * j] += t;
                    }
                }
            }
            for j in 0..ny {
                let y = g.origin.y + j as f64 * sp.y;
                for i in 0..nx {
                    let idx = i + nx * j;
                    if gained[idx] == 0.0 {
                        continue;
                    }
                    let x = g.origin.x + i as f64 * sp.x;
                    let tex = physics.texture.sample(x, y, z) * physics.texture_amplitude;
                    slice[idx] = ((slice[idx] + tex * gained[idx]) / 8.0).max(0.0);
                }
            }
            for l in lesions_in_slab(lesions, z - sp.z, z + sp.z) {
                blend_lesion(l, g, k, slice);
            }
            let mut rng = sub_rng(seed, TAG_PET_NOISE, k as u64);
            for v in slice.iter_mut() {
                if *v > 0.0 {
                    let sd = (*v as f64 * physics.noise_k).sqrt();
                    *v += (normal(&mut rng) * sd) as f32;
                }
            }
        },
    );
    for (axis, kernel) in physics.kernels.iter().enumerate() {
        blur_axis(&mut data, g.shape, axis, kernel);
    }
    for v in &mut data {
        *v = v.max(0.0);
    }
    data
}

/// Replaces the activity of PET slice `k` by the lesion's uptake in proportion to how much of
/// each voxel it covers (4×4×4 sub-samples).
pub(super) fn blend_lesion(l: &PlacedLesion, g: &Geometry, k: usize, slice: &mut [f32]) {
    const N: usize = 4;
    let sp = g.spacing;
    let z = g.origin.z + k as f64 * sp.z;
    let h = l.shape.half_extent();
    let reach = h + sp * 0.5;
    let (Some(ri), Some(rj)) = (
        axis_range(g, 0, l.shape.c.x - reach.x, l.shape.c.x + reach.x),
        axis_range(g, 1, l.shape.c.y - reach.y, l.shape.c.y + reach.y),
    ) else {
        return;
    };
    let offsets: Vec<f64> = (0..N).map(|s| (s as f64 + 0.5) / N as f64 - 0.5).collect();
    for j in rj {
        for i in ri.clone() {
            let centre = Vector3::new(
                g.origin.x + i as f64 * sp.x,
                g.origin.y + j as f64 * sp.y,
                z,
            );
            let mut inside = 0usize;
            for oz in &offsets {
                for oy in &offsets {
                    for ox in &offsets {
                        let p = centre + Vector3::new(ox * sp.x, oy * sp.y, oz * sp.z);
                        inside += (l.shape.level(&p) <= 1.0) as usize;
                    }
                }
            }
            if inside > 0 {
                let frac = inside as f32 / (N * N * N) as f32;
                let v = &mut slice[i + g.shape[0] * j];
                *v = *v * (1.0 - frac) + frac * l.suv as f32;
            }
        }
    }
}

pub(super) fn make_ct(
    anatomy: &Anatomy,
    lesions: &[PlacedLesion],
    g: &Geometry,
    noise_sd: f32,
    seed: u64,
) -> Vec<f32> {
    let [nx, ny, _] = g.shape;
    let plane = Plane::of(g, 1);
    let hu = &anatomy.tables.hu;
    let mut data = vec![0f32; g.len()];
    data.par_chunks_mut(nx * ny).enumerate().for_each_init(
        || vec![tissue::AIR; nx * ny],
        |labels, (k, slice)| {
            let z = g.origin.z + k as f64 * g.spacing.z;
            anatomy.paint(z, &plane, labels);
            for (v, &l) in slice.iter_mut().zip(labels.iter()) {
                *v = hu[l as usize];
            }
            for l in lesions_in_slab(lesions, z, z) {
                let h = l.shape.half_extent();
                let (Some(ri), Some(rj)) = (
                    axis_range(g, 0, l.shape.c.x - h.x, l.shape.c.x + h.x),
                    axis_range(g, 1, l.shape.c.y - h.y, l.shape.c.y + h.y),
                ) else {
                    continue;
                };
                for j in rj {
                    let y = g.origin.y + j as f64 * g.spacing.y;
                    for i in ri.clone() {
                        let p = Vector3::new(g.origin.x + i as f64 * g.spacing.x, y, z);
                        if l.shape.level(&p) <= 1.0 {
                            slice[i + nx * j] = l.hu as f32;
                        }
                    }
                }
            }
            let mut rng = sub_rng(seed, TAG_CT_NOISE, k as u64);
            for v in slice.iter_mut() {
                let noisy = *v + noise_sd * fast_normal(rng.next_u64());
                *v = noisy.round().clamp(-1024.0, 3071.0);
            }
        },
    );
    data
}

/// Ground-truth mask: PET voxels whose centre lies inside a lesion; a lesion too small to
/// contain any centre gets the voxel holding its centre. Returns the voxel count per lesion.
pub(super) fn make_seg(lesions: &[PlacedLesion], g: &Geometry, seg: &mut [u8]) -> Vec<u64> {
    let [nx, ny, nz] = g.shape;
    lesions
        .iter()
        .map(|l| {
            let h = l.shape.half_extent();
            let mut count = 0u64;
            let ranges = (
                axis_range(g, 0, l.shape.c.x - h.x, l.shape.c.x + h.x),
                axis_range(g, 1, l.shape.c.y - h.y, l.shape.c.y + h.y),
                axis_range(g, 2, l.shape.c.z - h.z, l.shape.c.z + h.z),
            );
            if let (Some(ri), Some(rj), Some(rk)) = ranges {
                for k in rk {
                    for j in rj.clone() {
                        for i in ri.clone() {
                            let p = g.index_to_world(Vector3::new(i as f64, j as f64, k as f64));
                            if l.shape.level(&p) <= 1.0 {
                                seg[g.linear_index(i, j, k)] = 1;
                                count += 1;
                            }
                        }
                    }
                }
            }
            if count == 0 {
                let idx = |a: usize, n: usize| {
                    (((l.shape.c[a] - g.origin[a]) / g.spacing[a])
                        .round()
                        .max(0.0) as usize)
                        .min(n - 1)
                };
                seg[g.linear_index(idx(0, nx), idx(1, ny), idx(2, nz))] = 1;
                count = 1;
            }
            count
        })
        .collect()
}
