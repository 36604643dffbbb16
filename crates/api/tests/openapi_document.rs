//! The committed document is the one the code generates: `cargo test` catches drift.

#[test]
fn committed_openapi_document_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../openapi/openapi.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == keyward_api::openapi_json(),
        "openapi/openapi.json differs from the code; run `cargo xtask openapi` and commit"
    );
}

#[test]
fn every_operation_is_named_tagged_and_secured() {
    let spec: serde_json::Value = serde_json::from_str(&keyward_api::openapi_json()).expect("JSON");
    let mut operations = 0;
    for (path, item) in spec["paths"].as_object().expect("paths") {
        assert!(path.starts_with("/api/policy/v1/"), "{path}");
        for (method, op) in item.as_object().expect("path item") {
            operations += 1;
            assert!(op["operationId"].is_string(), "{method} {path}");
            assert!(
                op["tags"].as_array().is_some_and(|t| !t.is_empty()),
                "{method} {path}"
            );
            assert!(
                op["security"].as_array().is_some_and(|s| !s.is_empty()),
                "{method} {path}"
            );
            for status in ["401", "403", "500", "503"] {
                assert!(
                    op["responses"][status].is_object(),
                    "{method} {path} lacks {status}"
                );
            }
            for (status, response) in op["responses"].as_object().expect("responses") {
                if status.starts_with('4') || status.starts_with('5') {
                    let schema =
                        &response["content"]["application/json; charset=utf-8"]["schema"]["$ref"];
                    assert_eq!(
                        schema, "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
    assert_eq!(operations, 5);
    assert_eq!(
        spec["components"]["securitySchemes"]["AdminAuth"]["scheme"],
        "bearer"
    );
}

#[test]
fn links_lead_to_operations_with_the_parameters_they_fill() {
    let spec: serde_json::Value = serde_json::from_str(&keyward_api::openapi_json()).expect("JSON");
    let mut path_parameters = std::collections::HashMap::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for op in item.as_object().expect("path item").values() {
            let mut names: Vec<String> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .map(str::to_owned)
                .collect();
            names.sort_unstable();
            path_parameters.insert(op["operationId"].as_str().expect("id").to_owned(), names);
        }
    }
    let mut links = Vec::new();
    for item in spec["paths"].as_object().expect("paths").values() {
        for op in item.as_object().expect("path item").values() {
            for (status, response) in op["responses"].as_object().expect("responses") {
                for (name, link) in response["links"].as_object().into_iter().flatten() {
                    let target = link["operationId"].as_str().expect("operationId");
                    let mut filled: Vec<String> = link["parameters"]
                        .as_object()
                        .expect("parameters")
                        .keys()
                        .cloned()
                        .collect();
                    filled.sort_unstable();
                    assert_eq!(Some(&filled), path_parameters.get(target), "{name}");
                    links.push(format!(
                        "{} {status} -> {target}",
                        op["operationId"].as_str().expect("id")
                    ));
                }
            }
        }
    }
    links.sort_unstable();
    assert_eq!(
        links,
        [
            "getKey 200 -> revokeKey",
            "registerKey 201 -> getKey",
            "registerKey 201 -> revokeKey"
        ]
    );
}
