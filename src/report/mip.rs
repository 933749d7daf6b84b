//! Maximum intensity projections of a canonical (LPS) SUV volume, with the lesion that holds
//! each ray's brightest lesion voxel.

use crate::volume::Volume;

/// The two projections the overview shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Along y (anterior→posterior): columns run along i (patient right → left), rows along k.
    Coronal,
    /// Along x (right→left): columns run along j (anterior → posterior), rows along k.
    Sagittal,
}

impl View {
    /// The canonical axis that runs along the projection's columns.
    pub fn across(self) -> usize {
        match self {
            View::Coronal => 0,
            View::Sagittal => 1,
        }
    }
}

/// A projection on the volume's own grid: `across × nz` values, `[k][a]` with `a` fastest.
#[derive(Debug, Clone)]
pub struct Projection {
    pub view: View,
    /// Voxels along the columns and along k.
    pub shape: [usize; 2],
    /// Voxel spacing (mm) along the columns and along k.
    pub spacing: [f64; 2],
    /// Maximum SUV along each ray.
    pub suv: Vec<f32>,
    /// The lesion id (0 for none) of the brightest lesion voxel along each ray.
    pub lesion: Vec<u32>,
}

/// Projects `pet` (SUV, canonical LPS) and, when given, `ids` (lesion ids on the same grid).
pub fn project(pet: &Volume<f32>, ids: Option<&Volume<u32>>, view: View) -> Projection {
    let [nx, ny, nz] = pet.shape();
    let spacing = pet.geometry().spacing;
    let (na, along) = match view {
        View::Coronal => (nx, ny),
        View::Sagittal => (ny, nx),
    };
    let mut suv = vec![f32::NEG_INFINITY; na * nz];
    let mut best = vec![f32::NEG_INFINITY; na * nz];
    let mut lesion = vec![0u32; na * nz];
    for k in 0..nz {
        for a in 0..na {
            let ray = k * na + a;
            for t in 0..along {
                let (i, j) = match view {
                    View::Coronal => (a, t),
                    View::Sagittal => (t, a),
                };
                let v = i + nx * (j + ny * k);
                let s = pet.data()[v];
                suv[ray] = suv[ray].max(s);
                let id = ids.map_or(0, |ids| ids.data()[v]);
                if id != 0 && s > best[ray] {
                    best[ray] = s;
                    lesion[ray] = id;
                }
            }
        }
    }
    Projection {
        view,
        shape: [na, nz],
        spacing: [spacing[view.across()], spacing[2]],
        suv,
        lesion,
    }
}

/// Pixels (of a `width × height` id image) that lie on a lesion's border: a lesion pixel with a
/// pixel of another id (or the image's edge) within `radius` pixels (Chebyshev distance).
pub fn outline(ids: &[u32], width: usize, height: usize, radius: usize) -> Vec<bool> {
    let mut on = vec![false; ids.len()];
    for y in 0..height {
        for x in 0..width {
            let id = ids[y * width + x];
            if id == 0 {
                continue;
            }
            let near_edge = x < radius || y < radius || x + radius >= width || y + radius >= height;
            on[y * width + x] = near_edge
                || (y - radius..=y + radius)
                    .any(|yy| (x - radius..=x + radius).any(|xx| ids[yy * width + xx] != id));
        }
    }
    on
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Geometry;

    #[test]
    fn projections_take_the_brightest_voxel_and_its_lesion() {
        let g = Geometry::axial([3, 4, 2], [2.0, 3.0, 4.0], [0.0; 3]);
        let mut pet = Volume::filled(g.clone(), 1.0f32).unwrap();
        let mut ids = Volume::filled(g, 0u32).unwrap();
        let at = |i: usize, j: usize, k: usize| i + 3 * (j + 4 * k);
        pet.data_mut()[at(1, 2, 1)] = 5.0;
        ids.data_mut()[at(1, 2, 1)] = 2;
        pet.data_mut()[at(1, 3, 1)] = 3.0;
        ids.data_mut()[at(1, 3, 1)] = 1;
        let c = project(&pet, Some(&ids), View::Coronal);
        assert_eq!((c.shape, c.spacing), ([3, 2], [2.0, 4.0]));
        assert_eq!(c.suv[3 + 1], 5.0);
        assert_eq!(c.lesion[3 + 1], 2, "the brighter lesion wins the ray");
        let s = project(&pet, Some(&ids), View::Sagittal);
        assert_eq!((s.shape, s.spacing), ([4, 2], [3.0, 4.0]));
        assert_eq!((s.lesion[4 + 2], s.lesion[4 + 3]), (2, 1));
        assert_eq!(s.suv[4 + 3], 3.0);
        assert!(s.lesion[..4].iter().all(|&l| l == 0));
    }

    #[test]
    fn outlines_are_the_border_of_each_lesion() {
        // A 5x5 lesion in a 7x7 image: radius 1 leaves its 3x3 centre unmarked.
        let mut ids = vec![0u32; 49];
        for y in 1..6 {
            for x in 1..6 {
                ids[y * 7 + x] = 1;
            }
        }
        let on = outline(&ids, 7, 7, 1);
        assert_eq!(on.iter().filter(|&&b| b).count(), 25 - 9);
        assert!(!on[3 * 7 + 3]);
        assert!(on[7 + 1] && !on[0]);
    }
}
