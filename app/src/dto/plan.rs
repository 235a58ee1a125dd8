//! `cairn plan --format json`: one [`PlanJson`] object (docs/cli.md, "cairn
//! plan").

use cairn_engine::config::DepKind;
use cairn_engine::refs::PartitionRef;
use serde::Serialize;

/// `{"actions":[…],"configure_calls":N,"requested":[…],"schema":1}`.
#[derive(Debug, Clone, Serialize)]
pub struct PlanJson<'a> {
    /// In topological order (inputs first).
    pub actions: Vec<PlanAction<'a>>,
    pub configure_calls: u64,
    pub requested: &'a [PartitionRef],
    pub schema: u32,
}

/// One action of a plan.
#[derive(Debug, Clone, Serialize)]
pub struct PlanAction<'a> {
    pub args: &'a [String],
    /// The action's index in the plan.
    pub id: u64,
    pub inputs: Vec<PlanInput<'a>>,
    pub job: &'a str,
    pub outputs: &'a [PartitionRef],
    pub reason: String,
    /// `run`, `up-to-date`, `restore` or `blocked`.
    pub verdict: &'static str,
}

/// One input of a planned action: `{"dep":"materialize","ref":"raw/…"}`.
#[derive(Debug, Clone, Serialize)]
pub struct PlanInput<'a> {
    pub dep: DepKind,
    #[serde(rename = "ref")]
    pub partition: &'a PartitionRef,
}
