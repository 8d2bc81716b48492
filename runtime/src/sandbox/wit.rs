//! Renders component-model types as WIT-like text for audits and errors.
//! Type names are not part of a component's type information, so records,
//! variants, enums and flags are written structurally.

use wasmtime::component::Type;
use wasmtime::component::types::{ComponentFunc, ComponentItem};

/// A WIT type expression.
pub fn type_text(ty: &Type) -> String {
    match ty {
        Type::Bool => "bool".into(),
        Type::S8 => "s8".into(),
        Type::U8 => "u8".into(),
        Type::S16 => "s16".into(),
        Type::U16 => "u16".into(),
        Type::S32 => "s32".into(),
        Type::U32 => "u32".into(),
        Type::S64 => "s64".into(),
        Type::U64 => "u64".into(),
        Type::Float32 => "f32".into(),
        Type::Float64 => "f64".into(),
        Type::Char => "char".into(),
        Type::String => "string".into(),
        Type::List(list) => format!("list<{}>", type_text(&list.ty())),
        Type::FixedLengthList(list) => format!("list<{}, {}>", type_text(&list.ty()), list.len()),
        Type::Map(map) => format!(
            "map<{}, {}>",
            type_text(&map.key()),
            type_text(&map.value())
        ),
        Type::Record(record) => {
            let fields: Vec<String> = record
                .fields()
                .map(|f| format!("{}: {}", f.name, type_text(&f.ty)))
                .collect();
            format!("record {{ {} }}", fields.join(", "))
        }
        Type::Tuple(tuple) => {
            let types: Vec<String> = tuple.types().map(|t| type_text(&t)).collect();
            format!("tuple<{}>", types.join(", "))
        }
        Type::Variant(variant) => {
            let cases: Vec<String> = variant
                .cases()
                .map(|c| match &c.ty {
                    Some(ty) => format!("{}({})", c.name, type_text(ty)),
                    None => c.name.to_owned(),
                })
                .collect();
            format!("variant {{ {} }}", cases.join(", "))
        }
        Type::Enum(en) => format!("enum {{ {} }}", en.names().collect::<Vec<_>>().join(", ")),
        Type::Flags(flags) => format!(
            "flags {{ {} }}",
            flags.names().collect::<Vec<_>>().join(", ")
        ),
        Type::Option(option) => format!("option<{}>", type_text(&option.ty())),
        Type::Result(result) => match (result.ok(), result.err()) {
            (None, None) => "result".into(),
            (Some(ok), None) => format!("result<{}>", type_text(&ok)),
            (None, Some(err)) => format!("result<_, {}>", type_text(&err)),
            (Some(ok), Some(err)) => format!("result<{}, {}>", type_text(&ok), type_text(&err)),
        },
        Type::Own(_) => "own<resource>".into(),
        Type::Borrow(_) => "borrow<resource>".into(),
        Type::Future(future) => match future.ty() {
            Some(ty) => format!("future<{}>", type_text(&ty)),
            None => "future".into(),
        },
        Type::Stream(stream) => match stream.ty() {
            Some(ty) => format!("stream<{}>", type_text(&ty)),
            None => "stream".into(),
        },
        Type::ErrorContext => "error-context".into(),
    }
}

/// A function signature: `func(a: u32, b: string) -> string`.
pub fn func_text(func: &ComponentFunc) -> String {
    let params: Vec<String> = func
        .params()
        .map(|(name, ty)| format!("{name}: {}", type_text(&ty)))
        .collect();
    let results: Vec<String> = func.results().map(|ty| type_text(&ty)).collect();
    let prefix = if func.async_() { "async func" } else { "func" };
    match results.len() {
        0 => format!("{prefix}({})", params.join(", ")),
        1 => format!("{prefix}({}) -> {}", params.join(", "), results[0]),
        _ => format!(
            "{prefix}({}) -> ({})",
            params.join(", "),
            results.join(", ")
        ),
    }
}

/// A short description of any component item.
pub fn item_text(item: &ComponentItem) -> String {
    match item {
        ComponentItem::ComponentFunc(func) => func_text(func),
        ComponentItem::CoreFunc(_) => "core func".into(),
        ComponentItem::Module(_) => "core module".into(),
        ComponentItem::Component(_) => "component".into(),
        ComponentItem::ComponentInstance(_) => "instance".into(),
        ComponentItem::Type(ty) => format!("type {}", type_text(ty)),
        ComponentItem::Resource(_) => "resource".into(),
    }
}
