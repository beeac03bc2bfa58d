//! RotationPolicy `nodeSelector`: a standard label selector over the
//! labels of Node objects, checked once and matched many times.
//!
//! The API server stores whatever the schema lets through, so an operator
//! it does not know, `In` without values or `Exists` with values arrive
//! here; they are reported (condition `Invalid`, reason
//! `InvalidSelector`), never guessed at.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// A selector that does not make sense.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("spec.nodeSelector.matchExpressions[{index}] ({key} {operator} {values:?}) {problem}")]
pub struct SelectorError {
    /// Position of the bad expression.
    pub index: usize,
    /// Its key.
    pub key: String,
    /// Its operator.
    pub operator: String,
    /// Its values.
    pub values: Vec<String>,
    /// What is wrong and what to do.
    pub problem: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A checked label selector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector(Vec<Requirement>);

impl Selector {
    /// Checks `selector`; absent or empty selects every node.
    pub fn parse(selector: Option<&LabelSelector>) -> Result<Selector, SelectorError> {
        let Some(selector) = selector else { return Ok(Selector::default()) };
        let mut requirements: Vec<Requirement> = selector
            .match_labels
            .iter()
            .flatten()
            .map(|(key, value)| Requirement::In(key.clone(), vec![value.clone()]))
            .collect();
        for (index, e) in selector.match_expressions.iter().flatten().enumerate() {
            let values = e.values.clone().unwrap_or_default();
            let error = |problem| SelectorError {
                index,
                key: e.key.clone(),
                operator: e.operator.clone(),
                values: values.clone(),
                problem,
            };
            let requirement = match e.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(error("needs at least one value; list the label values to match"));
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(error("takes no values; remove them or use In/NotIn"));
                }
                "In" => Requirement::In(e.key.clone(), values),
                "NotIn" => Requirement::NotIn(e.key.clone(), values),
                "Exists" => Requirement::Exists(e.key.clone()),
                "DoesNotExist" => Requirement::DoesNotExist(e.key.clone()),
                _ => return Err(error("has an unknown operator; use In, NotIn, Exists or DoesNotExist")),
            };
            requirements.push(requirement);
        }
        Ok(Selector(requirements))
    }

    /// Whether a Node with `labels` is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::In(key, values) => labels.get(key).is_some_and(|v| values.contains(v)),
            Requirement::NotIn(key, values) => labels.get(key).is_none_or(|v| !values.contains(v)),
            Requirement::Exists(key) => labels.contains_key(key),
            Requirement::DoesNotExist(key) => !labels.contains_key(key),
        })
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn expression(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).to_owned()).collect()),
        }
    }

    #[test]
    fn absent_and_empty_select_everything() {
        let node = labels(&[("zone", "a")]);
        assert!(Selector::parse(None).expect("valid").matches(&node));
        assert!(Selector::parse(Some(&LabelSelector::default())).expect("valid").matches(&labels(&[])));
    }

    #[test]
    fn labels_and_expressions_all_apply() {
        let selector = LabelSelector {
            match_labels: Some(labels(&[("pool", "edge")])),
            match_expressions: Some(vec![
                expression("zone", "In", &["a", "b"]),
                expression("tier", "NotIn", &["db"]),
                expression("gpu", "DoesNotExist", &[]),
                expression("rack", "Exists", &[]),
            ]),
        };
        let selector = Selector::parse(Some(&selector)).expect("valid");
        assert!(selector.matches(&labels(&[("pool", "edge"), ("zone", "a"), ("rack", "1")])));
        assert!(!selector.matches(&labels(&[("pool", "edge"), ("zone", "c"), ("rack", "1")])));
        assert!(!selector.matches(&labels(&[
            ("pool", "edge"),
            ("zone", "a"),
            ("rack", "1"),
            ("tier", "db")
        ])));
        assert!(!selector.matches(&labels(&[("pool", "edge"), ("zone", "a"), ("rack", "1"), ("gpu", "x")])));
        assert!(!selector.matches(&labels(&[("pool", "edge"), ("zone", "a")])));
        assert!(!selector.matches(&labels(&[("pool", "core"), ("zone", "a"), ("rack", "1")])));
    }

    #[test]
    fn nonsense_is_reported_with_the_expression() {
        for (operator, values, problem) in [
            ("Near", vec!["a"], "unknown operator"),
            ("In", vec![], "at least one value"),
            ("Exists", vec!["a"], "takes no values"),
        ] {
            let selector = LabelSelector {
                match_expressions: Some(vec![expression("zone", operator, &values)]),
                ..LabelSelector::default()
            };
            let error = Selector::parse(Some(&selector)).expect_err(operator).to_string();
            assert!(error.contains(problem) && error.contains(operator) && error.contains("zone"), "{error}");
        }
    }
}
