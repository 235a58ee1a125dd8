//! A dataset's partitions as a grid over its dimensions (docs/api.md,
//! `/v1/datasets` and `/v1/datasets/{name}/grid`): the dimensions in the
//! order its pattern names them, each with its values in domain order,
//! and the `cairn status` state of each cell, run-length encoded in
//! row-major order (the last dimension varies fastest), so that a page
//! can show 10⁶ partitions without a 10⁶-element list.

use std::collections::HashMap;

use cairn_app::status::State;
use cairn_engine::graph::Graph;
use cairn_engine::refs::{PartitionRef, Pattern, PatternValue};
use serde_json::{Value, json};

/// A dataset's pattern and the values of each of its dimensions.
pub struct Shape {
    pub name: String,
    /// The pattern its partitions are named by (a job's output, or the
    /// source template's).
    pub pattern: Pattern,
    pub dimensions: Vec<(String, Vec<String>)>,
    /// The dataset's `version` in the graph file, if it has one.
    pub version: Option<String>,
}

impl Shape {
    /// How many partitions the grid has.
    pub fn len(&self) -> u128 {
        self.dimensions
            .iter()
            .map(|(_, values)| values.len() as u128)
            .product()
    }

    pub fn json(&self) -> Value {
        json!({
            "name": self.name,
            "pattern": self.pattern.as_str(),
            "dimensions": self.dimensions_json(),
            "partitions": u64::try_from(self.len()).unwrap_or(u64::MAX),
            "version": self.version,
        })
    }

    fn dimensions_json(&self) -> Vec<Value> {
        self.dimensions
            .iter()
            .map(|(name, values)| json!({"name": name, "values": values}))
            .collect()
    }
}

/// The shape of dataset `name`, `Ok(None)` if the graph has no such
/// dataset; an error names a dimension whose values cannot be listed.
pub fn shape(graph: &Graph, name: &str) -> Result<Option<Shape>, String> {
    let pattern = graph
        .jobs
        .values()
        .flat_map(|job| job.outputs.iter())
        .find(|pattern| pattern.dataset() == name)
        .or_else(|| {
            graph
                .datasets
                .get(name)
                .and_then(|dataset| dataset.source.as_ref())
                .map(|source| &source.pattern)
        });
    let Some(pattern) = pattern else {
        return Ok(None);
    };
    let mut dimensions = Vec::new();
    for (key, value) in pattern.dimensions() {
        let values = match value {
            PatternValue::Literal(literal) => vec![literal.clone()],
            PatternValue::Placeholder(placeholder) => graph.domain(placeholder)?,
        };
        dimensions.push((key.clone(), values));
    }
    Ok(Some(Shape {
        name: name.to_owned(),
        pattern: pattern.clone(),
        dimensions,
        version: graph
            .datasets
            .get(name)
            .and_then(|dataset| dataset.version.as_ref())
            .map(ToString::to_string),
    }))
}

/// Every dataset a job outputs or a source template names, in name order.
pub fn datasets(graph: &Graph) -> Vec<String> {
    let mut names: Vec<String> = graph
        .jobs
        .values()
        .flat_map(|job| {
            job.outputs
                .iter()
                .map(|pattern| pattern.dataset().to_owned())
        })
        .chain(
            graph
                .datasets
                .iter()
                .filter(|(_, dataset)| dataset.source.is_some())
                .map(|(name, _)| name.clone()),
        )
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The grid of `shape` with the states of `rows` (a cell without a row is
/// `missing`), run-length encoded.
pub fn grid(shape: &Shape, rows: &[(PartitionRef, State)]) -> Value {
    let states: HashMap<&str, &'static str> = rows
        .iter()
        .map(|(partition, state)| (partition.as_str(), state.word()))
        .collect();
    let mut runs: Vec<(&'static str, u64)> = Vec::new();
    let sizes: Vec<usize> = shape
        .dimensions
        .iter()
        .map(|(_, values)| values.len())
        .collect();
    if !sizes.contains(&0) {
        let mut at = vec![0usize; sizes.len()];
        let mut name = String::new();
        loop {
            name.clear();
            name.push_str(&shape.name);
            for (dimension, (key, values)) in shape.dimensions.iter().enumerate() {
                name.push('/');
                name.push_str(key);
                name.push('=');
                name.push_str(&values[at[dimension]]);
            }
            let state = states.get(name.as_str()).copied().unwrap_or("missing");
            match runs.last_mut() {
                Some((last, count)) if *last == state => *count += 1,
                _ => runs.push((state, 1)),
            }
            // The odometer: the last dimension turns fastest.
            let mut dimension = sizes.len();
            loop {
                if dimension == 0 {
                    return finish(shape, runs);
                }
                dimension -= 1;
                at[dimension] += 1;
                if at[dimension] < sizes[dimension] {
                    break;
                }
                at[dimension] = 0;
            }
        }
    }
    finish(shape, runs)
}

fn finish(shape: &Shape, runs: Vec<(&'static str, u64)>) -> Value {
    json!({
        "dataset": shape.name,
        "pattern": shape.pattern.as_str(),
        "dimensions": shape.dimensions_json(),
        "order": "row-major",
        "runs": runs.into_iter().map(|(state, count)| json!([state, count])).collect::<Vec<_>>(),
    })
}
