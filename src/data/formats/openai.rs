//! OpenAI chat messages (`{"messages": [{"role", "content"}]}`): the same reader and writer
//! as ShareGPT with other tags, plus content given as a list of parts
//! (`[{"type": "text", "text" | "value": ...}]`, as LLaMA-Factory's v1 files have).

use serde_json::{Map, Value};

/// The text of a content value: a string, or the text parts of a list joined together.
/// Returns `None` when the value is neither.
pub(crate) fn content_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let mut out = String::new();
            for p in parts {
                let o = p.as_object()?;
                let ty = o.get("type").and_then(Value::as_str).unwrap_or("text");
                if ty == "text" {
                    let t = o
                        .get("text")
                        .or_else(|| o.get("value"))
                        .and_then(Value::as_str)?;
                    out.push_str(t);
                }
            }
            Some(out)
        }
        _ => None,
    }
}

/// Writes content back: the original value when its text is unchanged, otherwise the same
/// shape (one text part, under the key the original used) holding the new text.
pub(crate) fn content_value(text: &str, original: Option<&Value>) -> Value {
    match original {
        Some(orig) if content_text(orig).as_deref() == Some(text) => orig.clone(),
        Some(Value::Array(parts)) => {
            let key = parts
                .iter()
                .filter_map(Value::as_object)
                .find_map(|o| {
                    if o.contains_key("value") {
                        Some("value")
                    } else if o.contains_key("text") {
                        Some("text")
                    } else {
                        None
                    }
                })
                .unwrap_or("text");
            let mut part = Map::new();
            part.insert("type".into(), Value::String("text".into()));
            part.insert(key.into(), Value::String(text.into()));
            Value::Array(vec![Value::Object(part)])
        }
        _ => Value::String(text.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parts_round_trip() {
        let v = json!([{"type": "text", "value": "a"}, {"type": "image", "url": "x"}, {"type": "text", "value": "b"}]);
        assert_eq!(content_text(&v).unwrap(), "ab");
        assert_eq!(content_value("ab", Some(&v)), v);
        assert_eq!(
            content_value("c", Some(&v)),
            json!([{"type": "text", "value": "c"}])
        );
        assert_eq!(content_value("c", None), json!("c"));
        assert!(content_text(&json!(3)).is_none());
    }
}
