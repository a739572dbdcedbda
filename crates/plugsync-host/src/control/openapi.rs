//! The OpenAPI 3.1 document of the control API, made from the route table the router is built
//! from and the JSON Schemas of the wire types (JSON Schema 2020-12, OpenAPI 3.1's dialect).
//!
//! Requests are described as they are read (a field with a default is optional) and responses
//! as they are written (every field the host always sends is required).

use axum::http::StatusCode;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};

use super::api::{ErrorBody, RunningState};
use super::server::{Body, LEASE_EPOCH_HEADER, REPLAYED_HEADER, ROUTES, SIGNATURE_HEADER, Verb};

/// JSON Schema 2020-12 with the definitions where OpenAPI keeps them.
fn settings() -> SchemaSettings {
    SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "/components/schemas".into();
        s.meta_schema = None;
    })
}

/// The JSON Schema of the running state (`GET /v1/status`, `plugsync status --output json`),
/// as written to `schemas/running-state.schema.json`.
pub fn running_state_schema() -> Value {
    let schema = SchemaSettings::draft2020_12()
        .for_serialize()
        .into_generator()
        .into_root_schema_for::<RunningState>();
    schema.to_value()
}

/// The OpenAPI 3.1 document of the control API: every route the server serves, with the JSON
/// Schemas of its requests and responses.
pub fn openapi() -> Value {
    let mut requests = settings().for_deserialize().into_generator();
    let mut responses = settings().for_serialize().into_generator();
    // Query parameters are listed one by one, so their schema is wanted inline.
    let mut queries = settings()
        .for_deserialize()
        .with(|s| s.inline_subschemas = true)
        .into_generator();
    let error = schema_value::<ErrorBody>(&mut responses);
    let mut paths = Map::new();
    for route in ROUTES {
        let mut parameters: Vec<Value> = route
            .params
            .iter()
            .map(|(name, description)| {
                json!({
                    "name": name,
                    "in": "path",
                    "required": true,
                    "description": description,
                    "schema": {"type": "string"},
                })
            })
            .collect();
        if let Some(query) = route.query {
            parameters.extend(query_parameters(query(&mut queries).to_value()));
        }
        if route.step.is_some() {
            parameters.push(json!({
                "name": LEASE_EPOCH_HEADER,
                "in": "header",
                "required": false,
                "description": "The epoch of the reconcile lease this client holds \
                                (`POST /v1/lease`). Refused with 409 `stale_lease_epoch` if it \
                                is not the holder's; without it, the request is refused with \
                                409 `lease_held` while a client holds the lease.",
                "schema": {"type": "integer", "minimum": 1},
            }));
        }
        let mut operation = json!({
            "operationId": route.id,
            "summary": route.summary,
            "description": route.description,
        });
        let mut statuses: Vec<u16> = vec![401];
        statuses.extend(route.errors);
        match route.body {
            Body::Empty => {}
            Body::Json(schema) => {
                statuses.push(413);
                operation["requestBody"] = json!({
                    "required": true,
                    "content": {"application/json": {"schema": schema(&mut requests).to_value()}},
                });
            }
            Body::Artifact => {
                statuses.push(413);
                parameters.push(json!({
                    "name": SIGNATURE_HEADER,
                    "in": "header",
                    "required": false,
                    "description": "The ed25519 signature (128 hex digits) of the canonical JSON \
                                    of `{\"id\", \"version\", \"sha256\"}` of the artifact. \
                                    Required when the host has trusted keys.",
                    "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{128}$"},
                }));
                operation["requestBody"] = json!({
                    "required": true,
                    "content": {"application/octet-stream": {
                        "schema": {"type": "string", "contentMediaType": "application/octet-stream"},
                    }},
                });
            }
        }
        if !parameters.is_empty() {
            operation["parameters"] = Value::Array(parameters);
        }
        statuses.sort_unstable();
        statuses.dedup();
        let replayed = route.step.map(|_| {
            json!({REPLAYED_HEADER: {
                "description": "`true` when this is the response recorded for the step id by an \
                                earlier request (nothing was applied again).",
                "schema": {"type": "string", "const": "true"},
            }})
        });
        let mut answers = Map::new();
        let mut ok = json!({
            "description": "Done.",
            "content": {"application/json": {"schema": (route.ok)(&mut responses).to_value()}},
        });
        if let Some(headers) = &replayed {
            ok["headers"] = headers.clone();
        }
        answers.insert("200".into(), ok);
        for status in statuses {
            let reason = StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Error");
            let mut answer = json!({
                "description": reason,
                "content": {"application/json": {"schema": error}},
            });
            // What was refused before the step ran (auth, body) is not recorded.
            if let (Some(headers), false) = (&replayed, matches!(status, 401 | 413)) {
                answer["headers"] = headers.clone();
            }
            answers.insert(status.to_string(), answer);
        }
        if route.verb == Verb::Head {
            // A `HEAD` answer has no body: its status says it all.
            for answer in answers.values_mut() {
                if let Some(answer) = answer.as_object_mut() {
                    answer.remove("content");
                }
            }
        }
        operation["responses"] = Value::Object(answers);
        let item = paths
            .entry(route.path)
            .or_insert_with(|| Value::Object(Map::new()));
        item[route.verb.openapi()] = operation;
    }
    let mut schemas = responses.take_definitions(true);
    for (name, schema) in requests.take_definitions(true) {
        match schemas.get(&name) {
            Some(existing) if *existing != schema => panic!(
                "`{name}` has one schema as a request and another as a response: give the \
                 request type its own name"
            ),
            _ => {
                schemas.insert(name, schema);
            }
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "plugsync host control API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "How the plugsync sidecar drives a running host: running state, state \
                            snapshots, staging, verify, switch (with a lease), commit, rollback, \
                            unload. Every mutating step operation is applied once per step id: \
                            a retry gets the recorded response with `x-plugsync-replayed: true`. \
                            Errors are `{\"error\": {\"code\", \"message\"}}`. The API's \
                            version (`1.<minor>`: a minor only adds) and the capabilities a \
                            host serves are in `GET /v1/status`, under `api`. Each client has \
                            its own token (the host's token file names them), and holds the \
                            reconcile lease in its own name. A host \
                            may also serve it on a unix socket (`--listen unix:PATH`, mode 0600, \
                            HTTP/1.1 on the socket); every transport requires the bearer token.",
        },
        "servers": [
            {
                "url": "http://127.0.0.1:7077",
                "description": "The default: plain HTTP, served on loopback addresses only.",
            },
            {
                "url": "https://{host}:{port}",
                "description": "A remote host (`--allow-remote --tls-cert FILE --tls-key FILE`): \
                                HTTPS only; clients verify the host's certificate against a CA \
                                they pin.",
                "variables": {
                    "host": {"default": "localhost"},
                    "port": {"default": "7077"},
                },
            },
        ],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "The token in the host's token file (mode 0600).",
            }},
        },
    })
}

/// The schema of `T` (a reference into the components), as JSON.
fn schema_value<T: JsonSchema>(generator: &mut SchemaGenerator) -> Value {
    generator.subschema_for::<T>().to_value()
}

/// One query parameter per property of an (inline) object schema.
fn query_parameters(schema: Value) -> Vec<Value> {
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(properties) = schema["properties"].as_object() else {
        return Vec::new();
    };
    properties
        .iter()
        .map(|(name, property)| {
            let mut property = property.clone();
            let description = property
                .as_object_mut()
                .and_then(|p| p.remove("description"))
                .unwrap_or(Value::Null);
            json!({
                "name": name,
                "in": "query",
                "required": required.contains(&name.as_str()),
                "description": description,
                "schema": property,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_in_the_document_with_its_parameters() {
        let document = openapi();
        let paths = document["paths"].as_object().unwrap();
        let mut documented = 0;
        for route in ROUTES {
            let operation = &paths[route.path][route.verb.openapi()];
            assert!(
                operation.is_object(),
                "{} {} is routed but not documented",
                route.verb.openapi(),
                route.path
            );
            documented += 1;
            // Every `{name}` of the template is a documented path parameter, in order.
            let in_template: Vec<&str> = route
                .path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            let in_document: Vec<&str> = operation["parameters"]
                .as_array()
                .map(|p| {
                    p.iter()
                        .filter(|p| p["in"] == "path")
                        .filter_map(|p| p["name"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(in_template, in_document, "{}", route.path);
            assert!(operation["responses"]["200"].is_object());
            assert!(operation["responses"]["401"].is_object());
        }
        let operations: usize = paths
            .values()
            .map(|item| item.as_object().unwrap().len())
            .sum();
        assert_eq!(
            operations, documented,
            "the document lists a route the router lacks"
        );
    }

    #[test]
    fn every_reference_resolves() {
        let document = openapi();
        let mut references = Vec::new();
        collect_refs(&document, &mut references);
        assert!(!references.is_empty());
        for reference in references {
            let name = reference
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unexpected reference `{reference}`"));
            assert!(
                document["components"]["schemas"][name].is_object(),
                "`{reference}` does not resolve"
            );
        }
    }

    fn collect_refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    out.push(r.clone());
                }
                map.values().for_each(|v| collect_refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn the_status_query_is_a_parameter() {
        let document = openapi();
        let parameters = &document["paths"]["/v1/status"]["get"]["parameters"];
        assert_eq!(parameters[0]["name"], "with_state");
        assert_eq!(parameters[0]["in"], "query");
        assert_eq!(parameters[0]["required"], false);
    }
}
