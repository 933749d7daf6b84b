//! Outcome labels: the rules that derive LR, DM and OS from the lesion list.

use super::*;

/// `lr` when the neck lesions together exceed this volume…
pub(super) const LR_NECK_VOLUME_ML: f64 = 6.0;
/// …or any neck lesion is hotter than this.
pub(super) const LR_NECK_SUV: f64 = 10.0;
/// `os` when total lesion glycolysis (Σ volume_ml × SUV) exceeds this…
pub(super) const OS_TLG: f64 = 40.0;
/// …or there are at least this many lesions.
pub(super) const OS_MIN_LESIONS: usize = 4;
/// Probability that label noise inverts each outcome.
pub(super) const LABEL_FLIP_RATE: f64 = 0.02;

pub(super) fn derive_outcomes(lesions: &[Lesion]) -> Outcomes {
    let neck = lesions.iter().filter(|l| l.site.is_head_neck());
    let neck_volume: f64 = neck.clone().map(|l| l.volume_ml).sum();
    let neck_suv = neck.clone().map(|l| l.suv_peak).fold(0.0, f64::max);
    let lr = neck.count() > 0 && (neck_volume > LR_NECK_VOLUME_ML || neck_suv > LR_NECK_SUV);
    let dm = lesions.iter().any(|l| !l.site.is_head_neck());
    let tlg: f64 = lesions.iter().map(|l| l.volume_ml * l.suv_peak).sum();
    let os = tlg > OS_TLG || lesions.len() >= OS_MIN_LESIONS;
    Outcomes {
        lr: lr as u8,
        dm: dm as u8,
        os: os as u8,
    }
}

pub(super) fn derivation() -> Derivation {
    let noise = format!(
        "; then inverted with probability {LABEL_FLIP_RATE} by seeded label noise (see \"flipped\")"
    );
    Derivation {
        lr: format!(
            "1 if there is at least one neck_node lesion and (sum of neck_node volume_ml > \
             {LR_NECK_VOLUME_ML} or max neck_node suv_peak > {LR_NECK_SUV}), else 0{noise}"
        ),
        dm: format!("1 if any lesion has a site other than neck_node, else 0{noise}"),
        os: format!(
            "1 if total lesion glycolysis sum(volume_ml * suv_peak) > {OS_TLG} or the study has \
             at least {OS_MIN_LESIONS} lesions, else 0{noise}"
        ),
    }
}
