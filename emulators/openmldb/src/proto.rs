//! The server side of OpenMLDB's messages: the services' protos (`proto/*.proto`, compiled by
//! protox in `build.rs`), requests decoded from JSON the way brpc's `json2pb` does for an
//! HTTP call (`src/json2pb/json_to_pb.cpp` of apache/brpc@d2b73ec, the commit OpenMLDB pins
//! at v0.8.5 and v0.9.x), and answers written the way its `pb2json` does
//! (`src/json2pb/pb_to_json.cpp`: enums by name, 64-bit numbers as numbers, unset fields
//! left out).
//!
//! `json2pb` walks the message's declared fields and looks each up in the JSON object, so a
//! key the message does not declare is ignored; a required field that is missing (or null)
//! fails the request; a value of the wrong JSON type fails it for a required or repeated
//! field and is dropped (the field stays unset) for an optional one. An int32 takes a JSON
//! integer that fits, a uint32 a non-negative one, an int64 or uint64 also a string of
//! digits, an enum its name or number, a bool only `true` or `false`.

use std::sync::OnceLock;

use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor,
    MethodDescriptor, ReflectMessage, Value,
};
use serde_json::{Map, Value as Json};

static POOL: OnceLock<DescriptorPool> = OnceLock::new();

/// The descriptors of the services the emulator serves.
pub(crate) fn pool() -> &'static DescriptorPool {
    POOL.get_or_init(|| {
        DescriptorPool::decode(&include_bytes!(concat!(env!("OUT_DIR"), "/openmldb.bin"))[..])
            .expect("the emulator's protos compiled at build time")
    })
}

/// The method `method` of service `service`, named by its short (`NameServer`) or full
/// (`openmldb.nameserver.NameServer`) name, as brpc resolves an HTTP path.
pub(crate) fn method(service: &str, method: &str) -> Option<MethodDescriptor> {
    pool()
        .services()
        .find(|s| s.full_name() == service || s.name() == service)?
        .methods()
        .find(|m| m.name() == method)
}

/// A message from a JSON body, as `json2pb` reads it.
///
/// # Errors
/// What `json2pb` reports: a missing required field, a value of the wrong type for a
/// required or repeated field, a repeated field that is not an array, an object expected.
pub(crate) fn from_json(desc: &MessageDescriptor, v: &Json) -> Result<DynamicMessage, String> {
    let mut msg = DynamicMessage::new(desc.clone());
    let Json::Object(obj) = v else {
        return Err(format!(
            "the input for {} is not an object",
            desc.full_name()
        ));
    };
    for f in desc.fields() {
        let value = obj.get(f.name()).filter(|v| !v.is_null());
        let Some(value) = value else {
            if f.cardinality() == prost_reflect::Cardinality::Required {
                return Err(format!("Missing required field: {}", f.full_name()));
            }
            continue;
        };
        if f.is_list() {
            let Json::Array(items) = value else {
                return Err(format!(
                    "Invalid value for repeated field: {}",
                    f.full_name()
                ));
            };
            let mut out = Vec::new();
            for item in items {
                match scalar(&f, item)? {
                    Some(v) => out.push(v),
                    None => {
                        return Err(format!(
                            "Invalid value `{item}' for field `{}'",
                            f.full_name()
                        ));
                    }
                }
            }
            msg.set_field(&f, Value::List(out));
        } else if let Some(v) = scalar(&f, value)? {
            msg.set_field(&f, v);
        } else if f.cardinality() == prost_reflect::Cardinality::Required {
            return Err(format!(
                "Invalid value `{value}' for field `{}'",
                f.full_name()
            ));
        }
        // An optional field of the wrong type stays unset, as json2pb leaves it.
    }
    Ok(msg)
}

/// One value of field `f`: `Ok(None)` for a JSON value of the wrong type.
fn scalar(f: &FieldDescriptor, v: &Json) -> Result<Option<Value>, String> {
    Ok(match f.kind() {
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => v
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .map(Value::I32),
        Kind::Uint32 | Kind::Fixed32 => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Value::U32),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => v
            .as_i64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .map(Value::I64),
        Kind::Uint64 | Kind::Fixed64 => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .map(Value::U64),
        Kind::Bool => v.as_bool().map(Value::Bool),
        Kind::String => v.as_str().map(|s| Value::String(s.to_string())),
        Kind::Bytes => v
            .as_str()
            .map(|s| Value::Bytes(s.as_bytes().to_vec().into())),
        Kind::Double | Kind::Float => v.as_f64().map(|n| {
            if f.kind() == Kind::Float {
                Value::F32(n as f32)
            } else {
                Value::F64(n)
            }
        }),
        Kind::Enum(e) => match v {
            Json::String(name) => e
                .get_value_by_name(name)
                .map(|x| Value::EnumNumber(x.number())),
            Json::Number(n) => n
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .and_then(|n| e.get_value(n))
                .map(|x| Value::EnumNumber(x.number())),
            _ => None,
        },
        Kind::Message(m) => match v {
            Json::Object(_) => Some(Value::Message(from_json(&m, v)?)),
            _ => None,
        },
    })
}

/// A message as `pb2json` writes it: the fields that are set, enums by name.
pub(crate) fn to_json(msg: &DynamicMessage) -> Json {
    let mut out = Map::new();
    for (f, v) in msg.fields() {
        out.insert(f.name().to_string(), value_json(&f, v));
    }
    Json::Object(out)
}

fn value_json(f: &FieldDescriptor, v: &Value) -> Json {
    match v {
        Value::Bool(b) => Json::Bool(*b),
        Value::I32(n) => (*n).into(),
        Value::I64(n) => (*n).into(),
        Value::U32(n) => (*n).into(),
        Value::U64(n) => (*n).into(),
        Value::F32(n) => f64::from(*n).into(),
        Value::F64(n) => (*n).into(),
        Value::String(s) => Json::String(s.clone()),
        Value::Bytes(b) => Json::String(String::from_utf8_lossy(b).into_owned()),
        Value::EnumNumber(n) => match f.kind() {
            Kind::Enum(e) => e
                .get_value(*n)
                .map_or_else(|| (*n).into(), |x| Json::String(x.name().to_string())),
            _ => (*n).into(),
        },
        Value::Message(m) => to_json(m),
        Value::List(items) => Json::Array(items.iter().map(|i| value_json(f, i)).collect()),
        Value::Map(m) => Json::Object(
            m.iter()
                .map(|(k, v)| {
                    let key = match k {
                        MapKey::String(s) => s.clone(),
                        other => format!("{other:?}"),
                    };
                    (key, value_json(f, v))
                })
                .collect(),
        ),
    }
}

/// An answer of method `m` built from `v`, checked against the method's output message (a
/// field it does not declare, or a value of the wrong type, is the emulator's own mistake).
pub(crate) fn answer(m: &MethodDescriptor, v: &Json) -> Result<DynamicMessage, String> {
    let out = m.output();
    let msg = from_json(&out, v)?;
    let Json::Object(obj) = v else {
        return Err("an answer that is not an object".into());
    };
    if let Some(k) = obj.keys().find(|k| out.get_field_by_name(k).is_none()) {
        return Err(format!("{} has no field {k}", out.full_name()));
    }
    Ok(msg)
}

/// Field `name` of `msg` when it is set.
pub(crate) fn get<'a>(msg: &'a DynamicMessage, name: &str) -> Option<std::borrow::Cow<'a, Value>> {
    msg.has_field_by_name(name)
        .then(|| msg.get_field_by_name(name))
        .flatten()
}

/// A string field, when set.
pub(crate) fn string(msg: &DynamicMessage, name: &str) -> Option<String> {
    get(msg, name).and_then(|v| v.as_str().map(str::to_string))
}

/// A string field with its declared default when not set (`db` defaults to "").
pub(crate) fn string_or_default(msg: &DynamicMessage, name: &str) -> String {
    msg.get_field_by_name(name)
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// An unsigned 32-bit field, when set.
pub(crate) fn u32_of(msg: &DynamicMessage, name: &str) -> Option<u32> {
    get(msg, name).and_then(|v| v.as_u32().or_else(|| v.as_i32().map(|n| n as u32)))
}

/// An unsigned 64-bit field, when set.
pub(crate) fn u64_of(msg: &DynamicMessage, name: &str) -> Option<u64> {
    get(msg, name).and_then(|v| v.as_u64())
}

/// A bool field with its declared default when not set.
pub(crate) fn bool_or_default(msg: &DynamicMessage, name: &str) -> bool {
    msg.get_field_by_name(name)
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
}

/// An enum field's name, when set.
pub(crate) fn enum_name(msg: &DynamicMessage, name: &str) -> Option<String> {
    let f = msg.descriptor().get_field_by_name(name)?;
    let n = get(msg, name)?.as_enum_number()?;
    match f.kind() {
        Kind::Enum(e) => e.get_value(n).map(|v| v.name().to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{from_json, method, to_json};

    #[test]
    fn json2pb_refuses_a_missing_required_field_and_ignores_unknown_keys() {
        let m = method("NameServer", "RecoverTable").unwrap();
        let err = from_json(&m.input(), &json!({"name": "t1", "endpoint": "a:1"})).unwrap_err();
        assert!(
            err.contains("Missing required field: openmldb.nameserver.RecoverTableRequest.pid")
        );
        let ok = from_json(
            &m.input(),
            &json!({"name": "t1", "pid": 3, "endpoint": "a:1", "whatever": [1]}),
        )
        .unwrap();
        assert_eq!(
            to_json(&ok),
            json!({"name": "t1", "pid": 3, "endpoint": "a:1"})
        );
    }

    #[test]
    fn json2pb_drops_an_optional_field_of_the_wrong_type_and_reads_enums_by_name() {
        let m = method("openmldb.api.TabletServer", "ChangeRole").unwrap();
        let msg = from_json(
            &m.input(),
            &json!({"tid": -1, "pid": 2, "mode": "kTableFollower", "term": "42"}),
        )
        .unwrap();
        assert_eq!(
            to_json(&msg),
            json!({"pid": 2, "mode": "kTableFollower", "term": 42})
        );
    }

    #[test]
    fn unknown_services_and_methods_are_none() {
        assert!(method("NameServer", "DropEverything").is_none());
        assert!(method("Nope", "ShowTable").is_none());
    }
}
