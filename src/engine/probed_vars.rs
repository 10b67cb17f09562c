//! A host's variables once probed, kept small: the plan's variables (one
//! map, shared by every copy of the host's plan) and only what the domain's
//! facts changed. The whole map is built when a task is rendered and dropped
//! after: across a fleet, a full copy per host would be most of khard's memory.

use std::sync::Arc;

use serde_json::{Map, Value};

#[derive(Debug)]
pub(super) struct ProbedVars {
    plan: Arc<Map<String, Value>>,
    /// Variables the facts added or changed.
    set: Map<String, Value>,
    /// Plan variables the facts removed.
    unset: Vec<String>,
}

impl ProbedVars {
    /// Keeps what `with_facts` (the plan's variables with the facts) differs in.
    pub fn new(plan: &Arc<Map<String, Value>>, with_facts: &Map<String, Value>) -> ProbedVars {
        let unset = plan
            .keys()
            .filter(|k| !with_facts.contains_key(*k))
            .cloned()
            .collect();
        let set = with_facts
            .iter()
            .filter(|(k, v)| plan.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        ProbedVars {
            plan: plan.clone(),
            set,
            unset,
        }
    }

    /// Every variable, as `with_facts` returned them.
    pub fn merged(&self) -> Map<String, Value> {
        let mut all = (*self.plan).clone();
        for k in &self.unset {
            all.shift_remove(k);
        }
        all.extend(self.set.iter().map(|(k, v)| (k.clone(), v.clone())));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merged_is_what_the_facts_made_of_the_plan() {
        let plan: Map<String, Value> = json!({"a": 1, "auto": "auto", "same": [1, 2], "b": "x"})
            .as_object()
            .unwrap()
            .clone();
        let plan = Arc::new(plan);
        let with: Map<String, Value> = json!({"a": 2, "same": [1, 2], "b": "x", "fact": "probed"})
            .as_object()
            .unwrap()
            .clone();
        let v = ProbedVars::new(&plan, &with);
        assert_eq!(v.set.len(), 2, "only a and fact differ: {:?}", v.set);
        assert_eq!(v.unset, ["auto"]);
        let merged = v.merged();
        assert_eq!(merged.len(), with.len());
        for (k, val) in &with {
            assert_eq!(merged.get(k), Some(val), "{k}");
        }
    }
}
