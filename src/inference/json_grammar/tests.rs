//! The converter on schemas a client may send: what it accepts, refuses and bounds.

use super::*;
use serde_json::json;

#[test]
fn an_object_schema_names_its_properties_in_order() {
    let grammar = grammar_for_schema(&json!({
        "type": "object",
        "properties": {
            "name": { "type": "string", "maxLength": 12 },
            "age": { "type": "integer" },
            "colour": { "enum": ["red", "green"] }
        },
        "required": ["name", "age"],
        "additionalProperties": false
    }))
    .unwrap();
    assert!(grammar.starts_with("root ::= root-object\n"), "{grammar}");
    assert!(grammar.contains(r#"char{0,12}"#), "{grammar}");
    assert!(
        grammar.contains(r#"("\"red\"" | "\"green\"") space"#),
        "{grammar}"
    );
    assert!(
        grammar.contains(r#"root-name-kv "," space root-age-kv ("," space root-colour-kv)?"#),
        "{grammar}"
    );
}

#[test]
fn constraints_the_grammar_cannot_enforce_are_refused_with_their_path() {
    let error = grammar_for_schema(&json!({
        "type": "object",
        "properties": { "email": { "type": "string", "pattern": "^.+@.+$" } }
    }))
    .unwrap_err();
    assert_eq!(
        error,
        SchemaError::Unsupported {
            path: "#/properties/email".into(),
            keyword: "pattern".into()
        }
    );
    assert!(matches!(
        grammar_for_schema(&json!({ "type": "integer", "minimum": 0 })),
        Err(SchemaError::Unsupported { keyword, .. }) if keyword == "minimum"
    ));
    assert!(matches!(
        grammar_for_schema(&json!({ "type": "widget" })),
        Err(SchemaError::Invalid { .. })
    ));
    assert!(matches!(
        grammar_for_schema(&json!({ "$ref": "#/$defs/missing" })),
        Err(SchemaError::Invalid { .. })
    ));
}

#[test]
fn recursive_references_terminate_and_depth_is_bounded() {
    let grammar = grammar_for_schema(&json!({
        "$defs": { "node": { "type": "object", "properties": {
            "value": { "type": "number" },
            "children": { "type": "array", "items": { "$ref": "#/$defs/node" } }
        }, "required": ["value"] } },
        "$ref": "#/$defs/node"
    }))
    .unwrap();
    assert!(grammar.starts_with("root ::= node\n"), "{grammar}");
    let mut deep = json!({ "type": "string" });
    for _ in 0..40 {
        deep = json!({ "type": "array", "items": deep });
    }
    assert_eq!(grammar_for_schema(&deep), Err(SchemaError::TooDeep));
}

#[test]
fn optional_only_objects_allow_any_subset_in_order() {
    let grammar = grammar_for_schema(&json!({
        "type": "object",
        "properties": { "a": { "type": "boolean" }, "b": { "type": "null" } }
    }))
    .unwrap();
    assert!(
        grammar.contains(r#"(root-a-kv ("," space root-b-kv)? | root-b-kv)?"#),
        "{grammar}"
    );
}

#[test]
fn a_schema_needing_too_many_rules_is_refused() {
    let properties: serde_json::Map<String, Value> = (0..1100)
        .map(|i| (format!("f{i}"), json!({ "type": "string", "maxLength": 3 })))
        .collect();
    let schema = json!({ "type": "object", "properties": properties });
    assert_eq!(grammar_for_schema(&schema), Err(SchemaError::TooLarge));
}

#[test]
fn arrays_repeat_within_their_bounds() {
    let grammar = grammar_for_schema(&json!({
        "type": "array", "items": { "type": "integer" }, "minItems": 2, "maxItems": 3
    }))
    .unwrap();
    assert!(
        grammar.contains(r#"integer ("," space integer){1,2}"#),
        "{grammar}"
    );
    assert!(any_object().starts_with("root ::= object\n"));
}
