//! `cnnc check NET.cnn [--json] [--weights W]`: validate a network (and its
//! weights) and print its layers.
//!
//! The table has one row per node in execution order: the layer's name
//! (anonymous layers as `#INDEX op`), the operator with its key parameters,
//! the per-sample output shape, the parameter count and the
//! multiply-accumulates per sample; then the totals, and the activation
//! memory at batch 1: the peak of the optimized graph's arena next to the
//! naive sum of every activation (one buffer per value).

use std::path::PathBuf;

use anyhow::Result;
use cnnc_ir::{format_shape, Checked, MemoryPlan};
use serde_json::json;

use crate::common::{load_checked, optimize_checked, print_diagnostics, thousands};
use crate::{Options, Outcome};

/// Arguments of `cnnc check`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The network (`.cnn` file).
    pub net: PathBuf,
    /// Print the table as JSON: `{layers: [{name, op, summary, output_shape,
    /// params, macs}], total_params, total_macs, peak_activation_bytes,
    /// naive_activation_bytes, ...}`.
    #[arg(long)]
    pub json: bool,
    /// Also validate a weights file (safetensors): every tensor the layers
    /// expect present, of the right shape and a convertible dtype; unused
    /// tensors are a warning. (Without it, weights are not opened.)
    #[arg(long)]
    pub weights: Option<PathBuf>,
}

/// Runs `cnnc check`.
pub fn run(args: &Args, options: &Options) -> Result<Outcome> {
    let (file, checked) = load_checked(&args.net, options)?;
    let Some(checked) = checked else {
        return Ok(Outcome::Diagnosed);
    };
    if let Some(weights) = &args.weights {
        let source = crate::run::WeightsSource::Flag(weights.clone());
        if crate::run::bind_weights(
            &file,
            &checked,
            &source,
            cnnc_interp::Mode::Reference,
            options,
        )?
        .is_none()
        {
            return Ok(Outcome::Diagnosed);
        }
    }
    let optimized = optimize_checked(&file, checked.graph.clone(), &checked.info, options);
    let Some(optimized) = optimized else {
        return Ok(Outcome::Diagnosed);
    };
    let plan = match cnnc_ir::plan_memory(&optimized.graph, &optimized.info) {
        Ok(plan) => plan,
        Err(errors) => {
            print_diagnostics(&errors, &file, options);
            return Ok(Outcome::Diagnosed);
        }
    };
    if args.json {
        println!("{}", render_json(&checked, &plan));
    } else {
        print!("{}", render_table(&checked));
        print!("{}", render_memory(&plan));
    }
    Ok(Outcome::Success)
}

struct Row {
    name: String,
    op: String,
    shape: String,
    params: String,
    macs: String,
}

/// The layer table as printed by `cnnc check`.
pub fn render_table(checked: &Checked) -> String {
    let graph = &checked.graph;
    let info = &checked.info;
    let mut rows = vec![Row {
        name: "layer".into(),
        op: "operator".into(),
        shape: "output".into(),
        params: "params".into(),
        macs: "MACs".into(),
    }];
    for &node in info.order() {
        let Some(node_info) = info.get(node) else {
            continue;
        };
        rows.push(Row {
            name: graph.display_name(node),
            op: graph[node].op.summary(),
            shape: format_shape(&node_info.shape),
            params: thousands(node_info.params),
            macs: thousands(node_info.macs),
        });
    }
    rows.push(Row {
        name: "total".into(),
        op: String::new(),
        shape: String::new(),
        params: thousands(info.total_params),
        macs: thousands(info.total_macs),
    });
    let width = |f: fn(&Row) -> &str| rows.iter().map(|r| f(r).chars().count()).max().unwrap_or(0);
    let w_name = width(|r| &r.name);
    let w_op = width(|r| &r.op);
    let w_shape = width(|r| &r.shape);
    let w_params = width(|r| &r.params);
    let w_macs = width(|r| &r.macs);
    let mut out = format!(
        "network {}: input {}, output {}\n\n",
        graph.name(),
        format_shape(info.shape(graph.input())),
        format_shape(info.shape(graph.output()))
    );
    let rule = "-".repeat(w_name + w_op + w_shape + w_params + w_macs + 8);
    let last = rows.len() - 1;
    for (i, row) in rows.iter().enumerate() {
        if i == last {
            out.push_str(&rule);
            out.push('\n');
        }
        let line = format!(
            "{:<w_name$}  {:<w_op$}  {:<w_shape$}  {:>w_params$}  {:>w_macs$}",
            row.name, row.op, row.shape, row.params, row.macs
        );
        out.push_str(line.trim_end());
        out.push('\n');
        if i == 0 {
            out.push_str(&rule);
            out.push('\n');
        }
    }
    out
}

/// The activation memory line printed under the table.
pub fn render_memory(plan: &MemoryPlan) -> String {
    format!(
        "\nactivations at batch 1: peak arena {} bytes, naive sum {} bytes\n",
        thousands(plan.arena_bytes(1).unwrap_or(u64::MAX)),
        thousands(plan.naive_bytes(1).unwrap_or(u64::MAX))
    )
}

/// The layer table as JSON, with the activation memory at batch 1.
pub fn render_json(checked: &Checked, plan: &MemoryPlan) -> String {
    let graph = &checked.graph;
    let info = &checked.info;
    let layers: Vec<_> = info
        .order()
        .iter()
        .filter_map(|&node| {
            let node_info = info.get(node)?;
            Some(json!({
                "name": graph.display_name(node),
                "op": graph[node].op.name(),
                "summary": graph[node].op.summary(),
                "output_shape": node_info.shape,
                "params": node_info.params,
                "macs": node_info.macs,
            }))
        })
        .collect();
    let value = json!({
        "network": graph.name(),
        "input_shape": info.shape(graph.input()),
        "output_shape": info.shape(graph.output()),
        "layers": layers,
        "total_params": info.total_params,
        "total_macs": info.total_macs,
        "peak_activation_bytes": plan.arena_bytes(1),
        "naive_activation_bytes": plan.naive_bytes(1),
    });
    serde_json::to_string_pretty(&value).unwrap_or_default()
}
