//! The committed OpenAPI document (`openapi/slipway.json`) is the one the code serves.
//! After changing the API, refresh it with `UPDATE_OPENAPI=1 cargo test -p slipway-server --test openapi`.

use std::path::Path;

#[test]
fn the_committed_openapi_document_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../openapi/slipway.json");
    let current = serde_json::to_string_pretty(&slipway_server::openapi()).unwrap() + "\n";
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &current).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == current,
        "openapi/slipway.json is out of date; run `UPDATE_OPENAPI=1 cargo test -p slipway-server --test openapi`"
    );
}

#[test]
fn every_route_but_healthz_declares_bearer_auth() {
    let doc = serde_json::to_value(slipway_server::openapi()).unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
            assert_eq!(secured, path != "/healthz", "{method} {path}");
        }
    }
}
