//! The OpenAPI document served at `GET /openapi.json` (`gateway/openapi.json`) against the gateway's
//! route table `gateway::ROUTES`: it must be structurally OpenAPI 3.1, describe exactly the routes the
//! gateway serves, give every operation a unique `operationId` and a success response, and contain no
//! dangling `$ref`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

const DOC: &str = include_str!("../openapi.json");

fn spec() -> oas3::Spec {
    oas3::from_json(DOC).expect("openapi.json parses as an OpenAPI 3.1 document")
}

fn json() -> Value {
    serde_json::from_str(DOC).expect("openapi.json is valid JSON")
}

/// (METHOD, path template) of every operation in the document.
fn documented_routes(spec: &oas3::Spec) -> BTreeSet<(String, String)> {
    spec.operations().map(|(path, method, _)| (method.as_str().to_owned(), path)).collect()
}

#[test]
fn document_is_openapi_3_1() {
    let spec = spec();
    assert!(spec.openapi.starts_with("3.1"), "openapi is {:?}, expected 3.1.x", spec.openapi);
    spec.validate_version().expect("openapi version is in the range oas3 supports (~3.1)");
    assert_eq!(spec.info.title, "Microservices Playground API");
    assert!(spec.paths.as_ref().is_some_and(|paths| !paths.is_empty()), "document has paths");
}

#[test]
fn document_and_routes_list_the_same_operations() {
    let routes: Vec<(String, String)> =
        gateway::ROUTES.iter().map(|(method, path)| ((*method).to_owned(), (*path).to_owned())).collect();
    for (method, path) in &routes {
        assert_eq!(method, &method.to_ascii_uppercase(), "ROUTES method {method} for {path} is upper-case");
    }
    let served: BTreeSet<(String, String)> = routes.iter().cloned().collect();
    assert_eq!(served.len(), routes.len(), "ROUTES has no duplicates");

    let documented = documented_routes(&spec());

    let undocumented: Vec<_> = served.difference(&documented).collect();
    assert!(undocumented.is_empty(), "routes served but missing from openapi.json: {undocumented:?}");
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(unserved.is_empty(), "operations in openapi.json that gateway::ROUTES does not serve: {unserved:?}");
}

#[test]
fn every_operation_has_a_unique_id_and_a_success_response() {
    let spec = spec();
    let mut ids: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut count = 0;
    for (path, method, op) in spec.operations() {
        count += 1;
        let id = op.operation_id.clone().unwrap_or_else(|| panic!("{method} {path} has no operationId"));
        assert!(!id.is_empty(), "{method} {path} has an empty operationId");
        if let Some((other_method, other_path)) = ids.insert(id.clone(), (method.to_string(), path.clone())) {
            panic!("operationId {id} is used by {other_method} {other_path} and {method} {path}");
        }

        let responses = op.responses.as_ref().unwrap_or_else(|| panic!("{method} {path} has no responses"));
        assert!(
            responses.keys().any(|status| status.len() == 3 && status.starts_with('2')),
            "{method} {path} has no 2xx response (has {:?})",
            responses.keys().collect::<Vec<_>>()
        );
    }
    assert!(count > 0, "document has operations");
}

/// Collects every `"$ref"` string in `value`, with the JSON pointer of the object holding it.
fn collect_refs(value: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if key == "$ref" {
                    let target = child.as_str().unwrap_or_else(|| panic!("$ref at {at} is not a string"));
                    out.push((at.to_owned(), target.to_owned()));
                } else {
                    let escaped = key.replace('~', "~0").replace('/', "~1");
                    collect_refs(child, &format!("{at}/{escaped}"), out);
                }
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                collect_refs(child, &format!("{at}/{index}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn every_ref_resolves_to_a_component() {
    let doc = json();
    let mut refs = Vec::new();
    collect_refs(&doc, "", &mut refs);
    assert!(!refs.is_empty(), "document uses $ref");
    for (at, target) in refs {
        let pointer = target
            .strip_prefix("#/components/")
            .map(|rest| format!("/components/{rest}"))
            .unwrap_or_else(|| panic!("$ref {target:?} at {at} does not point into #/components/"));
        let resolved = doc.pointer(&pointer).unwrap_or_else(|| panic!("$ref {target:?} at {at} does not resolve"));
        assert!(resolved.is_object(), "$ref {target:?} at {at} resolves to a non-object");
        // `#/components/<kind>/<name>`: exactly one level below the kind.
        assert_eq!(
            pointer.matches('/').count(),
            3,
            "$ref {target:?} at {at} names a whole component, not one entry of a component kind"
        );
    }
}

#[test]
fn the_document_lists_every_error_code_with_its_status_and_title() {
    let doc = json();
    let listed: BTreeSet<String> = doc["components"]["schemas"]["Problem"]["properties"]["code"]["enum"]
        .as_array()
        .expect("Problem.code is an enum")
        .iter()
        .filter_map(|c| c.as_str().map(str::to_owned))
        .collect();
    let served: BTreeSet<String> = playground_proto::ErrorCode::ALL.iter().map(|c| c.as_str().to_owned()).collect();
    assert_eq!(listed, served, "the codes the document names are the codes the server sends");
    // Every example problem in the document carries the status and title its code has.
    let mut examples = vec![];
    collect_problems(&doc, &mut examples);
    assert!(!examples.is_empty(), "the document has example problems");
    for example in examples {
        let code = example["code"].as_str().expect("a code");
        let known = playground_proto::ErrorCode::ALL.iter().find(|c| c.as_str() == code);
        let known = known.unwrap_or_else(|| panic!("example code {code} is not a code of the server"));
        assert_eq!(example["status"].as_u64(), Some(u64::from(known.http_status())), "{code}");
        assert_eq!(example["title"].as_str(), Some(known.title()), "{code}");
    }
}

/// Every object in `value` that looks like a problem body (a string `code`, a number `status`, a string
/// `title`), which leaves out the schema that describes them.
fn collect_problems<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Object(map) => {
            let is = |key: &str, kind: fn(&Value) -> bool| map.get(key).is_some_and(kind);
            if is("code", Value::is_string) && is("status", Value::is_u64) && is("title", Value::is_string) {
                out.push(value);
            }
            map.values().for_each(|v| collect_problems(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_problems(v, out)),
        _ => {}
    }
}
