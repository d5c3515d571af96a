//! The data showcase, computed by a real worker from the fixtures' Parquet
//! files and attacked through what the store releases: the aggregates equal
//! an independent count made here with arrow, the released showcase is
//! exactly the rules applied to them, and no small cell can be read, alone,
//! by its label, or by subtracting the cells shown from the total.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tre_testkit::UseCases;

use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Float64Type, Int32Type, Int64Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tre_domain::disclosure::{Cell, DisclosureRules};
use tre_domain::showcase::{Distribution, ShowcaseAggregates, bin_of, release};
use tre_domain::{EnvironmentCommand, FieldRef, Inventory, Policies};
use tre_jobs::EmbeddedQueue;
use tre_store::{ShowcaseView, Store};
use tre_testkit::{
    BIOBANK, World, biobank_inventory, counted, fixtures_data, selecting, world_with,
};

mod common;

use common::{dispense_options, start, temp_store, told};

const STOP_WITHIN: Duration = Duration::from_secs(20);

tre_testkit::on_both_backends!(
    showcase_aggregates_equal_an_independent_count_and_release_only_what_the_rules_allow,
    a_new_inventory_version_is_computed_while_the_old_numbers_stay_served,
    reviewers_see_a_selection_summary_counted_from_the_data,
    a_showcase_that_cannot_be_computed_tells_its_admins_why,
);

fn field(name: &str) -> FieldRef {
    FieldRef {
        dataset: "participants".into(),
        field: name.into(),
    }
}

/// The biobank with a float, a date and the usual showcase fields shown.
fn inventory() -> Inventory {
    let mut inventory = biobank_inventory(&fixtures_data(), &BIOBANK);
    inventory.showcase.push(field("bmi"));
    inventory.showcase.push(field("recruitment_date"));
    inventory.showcase.push(field("smoking_status"));
    // the custodian's own BMI bins (the WHO categories)
    inventory.showcase_bins.push(tre_domain::ShowcaseBins {
        field: field("bmi"),
        edges: [18.5, 25.0, 30.0, 35.0]
            .into_iter()
            .map(tre_domain::BinEdge)
            .collect(),
    });
    inventory
}

async fn computed(store: &Store, w: &World, version: u32) -> ShowcaseView {
    for _ in 0..800 {
        let view = store.app().showcase(&w.owner, &w.env).await.unwrap();
        if !view.computing && view.current_version == version {
            return view;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the showcase of version {version} was never computed");
}

/// The participants file, read here with arrow alone.
fn participants() -> RecordBatch {
    let file = std::fs::File::open(fixtures_data().join("participants.parquet")).unwrap();
    let mut reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .with_batch_size(1 << 20)
        .build()
        .unwrap();
    let batch = reader.next().unwrap().unwrap();
    assert!(reader.next().is_none(), "one batch holds the fixture");
    batch
}

/// Each row's value as the showcase counts it: text, a number, or a year
/// (read from the date's own text, not by the product's arithmetic).
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Text(String),
    Number(f64),
}

fn column(batch: &RecordBatch, name: &str) -> Vec<Option<Value>> {
    let c = batch.column_by_name(name).unwrap();
    (0..c.len())
        .map(|i| {
            if c.is_null(i) {
                return None;
            }
            Some(match c.data_type() {
                DataType::Utf8 => Value::Text(c.as_string::<i32>().value(i).to_owned()),
                DataType::LargeUtf8 => Value::Text(c.as_string::<i64>().value(i).to_owned()),
                DataType::Boolean => Value::Text(c.as_boolean().value(i).to_string()),
                DataType::Int64 => Value::Number(c.as_primitive::<Int64Type>().value(i) as f64),
                DataType::Int32 => Value::Number(f64::from(c.as_primitive::<Int32Type>().value(i))),
                DataType::Float64 => Value::Number(c.as_primitive::<Float64Type>().value(i)),
                DataType::Date32 => {
                    let date = c.as_primitive::<Date32Type>().value_as_date(i).unwrap();
                    Value::Number(date.to_string()[..4].parse().unwrap())
                }
                other => panic!("{name}: unexpected type {other}"),
            })
        })
        .collect()
}

/// A participant's record key as documented: SipHash-1-3 of the key's text
/// under the secret's first 16 bytes, low 32 bits.
fn key_of(secret: &[u8], participant: &str) -> u32 {
    let key: [u8; 16] = secret[..16].try_into().unwrap();
    let hash = siphasher::sip::SipHasher13::new_with_key(&key).hash(participant.as_bytes());
    (hash & 0xffff_ffff) as u32
}

/// Asserts the stored aggregates against a count made here.
fn assert_independent(aggregates: &ShowcaseAggregates, secret: &[u8]) {
    let batch = participants();
    let ids: Vec<String> = column(&batch, "participant_id")
        .into_iter()
        .map(|v| match v {
            Some(Value::Number(n)) => format!("{n}"),
            Some(Value::Text(t)) => t,
            None => panic!("a participant without a key"),
        })
        .collect();
    let keys: Vec<u32> = ids.iter().map(|id| key_of(secret, id)).collect();
    let mut everyone = Cell::default();
    keys.iter().for_each(|k| everyone.add(*k));
    assert_eq!(
        aggregates.participants, everyone,
        "participants and their cell key"
    );
    assert_eq!(aggregates.fields.len(), 6, "every countable showcase field");
    for agg in &aggregates.fields {
        let values = column(&batch, &agg.field.field);
        let (mut present, mut missing) = (Cell::default(), Cell::default());
        for (value, key) in values.iter().zip(&keys) {
            match value {
                Some(_) => present.add(*key),
                None => missing.add(*key),
            }
        }
        assert_eq!(
            (agg.present, agg.missing),
            (present, missing),
            "{:?}",
            agg.field
        );
        match &agg.distribution {
            Distribution::Histogram { edges, bins, .. } => {
                if agg.field.field == "bmi" {
                    assert_eq!(edges, &[18.5, 25.0, 30.0, 35.0], "the custodian's bins");
                }
                let mut want = vec![Cell::default(); edges.len() + 1];
                for (value, key) in values.iter().zip(&keys) {
                    if let Some(Value::Number(n)) = value {
                        want[bin_of(*n, edges)].add(*key);
                    }
                }
                assert_eq!(bins, &want, "{:?}", agg.field);
                assert!(edges.len() >= 3, "{:?}: sensible bins {edges:?}", agg.field);
            }
            Distribution::Categories { categories, other } => {
                let mut want: HashMap<String, Cell> = HashMap::new();
                for (value, key) in values.iter().zip(&keys) {
                    if let Some(Value::Text(t)) = value {
                        want.entry(t.clone()).or_default().add(*key);
                    }
                }
                let mut rest = Cell::default();
                for (name, cell) in &want {
                    match categories.iter().find(|(n, _)| n == name) {
                        Some((_, got)) => assert_eq!(got, cell, "{name}"),
                        None => rest = rest.merge(*cell),
                    }
                }
                assert_eq!(other, &rest, "{:?}: the rest is other", agg.field);
                // the most frequent come first
                let counts: Vec<u64> = categories.iter().map(|(_, c)| c.count).collect();
                assert!(counts.windows(2).all(|w| w[0] >= w[1]));
            }
        }
    }
}

async fn showcase_aggregates_equal_an_independent_count_and_release_only_what_the_rules_allow(
    store: &Store,
) {
    let w = world_with(store, inventory(), &["rev1"], &["rev2"], 1).await;
    // a strict custodian: cells under 400 (of 5,000 participants) are small,
    // so every rule has cells to work on
    store
        .app()
        .configure_environment(
            &w.admin,
            &w.env,
            EnvironmentCommand::SetPolicies(Policies {
                min_cell_size: 400,
                rounding_base: 10,
                ..Policies::default()
            }),
        )
        .await
        .unwrap();
    let (folder, dest) = temp_store("showcase");
    let worker = start(
        store,
        Arc::new(EmbeddedQueue::default()),
        dispense_options(dest, 1_000),
    );
    let view = computed(store, &w, 1).await;
    worker.stop(STOP_WITHIN).await;

    let aggregates = store.showcase_aggregates(&w.env, 1).await.unwrap().unwrap();
    let secret = store.showcase_secret(&w.env).await.unwrap();
    assert_independent(&aggregates, &secret);

    // what is released is the rules applied to the true numbers, nothing else
    let env = store.app().environment(&w.admin, &w.env).await.unwrap();
    let rules = DisclosureRules::of(&env.policies);
    let released = view.showcase.clone().expect("computed");
    assert_eq!(released, release(&aggregates, &rules));
    let json = serde_json::to_string(&view).unwrap();
    assert!(!json.contains("\"key\""), "no cell key is ever released");

    // attack: read a small cell directly, by its label, or from the total
    let mut suppressed_somewhere = false;
    for (shown, truth) in released.fields.iter().zip(&aggregates.fields) {
        for cell in &shown.cells {
            if let Some(count) = cell.count.count {
                assert_eq!(count % 10, 0, "{}: rounded to 10", cell.label);
            }
            // a category is named only when it alone is not small
            if let Distribution::Categories { categories, .. } = &truth.distribution
                && cell.label != "other"
            {
                let (_, c) = categories.iter().find(|(n, _)| *n == cell.label).unwrap();
                assert!(c.count >= 400, "{} is named with {}", cell.label, c.count);
            }
        }
        // the suppressed part of the partition is never a small number
        let hidden: Vec<usize> = (0..shown.cells.len())
            .filter(|i| shown.cells[*i].count.suppressed)
            .collect();
        if !hidden.is_empty() {
            suppressed_somewhere = true;
            assert!(
                hidden.len() >= 2 || shown.missing.suppressed,
                "{}: one suppressed cell alone",
                shown.field
            );
        }
        if shown.missing.suppressed {
            assert!(
                shown.present.suppressed,
                "{}: present gives missing back",
                shown.field
            );
        }
    }
    assert!(
        suppressed_somewhere,
        "the strict policy must suppress something"
    );

    // outsiders learn nothing, not even that it exists
    assert!(store.app().showcase(&w.outsider, &w.env).await.is_err());
    let _ = std::fs::remove_dir_all(folder);
}

async fn a_new_inventory_version_is_computed_while_the_old_numbers_stay_served(store: &Store) {
    let w = world_with(store, inventory(), &["rev1"], &["rev2"], 1).await;
    let (folder, dest) = temp_store("showcase-versions");
    let worker = start(
        store,
        Arc::new(EmbeddedQueue::default()),
        dispense_options(dest.clone(), 1_000),
    );
    let first = computed(store, &w, 1).await;
    worker.stop(STOP_WITHIN).await;

    // version 2 shows the Townsend index too; staged in maintenance
    let mut next = inventory();
    next.showcase.push(field("townsend_index"));
    for command in [
        EnvironmentCommand::EnterMaintenance,
        EnvironmentCommand::SetInventory(next),
        EnvironmentCommand::Reactivate,
    ] {
        store
            .app()
            .configure_environment(&w.admin, &w.env, command)
            .await
            .unwrap();
    }
    let meanwhile = store.app().showcase(&w.owner, &w.env).await.unwrap();
    assert_eq!(meanwhile.current_version, 2);
    assert!(meanwhile.computing, "being computed");
    assert_eq!(meanwhile.showcase, first.showcase, "version 1 still served");

    let worker = start(
        store,
        Arc::new(EmbeddedQueue::default()),
        dispense_options(dest, 1_000),
    );
    let second = computed(store, &w, 2).await;
    worker.stop(STOP_WITHIN).await;
    let shown = second.showcase.unwrap();
    assert_eq!(shown.version, 2);
    assert!(shown.fields.iter().any(|f| f.field == "townsend_index"));
    let _ = std::fs::remove_dir_all(folder);
}

/// Attack (a custodian's first day): the data file goes between publishing
/// and the showcase's job. The showcase used to say `computing` for ever,
/// the reason visible to operators only. Now the version is marked failed:
/// its admins see why (and are told in their inbox); members see only that
/// it failed; the cohort builder says so too.
async fn a_showcase_that_cannot_be_computed_tells_its_admins_why(store: &Store) {
    let folder = std::env::temp_dir().join(format!("tre-showcase-gone-{}", tre_testkit::unique()));
    std::fs::create_dir_all(&folder).unwrap();
    for name in ["participants.parquet", "diagnoses.parquet"] {
        std::fs::copy(tre_testkit::small_data().join(name), folder.join(name)).unwrap();
    }
    let root = tre_domain::StoreRoot::parse("source", folder.to_str().unwrap()).unwrap();
    let w = tre_testkit::world_at(
        store,
        root,
        tre_testkit::inventory(),
        &["rev1"],
        &["rev2"],
        1,
    )
    .await;
    std::fs::remove_file(folder.join("participants.parquet")).unwrap();
    let (dest_folder, dest) = temp_store("showcase-failed");
    let worker = start(
        store,
        Arc::new(EmbeddedQueue::default()),
        dispense_options(dest, 1_000),
    );
    let mut seen = None;
    for _ in 0..800 {
        let view = store.app().showcase(&w.admin, &w.env).await.unwrap();
        if view.failed.is_some() {
            seen = Some(view);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let admin_view = seen.expect("the showcase's failure is recorded");
    assert!(!admin_view.computing, "no longer computing");
    let reason = admin_view.failed.unwrap();
    assert!(
        reason.contains("participants.parquet is not in the environment's source"),
        "{reason}"
    );
    // a member learns that it failed, not where the data lives
    let member_view = store.app().showcase(&w.owner, &w.env).await.unwrap();
    let told_member = member_view.failed.unwrap();
    assert!(!told_member.contains("parquet"), "{told_member}");
    assert!(
        told_member.contains("admins have been told"),
        "{told_member}"
    );
    // the admin is told in their inbox, with what to do
    let note = told(store, "admin", "showcase_failed").await;
    assert!(note.body.contains("participants.parquet"), "{}", note.body);
    assert!(note.body.contains("tre env check"), "{}", note.body);
    let owner_inbox = store.inbox(&"owner".into(), 10).await.unwrap();
    assert!(owner_inbox.iter().all(|n| n.kind != "showcase_failed"));
    worker.stop(STOP_WITHIN).await;
    let _ = std::fs::remove_dir_all(folder);
    let _ = std::fs::remove_dir_all(dest_folder);
}

/// Participant ids (as text) of a Parquet file of the fixtures, row by row.
fn participant_ids(file: &str) -> Vec<String> {
    let file = std::fs::File::open(fixtures_data().join(file)).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        for value in column(&batch, "participant_id") {
            out.push(match value {
                Some(Value::Number(n)) => format!("{n}"),
                Some(Value::Text(t)) => t,
                None => panic!("a row without a participant"),
            });
        }
    }
    out
}

async fn reviewers_see_a_selection_summary_counted_from_the_data(store: &Store) {
    let w = world_with(store, inventory(), &["rev1"], &["rev2"], 1).await;
    let (folder, dest) = temp_store("summary");
    let worker = start(
        store,
        Arc::new(EmbeddedQueue::default()),
        dispense_options(dest, 1_000),
    );
    let women = serde_json::json!({"field": "sex", "op": "=", "value": "F"});
    let request = store
        .app()
        .create_request(
            &w.owner,
            &w.env,
            selecting(women, &["baseline", "hospital"]),
        )
        .await
        .unwrap();
    store
        .app()
        .request_command(&w.owner, &request.id, tre_domain::RequestCommand::Submit)
        .await
        .unwrap();
    let reviewed = counted(store, &request.id).await;
    worker.stop(STOP_WITHIN).await;
    assert!(matches!(
        reviewed.state,
        tre_domain::RequestState::InReview { .. }
    ));

    // independently: the women, and their hospital episodes
    let batch = participants();
    let secret = store.showcase_secret(&w.env).await.unwrap();
    let ids = participant_ids("participants.parquet");
    let sexes = column(&batch, "sex");
    let mut women = std::collections::HashSet::new();
    let mut cohort = Cell::default();
    for (id, sex) in ids.iter().zip(&sexes) {
        if *sex == Some(Value::Text("F".into())) {
            women.insert(id.clone());
            cohort.add(key_of(&secret, id));
        }
    }
    let mut episodes = Cell::default();
    for file in ["hospital_episodes-0.parquet", "hospital_episodes-1.parquet"] {
        for id in participant_ids(file) {
            if women.contains(&id) {
                episodes.add(key_of(&secret, &id));
            }
        }
    }
    let env = store.app().environment(&w.admin, &w.env).await.unwrap();
    let rules = DisclosureRules::of(&env.policies);

    // the requesters are shown the selection, never a count (their sizes
    // come from the cohort builder, behind its gate)
    let owners = store
        .app()
        .selection_summary(&w.owner, &request.id)
        .await
        .unwrap()
        .expect("counted with the cohort");
    assert!(owners.counts_withheld);
    assert_eq!(owners.cohort.count, None);
    assert!(owners.datasets.iter().all(|d| d.rows.count.is_none()));
    assert_eq!(owners.collections.len(), 2);
    let reviewer = tre_testkit::user(store, "rev1", false, &[]).await;
    let summary = store
        .app()
        .selection_summary(&reviewer, &request.id)
        .await
        .unwrap()
        .expect("counted with the cohort");
    assert_eq!(summary.round, 1);
    assert_eq!(summary.cohort, rules.release(cohort));
    let by_name: HashMap<&str, &tre_domain::summary::DatasetSummary> = summary
        .datasets
        .iter()
        .map(|d| (d.dataset.as_str(), d))
        .collect();
    assert_eq!(
        by_name["participants"].rows,
        rules.release(cohort),
        "one row each"
    );
    assert_eq!(by_name["hospital_episodes"].rows, rules.release(episodes));
    assert!(
        by_name["hospital_episodes"]
            .fields
            .contains(&"icd10".to_owned())
    );
    assert_eq!(summary.collections.len(), 2);

    // the reviewers see it whole; the admins see the counts, not the
    // selection; outsiders nothing
    // and in their queue, beside the request
    let queue = store.app().review_queue(&reviewer, "", 50).await.unwrap();
    assert_eq!(queue.items.len(), 1);
    let summaries = store.summaries_for(&queue.items).await.unwrap();
    assert_eq!(summaries.get(&request.id), Some(&summary));
    let admin_view = store
        .app()
        .selection_summary(&w.admin, &request.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(admin_view.cohort, summary.cohort);
    assert!(admin_view.collections.is_empty());
    assert!(admin_view.datasets.iter().all(|d| d.fields.is_empty()));
    assert!(
        store
            .app()
            .selection_summary(&w.outsider, &request.id)
            .await
            .is_err()
    );
    let _ = std::fs::remove_dir_all(folder);
}
