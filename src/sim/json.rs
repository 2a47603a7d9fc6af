//! Mesos JSON for any generated message, by protobuf reflection, the way the
//! real master's stout `JSON::Protobuf` and `protobuf::parse` do it:
//! snake_case proto field names, enums as names, bytes as padded base64,
//! numbers as JSON numbers, empty repeated fields left out, and unset optional
//! fields with an explicit `[default = ...]` written out (unless deprecated).
//! On input unknown keys are ignored, numbers may be strings, an unknown name
//! on an optional enum leaves it unset, and missing required fields are an
//! error.

use protobuf::reflect::{
    FieldDescriptor, MessageDescriptor, ReflectValueBox, ReflectValueRef, RuntimeFieldType,
    RuntimeType,
};
use protobuf::MessageDyn;
use serde_json::{Map, Number, Value};

/// Nesting deeper than this is refused, so hostile JSON cannot exhaust the stack.
pub const MAX_DEPTH: usize = 32;

pub fn to_json(message: &dyn MessageDyn) -> Value {
    let descriptor = message.descriptor_dyn();
    let mut object = Map::new();
    for field in descriptor.fields() {
        match field.runtime_field_type() {
            RuntimeFieldType::Singular(_) => {
                if let Some(value) = field.get_singular(message) {
                    object.insert(field.name().to_string(), value_to_json(&value));
                } else if field.proto().has_default_value() && !is_deprecated(&field) {
                    let value = field.get_singular_field_or_default(message);
                    object.insert(field.name().to_string(), value_to_json(&value));
                }
            }
            RuntimeFieldType::Repeated(_) => {
                let repeated = field.get_repeated(message);
                if !repeated.is_empty() {
                    let items = (0..repeated.len()).map(|i| value_to_json(&repeated.get(i)));
                    object.insert(field.name().to_string(), Value::Array(items.collect()));
                }
            }
            // No map fields in our proto subset.
            RuntimeFieldType::Map(..) => {}
        }
    }
    Value::Object(object)
}

fn is_deprecated(field: &FieldDescriptor) -> bool {
    field.proto().options.deprecated()
}

fn value_to_json(value: &ReflectValueRef) -> Value {
    match value {
        ReflectValueRef::U32(n) => Value::from(*n),
        ReflectValueRef::U64(n) => Value::from(*n),
        ReflectValueRef::I32(n) => Value::from(*n),
        ReflectValueRef::I64(n) => Value::from(*n),
        ReflectValueRef::F32(n) => float(f64::from(*n)),
        ReflectValueRef::F64(n) => float(*n),
        ReflectValueRef::Bool(b) => Value::Bool(*b),
        ReflectValueRef::String(s) => Value::String(s.to_string()),
        ReflectValueRef::Bytes(b) => Value::String(crate::base64::encode(b)),
        ReflectValueRef::Enum(descriptor, number) => match descriptor.value_by_number(*number) {
            Some(value) => Value::String(value.name().to_string()),
            None => Value::from(*number),
        },
        ReflectValueRef::Message(message) => to_json(&**message),
    }
}

/// Doubles keep a fractional part on the wire ("15.0"), as the master's do.
fn float(n: f64) -> Value {
    if n.is_finite() {
        Number::from_f64(n).map_or(Value::Null, Value::Number)
    } else if n.is_nan() {
        Value::String("NaN".to_string())
    } else if n > 0.0 {
        Value::String("Infinity".to_string())
    } else {
        Value::String("-Infinity".to_string())
    }
}

/// Parses Mesos JSON into a new message of `descriptor`'s type.
pub fn from_json(
    descriptor: &MessageDescriptor,
    value: &Value,
) -> Result<Box<dyn MessageDyn>, String> {
    let mut message = descriptor.new_instance();
    fill(&mut *message, value, 0)?;
    let mut missing = Vec::new();
    missing_required(&*message, "", &mut missing);
    if !missing.is_empty() {
        return Err(format!("Missing required fields: {}", missing.join(", ")));
    }
    Ok(message)
}

fn fill(message: &mut dyn MessageDyn, value: &Value, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("nesting deeper than {MAX_DEPTH}"));
    }
    let Value::Object(object) = value else {
        return Err(format!(
            "Expecting a JSON object for '{}'",
            message.descriptor_dyn().name()
        ));
    };
    let descriptor = message.descriptor_dyn();
    for (key, item) in object {
        let Some(field) = descriptor.field_by_name(key) else {
            continue;
        };
        if item.is_null() {
            continue;
        }
        match field.runtime_field_type() {
            RuntimeFieldType::Singular(kind) => {
                if let Some(parsed) = parse_value(&kind, item, &field, depth)? {
                    field.set_singular_field(message, parsed);
                }
            }
            RuntimeFieldType::Repeated(kind) => {
                let Value::Array(items) = item else {
                    return Err(format!("Expecting a JSON array for field '{key}'"));
                };
                for element in items {
                    if let Some(parsed) = parse_value(&kind, element, &field, depth)? {
                        field.mut_repeated(message).push(parsed);
                    }
                }
            }
            RuntimeFieldType::Map(..) => {}
        }
    }
    Ok(())
}

/// One JSON value as a field value; `None` for an unknown name on an optional enum.
fn parse_value(
    kind: &RuntimeType,
    value: &Value,
    field: &FieldDescriptor,
    depth: usize,
) -> Result<Option<ReflectValueBox>, String> {
    let name = field.name();
    let wrong = |what: &str| {
        format!(
            "Not expecting a JSON {} for field '{name}'",
            json_kind(value)
        ) + what
    };
    let parsed = match kind {
        RuntimeType::I32 => ReflectValueBox::I32(integer(value, name)?),
        RuntimeType::I64 => ReflectValueBox::I64(integer(value, name)?),
        RuntimeType::U32 => ReflectValueBox::U32(integer(value, name)?),
        RuntimeType::U64 => ReflectValueBox::U64(integer(value, name)?),
        RuntimeType::F32 => ReflectValueBox::F32(double(value, name)? as f32),
        RuntimeType::F64 => ReflectValueBox::F64(double(value, name)?),
        RuntimeType::Bool => match value {
            Value::Bool(b) => ReflectValueBox::Bool(*b),
            _ => return Err(wrong("")),
        },
        RuntimeType::String => match value {
            Value::String(s) => ReflectValueBox::String(s.clone()),
            _ => return Err(wrong("")),
        },
        RuntimeType::VecU8 => match value {
            Value::String(s) => ReflectValueBox::Bytes(
                crate::base64::decode(s).map_err(|e| format!("field '{name}': {e}"))?,
            ),
            _ => return Err(wrong("")),
        },
        RuntimeType::Enum(descriptor) => {
            let found = match value {
                Value::String(s) => descriptor.value_by_name(s),
                _ => return Err(wrong("")),
            };
            match found {
                Some(found) => ReflectValueBox::Enum(descriptor.clone(), found.value()),
                None if field.is_required() => {
                    return Err(format!("Invalid value for enum field '{name}': {value}"))
                }
                None => return Ok(None),
            }
        }
        RuntimeType::Message(_) if !value.is_object() => return Err(wrong("")),
        RuntimeType::Message(descriptor) => {
            let mut nested = descriptor.new_instance();
            fill(&mut *nested, value, depth + 1)?;
            ReflectValueBox::Message(nested)
        }
    };
    Ok(Some(parsed))
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn integer<T: TryFrom<i128>>(value: &Value, name: &str) -> Result<T, String> {
    let n: Option<i128> = match value {
        // Whole-valued floats (31000.0) are integers to the master's parser too.
        Value::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 1e38)
                    .map(|f| f as i128)
            }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    n.and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| format!("Invalid integer for field '{name}': {value}"))
}

fn double(value: &Value, name: &str) -> Result<f64, String> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            other => other.trim().parse().ok(),
        },
        _ => None,
    }
    .ok_or_else(|| format!("Invalid number for field '{name}': {value}"))
}

/// Paths of required fields left unset, anywhere in the message.
fn missing_required(message: &dyn MessageDyn, prefix: &str, missing: &mut Vec<String>) {
    for field in message.descriptor_dyn().fields() {
        let path = format!("{prefix}{}", field.name());
        match field.runtime_field_type() {
            RuntimeFieldType::Singular(kind) => match field.get_singular(message) {
                None if field.is_required() => missing.push(path),
                Some(ReflectValueRef::Message(nested)) => {
                    missing_required(&*nested, &format!("{path}."), missing)
                }
                _ => {
                    let _ = kind;
                }
            },
            RuntimeFieldType::Repeated(RuntimeType::Message(_)) => {
                let repeated = field.get_repeated(message);
                for i in 0..repeated.len() {
                    if let ReflectValueRef::Message(nested) = repeated.get(i) {
                        missing_required(&*nested, &format!("{path}[{i}]."), missing);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesos::proto::mesos as v1;
    use crate::mesos::proto::scheduler::{call, event, Call, Event};
    use protobuf::{Message, MessageFull};
    use serde_json::json;

    fn check_round_trip(value: Value) {
        let message = from_json(&Call::descriptor(), &value).expect("parses");
        assert_eq!(to_json(&*message), value);
    }

    #[test]
    fn calls_as_pymesos_sends_them_parse() {
        let accept = json!({"framework_id":{"value":"m-0000"},"type":"ACCEPT","accept":{
            "offer_ids":[{"value":"m-O1"}],"filters":{"refuse_seconds":"5"},
            "operations":[{"type":"LAUNCH","launch":{"task_infos":[{"name":"t","task_id":{"value":"t1"},
              "agent_id":{"value":"m-S0"},"resources":[{"name":"ports","type":"RANGES","ranges":{"range":[{"begin":"31000","end":31000}]}}],
              "command":{"shell":false,"arguments":["a"]},
              "container":{"type":"DOCKER","docker":{"image":"busybox","network":"BRIDGE"}}}]}}]},
            "someCamelKey": 1});
        let message = from_json(&Call::descriptor(), &accept).expect("parses");
        let call: &Call = message.downcast_ref().expect("a Call");
        let task = &call.accept.operations[0].launch.task_infos[0];
        assert_eq!(call.accept.filters.refuse_seconds(), 5.0);
        assert_eq!(task.resources[0].ranges.range[0].begin(), 31000);
        assert_eq!(
            task.container.docker.network(),
            v1::container_info::docker_info::Network::BRIDGE
        );
    }

    #[test]
    fn bad_json_calls_are_refused_with_the_reason() {
        let check = |value: Value, expected: &str| {
            let error = from_json(&Call::descriptor(), &value)
                .err()
                .unwrap_or_default();
            assert!(error.contains(expected), "{value}: {error}");
        };
        check(
            json!({"framework_id":"m-0000"}),
            "Not expecting a JSON string for field 'framework_id'",
        );
        check(
            json!({"type":"ACKNOWLEDGE","acknowledge":{"uuid":"!!"}}),
            "base64",
        );
        check(
            json!({"type":"KILL","kill":{}}),
            "Missing required fields: kill.task_id",
        );
        check(json!([1]), "Expecting a JSON object");
        check(
            json!({"accept":{"offer_ids":{"value":"x"}}}),
            "Expecting a JSON array",
        );
        let mut deep = json!({});
        for _ in 0..100 {
            deep = json!({"subscribe": {"framework_info": {"labels": deep}}});
        }
        check(deep, "");
    }

    #[test]
    fn unknown_optional_enum_names_are_left_unset() {
        let message =
            from_json(&Call::descriptor(), &json!({"type":"NO_SUCH_CALL"})).expect("parses");
        let call: &Call = message.downcast_ref().expect("a Call");
        assert!(call.type_.is_none());
    }

    #[test]
    fn round_trips_keep_every_field() {
        check_round_trip(json!({"framework_id":{"value":"f"},"type":"ACKNOWLEDGE",
            "acknowledge":{"agent_id":{"value":"a"},"task_id":{"value":"t"},"uuid":"AAECAwQFBgcICQoLDA0ODw=="}}));
        check_round_trip(
            json!({"type":"RECONCILE","framework_id":{"value":"f"},"reconcile":{"tasks":[{"task_id":{"value":"t"}}]}}),
        );
    }

    #[test]
    fn events_are_written_like_the_master_writes_them() {
        let mut event = Event::new();
        event.set_type(event::Type::SUBSCRIBED);
        event
            .subscribed
            .mut_or_insert_default()
            .framework_id
            .mut_or_insert_default()
            .value = Some("m-0000".into());
        event
            .subscribed
            .mut_or_insert_default()
            .heartbeat_interval_seconds = Some(15.0);
        assert_eq!(
            to_json(&event),
            json!({"type":"SUBSCRIBED","subscribed":{"framework_id":{"value":"m-0000"},"heartbeat_interval_seconds":15.0}})
        );
        assert!(to_json(&event)
            .to_string()
            .contains(r#""heartbeat_interval_seconds":15.0"#));
        let mut heartbeat = Event::new();
        heartbeat.set_type(event::Type::HEARTBEAT);
        assert_eq!(to_json(&heartbeat).to_string(), r#"{"type":"HEARTBEAT"}"#);
        // Explicit defaults are written even when unset; deprecated ones are not.
        let mut filters_call = Call::new();
        filters_call
            .decline
            .mut_or_insert_default()
            .filters
            .mut_or_insert_default();
        let _ = call::Decline::new();
        assert_eq!(
            to_json(&filters_call)["decline"]["filters"],
            json!({"refuse_seconds": 5.0})
        );
        let resource = v1::Resource::new();
        assert!(to_json(&resource).get("role").is_none());
        assert!(event.write_to_bytes().is_ok());
    }
}
