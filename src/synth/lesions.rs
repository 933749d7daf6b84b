//! Lesions: the disease model, requests per site, and placement by rejection sampling against
//! the anatomy.

use super::*;

#[derive(Debug, Clone)]
pub(super) struct PlacedLesion {
    pub(super) site: Site,
    pub(super) shape: Ellipsoid,
    pub(super) suv: f64,
    pub(super) hu: f64,
    pub(super) near: Option<HotOrgan>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Request {
    pub(super) site: Site,
    pub(super) radius: (f64, f64),
    pub(super) near: Option<HotOrgan>,
}

impl Site {
    pub(super) fn host(self) -> &'static [u8] {
        match self {
            Site::Lung => &[tissue::LUNG],
            Site::Liver => &[tissue::LIVER],
            Site::Bone => &[tissue::MARROW, tissue::CORTEX],
            _ => &[tissue::SOFT],
        }
    }

    pub(super) fn host_tissue(self) -> u8 {
        self.host()[0]
    }

    /// Hot organs a lesion at this site can sensibly sit next to.
    pub(super) fn neighbours(self) -> &'static [HotOrgan] {
        match self {
            Site::Lung | Site::MediastinalNode => &[HotOrgan::Heart],
            Site::Liver | Site::AbdominalNode => &[HotOrgan::Kidney],
            Site::Bone => &[HotOrgan::Kidney, HotOrgan::Bladder],
            Site::NeckNode | Site::AxillaryNode => &[],
        }
    }
}

pub(super) fn pick<T: Copy>(rng: &mut ChaCha8Rng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

/// Draws the disease model and the lesions it asks for (before placement).
pub(super) fn plan_lesions(rng: &mut ChaCha8Rng) -> (DiseaseModel, Vec<Request>) {
    let u: f64 = rng.random();
    let model = if u < 0.28 {
        DiseaseModel::None
    } else if u < 0.68 {
        DiseaseModel::HeadAndNeck
    } else if u < 0.79 {
        DiseaseModel::Lung
    } else {
        DiseaseModel::Lymphoma
    };
    let mut reqs = Vec::new();
    match model {
        DiseaseModel::None => {}
        DiseaseModel::HeadAndNeck => head_and_neck(rng, &mut reqs),
        DiseaseModel::Lung => lung(rng, &mut reqs),
        DiseaseModel::Lymphoma => lymphoma(rng, &mut reqs),
    }
    for r in &mut reqs {
        // Some lesions at the resolution limit, some a few mm from a hot organ.
        if rng.random_bool(0.2) {
            r.radius = (3.0, 5.0);
        }
        let neighbours = r.site.neighbours();
        if !neighbours.is_empty() && rng.random_bool(0.3) {
            r.near = Some(pick(rng, neighbours));
        }
    }
    (model, reqs)
}

/// A lesion at `site` with a radius drawn from `lo`–`hi` mm, anywhere in its host.
fn req(site: Site, lo: f64, hi: f64) -> Request {
    Request {
        site,
        radius: (lo, hi),
        near: None,
    }
}

/// A primary neck node, up to two more, and distant metastases in one study of five.
fn head_and_neck(rng: &mut ChaCha8Rng, reqs: &mut Vec<Request>) {
    reqs.push(req(Site::NeckNode, 6.0, 25.0));
    for _ in 0..rng.random_range(0..=2) {
        reqs.push(req(Site::NeckNode, 4.0, 14.0));
    }
    if rng.random_bool(0.2) {
        metastases(rng, reqs, 4, &[Site::Lung, Site::Liver, Site::Bone]);
    }
}

/// A lung primary, mediastinal nodes in half the studies, metastases in two of five.
fn lung(rng: &mut ChaCha8Rng, reqs: &mut Vec<Request>) {
    reqs.push(req(Site::Lung, 8.0, 25.0));
    if rng.random_bool(0.5) {
        for _ in 0..rng.random_range(1..=2) {
            reqs.push(req(Site::MediastinalNode, 5.0, 15.0));
        }
    }
    if rng.random_bool(0.4) {
        metastases(rng, reqs, 3, &[Site::Liver, Site::Bone, Site::Lung]);
    }
}

/// Neck nodes only (three studies in ten), otherwise 2–6 nodes anywhere along the lymph chains.
fn lymphoma(rng: &mut ChaCha8Rng, reqs: &mut Vec<Request>) {
    if rng.random_bool(0.3) {
        for _ in 0..rng.random_range(1..=3) {
            reqs.push(req(Site::NeckNode, 5.0, 18.0));
        }
    } else {
        let sites = [
            Site::NeckNode,
            Site::AxillaryNode,
            Site::MediastinalNode,
            Site::AbdominalNode,
        ];
        for _ in 0..rng.random_range(2..=6) {
            reqs.push(req(pick(rng, &sites), 5.0, 20.0));
        }
    }
}

/// 1–`max` metastases, each at one of `sites`.
fn metastases(rng: &mut ChaCha8Rng, reqs: &mut Vec<Request>, max: u32, sites: &[Site]) {
    for _ in 0..rng.random_range(1..=max) {
        let site = pick(rng, sites);
        reqs.push(match site {
            Site::Lung => req(site, 4.0, 12.0),
            Site::Liver => req(site, 5.0, 20.0),
            _ => req(site, 4.0, 14.0),
        });
    }
}

/// Unit directions for probing a lesion's surface: a Fibonacci sphere plus the six axes.
pub(super) fn probe_directions() -> Vec<Vector3<f64>> {
    let n = 48;
    let mut dirs: Vec<Vector3<f64>> = (0..n)
        .map(|i| {
            let z = 1.0 - 2.0 * (i as f64 + 0.5) / n as f64;
            let r = (1.0 - z * z).max(0.0).sqrt();
            let phi = i as f64 * 2.399_963_229_728_653;
            Vector3::new(r * phi.cos(), r * phi.sin(), z)
        })
        .collect();
    for a in 0..3 {
        for s in [-1.0, 1.0] {
            let mut v = Vector3::zeros();
            v[a] = s;
            dirs.push(v);
        }
    }
    dirs
}

pub(super) const MAX_ATTEMPTS: usize = 400;
/// Largest distance (mm) from a hot organ at which a lesion is reported as near it.
pub(super) const NEAR_MM: f64 = 10.0;
/// Minimum surface-to-surface separation of two lesions, so masks never touch.
pub(super) const LESION_SEPARATION_MM: f64 = 8.0;

pub(super) struct Placer<'a> {
    pub(super) anatomy: &'a Anatomy,
    pub(super) pet: &'a Geometry,
    pub(super) dirs: Vec<Vector3<f64>>,
    pub(super) max_radius: f64,
}

impl Placer<'_> {
    pub(super) fn place(
        &self,
        rng: &mut ChaCha8Rng,
        request: Request,
        placed: &[PlacedLesion],
    ) -> Option<PlacedLesion> {
        let first = self.try_place(rng, request, placed);
        if first.is_some() || request.near.is_none() {
            return first;
        }
        self.try_place(
            rng,
            Request {
                near: None,
                ..request
            },
            placed,
        )
    }

    pub(super) fn try_place(
        &self,
        rng: &mut ChaCha8Rng,
        request: Request,
        placed: &[PlacedLesion],
    ) -> Option<PlacedLesion> {
        let hi = request.radius.1.min(self.max_radius);
        let lo = request.radius.0.min(hi);
        let mut radius = uni(rng, lo, hi);
        for attempt in 0..MAX_ATTEMPTS {
            // Shrink a lesion that does not fit its host rather than giving up on it.
            if attempt > 0 && attempt % 40 == 0 {
                radius = (radius * 0.85).max(3.0);
            }
            let r = Vector3::from_fn(|_, _| {
                round_dp((radius * uni(rng, 0.7, 1.3)).clamp(3.0, self.max_radius), 2)
            });
            let mut shape = Ellipsoid {
                c: Vector3::zeros(),
                r,
                rot: random_rotation(rng),
            };
            let centre = match request.near {
                Some(organ) => self.centre_near(rng, organ, &shape),
                None => self.centre_in_site(rng, request.site),
            };
            let Some(centre) = centre else {
                continue;
            };
            shape.c = centre.map(|v| round_dp(v, 2));
            if !self.fits(request.site, &shape, placed) {
                continue;
            }
            let near = self.nearest_hot(&shape);
            if let Some(wanted) = request.near {
                match near {
                    Some((organ, gap)) if organ == wanted && gap >= 3.0 => {}
                    _ => continue,
                }
            }
            return Some(PlacedLesion {
                site: request.site,
                shape,
                suv: 0.0,
                hu: 0.0,
                near: near.map(|(o, _)| o),
            });
        }
        None
    }

    pub(super) fn centre_in_site(&self, rng: &mut ChaCha8Rng, site: Site) -> Option<Vector3<f64>> {
        let f = &self.anatomy.frame;
        let side = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
        let in_shape = |rng: &mut ChaCha8Rng, idx: usize| {
            let (lo, hi) = self.anatomy.shapes[idx].bbox();
            Vector3::from_fn(|a, _| uni(rng, lo[a], hi[a]))
        };
        Some(match site {
            Site::NeckNode => f.p(
                side * uni(rng, 20.0, 46.0),
                uni(rng, -32.0, 15.0),
                uni(rng, 198.0, 265.0),
            ),
            Site::AxillaryNode => f.p(
                side * uni(rng, 115.0, 168.0),
                uni(rng, -30.0, 45.0),
                uni(rng, 292.0, 350.0),
            ),
            Site::MediastinalNode => f.p(
                uni(rng, -30.0, 30.0),
                uni(rng, -45.0, 25.0),
                uni(rng, 320.0, 440.0),
            ),
            Site::AbdominalNode => f.p(
                uni(rng, -50.0, 50.0),
                uni(rng, -35.0, 20.0),
                uni(rng, 600.0, 770.0),
            ),
            Site::Lung => {
                let idx = pick(rng, &self.anatomy.lungs);
                in_shape(rng, idx)
            }
            Site::Liver => in_shape(rng, self.anatomy.liver),
            Site::Bone => {
                let idx = pick(rng, &self.anatomy.bones);
                in_shape(rng, idx)
            }
        })
    }

    /// A centre that puts the lesion roughly 4–10 mm outside a random point of the organ.
    pub(super) fn centre_near(
        &self,
        rng: &mut ChaCha8Rng,
        organ: HotOrgan,
        shape: &Ellipsoid,
    ) -> Option<Vector3<f64>> {
        let candidates: Vec<&HotOutline> = self
            .anatomy
            .hot
            .iter()
            .filter(|h| h.organ == organ)
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let h = candidates[rng.random_range(0..candidates.len())];
        let u = Vector3::new(normal(rng), normal(rng), normal(rng)).try_normalize(1e-9)?;
        let surface = h.c + h.r.component_mul(&u);
        let n = (surface - h.c)
            .component_div(&h.r.component_mul(&h.r))
            .try_normalize(1e-12)?;
        Some(surface + n * (uni(rng, 4.0, 10.0) + shape.support(&n)))
    }

    /// Inside the FOV and its region, apart from other lesions, and wholly in its host tissue.
    pub(super) fn fits(&self, site: Site, shape: &Ellipsoid, placed: &[PlacedLesion]) -> bool {
        let half = shape.half_extent();
        let margin = 2.0 * self.pet.spacing.max();
        for a in 0..3 {
            let lo = self.pet.origin[a];
            let hi = lo + (self.pet.shape[a] as f64 - 1.0) * self.pet.spacing[a];
            if shape.c[a] - half[a] < lo + margin || shape.c[a] + half[a] > hi - margin {
                return false;
            }
        }
        let [hn_lo, hn_hi] = self.anatomy.head_neck_z;
        let in_head_neck = shape.c.z >= hn_lo && shape.c.z <= hn_hi;
        if site.is_head_neck() != in_head_neck {
            return false;
        }
        let apart = placed.iter().all(|p| {
            (p.shape.c - shape.c).norm()
                > p.shape.max_radius() + shape.max_radius() + LESION_SEPARATION_MM
        });
        if !apart {
            return false;
        }
        let host = site.host();
        let inside = |p: &Vector3<f64>| host.contains(&self.anatomy.tissue_at(p));
        inside(&shape.c)
            && self
                .dirs
                .iter()
                .all(|u| inside(&shape.point(u, 1.0, 1.5)) && inside(&shape.point(u, 0.5, 0.0)))
    }

    /// The closest hot organ within [`NEAR_MM`] of the surface, and its distance (1 mm steps).
    pub(super) fn nearest_hot(&self, shape: &Ellipsoid) -> Option<(HotOrgan, f64)> {
        (0..=NEAR_MM as usize).find_map(|d| {
            let d = d as f64;
            self.dirs
                .iter()
                .find_map(|u| self.anatomy.hot_organ_at(&shape.point(u, 1.0, d)))
                .map(|o| (o, d))
        })
    }
}

/// True uptake and CT value of a placed lesion, from its host tissue.
pub(super) fn lesion_values(rng: &mut ChaCha8Rng, tables: &Tables, l: &mut PlacedLesion) {
    let host = l.site.host_tissue();
    let background = tables.suv[host as usize] as f64;
    // Small lesions get a higher floor so that after partial volume they are still hot spots.
    let r_mean = l.shape.r.iter().product::<f64>().cbrt();
    let contrast = 1.6 + 1.4 * ((8.0 - r_mean) / 5.0).clamp(0.0, 1.0);
    let floor = (background * contrast).clamp(2.0, 14.0);
    l.suv = round_dp(floor + (15.0 - floor) * rng.random::<f64>().powf(1.3), 3);
    let host_hu = tables.hu[host as usize] as f64;
    l.hu = match l.site {
        Site::Lung => uni(rng, 20.0, 45.0),
        Site::Liver => host_hu - uni(rng, 20.0, 30.0),
        Site::Bone if rng.random_bool(0.5) => uni(rng, 60.0, 150.0),
        Site::Bone => uni(rng, 900.0, 1200.0),
        _ => uni(rng, 40.0, 50.0),
    };
}
