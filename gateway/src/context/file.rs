//! Owns reading cluster state from a file of objects (`check --cluster FILE`, a test suite's
//! `cluster:`): YAML or JSON, a list of objects, a `kind: List` with `items`, or several YAML
//! documents. Each object's resource is its kind's plural as kubectl guesses it offline
//! (`UnsafeGuessKindToResource`: lowercase, `s` → `ses`, `y` → `ies`, else `+s`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

/// Objects by (group, version, resource), in file order.
pub type Objects = BTreeMap<(String, String, String), Vec<Value>>;

/// The resource the API server most likely serves `kind` as (kubectl's offline guess).
pub fn guess_resource(kind: &str) -> String {
    let singular = kind.to_lowercase();
    if singular.ends_with('s') {
        format!("{singular}es")
    } else if let Some(stem) = singular.strip_suffix('y') {
        format!("{stem}ies")
    } else {
        format!("{singular}s")
    }
}

/// Groups `objects` by resource; the error names the object (its index) and what is missing.
pub fn group(objects: Vec<Value>) -> Result<Objects, String> {
    let mut grouped = Objects::new();
    for (i, object) in objects.into_iter().enumerate() {
        let at = |why: &str| format!("object {i}: {why}");
        let api_version = object["apiVersion"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| at("no apiVersion"))?;
        let kind = object["kind"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| at("no kind"))?;
        if object["metadata"]["name"]
            .as_str()
            .is_none_or(str::is_empty)
        {
            return Err(at("no metadata.name"));
        }
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        grouped
            .entry((group.to_owned(), version.to_owned(), guess_resource(kind)))
            .or_default()
            .push(object);
    }
    Ok(grouped)
}

/// Objects from YAML or JSON text: a list, a `List` (`items`), or one object per YAML document.
pub fn parse(text: &str) -> Result<Vec<Value>, String> {
    let mut objects = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        let value = Value::deserialize(document).map_err(|e| e.to_string())?;
        match value {
            Value::Null => {}
            Value::Array(items) => objects.extend(items),
            Value::Object(_)
                if value.get("items").is_some()
                    && (map_is_list(&value) || value.get("kind").is_none()) =>
            {
                match value.get("items") {
                    Some(Value::Array(items)) => objects.extend(items.iter().cloned()),
                    Some(Value::Null) | None => {}
                    Some(_) => return Err("items must be a list of objects".into()),
                }
            }
            Value::Object(_) => objects.push(value),
            _ => return Err("expected objects, a list of objects or a List with items".into()),
        }
    }
    Ok(objects)
}

fn map_is_list(value: &Value) -> bool {
    value["kind"].as_str().is_some_and(|k| k.ends_with("List"))
}

/// Reads `path` (see [`parse`] and [`group`]).
pub fn load(path: &Path) -> Result<Objects, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read cluster state {}: {e}", path.display()))?;
    parse(&text)
        .and_then(group)
        .map_err(|e| format!("cluster state {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_documents_and_items_are_all_read() {
        let text = "
- {apiVersion: v1, kind: Namespace, metadata: {name: a}}
---
apiVersion: v1
kind: List
items:
  - {apiVersion: networking.k8s.io/v1, kind: Ingress, metadata: {name: i, namespace: a}}
---
{apiVersion: v1, kind: Namespace, metadata: {name: b}}
";
        let grouped = group(parse(text).unwrap()).unwrap();
        assert_eq!(
            grouped[&("".into(), "v1".into(), "namespaces".into())].len(),
            2
        );
        assert_eq!(
            grouped[&("networking.k8s.io".into(), "v1".into(), "ingresses".into())].len(),
            1
        );
        let e = group(parse("- {apiVersion: v1, metadata: {name: a}}").unwrap()).unwrap_err();
        assert_eq!(e, "object 0: no kind");
    }
}
