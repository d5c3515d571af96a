//! How the inventory sees Parquet files: field types from the footer.

use std::fs::File;
use std::path::Path;

use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tre_domain::{Field, FieldType, Inventory, InventoryDefinition, LocationColumns, Problem};

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

/// How many footers [`resolve_inventory`] reads at once.
const FOOTERS_AT_ONCE: usize = 8;

/// The inventory `definition` declares, checked against `source`: each
/// location found and a readable Parquet file, the files of a dataset
/// alike, every declared field a column of the type declared (types left
/// out are the files'). Every problem is named at once (see
/// [`tre_domain::resolve_inventory`]); only footers are read, never rows.
pub async fn resolve_inventory(
    source: &Source,
    definition: &InventoryDefinition,
) -> Result<Inventory, Vec<Problem>> {
    use futures::StreamExt;
    let wanted: Vec<(usize, String)> = definition
        .locations()
        .into_iter()
        .enumerate()
        .flat_map(|(i, locations)| locations.into_iter().map(move |l| (i, l)))
        .collect();
    let read: Vec<(usize, LocationColumns)> = futures::stream::iter(wanted)
        .map(|(i, location)| async move { (i, location_columns(source, &location).await) })
        .buffered(FOOTERS_AT_ONCE)
        .collect()
        .await;
    let mut columns: Vec<Vec<LocationColumns>> = vec![Vec::new(); definition.datasets.len()];
    for (i, found) in read {
        columns[i].push(found);
    }
    tre_domain::resolve_inventory(definition, &columns)
}

/// The columns of the Parquet file at `location`, or why they cannot be
/// read, in the custodian's words.
async fn location_columns(source: &Source, location: &str) -> LocationColumns {
    if let Err(e) = tre_domain::storage::check_location("location", location) {
        return Err(e.message());
    }
    match source.size(location).await {
        Ok(_) => {}
        Err(DispenseError::Store(object_store::Error::NotFound { .. })) => {
            return Err(format!("{location} is not in the environment's source"));
        }
        // the folder's own words (not found, a link out of the root)
        Err(DispenseError::Data(reason)) => return Err(reason),
        Err(e) => return Err(format!("{location} cannot be read: {e}")),
    }
    match source_fields(source, location).await {
        Ok(fields) => Ok(fields),
        Err(DispenseError::Parquet(_)) => Err(format!(
            "{location} is not a readable Parquet file (its footer cannot be read)"
        )),
        Err(e) => Err(format!("{location} cannot be read: {e}")),
    }
}
