//! `overview.png`: coronal and sagittal PET MIPs (inverted grey, SUV window [`SUV_WINDOW`]) at
//! their physical aspect, each lesion outlined in its colour and numbered by its `id` in
//! `result.json`; beside them the lesion table (volume, SUVmax, SUVmean, TLG), the risk scores,
//! the models with engine and precision, and a red banner when a model card says the weights
//! are not for clinical use. No patient identifier is drawn: the study is named by its key.
//!
//! Radiological convention: the coronal MIP shows the patient's right on the picture's left, the
//! sagittal MIP anterior on the left, the head at the top of both.

use ab_glyph::{FontRef, PxScale};
use image::{Rgb, RgbImage};
use imageproc::drawing::{draw_filled_rect_mut, draw_hollow_rect_mut, draw_text_mut};
use imageproc::rect::Rect;

use super::mip::{self, Projection, View};
use crate::models::ModelUse;
use crate::models::l2snet::LesionSummary;
use crate::models::two_be_three::Scores;
use crate::volume::Volume;

/// SUV shown white (first) to black (second) in the MIPs.
pub const SUV_WINDOW: (f32, f32) = (0.0, 6.0);
/// Outline colours, lesion *n* gets `PALETTE[(n - 1) % len]`; none of them is a grey.
pub const PALETTE: [[u8; 3]; 8] = [
    [230, 25, 75],
    [0, 130, 200],
    [60, 180, 75],
    [245, 130, 48],
    [145, 30, 180],
    [0, 170, 170],
    [240, 50, 230],
    [170, 110, 40],
];
/// Tallest MIP panel and widest single panel, in pixels.
const PANEL_HEIGHT: f64 = 880.0;
const PANEL_MAX_WIDTH: f64 = 600.0;
const MARGIN: u32 = 20;
const TEXT_WIDTH: u32 = 540;
/// Rows of the lesion table before "… and N more".
const TABLE_ROWS: usize = 20;

const BLACK: Rgb<u8> = Rgb([0, 0, 0]);
const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const RED: Rgb<u8> = Rgb([200, 0, 0]);

/// Everything the picture shows.
pub struct Overview<'a> {
    /// The study key (never a patient identifier).
    pub key: &'a str,
    /// SUV on the study's PET grid.
    pub pet: &'a Volume<f32>,
    /// Lesion ids on the same grid and their figures; `None` when no lesion model ran.
    pub lesions: Option<(&'a Volume<u32>, &'a LesionSummary)>,
    /// 2Be3-Net's scores; `None` for a scan shorter than a whole body (`result.json` says why).
    pub scores: Option<&'a Scores>,
    pub models: &'a [ModelUse],
    /// The cards' status lines ("L2SNet 0.2.0: demonstration weights, not for clinical use").
    pub statuses: &'a [String],
}

/// Where a MIP sits in the picture.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Panel {
    pub view: View,
    /// Top-left pixel and size.
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
    /// Millimetres per pixel, the same along both axes.
    pub mm_per_px: f64,
}

/// The rendered picture and where its panels are.
pub struct Picture {
    pub image: RgbImage,
    pub coronal: Panel,
    pub sagittal: Panel,
}

impl Picture {
    /// The PNG file's bytes.
    pub fn png(&self) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        self.image
            .write_to(&mut out, image::ImageFormat::Png)
            .expect("encoding PNG into memory cannot fail");
        out.into_inner()
    }
}

fn font() -> FontRef<'static> {
    FontRef::try_from_slice(dejavu::sans_mono::regular()).expect("the embedded font parses")
}

/// Draws the picture.
pub fn render(o: &Overview) -> Picture {
    let canonical = o.pet.to_canonical_lps();
    let pet = canonical.as_ref().unwrap_or(o.pet);
    let ids = o
        .lesions
        .map(|(ids, _)| ids.to_canonical_lps().unwrap_or_else(|| ids.clone()));
    let coronal = mip::project(pet, ids.as_ref(), View::Coronal);
    let sagittal = mip::project(pet, ids.as_ref(), View::Sagittal);
    let mm_per_px = scale(&coronal, &sagittal);
    let banner = banner(o.statuses);
    let top = MARGIN + 40 + if banner.is_some() { 40 } else { 0 } + 24;
    let cw = (coronal.shape[0] as f64 * coronal.spacing[0] / mm_per_px).round() as u32;
    let sw = (sagittal.shape[0] as f64 * sagittal.spacing[0] / mm_per_px).round() as u32;
    let h = (coronal.shape[1] as f64 * coronal.spacing[1] / mm_per_px).round() as u32;
    let panel = |view, x, width: u32| Panel {
        view,
        x,
        y: top,
        width: width.max(1),
        height: h.max(1),
        mm_per_px,
    };
    let cp = panel(View::Coronal, MARGIN, cw);
    let sp = panel(View::Sagittal, MARGIN * 2 + cp.width, sw);
    let text_x = sp.x + sp.width + MARGIN;
    let lines = text_lines(o, canonical.is_none());
    let height = (top + cp.height + 40).max(top + 22 * lines.len() as u32 + MARGIN);
    let mut image = RgbImage::from_pixel(text_x + TEXT_WIDTH + MARGIN, height, WHITE);
    let font = font();
    draw_header(&mut image, &font, o.key, banner.as_deref());
    for (p, proj, marks) in [(&cp, &coronal, ["R", "L"]), (&sp, &sagittal, ["A", "P"])] {
        draw_panel(&mut image, p, proj);
        draw_lesion_numbers(&mut image, &font, p, proj);
        draw_panel_labels(&mut image, &font, p, marks);
    }
    draw_lines(&mut image, &font, text_x, top, &lines);
    Picture {
        image,
        coronal: cp,
        sagittal: sp,
    }
}

/// One millimetres-per-pixel for both panels: the tallest fits [`PANEL_HEIGHT`], the widest
/// [`PANEL_MAX_WIDTH`].
fn scale(coronal: &Projection, sagittal: &Projection) -> f64 {
    let height_mm = coronal.shape[1] as f64 * coronal.spacing[1];
    let width_mm = [coronal, sagittal]
        .iter()
        .map(|p| p.shape[0] as f64 * p.spacing[0])
        .fold(0.0, f64::max);
    (height_mm / PANEL_HEIGHT).max(width_mm / PANEL_MAX_WIDTH)
}

/// The banner's text when any card says its weights are not for clinical use.
fn banner(statuses: &[String]) -> Option<String> {
    statuses
        .iter()
        .find(|s| s.to_lowercase().contains("not for clinical use"))
        .map(|s| format!("NOT FOR CLINICAL USE - {s}"))
}

fn colour(id: u32) -> Rgb<u8> {
    Rgb(PALETTE[(id as usize - 1) % PALETTE.len()])
}

/// The projection's ray under pixel (px, py) of a panel: nearest neighbour at the panel's scale.
fn ray_at(p: &Panel, proj: &Projection, px: u32, py: u32) -> usize {
    let [na, nz] = proj.shape;
    let a = (((px as f64 + 0.5) * p.mm_per_px / proj.spacing[0]) as usize).min(na - 1);
    let from_top = (((py as f64 + 0.5) * p.mm_per_px / proj.spacing[1]) as usize).min(nz - 1);
    (nz - 1 - from_top) * na + a
}

fn draw_panel(image: &mut RgbImage, p: &Panel, proj: &Projection) {
    let (w, h) = (p.width as usize, p.height as usize);
    let mut ids = vec![0u32; w * h];
    let (lo, hi) = SUV_WINDOW;
    for py in 0..p.height {
        for px in 0..p.width {
            let ray = ray_at(p, proj, px, py);
            let t = ((proj.suv[ray] - lo) / (hi - lo)).clamp(0.0, 1.0);
            let grey = (255.0 * (1.0 - t)).round() as u8;
            image.put_pixel(p.x + px, p.y + py, Rgb([grey; 3]));
            ids[py as usize * w + px as usize] = proj.lesion[ray];
        }
    }
    let on = mip::outline(&ids, w, h, 1);
    for (n, _) in on.iter().enumerate().filter(|(_, on)| **on) {
        let (px, py) = ((n % w) as u32, (n / w) as u32);
        image.put_pixel(p.x + px, p.y + py, colour(ids[n]));
    }
    let frame = Rect::at(p.x as i32 - 1, p.y as i32 - 1).of_size(p.width + 2, p.height + 2);
    draw_hollow_rect_mut(image, frame, Rgb([160; 3]));
}

/// Each lesion's number in a white box at the top-right corner of its projection.
fn draw_lesion_numbers(image: &mut RgbImage, font: &FontRef, p: &Panel, proj: &Projection) {
    let mut boxes: std::collections::BTreeMap<u32, [u32; 4]> = Default::default();
    for py in 0..p.height {
        for px in 0..p.width {
            let id = proj.lesion[ray_at(p, proj, px, py)];
            if id != 0 {
                let b = boxes.entry(id).or_insert([px, py, px, py]);
                *b = [b[0].min(px), b[1].min(py), b[2].max(px), b[3].max(py)];
            }
        }
    }
    let scale = PxScale::from(14.0);
    for (id, [_, top, right, _]) in boxes {
        let label = id.to_string();
        let (tw, th) = imageproc::drawing::text_size(scale, font, &label);
        let (bw, bh) = (tw + 4, th + 4);
        let x = (p.x + right + 2).min(p.x + p.width - bw);
        let y = (p.y + top).saturating_sub(bh + 1).max(p.y);
        draw_filled_rect_mut(image, Rect::at(x as i32, y as i32).of_size(bw, bh), WHITE);
        draw_text_mut(
            image,
            BLACK,
            x as i32 + 2,
            y as i32 + 1,
            scale,
            font,
            &label,
        );
    }
}

fn draw_panel_labels(image: &mut RgbImage, font: &FontRef, p: &Panel, marks: [&str; 2]) {
    let scale = PxScale::from(18.0);
    let title = match p.view {
        View::Coronal => "Coronal MIP",
        View::Sagittal => "Sagittal MIP",
    };
    let y = p.y as i32 - 24;
    draw_text_mut(image, BLACK, p.x as i32, y, scale, font, title);
    let (x0, x1) = (p.x as i32 + 3, (p.x + p.width) as i32 - 14);
    let below = (p.y + p.height + 6) as i32;
    draw_text_mut(image, BLACK, x0, below, scale, font, marks[0]);
    draw_text_mut(image, BLACK, x1, below, scale, font, marks[1]);
}

fn draw_header(image: &mut RgbImage, font: &FontRef, key: &str, banner: Option<&str>) {
    let title = format!("tracerd {} - study {key}", env!("CARGO_PKG_VERSION"));
    draw_text_mut(
        image,
        BLACK,
        MARGIN as i32,
        MARGIN as i32,
        PxScale::from(24.0),
        font,
        &title,
    );
    if let Some(text) = banner {
        let rect = Rect::at(0, (MARGIN + 36) as i32).of_size(image.width(), 34);
        draw_filled_rect_mut(image, rect, RED);
        let y = (MARGIN + 42) as i32;
        draw_text_mut(
            image,
            WHITE,
            MARGIN as i32,
            y,
            PxScale::from(20.0),
            font,
            text,
        );
    }
}

/// A line of the text column: its text and, for a lesion row, the lesion's colour swatch.
struct Line {
    text: String,
    swatch: Option<Rgb<u8>>,
}

fn line(text: impl Into<String>) -> Line {
    Line {
        text: text.into(),
        swatch: None,
    }
}

fn text_lines(o: &Overview, oblique: bool) -> Vec<Line> {
    let (lo, hi) = SUV_WINDOW;
    let mut lines = vec![line(format!("MIP: SUV {lo}-{hi}, white to black"))];
    if oblique {
        lines.push(line("(oblique PET: shown in stored voxel order)"));
    }
    lines.push(line(""));
    lines.extend(score_lines(o.scores));
    lines.push(line(""));
    lines.extend(lesion_lines(o.lesions.map(|(_, s)| s)));
    lines.push(line(""));
    lines.push(line("Models loaded"));
    for m in o.models {
        let text = format!(
            "  {} {} {}: {} on {}",
            m.name, m.version, m.role, m.precision, m.engine
        );
        lines.push(line(text));
    }
    lines
}

fn score_lines(scores: Option<&Scores>) -> Vec<Line> {
    let Some(s) = scores else {
        return vec![
            line("Risk scores: none"),
            line("  (not a whole-body scan; see result.json)"),
        ];
    };
    vec![
        line("Risk scores (2Be3-Net [WS], 0-1)"),
        line(format!("  LR loco-regional recurrence {:.3}", s.lr)),
        line(format!("  DM distant metastasis       {:.3}", s.dm)),
        line(format!("  OS death                    {:.3}", s.os)),
    ]
}

fn lesion_lines(summary: Option<&LesionSummary>) -> Vec<Line> {
    let Some(s) = summary else {
        return vec![line("Lesions: not assessed (no CT)")];
    };
    if s.count == 0 {
        return vec![line("Lesions (L2SNet): none found")];
    }
    let mut lines = vec![
        line(format!("Lesions (L2SNet): {}", s.count)),
        line(format!(
            "  MTV {:.1} ml, TLG {:.1}, SUVmax {:.1}",
            s.mtv_ml, s.tlg, s.suv_max
        )),
        line("    #  vol ml  SUVmax SUVmean     TLG"),
    ];
    for l in s.items.iter().take(TABLE_ROWS) {
        lines.push(Line {
            text: format!(
                "  {:>3} {:>7.2} {:>7.2} {:>7.2} {:>7.1}",
                l.id, l.volume_ml, l.suv_max, l.suv_mean, l.tlg
            ),
            swatch: Some(colour(l.id as u32)),
        });
    }
    if s.count > TABLE_ROWS {
        let more = s.count - TABLE_ROWS;
        lines.push(line(format!("  ... and {more} more in result.json")));
    }
    lines
}

fn draw_lines(image: &mut RgbImage, font: &FontRef, x: u32, y: u32, lines: &[Line]) {
    let scale = PxScale::from(17.0);
    for (n, l) in lines.iter().enumerate() {
        let y = (y + 22 * n as u32) as i32;
        if let Some(c) = l.swatch {
            draw_filled_rect_mut(image, Rect::at(x as i32, y + 3).of_size(12, 12), c);
        }
        draw_text_mut(image, BLACK, x as i32, y, scale, font, &l.text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::l2snet::{lesion_ids, lesion_summary};
    use crate::volume::Geometry;
    use nalgebra::Matrix3;

    const SHAPE: [usize; 3] = [40, 30, 100];
    const SPACING: [f64; 3] = [4.0, 4.0, 3.0];

    /// Canonical index boxes ([lo, hi] inclusive on i, j, k) of two lesions; the first is on
    /// the patient's right (small i), low; the second on the left, high and posterior.
    const BOXES: [[[usize; 2]; 3]; 2] =
        [[[5, 9], [10, 15], [8, 13]], [[28, 30], [20, 22], [35, 37]]];

    /// A PET with the lesions of `boxes` (SUV 8 in a body of SUV 1), on the canonical grid or,
    /// with `flip`, stored with i running right-to-left the other way.
    fn study(boxes: &[[[usize; 2]; 3]], flip: bool) -> (Volume<f32>, Volume<u32>) {
        let [nx, ny, nz] = SHAPE;
        let mut pet = vec![1.0f32; nx * ny * nz];
        for b in boxes {
            for k in b[2][0]..=b[2][1] {
                for j in b[1][0]..=b[1][1] {
                    for i in b[0][0]..=b[0][1] {
                        pet[i + nx * (j + ny * k)] = 8.0;
                    }
                }
            }
        }
        let mut g = Geometry::axial(SHAPE, SPACING, [0.0; 3]);
        if flip {
            g.direction = Matrix3::from_diagonal(&nalgebra::Vector3::new(-1.0, 1.0, 1.0));
            g.origin.x = (nx - 1) as f64 * SPACING[0];
            let flipped: Vec<f32> = (0..pet.len())
                .map(|v| {
                    let (i, rest) = (v % nx, v / nx);
                    pet[(nx - 1 - i) + nx * rest]
                })
                .collect();
            pet = flipped;
        }
        let pet = Volume::new(g, pet).unwrap();
        let ids = lesion_ids(&pet.map(|&s| u8::from(s > 4.0)));
        (pet, ids)
    }

    fn picture(pet: &Volume<f32>, ids: &Volume<u32>) -> Picture {
        let summary = lesion_summary(ids, pet);
        let statuses = ["L2SNet 0.2.0: demonstration weights, not for clinical use".to_string()];
        render(&Overview {
            key: "test",
            pet,
            lesions: Some((ids, &summary)),
            scores: None,
            models: &[],
            statuses: &statuses,
        })
    }

    /// Pixels of the panel with `colour`, as (x, y) inside the panel.
    fn coloured(p: &Picture, panel: &Panel, colour: [u8; 3]) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        for y in 0..panel.height {
            for x in 0..panel.width {
                if p.image.get_pixel(panel.x + x, panel.y + y).0 == colour {
                    out.push((x, y));
                }
            }
        }
        out
    }

    /// The pixel box a canonical voxel box projects to in a panel, one pixel of slack.
    fn projected(panel: &Panel, b: &[[usize; 2]; 3]) -> [f64; 4] {
        let a = b[panel.view.across()];
        let s = panel.mm_per_px;
        let sa = SPACING[panel.view.across()];
        let nz = SHAPE[2] as f64;
        let (x0, x1) = (a[0] as f64 * sa / s, (a[1] + 1) as f64 * sa / s);
        let (y0, y1) = (
            (nz - 1.0 - b[2][1] as f64) * 3.0 / s,
            (nz - b[2][0] as f64) * 3.0 / s,
        );
        [x0 - 1.0, y0 - 1.0, x1 + 1.0, y1 + 1.0]
    }

    fn assert_outlines_at_their_lesions(p: &Picture) {
        for panel in [&p.coronal, &p.sagittal] {
            for (n, b) in BOXES.iter().enumerate() {
                let on = coloured(p, panel, PALETTE[n]);
                assert!(
                    !on.is_empty(),
                    "lesion {} not outlined in {:?}",
                    n + 1,
                    panel.view
                );
                let [x0, y0, x1, y1] = projected(panel, b);
                for (x, y) in on {
                    let (x, y) = (x as f64, y as f64);
                    assert!(
                        x >= x0 && x <= x1 && y >= y0 && y <= y1,
                        "{:?}: lesion {} outline pixel ({x}, {y}) outside {:?}",
                        panel.view,
                        n + 1,
                        [x0, y0, x1, y1]
                    );
                }
            }
        }
    }

    #[test]
    fn outlines_lie_where_each_lesion_projects() {
        let (pet, ids) = study(&BOXES, false);
        // The bigger lesion is number 1: check the boxes are in id order.
        assert_eq!(*ids.at(5, 10, 8), 1);
        assert_eq!(*ids.at(28, 20, 35), 2);
        let p = picture(&pet, &ids);
        // 100 slices of 3 mm fill the panel height: 300 mm over 880 px (the 160 mm width
        // would allow a finer scale).
        let s = 300.0 / PANEL_HEIGHT;
        assert!((p.coronal.mm_per_px - s).abs() < 1e-12);
        assert_eq!(p.coronal.height, 880);
        assert_eq!(p.coronal.width, (160.0 / s).round() as u32);
        assert_eq!(p.sagittal.width, (120.0 / s).round() as u32);
        let width = p.sagittal.x + p.sagittal.width + MARGIN + TEXT_WIDTH + MARGIN;
        assert_eq!(p.image.dimensions(), (width, p.coronal.y + 880 + 40));
        assert_outlines_at_their_lesions(&p);
        // The banner: the red strip across the top.
        assert_eq!(p.image.get_pixel(2, MARGIN + 40).0, [200, 0, 0]);
    }

    #[test]
    fn a_pet_stored_the_other_way_round_is_shown_the_same_way() {
        let (pet, ids) = study(&BOXES, true);
        assert_eq!(pet.geometry().direction[(0, 0)], -1.0);
        // Lesion 1 (patient's right) is on the picture's left, as in the canonical case.
        assert_outlines_at_their_lesions(&picture(&pet, &ids));
    }

    #[test]
    fn a_study_without_lesions_has_no_outline() {
        let (pet, ids) = study(&[], false);
        let p = picture(&pet, &ids);
        for panel in [&p.coronal, &p.sagittal] {
            for y in 0..panel.height {
                for x in 0..panel.width {
                    let [r, g, b] = p.image.get_pixel(panel.x + x, panel.y + y).0;
                    assert!(r == g && g == b, "a coloured pixel in a lesion-free MIP");
                }
            }
        }
        assert!(p.png().starts_with(b"\x89PNG"));
    }
}
