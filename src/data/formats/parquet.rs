//! Parquet, as Hugging Face datasets ship it: each row becomes a JSON object (strings,
//! numbers, lists and structs map to their JSON counterparts) and is read with the usual
//! [`Schema`]; writing infers an Arrow schema from the records (a column whose values
//! disagree in type is written as JSON text).

use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{NullBufferBuilder, OffsetBufferBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, ListArray, RecordBatch, StringArray,
    StructArray,
};
use arrow_schema::{DataType, Field, Fields};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde_json::{Map, Number, Value};

use super::{detect_schema, Encoding, Format, Mapping, ReadOutput, Schema};
use crate::data::error::DataError;
use crate::data::record::Conversation;

fn perr(path: &Path, e: impl std::fmt::Display) -> DataError {
    DataError::Parquet {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// The JSON value of row `i` of an Arrow array.
fn value_at(a: &dyn Array, i: usize) -> Value {
    if a.is_null(i) {
        return Value::Null;
    }
    let num = |f: f64| {
        Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    };
    match a.data_type() {
        DataType::Null => Value::Null,
        DataType::Boolean => Value::Bool(a.as_boolean().value(i)),
        DataType::Utf8 => Value::String(a.as_string::<i32>().value(i).to_string()),
        DataType::LargeUtf8 => Value::String(a.as_string::<i64>().value(i).to_string()),
        DataType::Utf8View => Value::String(a.as_string_view().value(i).to_string()),
        DataType::Binary => {
            Value::String(String::from_utf8_lossy(a.as_binary::<i32>().value(i)).into_owned())
        }
        DataType::LargeBinary => {
            Value::String(String::from_utf8_lossy(a.as_binary::<i64>().value(i)).into_owned())
        }
        DataType::Int8 => Value::from(a.as_primitive::<Int8Type>().value(i)),
        DataType::Int16 => Value::from(a.as_primitive::<Int16Type>().value(i)),
        DataType::Int32 => Value::from(a.as_primitive::<Int32Type>().value(i)),
        DataType::Int64 => Value::from(a.as_primitive::<Int64Type>().value(i)),
        DataType::UInt8 => Value::from(a.as_primitive::<UInt8Type>().value(i)),
        DataType::UInt16 => Value::from(a.as_primitive::<UInt16Type>().value(i)),
        DataType::UInt32 => Value::from(a.as_primitive::<UInt32Type>().value(i)),
        DataType::UInt64 => Value::from(a.as_primitive::<UInt64Type>().value(i)),
        DataType::Float32 => num(a.as_primitive::<Float32Type>().value(i) as f64),
        DataType::Float64 => num(a.as_primitive::<Float64Type>().value(i)),
        DataType::List(_) => list_value(a.as_list::<i32>().value(i).as_ref()),
        DataType::LargeList(_) => list_value(a.as_list::<i64>().value(i).as_ref()),
        DataType::FixedSizeList(_, _) => list_value(a.as_fixed_size_list().value(i).as_ref()),
        DataType::Struct(fields) => {
            let s = a.as_struct();
            let mut o = Map::new();
            for (f, col) in fields.iter().zip(s.columns()) {
                o.insert(f.name().clone(), value_at(col.as_ref(), i));
            }
            Value::Object(o)
        }
        DataType::Dictionary(_, _) => {
            let d = a.as_any_dictionary();
            let keys = d.normalized_keys();
            match keys.get(i) {
                Some(&k) => value_at(d.values().as_ref(), k),
                None => Value::Null,
            }
        }
        other => Value::String(format!("<unsupported Arrow type {other}>")),
    }
}

fn list_value(a: &dyn Array) -> Value {
    Value::Array((0..a.len()).map(|j| value_at(a, j)).collect())
}

pub(crate) fn read(
    path: &Path,
    schema: Option<Schema>,
    mapping: Option<&Mapping>,
) -> Result<ReadOutput, DataError> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let len = file.metadata().map_err(|e| DataError::io(path, e))?.len();
    super::parquet_check::check(&file, len).map_err(|e| perr(path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| perr(path, e))?
        .build()
        .map_err(|e| perr(path, e))?;
    let mut values = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| perr(path, e))?;
        let names: Vec<String> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        for i in 0..batch.num_rows() {
            let mut o = Map::new();
            for (name, col) in names.iter().zip(batch.columns()) {
                let v = value_at(col.as_ref(), i);
                if !v.is_null() {
                    o.insert(name.clone(), v);
                }
            }
            values.push(Value::Object(o));
        }
    }
    let (schema, mapping) = match (schema, mapping) {
        (Some(s), Some(m)) => (s, m.clone()),
        (s, m) => {
            let det = values.first().and_then(detect_schema);
            let s = s.or(det.as_ref().map(|d| d.0)).unwrap_or(Schema::Alpaca);
            let m = m.cloned().unwrap_or_else(|| match det {
                Some((ds, dm)) if ds == s => dm,
                _ => Mapping::default_for(s),
            });
            (s, m)
        }
    };
    let n = values.len();
    let (records, problems) = super::values_to_records(values, schema, &mapping);
    Ok(ReadOutput {
        records,
        lines: vec![None; n],
        problems,
        format: Format::new(schema, Encoding::Parquet),
        mapping,
    })
}

/// The Arrow type of a set of JSON values.
#[derive(Debug, Clone, PartialEq)]
enum Ty {
    Null,
    Bool,
    Int,
    Float,
    Str,
    /// Values of disagreeing types: written as JSON text.
    Json,
    List(Box<Ty>),
    Struct(Vec<(String, Ty)>),
}

fn infer(v: &Value) -> Ty {
    match v {
        Value::Null => Ty::Null,
        Value::Bool(_) => Ty::Bool,
        Value::Number(n) if n.is_i64() => Ty::Int,
        Value::Number(_) => Ty::Float,
        Value::String(_) => Ty::Str,
        Value::Array(a) => Ty::List(Box::new(a.iter().map(infer).fold(Ty::Null, unify))),
        Value::Object(o) if o.is_empty() => Ty::Json,
        Value::Object(o) => Ty::Struct(o.iter().map(|(k, v)| (k.clone(), infer(v))).collect()),
    }
}

fn unify(a: Ty, b: Ty) -> Ty {
    match (a, b) {
        (Ty::Null, x) | (x, Ty::Null) => x,
        (a, b) if a == b => a,
        (Ty::Int, Ty::Float) | (Ty::Float, Ty::Int) => Ty::Float,
        (Ty::List(a), Ty::List(b)) => Ty::List(Box::new(unify(*a, *b))),
        (Ty::Struct(mut a), Ty::Struct(b)) => {
            for (k, t) in b {
                match a.iter_mut().find(|(n, _)| *n == k) {
                    Some((_, at)) => *at = unify(at.clone(), t),
                    None => a.push((k, t)),
                }
            }
            Ty::Struct(a)
        }
        _ => Ty::Json,
    }
}

fn data_type(t: &Ty) -> DataType {
    match t {
        Ty::Null | Ty::Str | Ty::Json => DataType::Utf8,
        Ty::Bool => DataType::Boolean,
        Ty::Int => DataType::Int64,
        Ty::Float => DataType::Float64,
        Ty::List(t) => DataType::List(Arc::new(Field::new("item", data_type(t), true))),
        Ty::Struct(f) => DataType::Struct(fields(f)),
    }
}

fn fields(f: &[(String, Ty)]) -> Fields {
    f.iter()
        .map(|(n, t)| Field::new(n, data_type(t), true))
        .collect()
}

fn build(vals: &[Option<&Value>], t: &Ty) -> ArrayRef {
    match t {
        Ty::Null | Ty::Str => Arc::new(StringArray::from_iter(
            vals.iter().map(|v| v.and_then(Value::as_str)),
        )),
        Ty::Json => Arc::new(StringArray::from_iter(vals.iter().map(|v| match v {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => Some(v.to_string()),
        }))),
        Ty::Bool => Arc::new(BooleanArray::from_iter(
            vals.iter().map(|v| v.and_then(Value::as_bool)),
        )),
        Ty::Int => Arc::new(Int64Array::from_iter(
            vals.iter().map(|v| v.and_then(Value::as_i64)),
        )),
        Ty::Float => Arc::new(Float64Array::from_iter(
            vals.iter().map(|v| v.and_then(Value::as_f64)),
        )),
        Ty::List(inner) => {
            let mut offsets = OffsetBufferBuilder::<i32>::new(vals.len());
            let mut nulls = NullBufferBuilder::new(vals.len());
            let mut children = Vec::new();
            for v in vals {
                match v {
                    Some(Value::Array(a)) => {
                        offsets.push_length(a.len());
                        nulls.append_non_null();
                        children.extend(a.iter().map(Some));
                    }
                    _ => {
                        offsets.push_length(0);
                        nulls.append_null();
                    }
                }
            }
            let field = Arc::new(Field::new("item", data_type(inner), true));
            Arc::new(ListArray::new(
                field,
                offsets.finish(),
                build(&children, inner),
                nulls.finish(),
            ))
        }
        Ty::Struct(f) => {
            let mut nulls = NullBufferBuilder::new(vals.len());
            for v in vals {
                if matches!(v, Some(Value::Object(_))) {
                    nulls.append_non_null();
                } else {
                    nulls.append_null();
                }
            }
            let arrays = f
                .iter()
                .map(|(name, t)| {
                    let child: Vec<Option<&Value>> =
                        vals.iter().map(|v| v.and_then(|o| o.get(name))).collect();
                    build(&child, t)
                })
                .collect();
            Arc::new(StructArray::new(fields(f), arrays, nulls.finish()))
        }
    }
}

pub(crate) fn write(
    records: &[Conversation],
    schema: Schema,
    mapping: &Mapping,
    path: &Path,
) -> Result<Vec<u8>, DataError> {
    let values = super::to_values(records, schema, mapping, path)?;
    let mut columns: Vec<(String, Ty)> = Vec::new();
    for v in &values {
        if let Value::Object(o) = v {
            for (k, x) in o {
                let t = infer(x);
                match columns.iter_mut().find(|(n, _)| n == k) {
                    Some((_, ct)) => *ct = unify(ct.clone(), t),
                    None => columns.push((k.clone(), t)),
                }
            }
        }
    }
    let arrays: Vec<ArrayRef> = columns
        .iter()
        .map(|(name, t)| {
            let col: Vec<Option<&Value>> = values.iter().map(|v| v.get(name)).collect();
            build(&col, t)
        })
        .collect();
    let arrow_schema = Arc::new(arrow_schema::Schema::new(fields(&columns)));
    let batch = if columns.is_empty() {
        RecordBatch::new_empty(arrow_schema.clone())
    } else {
        RecordBatch::try_new(arrow_schema.clone(), arrays).map_err(|e| perr(path, e))?
    };
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut w =
        ArrowWriter::try_new(Vec::new(), arrow_schema, Some(props)).map_err(|e| perr(path, e))?;
    w.write(&batch).map_err(|e| perr(path, e))?;
    w.into_inner().map_err(|e| perr(path, e))
}
