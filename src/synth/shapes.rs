//! Tissue labels and the shapes the phantom is painted with: ellipsoids and elliptic profiles,
//! painted plane by plane in row spans; oriented ellipsoids for lesions.

use super::*;

/// Indices `i` in `0..n` whose centres `x0 + i·dx` lie in `[a, b]`.
pub(super) fn index_span(a: f64, b: f64, x0: f64, dx: f64, n: usize) -> Option<Range<usize>> {
    // Written so that a NaN bound also yields `None`.
    if a.is_nan() || b.is_nan() || b < a || n == 0 {
        return None;
    }
    let lo = ((a - x0) / dx).ceil();
    let hi = ((b - x0) / dx).floor();
    if hi < 0.0 || lo > (n - 1) as f64 || lo > hi {
        return None;
    }
    let lo = lo.max(0.0) as usize;
    let hi = (hi as usize).min(n - 1);
    Some(lo..hi + 1)
}

/// A plane of sample points: `nx × ny` centres at `(x0 + i·dx, y0 + j·dy)`.
pub(super) struct Plane {
    pub(super) x0: f64,
    pub(super) y0: f64,
    pub(super) dx: f64,
    pub(super) dy: f64,
    pub(super) nx: usize,
    pub(super) ny: usize,
}

impl Plane {
    pub(super) fn of(g: &Geometry, subdivide: usize) -> Plane {
        let d = subdivide as f64;
        Plane {
            x0: g.origin.x - g.spacing.x / 2.0 + g.spacing.x / (2.0 * d),
            y0: g.origin.y - g.spacing.y / 2.0 + g.spacing.y / (2.0 * d),
            dx: g.spacing.x / d,
            dy: g.spacing.y / d,
            nx: g.shape[0] * subdivide,
            ny: g.shape[1] * subdivide,
        }
    }

    pub(super) fn fill(&self, row: &mut [u8], a: f64, b: f64, tissue: u8) {
        if let Some(r) = index_span(a, b, self.x0, self.dx, self.nx) {
            row[r].fill(tissue);
        }
    }
}

/// Tissue labels of the phantom; index into [`Tables`].
pub(super) mod tissue {
    pub const AIR: u8 = 0;
    pub const FAT: u8 = 1;
    pub const SOFT: u8 = 2;
    pub const BRAIN: u8 = 3;
    pub const SKULL: u8 = 4;
    pub const SALIVARY: u8 = 5;
    pub const TONSIL: u8 = 6;
    pub const LUNG: u8 = 7;
    pub const MYOCARDIUM: u8 = 8;
    pub const BLOOD: u8 = 9;
    pub const LIVER: u8 = 10;
    pub const SPLEEN: u8 = 11;
    pub const KIDNEY: u8 = 12;
    pub const BLADDER: u8 = 13;
    pub const CORTEX: u8 = 14;
    pub const MARROW: u8 = 15;
    pub const AIRWAY: u8 = 16;
    /// First of `MAX_BOWEL` labels, one per bowel segment, so each has its own uptake.
    pub const BOWEL: u8 = 17;
    pub const MAX_BOWEL: u8 = 6;
    pub const COUNT: usize = (BOWEL + MAX_BOWEL) as usize;
}

/// An ellipse in an axial plane.
#[derive(Debug, Clone, Copy)]
pub(super) struct Section {
    pub(super) cx: f64,
    pub(super) cy: f64,
    pub(super) rx: f64,
    pub(super) ry: f64,
}

impl Section {
    pub(super) fn lerp(a: &Section, b: &Section, t: f64) -> Section {
        let l = |p: f64, q: f64| p + (q - p) * t;
        Section {
            cx: l(a.cx, b.cx),
            cy: l(a.cy, b.cy),
            rx: l(a.rx, b.rx),
            ry: l(a.ry, b.ry),
        }
    }
}

#[derive(Debug, Clone)]
pub(super) enum Form {
    Ellipsoid {
        c: Vector3<f64>,
        r: Vector3<f64>,
    },
    /// Sections at increasing z, linearly interpolated in between.
    Profile(Vec<(f64, Section)>),
}

#[derive(Debug, Clone)]
pub(super) struct Shape {
    pub(super) tissue: u8,
    pub(super) form: Form,
    /// Hollow: only a wall this thick (mm, in-plane) inside the outline.
    pub(super) wall: Option<f64>,
    /// Only the part with `y` in this range.
    pub(super) y_clip: (f64, f64),
    pub(super) z_lo: f64,
    pub(super) z_hi: f64,
}

impl Shape {
    pub(super) fn ellipsoid(tissue: u8, c: Vector3<f64>, r: Vector3<f64>) -> Shape {
        let r = r.map(|v| v.max(0.1));
        Shape {
            tissue,
            z_lo: c.z - r.z,
            z_hi: c.z + r.z,
            form: Form::Ellipsoid { c, r },
            wall: None,
            y_clip: (f64::NEG_INFINITY, f64::INFINITY),
        }
    }

    pub(super) fn profile(tissue: u8, mut knots: Vec<(f64, Section)>) -> Shape {
        knots.sort_by(|a, b| a.0.total_cmp(&b.0));
        let z_lo = knots.first().map_or(0.0, |k| k.0);
        let z_hi = knots.last().map_or(-1.0, |k| k.0);
        Shape {
            tissue,
            form: Form::Profile(knots),
            wall: None,
            y_clip: (f64::NEG_INFINITY, f64::INFINITY),
            z_lo,
            z_hi,
        }
    }

    pub(super) fn with_wall(mut self, wall: f64) -> Shape {
        self.wall = Some(wall);
        self
    }

    pub(super) fn with_y_clip(mut self, lo: f64, hi: f64) -> Shape {
        self.y_clip = (lo, hi);
        self
    }

    pub(super) fn section(&self, z: f64) -> Option<Section> {
        if z.is_nan() || z < self.z_lo || z > self.z_hi {
            return None;
        }
        let s = match &self.form {
            Form::Ellipsoid { c, r } => {
                let t = (z - c.z) / r.z;
                let s2 = 1.0 - t * t;
                if s2 <= 0.0 {
                    return None;
                }
                let s = s2.sqrt();
                Section {
                    cx: c.x,
                    cy: c.y,
                    rx: r.x * s,
                    ry: r.y * s,
                }
            }
            Form::Profile(knots) => {
                let idx = knots.partition_point(|(kz, _)| *kz <= z);
                match (knots.get(idx.wrapping_sub(1)), knots.get(idx)) {
                    (Some((z0, a)), Some((z1, b))) => {
                        let t = if z1 > z0 { (z - z0) / (z1 - z0) } else { 0.0 };
                        Section::lerp(a, b, t)
                    }
                    (Some((_, a)), None) => *a,
                    _ => return None,
                }
            }
        };
        (s.rx > 0.0 && s.ry > 0.0).then_some(s)
    }

    pub(super) fn inner(&self, s: &Section) -> Option<(f64, f64)> {
        match self.wall {
            Some(w) if s.rx > w && s.ry > w => Some((s.rx - w, s.ry - w)),
            _ => None,
        }
    }

    pub(super) fn contains(&self, p: &Vector3<f64>) -> bool {
        if p.y < self.y_clip.0 || p.y > self.y_clip.1 {
            return false;
        }
        let Some(s) = self.section(p.z) else {
            return false;
        };
        let (dx, dy) = ((p.x - s.cx) / s.rx, (p.y - s.cy) / s.ry);
        if dx * dx + dy * dy > 1.0 {
            return false;
        }
        match self.inner(&s) {
            Some((irx, iry)) => {
                let (ix, iy) = ((p.x - s.cx) / irx, (p.y - s.cy) / iry);
                ix * ix + iy * iy >= 1.0
            }
            None => true,
        }
    }

    /// Paints this shape's cross-section at `z` into `out` (row-major `plane`) by row spans.
    pub(super) fn paint(&self, z: f64, plane: &Plane, out: &mut [u8]) {
        let Some(s) = self.section(z) else {
            return;
        };
        let y_lo = (s.cy - s.ry).max(self.y_clip.0);
        let y_hi = (s.cy + s.ry).min(self.y_clip.1);
        let Some(rows) = index_span(y_lo, y_hi, plane.y0, plane.dy, plane.ny) else {
            return;
        };
        let inner = self.inner(&s);
        for j in rows {
            let y = plane.y0 + j as f64 * plane.dy;
            let t = (y - s.cy) / s.ry;
            let half = s.rx * (1.0 - t * t).max(0.0).sqrt();
            let row = &mut out[j * plane.nx..(j + 1) * plane.nx];
            let inner_half = inner.and_then(|(irx, iry)| {
                let t = (y - s.cy) / iry;
                (t * t < 1.0).then(|| irx * (1.0 - t * t).sqrt())
            });
            match inner_half {
                None => plane.fill(row, s.cx - half, s.cx + half, self.tissue),
                Some(ih) => {
                    plane.fill(row, s.cx - half, s.cx - ih, self.tissue);
                    plane.fill(row, s.cx + ih, s.cx + half, self.tissue);
                }
            }
        }
    }

    pub(super) fn bbox(&self) -> (Vector3<f64>, Vector3<f64>) {
        match &self.form {
            Form::Ellipsoid { c, r } => (c - r, c + r),
            Form::Profile(knots) => {
                let mut lo = Vector3::repeat(f64::INFINITY);
                let mut hi = Vector3::repeat(f64::NEG_INFINITY);
                for (z, s) in knots {
                    lo = lo.inf(&Vector3::new(s.cx - s.rx, s.cy - s.ry, *z));
                    hi = hi.sup(&Vector3::new(s.cx + s.rx, s.cy + s.ry, *z));
                }
                (lo, hi)
            }
        }
    }
}

/// An arbitrarily oriented ellipsoid (lesions).
#[derive(Debug, Clone)]
pub(super) struct Ellipsoid {
    pub(super) c: Vector3<f64>,
    pub(super) r: Vector3<f64>,
    /// Columns are the semi-axis directions.
    pub(super) rot: Matrix3<f64>,
}

impl Ellipsoid {
    /// Σ (local_i / r_i)²: ≤ 1 inside.
    #[inline]
    pub(super) fn level(&self, p: &Vector3<f64>) -> f64 {
        let d = self.rot.tr_mul(&(p - self.c));
        (d.x / self.r.x).powi(2) + (d.y / self.r.y).powi(2) + (d.z / self.r.z).powi(2)
    }

    pub(super) fn max_radius(&self) -> f64 {
        self.r.max()
    }

    /// Half extent of the axis-aligned bounding box.
    pub(super) fn half_extent(&self) -> Vector3<f64> {
        Vector3::from_fn(|a, _| {
            (0..3)
                .map(|i| (self.rot[(a, i)] * self.r[i]).powi(2))
                .sum::<f64>()
                .sqrt()
        })
    }

    /// Point on the ellipsoid grown by `inflate` mm (per semi-axis), in local direction `u`.
    pub(super) fn point(&self, u: &Vector3<f64>, scale: f64, inflate: f64) -> Vector3<f64> {
        let local = (self.r * scale).add_scalar(inflate).component_mul(u);
        self.c + self.rot * local
    }

    /// Extent of the ellipsoid along the world unit vector `n`.
    pub(super) fn support(&self, n: &Vector3<f64>) -> f64 {
        let l = self.rot.tr_mul(n);
        l.component_mul(&self.r).norm()
    }

    pub(super) fn volume_ml(&self) -> f64 {
        4.0 / 3.0 * std::f64::consts::PI * self.r.x * self.r.y * self.r.z / 1000.0
    }
}

/// Index range of grid `g` along axis `a` covering `[lo, hi]` world mm (identity direction).
pub(super) fn axis_range(g: &Geometry, a: usize, lo: f64, hi: f64) -> Option<Range<usize>> {
    index_span(lo, hi, g.origin[a], g.spacing[a], g.shape[a])
}
