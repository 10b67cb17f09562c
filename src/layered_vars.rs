//! A host's variables kept small: a map shared by every host of a play (or
//! by every copy of one host's plan) and only what this host differs in.
//! The whole map is built when a task is rendered and dropped after: across
//! a fleet, a full copy per host would be most of khard's memory (the
//! role's defaults alone are tens of KiB, the same on every host).

use std::sync::Arc;

use serde_json::{Map, Value};

#[derive(Debug)]
pub struct LayeredVars {
    base: Arc<Map<String, Value>>,
    /// Variables this host adds or changes.
    set: Map<String, Value>,
    /// Variables of the base this host does not have.
    unset: Vec<String>,
}

impl LayeredVars {
    /// Keeps what `all` (the host's whole map) differs in from `base`.
    pub fn new(base: &Arc<Map<String, Value>>, all: &Map<String, Value>) -> LayeredVars {
        let unset = base
            .keys()
            .filter(|k| !all.contains_key(*k))
            .cloned()
            .collect();
        let set = all
            .iter()
            .filter(|(k, v)| base.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        LayeredVars {
            base: base.clone(),
            set,
            unset,
        }
    }

    /// The shared map this one is layered on.
    pub fn base(&self) -> &Arc<Map<String, Value>> {
        &self.base
    }

    /// One variable, without building the whole map.
    pub fn get(&self, name: &str) -> Option<&Value> {
        match self.set.get(name) {
            Some(v) => Some(v),
            None if self.unset.iter().any(|u| u == name) => None,
            None => self.base.get(name),
        }
    }

    /// Every variable, as the whole map given to [`LayeredVars::new`] had them.
    pub fn merged(&self) -> Map<String, Value> {
        let mut all = (*self.base).clone();
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
        let v = LayeredVars::new(&plan, &with);
        for (k, val) in &with {
            assert_eq!(v.get(k), Some(val), "{k}");
        }
        assert_eq!(v.get("auto"), None);
        assert_eq!(v.set.len(), 2, "only a and fact differ: {:?}", v.set);
        assert_eq!(v.unset, ["auto"]);
        let merged = v.merged();
        assert_eq!(merged.len(), with.len());
        for (k, val) in &with {
            assert_eq!(merged.get(k), Some(val), "{k}");
        }
    }
}
