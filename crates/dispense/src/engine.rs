//! The dispensing steps, each a function of the plan and the stores: the
//! cohort, the plan, one unit, the manifest, and removal.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, RecordBatch};
use arrow_schema::{ArrowError, Field as ArrowField, Schema, SchemaRef};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::arrow_reader::{ArrowPredicateFn, ArrowReaderOptions, RowFilter};
use parquet::arrow::async_reader::{ParquetRecordBatchStream, ParquetRecordBatchStreamBuilder};
use parquet::arrow::{AsyncArrowWriter, ProjectionMask};
use parquet::basic::Compression;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::statistics::Statistics;
use parquet::schema::types::ColumnPath;
use sha2::{Digest, Sha256};

use crate::io::{HashingWriter, StoreReader};
use tre_domain::Inventory;
use tre_domain::cohort::Expr;
use tre_domain::dispense::{DatasetSelection, UnitOutput};

use crate::error::Writing;
use crate::keys::{CohortKeys, Membership, Pseudonymiser};
use crate::manifest::{
    ColumnSchema, Manifest, ManifestBulkFile, ManifestDataset, ManifestFile, ManifestFileCollection,
};
use crate::plan::{DispensePlan, PlannedFile, SourceFile, Unit};
use crate::{DispenseError, Source, filter};

/// Rows per record batch read from sources.
const BATCH_ROWS: usize = 64 * 1024;
/// Rows per row group written (bounds the writer's memory).
const OUT_ROW_GROUP_ROWS: usize = 256 * 1024;

pub(crate) fn location(path: &str) -> Result<Path, DispenseError> {
    Path::parse(path).map_err(|e| DispenseError::data(format!("bad object path {path:?}: {e}")))
}

/// The object prefix of a project in the destination store.
pub fn project_prefix(project: &str) -> Path {
    Path::from(project)
}

fn project_object(project: &str, relative: &str) -> Result<Path, DispenseError> {
    location(&format!("{project}/{relative}"))
}

pub(crate) async fn reader_builder(
    source: &Source,
    path: &str,
) -> Result<ParquetRecordBatchStreamBuilder<StoreReader>, DispenseError> {
    let reader = source.reader(path)?;
    Ok(ParquetRecordBatchStreamBuilder::new_with_options(
        reader,
        ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional),
    )
    .await?)
}

/// The columns `names` of the file `builder` reads, streamed in batches.
pub(crate) fn stream_columns(
    builder: ParquetRecordBatchStreamBuilder<StoreReader>,
    names: &[&str],
    location: &str,
) -> Result<ParquetRecordBatchStream<StoreReader>, DispenseError> {
    let indices = root_indices(builder.schema(), names, location)?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
    Ok(builder
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()?)
}

fn root_indices(
    schema: &Schema,
    names: &[&str],
    location: &str,
) -> Result<Vec<usize>, DispenseError> {
    names
        .iter()
        .map(|name| {
            schema
                .index_of(name)
                .map_err(|_| DispenseError::data(format!("{location} has no column {name:?}")))
        })
        .collect()
}

/// The entity keys of the cohort: rows of the cohort dataset where the
/// filter is true (every row for no filter).
pub async fn cohort_keys(
    source: &Source,
    inventory: &Inventory,
    expr: Option<&Expr>,
) -> Result<CohortKeys, DispenseError> {
    let dataset = inventory
        .cohort()
        .ok_or_else(|| DispenseError::data("the inventory has no cohort dataset"))?;
    let mut columns: Vec<&str> = vec![dataset.key.as_str()];
    if let Some(expr) = expr {
        columns.extend(expr.fields().into_iter().filter(|f| *f != dataset.key));
    }
    let mut parts = Vec::new();
    let mut key_type = None;
    for path in &dataset.locations {
        let mut stream = stream_columns(reader_builder(source, path).await?, &columns, path)?;
        key_type = Some(
            stream
                .schema()
                .field_with_name(&dataset.key)
                .expect("projected")
                .data_type()
                .clone(),
        );
        while let Some(batch) = stream.try_next().await? {
            let keys = batch
                .column_by_name(&dataset.key)
                .expect("projected")
                .clone();
            let selected = match expr {
                Some(expr) => filter::evaluate(expr, &batch, dataset)?,
                None => BooleanArray::from(vec![true; batch.num_rows()]),
            };
            parts.push((keys, selected));
        }
    }
    let key_type = key_type.ok_or_else(|| {
        DispenseError::data(format!("cohort dataset {:?} has no files", dataset.name))
    })?;
    CohortKeys::collect(parts, &key_type)
}

/// The row counts of each row group of each of the selected datasets' files.
pub async fn source_files(
    source: &Source,
    inventory: &Inventory,
    selection: &[DatasetSelection],
) -> Result<Vec<(String, Vec<SourceFile>)>, DispenseError> {
    let mut out = Vec::new();
    for selected in selection {
        let dataset = inventory.dataset(&selected.dataset).ok_or_else(|| {
            DispenseError::data(format!(
                "dataset {:?} is not in the inventory",
                selected.dataset
            ))
        })?;
        // footers only (no page index), several at a time, in order
        let reads: Vec<_> = dataset
            .locations
            .iter()
            .map(|path| async move {
                let builder = ParquetRecordBatchStreamBuilder::new(source.reader(path)?).await?;
                let mut names = vec![selected.key.as_str()];
                names.extend(selected.fields.iter().map(String::as_str));
                root_indices(builder.schema(), &names, path)?;
                Ok::<_, DispenseError>(SourceFile {
                    location: path.clone(),
                    row_groups: builder
                        .metadata()
                        .row_groups()
                        .iter()
                        .map(|g| g.num_rows() as u64)
                        .collect(),
                })
            })
            .collect();
        let files: Vec<SourceFile> = futures::stream::iter(reads)
            .buffered(8)
            .try_collect()
            .await?;
        out.push((selected.dataset.clone(), files));
    }
    Ok(out)
}

/// The unit's source, read and filtered: the rows whose key is in the
/// cohort (the semi-join, pushed into the Parquet reader as a row filter,
/// after skipping row groups whose key statistics rule the cohort out),
/// only the key and the approved fields.
pub struct UnitJob<'a> {
    pub plan: &'a DispensePlan,
    pub unit: &'a Unit,
    pub membership: Arc<Membership>,
    pub pseudonymiser: Option<&'a Pseudonymiser>,
}

impl UnitJob<'_> {
    /// Writes the unit's object (rewriting it if it exists) and returns its
    /// checkpoint. Memory stays bounded: batches stream from the reader to
    /// a multipart upload.
    pub async fn run(
        &self,
        source: &Source,
        dest: &Arc<dyn ObjectStore>,
    ) -> Result<UnitOutput, DispenseError> {
        let index = self.unit.index;
        let unit = self.unit.table().ok_or_else(|| {
            DispenseError::data(format!("unit {index} copies files, not a table part"))
        })?;
        let selected = self.plan.dataset(&unit.dataset).ok_or_else(|| {
            DispenseError::data(format!(
                "unit {index} names unplanned dataset {:?}",
                unit.dataset
            ))
        })?;
        let builder = reader_builder(source, &unit.location).await?;
        let mut names = vec![selected.key.as_str()];
        names.extend(selected.fields.iter().map(String::as_str));
        let indices = root_indices(builder.schema(), &names, &unit.location)?;
        let out_schema = self.output_schema(builder.schema(), &indices, &selected.key);
        let row_groups = self.pruned_row_groups(builder.metadata(), &selected.key);

        let key_mask = ProjectionMask::roots(builder.parquet_schema(), [indices[0]]);
        let membership = self.membership.clone();
        let predicate = ArrowPredicateFn::new(key_mask, move |batch: RecordBatch| {
            membership
                .mask(batch.column(0))
                .map_err(|e| ArrowError::ComputeError(e.to_string()))
        });
        let mask = ProjectionMask::roots(builder.parquet_schema(), indices.iter().copied());
        let mut stream = builder
            .with_projection(mask)
            .with_row_groups(row_groups)
            .with_row_filter(RowFilter::new(vec![Box::new(predicate)]))
            .with_batch_size(BATCH_ROWS)
            .build()?;

        let object = unit.object();
        let (sink, digest) =
            HashingWriter::new(dest.clone(), project_object(&self.plan.project, &object)?);
        let mut props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(OUT_ROW_GROUP_ROWS))
            .set_created_by("tre".into());
        if self.pseudonymiser.is_some() {
            // min/max of random pseudonyms prune nothing, and cost two
            // comparisons per row
            props = props.set_column_statistics_enabled(
                ColumnPath::from(selected.key.as_str()),
                EnabledStatistics::None,
            );
        }
        let mut writer =
            AsyncArrowWriter::try_new(sink, out_schema.clone(), Some(props.build())).writing()?;
        let mut rows = 0u64;
        while let Some(batch) = stream.try_next().await? {
            let batch = self.shape(&batch, &out_schema, &names)?;
            rows += batch.num_rows() as u64;
            writer.write(&batch).await.writing()?;
        }
        writer.close().await.writing()?;
        let (sha256, bytes) = std::mem::take(&mut *digest.lock().expect("not poisoned")).finish();
        Ok(UnitOutput {
            unit: index,
            object,
            rows,
            bytes,
            sha256,
        })
    }

    fn output_schema(&self, source: &Schema, indices: &[usize], key: &str) -> SchemaRef {
        let fields = indices.iter().map(|&i| {
            let field = source.field(i);
            if field.name() == key && self.pseudonymiser.is_some() {
                ArrowField::new(key, arrow_schema::DataType::Utf8, field.is_nullable())
            } else {
                ArrowField::new(field.name(), field.data_type().clone(), field.is_nullable())
            }
        });
        Arc::new(Schema::new(fields.collect::<Vec<_>>()))
    }

    /// The unit's row groups minus those whose key range misses the cohort.
    fn pruned_row_groups(&self, metadata: &ParquetMetaData, key: &str) -> Vec<usize> {
        // the key's leaf column (a root index differs once a column nests)
        let groups = self.unit.table().map_or(&[][..], |t| &t.row_groups[..]);
        let Some(leaf) = metadata
            .file_metadata()
            .schema_descr()
            .columns()
            .iter()
            .position(|c| c.path().parts() == [key])
        else {
            return groups.to_vec();
        };
        groups
            .iter()
            .copied()
            .filter(|&g| {
                let range = metadata
                    .row_groups()
                    .get(g) // a bad index is left for the read to report
                    .and_then(|group| group.columns().get(leaf))
                    .and_then(|c| c.statistics())
                    .and_then(|s| match s {
                        Statistics::Int32(s) => Some((*s.min_opt()? as i64, *s.max_opt()? as i64)),
                        Statistics::Int64(s) => Some((*s.min_opt()?, *s.max_opt()?)),
                        _ => None,
                    });
                range.is_none_or(|(min, max)| self.membership.may_contain_range(min, max))
            })
            .collect()
    }

    /// Orders columns as planned and replaces the key by pseudonyms.
    fn shape(
        &self,
        batch: &RecordBatch,
        schema: &SchemaRef,
        names: &[&str],
    ) -> Result<RecordBatch, DispenseError> {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let column = batch
                .column_by_name(name)
                .ok_or_else(|| DispenseError::data(format!("column {name:?} vanished")))?;
            columns.push(match (i, self.pseudonymiser) {
                (0, Some(p)) => p.column(column)?,
                _ => column.clone(),
            });
        }
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }
}

/// Checks every unit's object (size, a readable footer, its row count),
/// removes objects under the project's prefix that no unit wrote (leftovers
/// of an older plan), and writes the manifest last. Returns the manifest
/// and the SHA-256 of its bytes as stored.
pub async fn finish(
    dest: &Arc<dyn ObjectStore>,
    plan: &DispensePlan,
    pseudonymiser: Option<&Pseudonymiser>,
    outputs: &[UnitOutput],
) -> Result<(Manifest, String), DispenseError> {
    let project = &plan.project;
    let mut datasets = Vec::new();
    for selected in &plan.datasets {
        let mut outputs_of = Vec::new();
        let parts = plan
            .units
            .iter()
            .filter(|u| u.table().is_some_and(|t| t.dataset == selected.dataset));
        for unit in parts {
            outputs_of.push(
                outputs
                    .iter()
                    .find(|o| o.unit == unit.index)
                    .ok_or_else(|| {
                        DispenseError::Verify(format!("unit {} has no checkpoint", unit.index))
                    })?,
            );
        }
        // several objects checked at a time, results in unit order
        let checks: Vec<_> = outputs_of
            .iter()
            .map(|output| verify_object(dest, project, output))
            .collect();
        let schemas: Vec<(String, Vec<ColumnSchema>)> = futures::stream::iter(checks)
            .buffered(8)
            .try_collect()
            .await?;
        let mut schema: Option<Vec<ColumnSchema>> = None;
        for (path, columns) in schemas {
            match &schema {
                None => schema = Some(columns),
                Some(s) if *s != columns => {
                    return Err(DispenseError::Verify(format!(
                        "{path}: schema differs from the dataset's other parts"
                    )));
                }
                Some(_) => {}
            }
        }
        let files: Vec<ManifestFile> = outputs_of
            .iter()
            .map(|output| ManifestFile {
                path: output.object.clone(),
                rows: output.rows,
                bytes: output.bytes,
                sha256: output.sha256.clone(),
            })
            .collect();
        datasets.push(ManifestDataset {
            name: selected.dataset.clone(),
            key: selected.key.clone(),
            fields: selected.fields.clone(),
            schema: schema.unwrap_or_default(),
            rows: files.iter().map(|f| f.rows).sum(),
            files,
        });
    }
    let file_collections = verify_files(dest, plan, pseudonymiser, outputs).await?;
    let manifest = Manifest {
        project: plan.project.clone(),
        request: plan.request.clone(),
        environment: plan.environment.clone(),
        inventory_version: plan.inventory_version,
        cohort_filter: plan.cohort_filter.clone(),
        cohort_size: plan.cohort_size,
        pseudonymised: plan.pseudonymised,
        datasets,
        file_collections,
    };

    let expected: BTreeSet<String> = manifest.objects().map(str::to_owned).collect();
    let prefix = project_prefix(project);
    let stray: Vec<Path> = dest
        .list(Some(&prefix))
        .map_ok(|m| m.location)
        .try_filter(|p| {
            let relative = p
                .as_ref()
                .strip_prefix(&format!("{project}/"))
                .unwrap_or("");
            futures::future::ready(!expected.contains(relative))
        })
        .try_collect()
        .await?;
    for path in stray {
        tracing::info!(object = %path, "removing an object no unit of the plan wrote");
        dest.delete(&path).await.writing()?;
    }

    let bytes = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
    let sha = hex::encode(Sha256::digest(&bytes));
    let path = project_object(project, Manifest::OBJECT)?;
    dest.put(&path, PutPayload::from(bytes.clone()))
        .await
        .writing()?;
    let stored = dest.get(&path).await?.bytes().await?;
    if stored.as_ref() != bytes.as_slice() {
        return Err(DispenseError::Verify(format!(
            "{path} reads back different bytes"
        )));
    }
    Ok((manifest, sha))
}

/// Checks every planned bulk file as stored (its size; its SHA-256 was
/// checked as it was copied) and lists them per file collection.
async fn verify_files(
    dest: &Arc<dyn ObjectStore>,
    plan: &DispensePlan,
    pseudonymiser: Option<&Pseudonymiser>,
    outputs: &[UnitOutput],
) -> Result<Vec<ManifestFileCollection>, DispenseError> {
    for unit in plan.units.iter().filter(|u| !u.files().is_empty()) {
        if !outputs.iter().any(|o| o.unit == unit.index) {
            return Err(DispenseError::Verify(format!(
                "unit {} has no checkpoint",
                unit.index
            )));
        }
    }
    let planned: Vec<(String, &PlannedFile)> = plan
        .planned_files()
        .map(|f| (crate::files::file_object(f, pseudonymiser), f))
        .collect();
    // made first, then polled (a mapping closure held across the await
    // would make the caller's future not `Send` for every lifetime)
    let checks: Vec<_> = planned
        .iter()
        .map(|(object, file)| verify_file(dest, &plan.project, object, file.size))
        .collect();
    futures::stream::iter(checks)
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(plan
        .file_collections
        .iter()
        .map(|name| {
            let mut files: Vec<ManifestBulkFile> = planned
                .iter()
                .filter(|(_, f)| f.collection == *name)
                .map(|(object, f)| ManifestBulkFile {
                    path: object.clone(),
                    bytes: f.size,
                    sha256: f.sha256.clone(),
                })
                .collect();
            files.sort_by(|a, b| a.path.cmp(&b.path));
            ManifestFileCollection {
                name: name.clone(),
                bytes: files.iter().map(|f| f.bytes).sum(),
                files,
            }
        })
        .collect())
}

async fn verify_file(
    dest: &Arc<dyn ObjectStore>,
    project: &str,
    object: &str,
    expected: u64,
) -> Result<(), DispenseError> {
    let path = project_object(project, object)?;
    let size = dest.head(&path).await?.size;
    if size != expected {
        return Err(DispenseError::Verify(format!(
            "{path}: {size} bytes stored, {expected} copied"
        )));
    }
    Ok(())
}

/// Checks one unit's object as stored: its size, a readable footer, its
/// row count. Returns its path and column schema.
async fn verify_object(
    dest: &Arc<dyn ObjectStore>,
    project: &str,
    output: &UnitOutput,
) -> Result<(String, Vec<ColumnSchema>), DispenseError> {
    let path = project_object(project, &output.object)?;
    let meta = dest.head(&path).await?;
    if meta.size != output.bytes {
        return Err(DispenseError::Verify(format!(
            "{path}: {} bytes stored, {} written",
            meta.size, output.bytes
        )));
    }
    let builder =
        ParquetRecordBatchStreamBuilder::new(StoreReader::new(dest.clone(), path.clone())).await?;
    let rows = builder.metadata().file_metadata().num_rows() as u64;
    if rows != output.rows {
        return Err(DispenseError::Verify(format!(
            "{path}: {rows} rows stored, {} written",
            output.rows
        )));
    }
    Ok((path.to_string(), ColumnSchema::of(builder.schema())))
}

/// Removes every object of the project; returns how many there were.
pub async fn deprovision(dest: &Arc<dyn ObjectStore>, project: &str) -> Result<u64, DispenseError> {
    let prefix = project_prefix(project);
    let paths: Vec<Path> = dest
        .list(Some(&prefix))
        .map_ok(|m| m.location)
        .try_collect()
        .await?;
    let count = paths.len() as u64;
    let mut deletes = futures::stream::iter(paths)
        .map(|p| {
            let dest = dest.clone();
            async move { dest.delete(&p).await }
        })
        .buffer_unordered(8);
    while let Some(result) = deletes.next().await {
        match result {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(count)
}

/// What a plan is made from.
#[derive(Debug)]
pub struct PlanInput<'a> {
    pub project: &'a str,
    pub request: &'a str,
    pub environment: &'a str,
    /// The environment's active inventory.
    pub inventory: &'a Inventory,
    /// What the project receives: the approved selection, checked against
    /// `inventory` (see `tre_domain::dispense::ResolvedSelection::against`).
    pub selection: Vec<DatasetSelection>,
    /// The approved cohort filter (`null`: everyone).
    pub cohort_filter: &'a serde_json::Value,
    pub pseudonymise: bool,
    /// Source rows per unit.
    pub unit_rows: u64,
    /// The approved file collections.
    pub file_collections: Vec<String>,
    /// Every file of those collections in the current file inventory (the
    /// cohort's are kept), with its SHA-256.
    pub files: Vec<tre_domain::files::FileEntry>,
    /// Bytes per files unit (a larger file is a unit of its own).
    pub unit_bytes: u64,
}

/// Files per files unit, at most.
pub const UNIT_FILES: usize = 256;

/// Evaluates the cohort and splits the approved datasets into units.
pub async fn make_plan(
    source: &Source,
    input: PlanInput<'_>,
) -> Result<(DispensePlan, CohortKeys), DispenseError> {
    let inventory = input.inventory;
    let selection = input.selection;
    let cohort_dataset = inventory
        .cohort()
        .ok_or_else(|| DispenseError::data("the inventory has no cohort dataset"))?;
    let expr = tre_domain::cohort::parse_optional(input.cohort_filter, cohort_dataset)
        .map_err(|e| DispenseError::data(format!("cohort filter: {e}")))?;
    let keys = cohort_keys(source, inventory, expr.as_ref()).await?;
    let files = source_files(source, inventory, &selection).await?;
    let membership = Membership::new(&keys);
    let mut cohort_files = Vec::new();
    for entry in input.files {
        if !input.file_collections.contains(&entry.collection) {
            continue;
        }
        let Some(key) = membership.key_of(&entry.entity) else {
            continue;
        };
        let sha256 = entry.sha256.ok_or_else(|| {
            DispenseError::data(format!(
                "a file of {:?} has no checksum yet: the file inventory is not checked",
                entry.collection
            ))
        })?;
        cohort_files.push(PlannedFile {
            collection: entry.collection,
            entity: entry.entity,
            key,
            location: entry.location,
            size: entry.size,
            sha256,
        });
    }
    let mut units = crate::plan::units(&files, input.unit_rows.max(1));
    units.extend(crate::plan::file_units(
        cohort_files,
        input.unit_bytes.max(1),
        UNIT_FILES,
        units.len() as u32,
    ));
    let plan = DispensePlan {
        project: input.project.to_owned(),
        request: input.request.to_owned(),
        environment: input.environment.to_owned(),
        inventory_version: inventory.version,
        cohort_filter: input.cohort_filter.clone(),
        cohort_size: keys.len() as u64,
        pseudonymised: input.pseudonymise,
        datasets: selection,
        file_collections: input.file_collections,
        units,
    };
    Ok((plan, keys))
}

/// Runs every unit (`concurrency` at a time, each a task of its own so
/// they decode and encode on every core) and finishes: a whole dispense in
/// one process, without checkpoints (benchmarks, reference runs).
pub async fn run_all(
    source: &Source,
    dest: &Arc<dyn ObjectStore>,
    plan: &DispensePlan,
    keys: &CohortKeys,
    secret: Option<&[u8]>,
    concurrency: usize,
) -> Result<(Manifest, String), DispenseError> {
    let membership = Arc::new(Membership::new(keys));
    let pseudonymiser = secret.map(Pseudonymiser::new);
    let shared = Arc::new(plan.clone());
    let mut pending = 0..plan.units.len();
    let mut running = tokio::task::JoinSet::new();
    let mut outputs = Vec::with_capacity(plan.units.len());
    loop {
        while running.len() < concurrency.max(1) {
            let Some(index) = pending.next() else { break };
            let (plan, membership, pseudonymiser) =
                (shared.clone(), membership.clone(), pseudonymiser.clone());
            let (source, dest) = (source.clone(), dest.clone());
            running.spawn(async move {
                let unit = &plan.units[index];
                if unit.table().is_none() {
                    let copy = crate::files::FileCopy {
                        project: &plan.project,
                        pseudonymiser: pseudonymiser.as_ref(),
                        source: &source,
                        dest: &dest,
                        multipart: None,
                    };
                    return copy.run(unit, None, &crate::files::NoLog).await;
                }
                let job = UnitJob {
                    plan: &plan,
                    unit,
                    membership,
                    pseudonymiser: pseudonymiser.as_ref(),
                };
                job.run(&source, &dest).await
            });
        }
        match running.join_next().await {
            Some(done) => {
                outputs.push(done.map_err(|e| DispenseError::data(format!("unit task: {e}")))??)
            }
            None => break,
        }
    }
    finish(dest, plan, pseudonymiser.as_ref(), &outputs).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use arrow_array::{Int64Array, StringArray};
    use object_store::memory::InMemory;
    use parquet::arrow::ArrowWriter;

    /// A file sorted by key, four row groups of 100 keys (1..=400), and a
    /// cohort in groups 0 and 2 only: groups 1 and 3 are never read, and
    /// the unit still writes exactly the cohort's rows.
    #[tokio::test]
    async fn row_groups_outside_the_cohort_are_skipped() {
        let schema = Arc::new(Schema::new(vec![
            ArrowField::new("id", arrow_schema::DataType::Int64, false),
            ArrowField::new("x", arrow_schema::DataType::Utf8, false),
        ]));
        let ids: Vec<i64> = (1..=400).collect();
        let xs: Vec<String> = ids.iter().map(|i| format!("x{i}")).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(xs)),
            ],
        )
        .unwrap();
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(100))
            .build();
        let mut bytes = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut bytes, schema, Some(props)).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        store
            .put(&Path::from("src/t.parquet"), PutPayload::from(bytes))
            .await
            .unwrap();
        let source = Source::from_store(store.clone());

        let cohort: Vec<i64> = (5..=20).chain(250..=260).collect();
        let plan = DispensePlan {
            project: "p".into(),
            request: "r".into(),
            environment: "e".into(),
            inventory_version: 1,
            cohort_filter: serde_json::Value::Null,
            cohort_size: cohort.len() as u64,
            pseudonymised: false,
            datasets: vec![DatasetSelection {
                dataset: "t".into(),
                key: "id".into(),
                fields: vec!["x".into()],
            }],
            file_collections: vec![],
            units: vec![Unit {
                index: 0,
                work: crate::plan::Work::Table(crate::plan::TablePart {
                    dataset: "t".into(),
                    part: 0,
                    location: "src/t.parquet".into(),
                    row_groups: vec![0, 1, 2, 3],
                    source_rows: 400,
                }),
            }],
        };
        for keys in [
            CohortKeys::Int(cohort.clone()),
            // the same keys far apart: a hash set, not a bitmap
            CohortKeys::Int(cohort.iter().copied().chain([1 << 50]).collect()),
        ] {
            let job = UnitJob {
                plan: &plan,
                unit: &plan.units[0],
                membership: Arc::new(Membership::new(&keys)),
                pseudonymiser: None,
            };
            let builder = reader_builder(&source, "src/t.parquet").await.unwrap();
            assert_eq!(builder.metadata().num_row_groups(), 4);
            assert_eq!(job.pruned_row_groups(builder.metadata(), "id"), [0, 2]);

            let output = job.run(&source, &store).await.unwrap();
            assert_eq!(output.rows, cohort.len() as u64);
            let written = reader_builder(&source, &format!("p/{}", output.object))
                .await
                .unwrap()
                .build()
                .unwrap();
            let batches: Vec<RecordBatch> = written.try_collect().await.unwrap();
            let got: Vec<i64> = batches
                .iter()
                .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
                .collect();
            assert_eq!(got, cohort);
            let x = batches[0].column(1).as_string::<i32>();
            assert_eq!(x.value(0), "x5");
        }
    }
}
