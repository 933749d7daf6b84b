//! The body: the frame from the adult body plan to LPS millimetres, the organ shapes, per-study
//! tissue values, arms and legs.

use super::*;

/// Body frame → LPS world: X left, Y posterior, T mm below the vertex (adult proportions).
#[derive(Debug, Clone)]
pub(super) struct Frame {
    pub(super) ox: f64,
    pub(super) oy: f64,
    pub(super) zv: f64,
    pub(super) sx: f64,
    pub(super) sy: f64,
    pub(super) sz: f64,
}

impl Frame {
    pub(super) fn p(&self, x: f64, y: f64, t: f64) -> Vector3<f64> {
        Vector3::new(self.ox + self.sx * x, self.oy + self.sy * y, self.z(t))
    }
    pub(super) fn r(&self, rx: f64, ry: f64, rt: f64) -> Vector3<f64> {
        Vector3::new(self.sx * rx, self.sy * ry, self.sz * rt)
    }
    pub(super) fn z(&self, t: f64) -> f64 {
        self.zv - self.sz * t
    }
    pub(super) fn y(&self, y: f64) -> f64 {
        self.oy + self.sy * y
    }
    /// Scale for thicknesses (walls, cortices).
    pub(super) fn iso(&self) -> f64 {
        (self.sx * self.sy * self.sz).cbrt()
    }
    /// Body-frame knots `[T, X, Y, rX, rY]` → a world profile, radii scaled by `girth` and
    /// shrunk by `inset` mm.
    pub(super) fn knots(&self, knots: &[[f64; 5]], girth: f64, inset: f64) -> Vec<(f64, Section)> {
        knots
            .iter()
            .map(|&[t, x, y, rx, ry]| {
                (
                    self.z(t),
                    Section {
                        cx: self.ox + self.sx * x,
                        cy: self.y(y),
                        rx: (self.sx * rx * girth - inset).max(0.5),
                        ry: (self.sy * ry * girth - inset).max(0.5),
                    },
                )
            })
            .collect()
    }
}

pub(super) const NECK: [[f64; 5]; 3] = [
    [165.0, 0.0, 5.0, 62.0, 62.0],
    [215.0, 0.0, 8.0, 54.0, 58.0],
    [275.0, 0.0, 8.0, 62.0, 64.0],
];
pub(super) const TORSO: [[f64; 5]; 10] = [
    [250.0, 0.0, 5.0, 58.0, 60.0],
    [272.0, 0.0, 5.0, 140.0, 82.0],
    [295.0, 0.0, 5.0, 190.0, 100.0],
    [330.0, 0.0, 5.0, 182.0, 112.0],
    [480.0, 0.0, 5.0, 170.0, 120.0],
    [600.0, 0.0, 0.0, 165.0, 115.0],
    [720.0, 0.0, 0.0, 175.0, 110.0],
    [820.0, 0.0, 0.0, 180.0, 105.0],
    [865.0, 0.0, 0.0, 165.0, 92.0],
    [885.0, 0.0, 5.0, 120.0, 70.0],
];
pub(super) const SPINE: [[f64; 5]; 7] = [
    [190.0, 0.0, 18.0, 12.0, 11.0],
    [280.0, 0.0, 28.0, 15.0, 13.0],
    [400.0, 0.0, 42.0, 18.0, 16.0],
    [600.0, 0.0, 35.0, 22.0, 18.0],
    [700.0, 0.0, 28.0, 25.0, 20.0],
    [760.0, 0.0, 45.0, 30.0, 18.0],
    [810.0, 0.0, 62.0, 22.0, 11.0],
];

pub(super) fn thigh(side: f64) -> [[f64; 5]; 3] {
    [
        [830.0, 90.0 * side, 0.0, 76.0, 85.0],
        [1000.0, 92.0 * side, 0.0, 70.0, 78.0],
        [1300.0, 92.0 * side, 0.0, 60.0, 68.0],
    ]
}

/// Interpolates body-frame knots at depth `t`.
pub(super) fn knot_at(knots: &[[f64; 5]], t: f64) -> [f64; 5] {
    let i = knots
        .partition_point(|k| k[0] <= t)
        .clamp(1, knots.len() - 1);
    let (a, b) = (knots[i - 1], knots[i]);
    let u = ((t - a[0]) / (b[0] - a[0])).clamp(0.0, 1.0);
    std::array::from_fn(|n| a[n] + (b[n] - a[n]) * u)
}

/// Per-tissue values of one study.
#[derive(Debug, Clone)]
pub(super) struct Tables {
    pub(super) suv: [f32; tissue::COUNT],
    pub(super) hu: [f32; tissue::COUNT],
    /// How strongly the multiplicative texture modulates each tissue (bowel is patchy).
    pub(super) texture_gain: [f32; tissue::COUNT],
}

pub(super) fn tables(rng: &mut ChaCha8Rng, bowel_segments: u8) -> Tables {
    use tissue::*;
    let mut suv = [0f32; COUNT];
    let mut hu = [0f32; COUNT];
    let mut set = |t: u8, s: f64, h: f64| {
        suv[t as usize] = s as f32;
        hu[t as usize] = h as f32;
    };
    set(AIR, 0.0, -1000.0);
    set(FAT, uni(rng, 0.25, 0.4), uni(rng, -110.0, -90.0));
    set(SOFT, uni(rng, 0.6, 0.9), uni(rng, 35.0, 48.0));
    set(BRAIN, uni(rng, 6.0, 10.0), uni(rng, 30.0, 38.0));
    set(SKULL, uni(rng, 0.3, 0.6), uni(rng, 900.0, 1150.0));
    set(SALIVARY, uni(rng, 2.0, 4.0), uni(rng, 10.0, 35.0));
    set(TONSIL, uni(rng, 2.0, 4.0), uni(rng, 40.0, 50.0));
    set(LUNG, uni(rng, 0.3, 0.5), uni(rng, -860.0, -760.0));
    set(MYOCARDIUM, log_uni(rng, 2.0, 9.0), uni(rng, 35.0, 45.0));
    set(BLOOD, uni(rng, 1.5, 2.2), uni(rng, 35.0, 45.0));
    let liver = uni(rng, 1.8, 2.8);
    set(LIVER, liver, uni(rng, 55.0, 65.0));
    set(SPLEEN, uni(rng, 1.5, 2.3).min(liver), uni(rng, 45.0, 52.0));
    set(KIDNEY, uni(rng, 3.0, 8.0), uni(rng, 28.0, 38.0));
    set(BLADDER, log_uni(rng, 8.0, 40.0), uni(rng, 5.0, 15.0));
    set(CORTEX, uni(rng, 0.4, 0.7), uni(rng, 650.0, 900.0));
    set(MARROW, uni(rng, 0.8, 1.3), uni(rng, 300.0, 420.0));
    set(AIRWAY, 0.0, -990.0);
    for b in 0..bowel_segments.min(MAX_BOWEL) {
        set(BOWEL + b, uni(rng, 1.5, 3.5), uni(rng, 10.0, 30.0));
    }
    let mut texture_gain = [1f32; COUNT];
    for g in &mut texture_gain[BOWEL as usize..] {
        *g = 4.0;
    }
    Tables {
        suv,
        hu,
        texture_gain,
    }
}

/// One hot organ's outline, for placing lesions deliberately next to it.
#[derive(Debug, Clone)]
pub(super) struct HotOutline {
    pub(super) organ: HotOrgan,
    pub(super) c: Vector3<f64>,
    pub(super) r: Vector3<f64>,
}

#[derive(Debug, Clone)]
pub(super) struct Anatomy {
    pub(super) frame: Frame,
    pub(super) shapes: Vec<Shape>,
    pub(super) tables: Tables,
    pub(super) hot: Vec<HotOutline>,
    pub(super) lungs: Vec<usize>,
    pub(super) liver: usize,
    pub(super) bones: Vec<usize>,
    /// `[low, high]` LPS z of the head-and-neck region.
    pub(super) head_neck_z: [f64; 2],
}

impl Anatomy {
    pub(super) fn tissue_at(&self, p: &Vector3<f64>) -> u8 {
        self.shapes
            .iter()
            .rev()
            .find(|s| s.contains(p))
            .map_or(tissue::AIR, |s| s.tissue)
    }

    pub(super) fn paint(&self, z: f64, plane: &Plane, out: &mut [u8]) {
        out.fill(tissue::AIR);
        for s in &self.shapes {
            s.paint(z, plane, out);
        }
    }

    pub(super) fn hot_organ_at(&self, p: &Vector3<f64>) -> Option<HotOrgan> {
        match self.tissue_at(p) {
            tissue::BRAIN => Some(HotOrgan::Brain),
            tissue::MYOCARDIUM => Some(HotOrgan::Heart),
            tissue::KIDNEY => Some(HotOrgan::Kidney),
            tissue::BLADDER => Some(HotOrgan::Bladder),
            _ => None,
        }
    }
}

pub(super) fn build_anatomy(
    pet: &Geometry,
    rng: &mut ChaCha8Rng,
    plan: Option<&ClinicalPlan>,
) -> Anatomy {
    let fov_top = pet.origin.z + (pet.shape[2] as f64 - 1.0) * pet.spacing.z;
    // Small: a squat child-sized body (axial scale below lateral) so vertex to mid-thigh fits
    // the 384 mm FOV; clinical: the adult the plan drew.
    let body = plan.map_or_else(|| Body::small(rng), |p| p.body.clone());
    let frame = Frame {
        ox: body.ox,
        oy: body.oy,
        zv: fov_top - body.margin,
        sx: body.sxy,
        sy: body.sy,
        sz: body.sz,
    };
    // The order of the steps is the order of the random draws and of the shapes (a later shape
    // wins where shapes overlap): same seed, same bytes.
    let mut b = Builder::new(&frame, &body, plan);
    let head = b.outline(rng);
    let brain = b.skull(&head);
    b.face(rng);
    b.chest(rng);
    let bowel_segments = b.abdomen(rng);
    b.hot.push(brain);
    b.skeleton();
    let mut tables = tables(rng, bowel_segments);
    if let Some(p) = plan {
        tables.suv[tissue::MYOCARDIUM as usize] = p.myocardium_suv as f32;
        tables.suv[tissue::BLADDER as usize] = p.bladder_suv as f32;
    }
    let head_neck_z = [frame.z(292.0), frame.z(175.0)];
    let Builder {
        shapes,
        hot,
        lungs,
        liver,
        bones,
        ..
    } = b;
    Anatomy {
        frame,
        shapes,
        tables,
        hot,
        lungs,
        liver,
        bones,
        head_neck_z,
    }
}

/// The head's ellipsoid, from which the skull and the brain are inset.
struct Head {
    c: Vector3<f64>,
    r: Vector3<f64>,
    scalp: f64,
}

/// The shapes of one body as `build_anatomy` adds them, region by region.
struct Builder<'a> {
    f: &'a Frame,
    plan: Option<&'a ClinicalPlan>,
    iso: f64,
    girth: f64,
    fat: f64,
    shapes: Vec<Shape>,
    hot: Vec<HotOutline>,
    lungs: Vec<usize>,
    liver: usize,
    bones: Vec<usize>,
}

impl<'a> Builder<'a> {
    fn new(f: &'a Frame, body: &Body, plan: Option<&'a ClinicalPlan>) -> Self {
        Builder {
            f,
            plan,
            iso: f.iso(),
            girth: body.girth,
            fat: body.fat,
            shapes: Vec::new(),
            hot: Vec::new(),
            lungs: Vec::new(),
            liver: 0,
            bones: Vec::new(),
        }
    }

    fn ellipsoid(&mut self, tissue: u8, c: Vector3<f64>, r: Vector3<f64>) {
        self.shapes.push(Shape::ellipsoid(tissue, c, r));
    }

    fn profile(&mut self, tissue: u8, knots: &[[f64; 5]]) {
        self.shapes
            .push(Shape::profile(tissue, self.f.knots(knots, 1.0, 0.0)));
    }

    /// Body outline: fat everywhere, then muscle/soft tissue inset by the fat layer.
    fn outline(&mut self, rng: &mut ChaCha8Rng) -> Head {
        let f = self.f;
        let c = f.p(0.0, uni(rng, -3.0, 3.0), 100.0);
        let r = f.r(75.0 * jit(rng, 0.04), 92.0 * jit(rng, 0.04), 100.0);
        let scalp = (3.0 * self.iso).max(1.5);
        let (girth, fat) = (self.girth, self.fat);
        for (t, inset) in [(tissue::FAT, 0.0), (tissue::SOFT, 1.0)] {
            self.ellipsoid(t, c, r.add_scalar(-scalp * inset));
            self.shapes
                .push(Shape::profile(t, f.knots(&NECK, girth, 0.5 * fat * inset)));
            self.shapes
                .push(Shape::profile(t, f.knots(&TORSO, girth, fat * inset)));
            for side in [-1.0, 1.0] {
                let leg = match self.plan {
                    Some(p) if p.legs_to > 1300.0 => leg(side),
                    _ => thigh(side).to_vec(),
                };
                self.shapes
                    .push(Shape::profile(t, f.knots(&leg, girth, fat * inset)));
                if let Some(p) = self.plan {
                    let arm = arm(side, p.acquisition.arms, girth);
                    self.shapes
                        .push(Shape::profile(t, f.knots(&arm, 1.0, 0.4 * fat * inset)));
                }
            }
        }
        Head { c, r, scalp }
    }

    /// Skull, with the brain in its upper part and soft tissue (skull base, face) below; returns
    /// the brain's outline.
    fn skull(&mut self, head: &Head) -> HotOutline {
        let skull_r = head.r.add_scalar(-head.scalp);
        let skull_th = (6.5 * self.iso).max(2.5);
        let inner_r = skull_r.add_scalar(-skull_th);
        self.ellipsoid(tissue::SKULL, head.c, skull_r);
        self.ellipsoid(tissue::SOFT, head.c, inner_r);
        let brain_c = head.c + Vector3::new(0.0, 0.0, 0.06 * inner_r.z);
        self.ellipsoid(tissue::BRAIN, brain_c, inner_r * 0.92);
        HotOutline {
            organ: HotOrgan::Brain,
            c: brain_c,
            r: inner_r * 0.92,
        }
    }

    /// Mandible, salivary glands and tonsils (physiological uptake next to the neck nodes), and
    /// the airway.
    fn face(&mut self, rng: &mut ChaCha8Rng) {
        use tissue::*;
        let f = self.f;
        // Mandible: the anterior half of an elliptic ring.
        let mandible = [
            [188.0, 0.0, -2.0, 44.0, 48.0],
            [222.0, 0.0, -2.0, 42.0, 46.0],
        ];
        self.shapes.push(
            Shape::profile(CORTEX, f.knots(&mandible, 1.0, 0.0))
                .with_wall((6.0 * self.iso).max(2.0))
                .with_y_clip(f64::NEG_INFINITY, f.y(-2.0)),
        );
        for side in [-1.0, 1.0] {
            let j = uni(rng, -3.0, 3.0);
            let r = f.r(10.0, 15.0, 20.0) * jit(rng, 0.1);
            self.ellipsoid(SALIVARY, f.p(40.0 * side + j, 5.0, 180.0), r);
            let r = f.r(10.0, 11.0, 10.0) * jit(rng, 0.1);
            self.ellipsoid(SALIVARY, f.p(32.0 * side, -26.0 + j, 212.0), r);
            let r = f.r(7.0, 7.0, 11.0) * jit(rng, 0.15);
            self.ellipsoid(TONSIL, f.p(13.0 * side, -8.0, 200.0 + j), r);
        }
        self.profile(
            AIRWAY,
            &[
                [205.0, 0.0, -20.0, 8.0, 8.0],
                [330.0, 0.0, -12.0, 9.0, 9.0],
                [400.0, 0.0, -5.0, 8.0, 8.0],
            ],
        );
    }

    /// Lungs, the heart (myocardium around its blood pool) and the aorta.
    fn chest(&mut self, rng: &mut ChaCha8Rng) {
        let f = self.f;
        for side in [-1.0, 1.0] {
            // The right lung (negative X) is a little larger.
            let big = if side < 0.0 { 1.04 } else { 0.98 };
            self.lungs.push(self.shapes.len());
            let c = f.p(
                85.0 * side + uni(rng, -4.0, 4.0),
                10.0 + uni(rng, -4.0, 4.0),
                420.0 + uni(rng, -8.0, 8.0),
            );
            let r = f.r(62.0, 80.0, 130.0) * (big * jit(rng, 0.06));
            self.ellipsoid(tissue::LUNG, c, r);
        }
        let c = f.p(
            25.0 + uni(rng, -5.0, 5.0),
            -25.0 + uni(rng, -4.0, 4.0),
            475.0 + uni(rng, -10.0, 10.0),
        );
        let r = f.r(58.0, 45.0, 55.0) * jit(rng, 0.07);
        self.ellipsoid(tissue::MYOCARDIUM, c, r);
        self.ellipsoid(tissue::BLOOD, c, r.add_scalar(-(10.0 * self.iso).max(3.0)));
        self.hot.push(HotOutline {
            organ: HotOrgan::Heart,
            c,
            r,
        });
        self.profile(
            tissue::BLOOD,
            &[
                [330.0, 28.0, 24.0, 11.0, 11.0],
                [560.0, 20.0, 15.0, 11.0, 11.0],
                [720.0, 8.0, 0.0, 9.0, 9.0],
            ],
        );
    }

    /// Bowel (a few segments in the lower abdomen, each with its own uptake: distractors),
    /// liver, spleen, kidneys and bladder; returns the number of bowel segments.
    fn abdomen(&mut self, rng: &mut ChaCha8Rng) -> u8 {
        let f = self.f;
        let bowel_segments = rng.random_range(3..=tissue::MAX_BOWEL);
        for b in 0..bowel_segments {
            let c = f.p(
                uni(rng, -80.0, 80.0),
                uni(rng, -55.0, -10.0),
                uni(rng, 660.0, 770.0),
            );
            let r = f.r(
                uni(rng, 15.0, 25.0),
                uni(rng, 12.0, 18.0),
                uni(rng, 20.0, 35.0),
            );
            self.ellipsoid(tissue::BOWEL + b, c, r);
        }
        self.liver = self.shapes.len();
        let c = f.p(
            -55.0 + uni(rng, -5.0, 5.0),
            5.0 + uni(rng, -4.0, 4.0),
            565.0 + uni(rng, -10.0, 10.0),
        );
        self.ellipsoid(tissue::LIVER, c, f.r(80.0, 78.0, 75.0) * jit(rng, 0.07));
        let c = f.p(
            95.0,
            45.0 + uni(rng, -4.0, 4.0),
            560.0 + uni(rng, -10.0, 10.0),
        );
        self.ellipsoid(tissue::SPLEEN, c, f.r(28.0, 42.0, 50.0) * jit(rng, 0.12));
        for (side, t) in [(-1.0, 640.0), (1.0, 630.0)] {
            let c = f.p(
                62.0 * side + uni(rng, -4.0, 4.0),
                55.0 + uni(rng, -4.0, 4.0),
                t + uni(rng, -10.0, 10.0),
            );
            let r = f.r(25.0, 28.0, 55.0) * jit(rng, 0.08);
            self.hot_organ(HotOrgan::Kidney, tissue::KIDNEY, c, r);
        }
        let c = f.p(uni(rng, -5.0, 5.0), -25.0, 815.0);
        let r =
            f.r(40.0, 35.0, 32.0) * uni(rng, 0.8, 1.2) * self.plan.map_or(1.0, |p| p.bladder_scale);
        self.hot_organ(HotOrgan::Bladder, tissue::BLADDER, c, r);
        bowel_segments
    }

    fn hot_organ(&mut self, organ: HotOrgan, tissue: u8, c: Vector3<f64>, r: Vector3<f64>) {
        self.ellipsoid(tissue, c, r);
        self.hot.push(HotOutline { organ, c, r });
    }

    /// Bones: cortex shells around marrow so bone lesions have a marrow host.
    fn skeleton(&mut self) {
        let cortex = (2.5 * self.iso).max(1.0);
        self.spine(cortex);
        self.ribs();
        self.pelvis_and_femurs(cortex);
        if let Some(p) = self.plan {
            limb_bones(&mut self.shapes, self.f, p, cortex);
        }
    }

    /// The spine, its spinous processes, the clavicles and the scapulae.
    fn spine(&mut self, cortex: f64) {
        use tissue::*;
        let f = self.f;
        self.profile(CORTEX, &SPINE);
        self.bones.push(self.shapes.len());
        self.shapes
            .push(Shape::profile(MARROW, f.knots(&SPINE, 1.0, cortex)));
        let spinous: Vec<[f64; 5]> = [290.0, 400.0, 600.0, 700.0, 760.0]
            .iter()
            .map(|&t| {
                let k = knot_at(&SPINE, t);
                [t, 0.0, k[2] + k[4] + 10.0, 6.0, 11.0]
            })
            .collect();
        self.profile(CORTEX, &spinous);
        for side in [-1.0, 1.0] {
            self.ellipsoid(CORTEX, f.p(78.0 * side, -25.0, 282.0), f.r(60.0, 8.0, 8.0));
            self.ellipsoid(CORTEX, f.p(95.0 * side, 55.0, 340.0), f.r(35.0, 7.0, 60.0));
        }
    }

    /// Ribs: thin elliptic rings just inside the chest wall, open anteriorly (cartilage).
    fn ribs(&mut self) {
        let f = self.f;
        let rib_half = (4.5 * f.sz).max(2.5);
        let (fat, iso) = (self.fat, self.iso);
        for n in 0..9 {
            let t = 318.0 + 30.0 * n as f64;
            let [_, x, y, rx, ry] = knot_at(&TORSO, t);
            let s = Section {
                cx: f.ox + f.sx * x,
                cy: f.y(y),
                rx: f.sx * rx * self.girth - fat - 3.0 * iso,
                ry: f.sy * ry * self.girth - fat - 3.0 * iso,
            };
            let z = f.z(t);
            self.shapes.push(
                Shape::profile(tissue::CORTEX, vec![(z - rib_half, s), (z + rib_half, s)])
                    .with_wall((7.0 * iso).max(2.0))
                    .with_y_clip(s.cy - 0.55 * s.ry, f64::INFINITY),
            );
        }
    }

    /// Iliac wings, femoral heads, the pubis and the femurs, each cortex around marrow.
    fn pelvis_and_femurs(&mut self, cortex: f64) {
        let f = self.f;
        for side in [-1.0, 1.0] {
            self.bone_pair(
                f.p(100.0 * side, 38.0, 735.0),
                f.r(16.0, 48.0, 55.0),
                cortex,
            );
            self.bone_pair(f.p(88.0 * side, 8.0, 845.0), f.r(24.0, 24.0, 24.0), cortex);
        }
        self.bone_pair(f.p(0.0, -55.0, 855.0), f.r(42.0, 12.0, 14.0), cortex);
        for side in [-1.0, 1.0] {
            let femur = [
                [850.0, 88.0 * side, 8.0, 16.0, 16.0],
                [1000.0, 92.0 * side, 4.0, 14.0, 14.0],
                [1300.0, 90.0 * side, 0.0, 13.0, 13.0],
            ];
            self.profile(tissue::CORTEX, &femur);
            self.bones.push(self.shapes.len());
            let marrow = f.knots(&femur, 1.0, (4.0 * self.iso).max(1.5));
            self.shapes.push(Shape::profile(tissue::MARROW, marrow));
        }
    }

    fn bone_pair(&mut self, c: Vector3<f64>, r: Vector3<f64>, cortex: f64) {
        self.ellipsoid(tissue::CORTEX, c, r);
        self.bones.push(self.shapes.len());
        self.ellipsoid(tissue::MARROW, c, r.add_scalar(-cortex));
    }
}

/// Cortex and marrow along the arms and, for a field of view down to the feet, the shins. They
/// host no lesions (the disease models place none in the limbs).
pub(super) fn limb_bones(shapes: &mut Vec<Shape>, f: &Frame, plan: &ClinicalPlan, cortex: f64) {
    use tissue::*;
    let mut bone = |knots: Vec<[f64; 5]>| {
        shapes.push(Shape::profile(CORTEX, f.knots(&knots, 1.0, 0.0)));
        shapes.push(Shape::profile(MARROW, f.knots(&knots, 1.0, cortex)));
    };
    for side in [-1.0, 1.0] {
        let arm = arm(side, plan.acquisition.arms, plan.body.girth);
        // From the elbow's side of the shoulder to the wrist: every knot but the ends.
        bone(
            arm[1..arm.len() - 1]
                .iter()
                .map(|&[t, x, y, _, _]| [t, x, y, 11.0, 11.0])
                .collect(),
        );
        if plan.legs_to > 1300.0 {
            bone(vec![
                [1320.0, 90.0 * side, 0.0, 17.0, 17.0],
                [1450.0, 88.0 * side, 3.0, 13.0, 13.0],
                [1640.0, 85.0 * side, 3.0, 11.0, 11.0],
            ]);
        }
    }
}
