//! JSON Schema → GBNF grammar, for structured output (`response_format`). The llama.cpp engine
//! samples under the grammar, so every complete reply parses as JSON and matches the schema.
//!
//! Only keywords the grammar can enforce are accepted; any other constraint is refused with its
//! path, because quietly ignoring one would return text that breaks the schema while claiming
//! to follow it. Annotations (`title`, `description`, …) are ignored, as they constrain nothing.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use self::gbnf::{literal, repeat, rule_name, PRIMITIVES};

mod gbnf;

/// Nesting levels of a schema we follow; deeper ones are refused.
pub const MAX_SCHEMA_DEPTH: usize = 32;
/// Most rules one grammar may hold (a guard against schemas that explode in size).
pub const MAX_GRAMMAR_RULES: usize = 2000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SchemaError {
    #[error("the schema at `{path}` uses `{keyword}`, which structured output cannot enforce")]
    Unsupported { path: String, keyword: String },
    #[error("the schema at `{path}` is not valid: {detail}")]
    Invalid { path: String, detail: String },
    #[error("the schema nests deeper than {MAX_SCHEMA_DEPTH} levels")]
    TooDeep,
    #[error("the schema needs more than {MAX_GRAMMAR_RULES} grammar rules")]
    TooLarge,
}

/// Keywords that describe but do not constrain.
const ANNOTATIONS: [&str; 11] = [
    "title",
    "description",
    "examples",
    "default",
    "$schema",
    "$id",
    "$comment",
    "deprecated",
    "readOnly",
    "writeOnly",
    "strict",
];

/// The grammar for any JSON object (`response_format: {"type": "json_object"}`).
pub fn any_object() -> String {
    let mut builder = Builder::new(&Value::Null);
    builder.use_any_value();
    builder.rules.insert("root".into(), "object".into());
    builder.render()
}

/// The grammar whose sentences are the JSON texts valid under `schema`.
///
/// # Errors
/// The schema uses a keyword the grammar cannot enforce, is malformed, or is too large.
pub fn grammar_for_schema(schema: &Value) -> Result<String, SchemaError> {
    let mut builder = Builder::new(schema);
    let root = builder.visit(schema, "root", "#", 0)?;
    builder.rules.insert("root".into(), root);
    Ok(builder.render())
}

struct Builder<'a> {
    document: &'a Value,
    rules: BTreeMap<String, String>,
    /// `$ref` targets already given a rule (so recursive schemas terminate).
    refs: HashMap<String, String>,
}

fn unsupported(path: &str, keyword: &str) -> SchemaError {
    SchemaError::Unsupported {
        path: path.into(),
        keyword: keyword.into(),
    }
}

fn invalid(path: &str, detail: impl Into<String>) -> SchemaError {
    SchemaError::Invalid {
        path: path.into(),
        detail: detail.into(),
    }
}

fn count(
    schema: &serde_json::Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<u64>, SchemaError> {
    match schema.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| invalid(path, format!("`{key}` must be a non-negative integer"))),
    }
}

impl<'a> Builder<'a> {
    fn new(document: &'a Value) -> Self {
        Self {
            document,
            rules: BTreeMap::new(),
            refs: HashMap::new(),
        }
    }

    fn render(&self) -> String {
        let mut out = String::new();
        // Root first, for people who read a grammar in a log.
        if let Some(root) = self.rules.get("root") {
            out.push_str(&format!("root ::= {root}\n"));
        }
        for (name, body) in self.rules.iter().filter(|(n, _)| n.as_str() != "root") {
            out.push_str(&format!("{name} ::= {body}\n"));
        }
        out
    }

    fn add_primitive(&mut self, name: &str) {
        if self.rules.contains_key(name) {
            return;
        }
        let Some((_, body)) = PRIMITIVES.iter().find(|(n, _)| *n == name) else {
            return;
        };
        self.rules.insert(name.into(), (*body).into());
        let needs: &[&str] = match name {
            "string" => &["char", "space"],
            "integer" => &["integral-part", "space"],
            "number" => &["integral-part", "space"],
            "boolean" | "null" => &["space"],
            _ => &[],
        };
        for need in needs {
            self.add_primitive(need);
        }
    }

    /// Rules for any JSON value: objects and arrays of anything.
    fn use_any_value(&mut self) {
        for name in ["string", "number", "boolean", "null", "value"] {
            self.add_primitive(name);
        }
        self.rules.insert(
            "object".into(),
            format!(
                r#""{{" space {} "}}" space"#,
                repeat(r#"string ":" space value"#, r#""," space"#, 0, None)
            ),
        );
        self.rules.insert(
            "array".into(),
            format!(
                r#""[" space {} "]" space"#,
                repeat("value", r#""," space"#, 0, None)
            ),
        );
    }

    /// A fresh rule name derived from `hint`, never one the fixed rules use.
    fn fresh(&self, hint: &str) -> String {
        let base = rule_name(hint);
        let taken = |name: &str| {
            self.rules.contains_key(name)
                || PRIMITIVES.iter().any(|(n, _)| *n == name)
                || ["root", "object", "array"].contains(&name)
        };
        if !taken(&base) {
            return base;
        }
        (2..)
            .map(|i| format!("{base}-{i}"))
            .find(|n| !taken(n))
            .unwrap_or(base)
    }

    /// Defines `body` under a new rule named after `hint`; returns the name.
    fn define(&mut self, hint: &str, body: String) -> Result<String, SchemaError> {
        if self.rules.len() >= MAX_GRAMMAR_RULES {
            return Err(SchemaError::TooLarge);
        }
        let name = self.fresh(hint);
        self.rules.insert(name.clone(), body);
        Ok(name)
    }

    /// The grammar expression for the values `schema` accepts.
    fn visit(
        &mut self,
        schema: &Value,
        hint: &str,
        path: &str,
        depth: usize,
    ) -> Result<String, SchemaError> {
        if depth > MAX_SCHEMA_DEPTH {
            return Err(SchemaError::TooDeep);
        }
        let object = match schema {
            Value::Bool(true) => {
                self.use_any_value();
                return Ok("value".into());
            }
            Value::Bool(false) => return Err(invalid(path, "`false` accepts no value")),
            Value::Object(object) => object,
            _ => return Err(invalid(path, "a schema must be an object")),
        };
        if let Some(reference) = object.get("$ref") {
            return self.visit_ref(reference, path, depth);
        }
        if let Some(value) = object.get("const") {
            return Ok(format!("{} space", self.json_literal(value, path)?));
        }
        if let Some(values) = object.get("enum") {
            let Some(values) = values.as_array().filter(|v| !v.is_empty()) else {
                return Err(invalid(path, "`enum` must be a non-empty list"));
            };
            let options = values
                .iter()
                .map(|v| self.json_literal(v, path))
                .collect::<Result<Vec<_>, _>>()?;
            self.add_primitive("space");
            return Ok(format!("({}) space", options.join(" | ")));
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(options) = object.get(key) {
                return self.visit_alternatives(options, key, hint, path, depth);
            }
        }
        if let Some(all) = object.get("allOf") {
            // One entry is common in generated schemas (a `$ref` with a description).
            match all.as_array().map(Vec::as_slice) {
                Some([only]) => {
                    return self.visit(only, hint, &format!("{path}/allOf/0"), depth + 1)
                }
                _ => return Err(unsupported(path, "allOf")),
            }
        }
        match object.get("type") {
            None if object.contains_key("properties") => {
                self.visit_object(object, hint, path, depth)
            }
            None if object.contains_key("items") || object.contains_key("prefixItems") => {
                self.visit_array(object, hint, path, depth)
            }
            None => {
                self.check_keywords(object, path, &[])?;
                self.use_any_value();
                Ok("value".into())
            }
            Some(Value::String(kind)) => self.visit_type(kind, object, hint, path, depth),
            Some(Value::Array(kinds)) => {
                let mut options = Vec::new();
                for kind in kinds {
                    let Some(kind) = kind.as_str() else {
                        return Err(invalid(path, "`type` lists must hold type names"));
                    };
                    options.push(self.visit_type(kind, object, hint, path, depth)?);
                }
                if options.is_empty() {
                    return Err(invalid(path, "`type` must not be an empty list"));
                }
                Ok(format!("({})", options.join(" | ")))
            }
            Some(_) => Err(invalid(path, "`type` must be a name or a list of names")),
        }
    }

    fn visit_type(
        &mut self,
        kind: &str,
        object: &serde_json::Map<String, Value>,
        hint: &str,
        path: &str,
        depth: usize,
    ) -> Result<String, SchemaError> {
        match kind {
            "object" => self.visit_object(object, hint, path, depth),
            "array" => self.visit_array(object, hint, path, depth),
            "string" => self.visit_string(object, hint, path),
            "integer" | "number" | "boolean" | "null" => {
                self.check_keywords(object, path, &[])?;
                self.add_primitive(kind);
                Ok(kind.into())
            }
            other => Err(invalid(path, format!("unknown type `{other}`"))),
        }
    }

    /// Refuses constraint keywords the caller does not handle.
    fn check_keywords(
        &self,
        object: &serde_json::Map<String, Value>,
        path: &str,
        handled: &[&str],
    ) -> Result<(), SchemaError> {
        for key in object.keys() {
            let known = key == "type"
                || handled.contains(&key.as_str())
                || ANNOTATIONS.contains(&key.as_str())
                // Definitions are read through `$ref`, wherever they sit.
                || key == "$defs"
                || key == "definitions";
            if !known {
                return Err(unsupported(path, key));
            }
        }
        Ok(())
    }

    fn json_literal(&mut self, value: &Value, path: &str) -> Result<String, SchemaError> {
        let text = serde_json::to_string(value).map_err(|e| invalid(path, e.to_string()))?;
        Ok(literal(&text))
    }

    fn visit_ref(
        &mut self,
        reference: &Value,
        path: &str,
        depth: usize,
    ) -> Result<String, SchemaError> {
        let Some(reference) = reference.as_str() else {
            return Err(invalid(path, "`$ref` must be a string"));
        };
        if let Some(name) = self.refs.get(reference) {
            return Ok(name.clone());
        }
        let target = reference
            .strip_prefix('#')
            .and_then(|pointer| self.document.pointer(pointer))
            .ok_or_else(|| {
                invalid(
                    path,
                    format!("`$ref` `{reference}` does not point into this schema"),
                )
            })?;
        let hint = reference.rsplit('/').next().unwrap_or("ref");
        // Name the rule before visiting, so a recursive reference finds it.
        let name = self.define(hint, String::new())?;
        self.refs.insert(reference.into(), name.clone());
        let body = self.visit(target, hint, reference, depth + 1)?;
        self.rules.insert(name.clone(), body);
        Ok(name)
    }

    fn visit_alternatives(
        &mut self,
        options: &Value,
        key: &str,
        hint: &str,
        path: &str,
        depth: usize,
    ) -> Result<String, SchemaError> {
        let Some(options) = options.as_array().filter(|o| !o.is_empty()) else {
            return Err(invalid(path, format!("`{key}` must be a non-empty list")));
        };
        let mut parts = Vec::new();
        for (i, option) in options.iter().enumerate() {
            let part = self.visit(
                option,
                &format!("{hint}-{i}"),
                &format!("{path}/{key}/{i}"),
                depth + 1,
            )?;
            parts.push(part);
        }
        Ok(format!("({})", parts.join(" | ")))
    }

    fn visit_string(
        &mut self,
        object: &serde_json::Map<String, Value>,
        hint: &str,
        path: &str,
    ) -> Result<String, SchemaError> {
        self.check_keywords(object, path, &["minLength", "maxLength"])?;
        let min = count(object, "minLength", path)?;
        let max = count(object, "maxLength", path)?;
        self.add_primitive("string");
        if min.is_none() && max.is_none() {
            return Ok("string".into());
        }
        let min = min.unwrap_or(0);
        if max.is_some_and(|max| max < min) {
            return Err(invalid(path, "`maxLength` is below `minLength`"));
        }
        let max = max.map_or(String::new(), |m| m.to_string());
        self.define(
            &format!("{hint}-string"),
            format!(r#""\"" char{{{min},{max}}} "\"" space"#),
        )
    }

    fn visit_array(
        &mut self,
        object: &serde_json::Map<String, Value>,
        hint: &str,
        path: &str,
        depth: usize,
    ) -> Result<String, SchemaError> {
        self.check_keywords(
            object,
            path,
            &["items", "prefixItems", "minItems", "maxItems"],
        )?;
        self.add_primitive("space");
        let min = count(object, "minItems", path)?.unwrap_or(0);
        let max = count(object, "maxItems", path)?;
        if max.is_some_and(|max| max < min) {
            return Err(invalid(path, "`maxItems` is below `minItems`"));
        }
        if let Some(prefix) = object.get("prefixItems") {
            // A tuple: exactly these items (more would need `items`, which we do not mix in).
            let Some(prefix) = prefix.as_array() else {
                return Err(invalid(path, "`prefixItems` must be a list"));
            };
            if object.contains_key("items") && object.get("items") != Some(&Value::Bool(false)) {
                return Err(unsupported(path, "items beside prefixItems"));
            }
            let mut parts = Vec::new();
            for (i, item) in prefix.iter().enumerate() {
                parts.push(self.visit(
                    item,
                    &format!("{hint}-{i}"),
                    &format!("{path}/prefixItems/{i}"),
                    depth + 1,
                )?);
            }
            let body = format!(r#""[" space {} "]" space"#, parts.join(r#" "," space "#));
            return self.define(&format!("{hint}-tuple"), body);
        }
        let item = match object.get("items") {
            None => {
                self.use_any_value();
                "value".to_string()
            }
            Some(items) => self.visit(
                items,
                &format!("{hint}-item"),
                &format!("{path}/items"),
                depth + 1,
            )?,
        };
        let body = format!(
            r#""[" space {} "]" space"#,
            repeat(&item, r#""," space"#, min, max)
        );
        self.define(&format!("{hint}-array"), body)
    }

    fn visit_object(
        &mut self,
        object: &serde_json::Map<String, Value>,
        hint: &str,
        path: &str,
        depth: usize,
    ) -> Result<String, SchemaError> {
        self.check_keywords(
            object,
            path,
            &["properties", "required", "additionalProperties"],
        )?;
        self.add_primitive("space");
        let empty = serde_json::Map::new();
        let properties = match object.get("properties") {
            None => &empty,
            Some(Value::Object(p)) => p,
            Some(_) => return Err(invalid(path, "`properties` must be an object")),
        };
        let required: Vec<&str> = match object.get("required") {
            None => Vec::new(),
            Some(Value::Array(names)) => names
                .iter()
                .map(|n| {
                    n.as_str()
                        .ok_or_else(|| invalid(path, "`required` must list names"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(invalid(path, "`required` must be a list of names")),
        };
        if let Some(missing) = required.iter().find(|r| !properties.contains_key(**r)) {
            return Err(invalid(
                path,
                format!("`{missing}` is required but has no schema in `properties`"),
            ));
        }
        if properties.is_empty() {
            // A map: any keys, values as `additionalProperties` says.
            let value = match object.get("additionalProperties") {
                None | Some(Value::Bool(true)) => {
                    self.use_any_value();
                    "value".to_string()
                }
                Some(Value::Bool(false)) => {
                    return self.define(&format!("{hint}-object"), r#""{" space "}" space"#.into());
                }
                Some(schema) => self.visit(
                    schema,
                    &format!("{hint}-value"),
                    &format!("{path}/additionalProperties"),
                    depth + 1,
                )?,
            };
            self.add_primitive("string");
            let pair = format!(r#"string ":" space {value}"#);
            let body = format!(
                r#""{{" space {} "}}" space"#,
                repeat(&pair, r#""," space"#, 0, None)
            );
            return self.define(&format!("{hint}-object"), body);
        }
        // Declared properties only, in declared order: the output stays valid whether or not
        // the schema allows others.
        let mut required_pairs = Vec::new();
        let mut optional_pairs = Vec::new();
        for (key, schema) in properties {
            let value = self.visit(
                schema,
                &format!("{hint}-{key}"),
                &format!("{path}/properties/{key}"),
                depth + 1,
            )?;
            let pair = format!(
                r#"{} space ":" space {value}"#,
                self.json_literal(&Value::String(key.clone()), path)?
            );
            let pair = self.define(&format!("{hint}-{key}-kv"), pair)?;
            if required.contains(&key.as_str()) {
                required_pairs.push(pair);
            } else {
                optional_pairs.push(pair);
            }
        }
        let comma = r#""," space"#;
        let mut body = String::from(r#""{" space "#);
        body.push_str(&required_pairs.join(&format!(" {comma} ")));
        if !optional_pairs.is_empty() {
            if required_pairs.is_empty() {
                // Any subset in order: the first present one, then each later one optionally.
                let mut alternatives = Vec::new();
                for (i, first) in optional_pairs.iter().enumerate() {
                    let rest: Vec<String> = optional_pairs[i + 1..]
                        .iter()
                        .map(|p| format!("({comma} {p})?"))
                        .collect();
                    alternatives.push(format!("{first} {}", rest.join(" ")).trim_end().to_string());
                }
                body.push_str(&format!("({})?", alternatives.join(" | ")));
            } else {
                for pair in &optional_pairs {
                    body.push_str(&format!(" ({comma} {pair})?"));
                }
            }
        }
        body.push_str(r#" "}" space"#);
        self.define(&format!("{hint}-object"), body)
    }
}

#[cfg(test)]
mod tests;
