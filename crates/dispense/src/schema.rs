//! How the inventory sees Parquet files: field types from the footer.

use std::fs::File;
use std::path::Path;

use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tre_domain::{Field, FieldType};

use crate::{DispenseError, Source};

/// How the cohort filter language sees an Arrow type.
pub fn field_type(data_type: &DataType) -> FieldType {
    match data_type {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => FieldType::Integer,
        DataType::Float16 | DataType::Float32 | DataType::Float64 | DataType::Decimal128(..) => {
            FieldType::Float
        }
        DataType::Boolean => FieldType::Boolean,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => FieldType::String,
        DataType::Date32 | DataType::Date64 => FieldType::Date,
        _ => FieldType::Other,
    }
}

/// The fields of a Parquet file of a source, from its footer, as an
/// inventory lists them (without descriptions).
pub async fn source_fields(source: &Source, location: &str) -> Result<Vec<Field>, DispenseError> {
    let builder = parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder::new(
        source.reader(location)?,
    )
    .await?;
    Ok(fields_of(builder.schema()))
}

fn fields_of(schema: &arrow_schema::Schema) -> Vec<Field> {
    schema
        .fields()
        .iter()
        .map(|f| Field {
            name: f.name().clone(),
            field_type: field_type(f.data_type()),
            description: String::new(),
        })
        .collect()
}

/// The fields of a local Parquet file, from its footer, as an inventory
/// lists them (without descriptions).
pub fn parquet_fields(path: &Path) -> Result<Vec<Field>, DispenseError> {
    let file = File::open(path)
        .map_err(|e| DispenseError::data(format!("cannot open {}: {e}", path.display())))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| {
        DispenseError::data(format!(
            "{} is not a readable Parquet file: {e}",
            path.display()
        ))
    })?;
    Ok(fields_of(builder.schema()))
}
