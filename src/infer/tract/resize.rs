//! tract's linear `Resize`, evaluated row by row along the last axis.
//!
//! tract 0.23.9 resamples every axis with one routine that moves a run of `inner` values per tap;
//! along the last axis `inner` is 1, so each output value pays a slice fill and two zipped loops.
//! In L2SNet's 2D network the five bilinear up-samplings took 24 % of the network's time on one
//! coronal slice (`tract dump --profile`, 99 of 418 ms at 288×192), nearly all of it in that last
//! axis. [`RowResize`] keeps tract's own per-axis plan (the same taps, the same weights, summed in
//! the same order from 0.0), so its output is bit for bit tract's; it only walks the last axis a
//! row at a time.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::nn::resize::{AxisPlan, Interpolator, Resize, resample_axis};
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

/// tract's core `Resize` with a row-wise evaluation of the last axis for f32 tensors.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct RowResize(Resize);

/// Replaces every linear core `Resize` of `model` by a [`RowResize`]; returns how many.
pub fn use_row_resize(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    while let Some(id) = model.nodes().iter().position(|n| {
        n.op_as::<Resize>()
            .is_some_and(|r| r.interpolator == Interpolator::Linear)
    }) {
        let node = model.node(id);
        let op = RowResize(node.op_as::<Resize>().expect("found above").clone());
        TypedModelPatch::replace_single_op(model, node, &node.inputs, op)?.apply(model)?;
        replaced += 1;
    }
    Ok(replaced)
}

impl Op for RowResize {
    fn name(&self) -> StaticName {
        "RowResize".into()
    }

    op_as_typed_op!();
}

impl EvalOp for RowResize {
    op_out_of_plan!();

    fn eval(&self, ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        if inputs[0].datum_type() != f32::datum_type() {
            return self.0.eval(ctx, inputs);
        }
        let (scales, output_shape) = self.scales_and_shape(&inputs)?;
        let input = inputs[0].try_as_plain_ram()?;
        let mut shape: TVec<usize> = inputs[0].shape().into();
        let mut data: Cow<[f32]> = Cow::Borrowed(input.as_slice::<f32>()?);
        let last = shape.len().saturating_sub(1);
        for (axis, scale) in scales.into_iter().enumerate() {
            let (len_in, len_out) = (shape[axis], output_shape[axis]);
            if len_in == len_out && scale == 1.0 {
                continue;
            }
            let plan = self.0.plan_axis(scale, len_in, len_out);
            let mut resampled = vec![0f32; data.len() / len_in.max(1) * len_out];
            if axis == last {
                resample_rows(&data, len_in, &plan, &mut resampled);
            } else {
                resample_axis(&data, &shape, axis, &plan, 0.0, &mut resampled);
            }
            data = Cow::Owned(resampled);
            shape[axis] = len_out;
        }
        let out = tract_ndarray::ArrayD::from_shape_vec(&*shape, data.into_owned())?;
        Ok(tvec!(out.into_tensor().into_tvalue()))
    }
}

impl RowResize {
    /// The scale per axis and the output shape, as tract's core `Resize` computes them.
    fn scales_and_shape(&self, inputs: &[TValue]) -> TractResult<(TVec<f32>, TVec<usize>)> {
        let op = &self.0;
        let scales = op.optional_scales_input.and_then(|ix| inputs.get(ix));
        let sizes = op.optional_sizes_input.and_then(|ix| inputs.get(ix));
        let shape = inputs[0].shape();
        let out = op.compute_output_shape(shape, scales.map(|t| &**t), sizes.map(|t| &**t))?;
        let scales = match scales.filter(|s| s.len() == shape.len()) {
            Some(s) => s.try_as_plain_ram()?.as_slice::<f32>()?.into(),
            None => out
                .iter()
                .zip(shape)
                .map(|(o, i)| *o as f32 / *i as f32)
                .collect(),
        };
        Ok((scales, out))
    }
}

/// Resamples the last axis of a row-major `input` whose rows are `len_in` long: each output
/// value sums its taps from 0.0 in plan order, skipping zero weights, as tract's
/// `resample_axis` does.
fn resample_rows(input: &[f32], len_in: usize, plan: &AxisPlan, output: &mut [f32]) {
    let (window, len_out) = (plan.window, plan.extrapolated.len());
    if len_in == 0 || len_out == 0 {
        return;
    }
    let taps: Vec<(&[usize], &[f32], bool)> = (0..len_out)
        .map(|x| {
            let k = x * window..(x + 1) * window;
            (
                &plan.indices[k.clone()],
                &plan.weights[k],
                plan.extrapolated[x],
            )
        })
        .collect();
    for (src, dst) in input
        .chunks_exact(len_in)
        .zip(output.chunks_exact_mut(len_out))
    {
        for (d, &(indices, weights, outside)) in dst.iter_mut().zip(&taps) {
            let mut acc = 0f32;
            if !outside {
                for (&i, &w) in indices.iter().zip(weights) {
                    if w != 0.0 {
                        acc += w * src[i];
                    }
                }
            }
            *d = acc;
        }
    }
}

impl TypedOp for RowResize {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.0.output_facts(inputs)
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::nn::resize::{CoordTransformer, Nearest};

    /// A model of one core `Resize` (`interpolator`, half-pixel) by `scales` of an input `shape`.
    fn resize_model(shape: &[usize], scales: &[f32], interpolator: Interpolator) -> TypedModel {
        let op = Resize {
            coord_transformer: CoordTransformer::HalfPixel,
            interpolator,
            nearest: Nearest::Floor,
            optional_scales_input: Some(1),
            optional_sizes_input: None,
        };
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact(shape)).unwrap();
        let s = model.add_const("scales", tensor1(scales)).unwrap();
        let y = model.wire_node("resize", op, &[x, s]).unwrap();
        model.select_output_outlets(&y).unwrap();
        model
    }

    fn run(model: TypedModel, input: &Tensor) -> Tensor {
        let plan = model.into_runnable().unwrap();
        let out = plan.run(tvec!(input.clone().into_tvalue())).unwrap();
        out[0].clone().into_tensor()
    }

    /// Values that make every rounding visible: no two alike, magnitudes over six decades.
    fn input(shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|i| ((i * 7919 % 1013) as f32 * 0.37).exp().sin() * 10f32.powi((i % 7) as i32 - 3))
            .collect();
        tract_ndarray::ArrayD::from_shape_vec(shape, data)
            .unwrap()
            .into_tensor()
    }

    #[test]
    fn row_resize_gives_tracts_own_output_bit_for_bit() {
        let cases: [(&[usize], &[f32]); 4] = [
            (&[1, 3, 9, 5], &[1.0, 1.0, 2.0, 2.0]),
            (&[2, 4, 1, 12], &[1.0, 1.0, 2.0, 2.0]),
            (&[1, 2, 6, 10], &[1.0, 1.0, 1.5, 0.6]),
            (&[3, 8, 7], &[1.0, 2.0, 3.0]),
        ];
        for (shape, scales) in cases {
            let stock = resize_model(shape, scales, Interpolator::Linear);
            let mut rows = stock.clone();
            assert_eq!(use_row_resize(&mut rows).unwrap(), 1);
            let x = input(shape);
            let (want, got) = (run(stock, &x), run(rows, &x));
            assert_eq!(got.shape(), want.shape(), "{shape:?} by {scales:?}");
            let want = want.to_plain_array_view::<f32>().unwrap();
            let got = got.to_plain_array_view::<f32>().unwrap();
            for (i, (a, b)) in got.iter().zip(want.iter()).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "{shape:?} by {scales:?} at {i}");
            }
        }
    }

    #[test]
    fn only_linear_resizes_are_replaced() {
        let mut model = resize_model(&[1, 1, 4, 4], &[1.0, 1.0, 2.0, 2.0], Interpolator::Cubic);
        assert_eq!(use_row_resize(&mut model).unwrap(), 0);
    }
}
