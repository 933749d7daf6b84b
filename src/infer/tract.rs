//! The built-in pure-Rust engine, `tract`: always available, runs fp32 and INT8 QDQ models (never
//! QOperator ones).
//!
//! tract plans fastest with concrete shapes, so each distinct input shape gets its own optimised
//! plan, cached (a pipeline feeds a handful of shapes). The model is parsed once and, where tract
//! can type it with symbolic dimensions (the dynamic batch axis), decluttered once; each shape then
//! binds the symbols and optimises (`set_symbols` → `into_optimized` → `into_runnable`). Some
//! graphs cannot be typed symbolically — a U-Net with free height and width concatenates an
//! up-sampled `2·⌈h/32⌉` with a skip of `⌈h/16⌉`, equal only for concrete sizes — and those are
//! typed per shape from the parsed model with the input facts fixed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ndarray::{ArrayD, ArrayViewD, Axis};
use rayon::prelude::*;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{DimLike, bail};
use tract_onnx::tract_core::tract_data::knobs::KnobScope;
use tract_onnx::tract_hir::infer::Factoid;

use super::{InferError, Provenance, Session};
use crate::config::Engine;

mod resize;

/// Cached plans per input shape; beyond this many, the oldest shapes are dropped.
const MAX_PLANS: usize = 8;

/// The parsed model, typed once when tract can do it with symbolic shapes.
enum Prepared {
    Typed(TypedModel),
    PerShape(InferenceModel),
}

/// A model loaded in tract.
pub struct TractSession {
    model: Prepared,
    plans: HashMap<Vec<Vec<usize>>, Arc<TypedRunnableModel>>,
    order: Vec<Vec<Vec<usize>>>,
    /// Every input's first axis is free (a batch axis): batches run item by item.
    batch_axis: bool,
    path: PathBuf,
    provenance: Provenance,
}

impl TractSession {
    /// Parses and declutters `path`; the reason on failure is one line.
    pub fn load(path: &Path) -> Result<TractSession, String> {
        // Intermediate shapes recorded in the file (value_info, e.g. written by the quantiser with
        // a symbolic batch) are only hints, and they contradict concrete input facts; tract
        // infers every shape from the inputs anyway.
        let mut onnx = tract_onnx::onnx();
        onnx.ignore_value_info = true;
        let parsed = onnx
            .model_for_path(path)
            .map_err(|e| format!("cannot load {}: {}", path.display(), one_line(&e)))?;
        let batch_axis = (0..parsed.inputs.len()).all(|ix| {
            parsed
                .input_fact(ix)
                .ok()
                .and_then(|f| f.shape.dims().next().cloned())
                .is_some_and(|d| d.concretize().is_none_or(|d| d.to_i64().is_err()))
        });
        let model = match parsed
            .clone()
            .into_typed()
            .and_then(|m| m.into_decluttered())
        {
            Ok(typed) => Prepared::Typed(typed),
            Err(e) => {
                tracing::debug!(model = %path.display(), reason = %one_line(&e), "typed per input shape");
                Prepared::PerShape(parsed)
            }
        };
        Ok(TractSession {
            model,
            plans: HashMap::new(),
            order: Vec::new(),
            batch_axis,
            path: path.to_path_buf(),
            provenance: Provenance {
                engine: Engine::Tract,
                device: "tract-cpu".into(),
                runtime: format!("tract {}", tract_version()),
            },
        })
    }

    fn plan_for(&mut self, shapes: Vec<Vec<usize>>) -> TractResult<Arc<TypedRunnableModel>> {
        if let Some(plan) = self.plans.get(&shapes) {
            return Ok(plan.clone());
        }
        let plan = match &self.model {
            Prepared::Typed(model) => optimise(bind_symbols(model, &shapes)?)?,
            Prepared::PerShape(model) => {
                let mut model = model.clone();
                for (ix, shape) in shapes.iter().enumerate() {
                    model.set_input_fact(ix, f32::fact(shape).into())?;
                }
                optimise(model.into_typed()?.into_decluttered()?)?
            }
        };
        if self.order.len() >= MAX_PLANS {
            let oldest = self.order.remove(0);
            self.plans.remove(&oldest);
        }
        self.order.push(shapes.clone());
        self.plans.insert(shapes, plan.clone());
        Ok(plan)
    }
}

/// A decluttered model with concrete shapes, made runnable: linear resizes evaluated row by row
/// ([`resize`]), then tract's optimisation with its direct spatial convolution turned off, so
/// every 2D convolution becomes im2col and a matrix product. Measured on L2SNet's `loc2d`
/// (tract 0.23.9, AVX-512, one 384×192 coronal slice): its two full-resolution decoder
/// convolutions ran at about 33 GFLOP/s as direct convolutions against 64–111 for tract's matrix
/// products elsewhere in the same network; turned off, the slice took 15 % less and a clinical
/// study's `loc2d` stage 11 % less (docs/benchmarks.md), at the same peak memory.
fn optimise(mut model: TypedModel) -> TractResult<Arc<TypedRunnableModel>> {
    resize::use_row_resize(&mut model)?;
    KnobScope::new([("TRACT_DISABLE_DIRECT_SPATIAL", "true")])?
        .enter(|| model.into_optimized()?.into_runnable())
}

/// Binds each symbolic input dimension to the size given; fixed dimensions must match.
fn bind_symbols(model: &TypedModel, shapes: &[Vec<usize>]) -> TractResult<TypedModel> {
    let mut symbols = HashMap::new();
    for (ix, shape) in shapes.iter().enumerate() {
        let fact = model.input_fact(ix)?;
        let dims = fact.shape.dims();
        if dims.len() != shape.len() {
            bail!(
                "input {ix} has rank {}, the model expects {}",
                shape.len(),
                dims.len()
            );
        }
        for (axis, (dim, &size)) in dims.iter().zip(shape).enumerate() {
            match dim {
                TDim::Sym(sym) => {
                    symbols.insert(sym.clone(), TDim::Val(size as i64));
                }
                other => {
                    if other.to_usize().ok() != Some(size) {
                        bail!("input {ix} axis {axis} is {size}, the model expects {other}");
                    }
                }
            }
        }
    }
    model.set_symbols(&symbols)
}

impl Session for TractSession {
    fn provenance(&self) -> &Provenance {
        &self.provenance
    }

    /// One item per core: [`Self::run`] splits a batch into items run in parallel, each on one
    /// core.
    fn items_per_call(&self) -> usize {
        rayon::current_num_threads()
    }

    /// Runs the model. A batch (first axis > 1 on every input of a model whose first axis is
    /// free) runs as single items on one batch-1 plan, spread over the cores, and the outputs are
    /// stacked: tract's plans for batch 1 are its fastest by far (a 3D U-Net patch: 65 ms at
    /// batch 1, 2.5 s per item at batch 4), and tract runs one item on one core.
    fn run(&mut self, inputs: &[ArrayViewD<'_, f32>]) -> Result<Vec<ArrayD<f32>>, InferError> {
        let batch = inputs.first().and_then(|a| a.shape().first().copied());
        let split = match batch {
            Some(n) if n > 1 && self.batch_axis => {
                inputs.iter().all(|a| a.shape().first() == Some(&n))
            }
            _ => false,
        };
        let result = if split {
            let n = batch.unwrap_or(1);
            let shapes = inputs
                .iter()
                .map(|a| {
                    let mut s = a.shape().to_vec();
                    s[0] = 1;
                    s
                })
                .collect();
            self.plan_for(shapes).and_then(|plan| {
                let items = (0..n)
                    .into_par_iter()
                    .map(|b| {
                        let item: Vec<ArrayViewD<'_, f32>> = inputs
                            .iter()
                            .map(|a| a.slice_axis(Axis(0), (b..b + 1).into()))
                            .collect();
                        run_plan(&plan, &item)
                    })
                    .collect::<TractResult<Vec<_>>>()?;
                let outputs = items.first().map_or(0, Vec::len);
                (0..outputs)
                    .map(|o| {
                        let views: Vec<_> = items.iter().map(|item| item[o].view()).collect();
                        Ok(ndarray::concatenate(Axis(0), &views)?)
                    })
                    .collect()
            })
        } else {
            let shapes = inputs.iter().map(|a| a.shape().to_vec()).collect();
            self.plan_for(shapes)
                .and_then(|plan| run_plan(&plan, inputs))
        };
        result.map_err(|e| InferError {
            engine: Engine::Tract,
            model: self.path.clone(),
            message: one_line(&e),
        })
    }
}

fn run_plan(
    plan: &Arc<TypedRunnableModel>,
    inputs: &[ArrayViewD<'_, f32>],
) -> TractResult<Vec<ArrayD<f32>>> {
    let values: TVec<TValue> = inputs
        .iter()
        .map(|a| a.to_owned().into_tensor().into())
        .collect();
    let outputs = plan.run(values)?;
    outputs
        .iter()
        .map(|t| Ok(t.to_plain_array_view::<f32>()?.to_owned()))
        .collect()
}

/// tract's errors are chains; join them on one line for logs and error.json.
fn one_line(e: &TractError) -> String {
    format!("{e:#}").replace('\n', " ")
}

fn tract_version() -> &'static str {
    // The crate is pinned with `=` in Cargo.toml; keep this in step with it.
    "0.23.9"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names of the ops in L2SNet's `loc2d` optimised for one coronal slice wide enough for
    /// tract's direct spatial convolution (an output row of at least 128 points).
    fn loc2d_ops(
        optimise: impl Fn(TypedModel) -> TractResult<Arc<TypedRunnableModel>>,
    ) -> Vec<String> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/l2snet/loc2d.fp32.onnx");
        let mut model = tract_onnx::onnx().model_for_path(path).unwrap();
        model
            .set_input_fact(0, f32::fact([1, 1, 64, 128]).into())
            .unwrap();
        let plan = optimise(model.into_typed().unwrap().into_decluttered().unwrap()).unwrap();
        plan.model()
            .nodes()
            .iter()
            .map(|n| n.op().name().to_string())
            .collect()
    }

    #[test]
    fn convolutions_run_as_matrix_products_not_direct_spatial() {
        let direct = |ops: &[String]| ops.iter().any(|op| op == "DirectSpatialConv");
        // tract's own choice has direct convolutions here: the knob is what removes them.
        assert!(direct(&loc2d_ops(|m| m.into_optimized()?.into_runnable())));
        assert!(!direct(&loc2d_ops(optimise)));
    }

    #[test]
    fn reported_version_matches_the_pinned_crate() {
        let manifest = include_str!("../../Cargo.toml");
        let pinned = format!("tract-onnx = \"={}\"", tract_version());
        assert!(manifest.contains(&pinned), "Cargo.toml must pin {pinned}");
    }
}
