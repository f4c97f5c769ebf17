//! The OpenAPI document and the route table describe the same API.

use std::collections::BTreeSet;

use serde_json::Value;

use super::Harness;
use crate::openapi::DOCUMENT;
use crate::router::{Access, ROUTES};

fn document() -> Value {
    serde_json::from_str(DOCUMENT).expect("openapi.json is JSON")
}

#[test]
fn every_route_is_in_the_openapi_document_and_every_operation_is_a_route() {
    let document = document();
    let mut documented = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            assert!(
                operation["responses"].is_object(),
                "{method} {path} has no responses"
            );
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let routed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|route| (route.method.to_owned(), route.path.to_owned()))
        .collect();
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from openapi.json: {undocumented:?}"
    );
    assert!(
        unrouted.is_empty(),
        "openapi.json operations without a route: {unrouted:?}"
    );
}

#[test]
fn the_document_states_who_may_call_each_route() {
    let document = document();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    for route in ROUTES {
        let operation = &document["paths"][route.path][route.method.to_lowercase()];
        let security = operation.get("security");
        // A public operation overrides the document's security with an empty list.
        let public = security.is_some_and(|s| s.as_array().is_some_and(Vec::is_empty));
        assert_eq!(
            public,
            route.access == Access::Anyone,
            "{} {}",
            route.method,
            route.path
        );
        let responses = operation["responses"].as_object().unwrap();
        if route.access != Access::Anyone {
            assert!(
                responses.contains_key("401"),
                "{} {} documents no 401",
                route.method,
                route.path
            );
        }
        if route.access == Access::Admin {
            assert!(
                responses.contains_key("403"),
                "{} {} documents no 403",
                route.method,
                route.path
            );
        }
        for parameter in route
            .path
            .split('/')
            .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
        {
            let declared = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(
                    document["paths"][route.path]["parameters"]
                        .as_array()
                        .into_iter()
                        .flatten(),
                )
                .any(|p| p["name"] == parameter && p["in"] == "path");
            assert!(
                declared,
                "{} {} does not declare {parameter}",
                route.method, route.path
            );
        }
    }
}

#[test]
fn the_document_is_served_to_anyone() {
    let h = Harness::new();
    let answer = h.call("GET", "/openapi.json", Value::Null, None);
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, document());
}
