//! Where tract spends its time on one ONNX file: each optimised op timed over a few runs, summed
//! by op kind and listed by node, slowest first. Knobs come from the environment, so the effect of
//! one is a second run away (`TRACT_DISABLE_DIRECT_SPATIAL=false`, tract's own default, against
//! tracerd's `true`).
//!
//! `cargo run --release --example tract_profile -- models/l2snet/loc2d.fp32.onnx 1,1,384,192`
//!
//! This is tract's plain optimisation, without tracerd's row-by-row resize
//! (`src/infer/tract/resize.rs`), so a `Resize` here costs what tract's own costs.

use std::collections::HashMap;
use std::time::Instant;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::bail;
use tract_onnx::tract_core::plan::{SimpleState, eval};

/// Timed runs after one warm-up.
const RUNS: usize = 3;

fn main() -> TractResult<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path, shape] = args.as_slice() else {
        bail!("usage: tract_profile MODEL.onnx N,C,H,W");
    };
    let shape: Vec<usize> = shape.split(',').map(str::parse).collect::<Result<_, _>>()?;
    let mut onnx = tract_onnx::onnx();
    onnx.ignore_value_info = true;
    let mut model = onnx.model_for_path(path)?;
    model.set_input_fact(0, f32::fact(&shape).into())?;
    let plan = model.into_optimized()?.into_runnable()?;
    let input = Tensor::from_shape(&shape, &ramp(shape.iter().product()))?;

    let mut by_node: HashMap<String, (String, f64)> = HashMap::new();
    let mut total = 0.0;
    for run in 0..=RUNS {
        let mut state = SimpleState::new(&plan)?;
        let start = Instant::now();
        state.run_plan_with_eval(
            tvec!(input.clone().into()),
            |ctx, op_state, node, inputs| {
                let t = Instant::now();
                let outputs = eval(ctx, op_state, node, inputs);
                if run > 0 {
                    let entry = by_node
                        .entry(node.name.clone())
                        .or_insert_with(|| (node.op().name().to_string(), 0.0));
                    entry.1 += t.elapsed().as_secs_f64() * 1e3 / RUNS as f64;
                }
                outputs
            },
        )?;
        if run > 0 {
            total += start.elapsed().as_secs_f64() * 1e3 / RUNS as f64;
        }
    }
    report(total, by_node);
    Ok(())
}

/// Values in [0, 1) that vary along every axis.
fn ramp(n: usize) -> Vec<f32> {
    (0..n).map(|i| (i % 7) as f32 / 7.0).collect()
}

fn report(total: f64, by_node: HashMap<String, (String, f64)>) {
    println!("{total:.1} ms per run (mean of {RUNS})");
    let mut by_op: HashMap<&str, f64> = HashMap::new();
    for (op, ms) in by_node.values() {
        *by_op.entry(op).or_default() += ms;
    }
    let mut ops: Vec<_> = by_op.into_iter().collect();
    ops.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (op, ms) in ops.iter().take(12) {
        println!("  {op:<28} {ms:8.1} ms");
    }
    let mut nodes: Vec<_> = by_node.iter().collect();
    nodes.sort_by(|a, b| b.1.1.total_cmp(&a.1.1));
    println!("slowest nodes:");
    for (name, (op, ms)) in nodes.iter().take(20) {
        println!("  {name:<60} {op:<20} {ms:8.1} ms");
    }
}
