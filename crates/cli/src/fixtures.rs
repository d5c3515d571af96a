//! The synthetic biobank in `fixtures/data`: a participants table (one row
//! per participant: demographics, baseline measurements) and two event
//! tables keyed by `participant_id` (hospital episodes with ICD-10 codes,
//! prescriptions). Values follow UK Biobank-like distributions and
//! correlations (diabetes with BMI and age, metformin with diabetes), so
//! cohort filters and showcase summaries give realistic answers.
//!
//! Generated with a fixed seed by an inlined SplitMix64, not `rand`: the
//! checked-in files must come out identical from any toolchain.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow_array::builder::{
    ArrayBuilder, BooleanBuilder, Date32Builder, Float64Builder, Int32Builder, Int64Builder,
    StringBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use tre_domain::cohort::days_from_civil;

/// SplitMix64 (Steele, Lea, Flood 2014): small, fast, and fixed forever.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    /// Box-Muller.
    fn normal(&mut self, mean: f64, sd: f64) -> f64 {
        let u1 = self.unit().max(f64::MIN_POSITIVE);
        let u2 = self.unit();
        mean + sd * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
    fn weighted<'a>(&mut self, choices: &[(&'a str, f64)]) -> &'a str {
        let total: f64 = choices.iter().map(|c| c.1).sum();
        let mut x = self.unit() * total;
        for (value, weight) in choices {
            if x < *weight {
                return value;
            }
            x -= weight;
        }
        choices[choices.len() - 1].0
    }
}

const CENTRES: [&str; 12] = [
    "Leeds",
    "Manchester",
    "Oxford",
    "Cardiff",
    "Glasgow",
    "Edinburgh",
    "Bristol",
    "Newcastle",
    "Nottingham",
    "Sheffield",
    "Birmingham",
    "Reading",
];

const ETHNICITY: [(&str, f64); 6] = [
    ("White", 94.0),
    ("Asian", 2.0),
    ("Black", 1.6),
    ("Mixed", 0.6),
    ("Chinese", 0.3),
    ("Other", 1.5),
];

/// (ICD-10 code, description, base weight, extra weight for diabetics)
const DIAGNOSES: [(&str, &str, f64, f64); 12] = [
    (
        "E11.9",
        "Type 2 diabetes mellitus without complications",
        1.0,
        12.0,
    ),
    ("I10", "Essential (primary) hypertension", 6.0, 4.0),
    ("I25.1", "Atherosclerotic heart disease", 2.0, 2.0),
    ("J45.9", "Asthma, unspecified", 3.0, 0.0),
    ("K21.9", "Gastro-oesophageal reflux disease", 3.0, 0.5),
    ("M17.1", "Primary gonarthrosis, unilateral", 2.0, 0.5),
    ("C50.9", "Malignant neoplasm of breast", 0.8, 0.0),
    ("C61", "Malignant neoplasm of prostate", 0.8, 0.0),
    ("N18.3", "Chronic kidney disease, stage 3", 0.7, 2.0),
    ("F32.9", "Depressive episode, unspecified", 2.0, 0.5),
    ("S72.0", "Fracture of neck of femur", 0.5, 0.2),
    ("I48", "Atrial fibrillation and flutter", 1.2, 0.6),
];

/// (drug, BNF code, base weight, extra weight for diabetics)
const DRUGS: [(&str, &str, f64, f64); 8] = [
    ("Metformin", "0601022B0", 0.1, 10.0),
    ("Gliclazide", "0601021M0", 0.0, 3.0),
    ("Atorvastatin", "0212000B0", 4.0, 4.0),
    ("Simvastatin", "0212000Y0", 3.0, 2.0),
    ("Amlodipine", "0206020A0", 3.0, 2.0),
    ("Ramipril", "0205051R0", 2.5, 2.5),
    ("Omeprazole", "0103050P0", 4.0, 1.0),
    ("Salbutamol", "0301011R0", 2.5, 0.0),
];

struct Participant {
    id: i64,
    sex: &'static str,
    year_of_birth: i32,
    age: i32,
    recruited: i32,
    bmi: Option<f64>,
    diabetes: bool,
}

fn date(y: i32, m: u32, d: u32) -> i32 {
    days_from_civil(y, m, d)
}

fn write(
    path: &Path,
    schema: Arc<Schema>,
    columns: Vec<ArrayRef>,
    row_group_size: usize,
) -> Result<()> {
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(row_group_size))
        .set_created_by("tre fixtures".into())
        .build();
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut writer = ArrowWriter::try_new(file, schema, Some(props))?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(())
}

/// Rows per row group: small groups for the checked-in fixtures (so tests
/// meet several), at most about eight groups for generated large ones.
fn group_rows(rows: usize, small: usize) -> usize {
    small.max(rows.div_ceil(8))
}

/// The checked-in fixtures' size, seed and file spacing.
pub const PARTICIPANTS: usize = 5000;
pub const SEED: u64 = 20_061_313;
pub const FILES_EVERY: usize = 16;

/// Writes the checked-in fixtures (tables and bulk files) into `out`, as
/// `tre fixtures generate --files-every 16` does; their paths.
pub fn generate_all(out: &Path) -> Result<Vec<PathBuf>> {
    let mut written = generate(out, PARTICIPANTS, SEED)?;
    written.push(generate_files(out, PARTICIPANTS, FILES_EVERY, SEED)?);
    Ok(written)
}

/// A synthetic biobank of `participants` from `seed` into `out`, as `tre
/// fixtures generate` writes it: the tables, bulk files for every
/// `files_every`th participant (0: none) and about `events` primary-care
/// events per participant (0: none); the paths written.
pub fn generate_biobank(
    out: &Path,
    participants: usize,
    seed: u64,
    files_every: usize,
    events: u64,
) -> Result<Vec<PathBuf>> {
    let mut written = generate(out, participants, seed)?;
    if files_every > 0 {
        written.push(generate_files(out, participants, files_every, seed)?);
    }
    if events > 0 {
        written.extend(generate_events(out, participants, events, seed)?);
    }
    Ok(written)
}

/// Writes the fixture files into `out` and returns their paths.
pub fn generate(out: &Path, participants: usize, seed: u64) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut rng = Rng(seed);
    let mut people = Vec::with_capacity(participants);

    let mut id = Int64Builder::new();
    let mut sex = StringBuilder::new();
    let mut yob = Int32Builder::new();
    let mut age = Int32Builder::new();
    let mut ethnicity = StringBuilder::new();
    let mut centre = StringBuilder::new();
    let mut recruited = Date32Builder::new();
    let mut bmi = Float64Builder::new();
    let mut sbp = Int32Builder::new();
    let mut smoking = StringBuilder::new();
    let mut diabetes = BooleanBuilder::new();
    let mut townsend = Float64Builder::new();
    for i in 0..participants {
        let p_sex = if rng.chance(0.544) { "F" } else { "M" };
        let p_recruited =
            rng.range(i64::from(date(2006, 3, 13)), i64::from(date(2010, 10, 1))) as i32;
        let p_age = rng.range(40, 69) as i32;
        let p_yob = 1970 + (f64::from(p_recruited) / 365.2425) as i32 - p_age; // recruitment year minus age
        let p_bmi = if rng.chance(0.02) {
            None
        } else {
            Some(
                (rng.normal(if p_sex == "M" { 27.8 } else { 27.0 }, 4.7)
                    .clamp(14.0, 60.0)
                    * 10.0)
                    .round()
                    / 10.0,
            )
        };
        let risk =
            0.01 + 0.004 * f64::from(p_age - 40) + 0.012 * (p_bmi.unwrap_or(27.0) - 25.0).max(0.0);
        let p_diabetes = rng.chance(risk.min(0.6));
        let person = Participant {
            id: 1_000_001 + i as i64,
            sex: p_sex,
            year_of_birth: p_yob,
            age: p_age,
            recruited: p_recruited,
            bmi: p_bmi,
            diabetes: p_diabetes,
        };
        id.append_value(person.id);
        sex.append_value(person.sex);
        yob.append_value(person.year_of_birth);
        age.append_value(person.age);
        ethnicity.append_value(rng.weighted(&ETHNICITY));
        centre.append_value(CENTRES[rng.below(CENTRES.len() as u64) as usize]);
        recruited.append_value(person.recruited);
        bmi.append_option(person.bmi);
        if rng.chance(0.03) {
            sbp.append_null();
        } else {
            sbp.append_value(
                rng.normal(120.0 + 0.6 * f64::from(p_age - 40), 16.0)
                    .round()
                    .clamp(80.0, 220.0) as i32,
            );
        }
        if rng.chance(0.005) {
            smoking.append_null();
        } else {
            smoking.append_value(rng.weighted(&[
                ("never", 54.0),
                ("previous", 35.0),
                ("current", 11.0),
            ]));
        }
        diabetes.append_value(person.diabetes);
        townsend.append_value((rng.normal(-1.3, 3.1).clamp(-6.3, 11.0) * 100.0).round() / 100.0);
        people.push(person);
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("participant_id", DataType::Int64, false),
        Field::new("sex", DataType::Utf8, false),
        Field::new("year_of_birth", DataType::Int32, false),
        Field::new("age_at_recruitment", DataType::Int32, false),
        Field::new("ethnicity", DataType::Utf8, false),
        Field::new("recruitment_centre", DataType::Utf8, false),
        Field::new("recruitment_date", DataType::Date32, false),
        Field::new("bmi", DataType::Float64, true),
        Field::new("systolic_bp", DataType::Int32, true),
        Field::new("smoking_status", DataType::Utf8, true),
        Field::new("diabetes", DataType::Boolean, false),
        Field::new("townsend_index", DataType::Float64, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(sex.finish()),
        Arc::new(yob.finish()),
        Arc::new(age.finish()),
        Arc::new(ethnicity.finish()),
        Arc::new(centre.finish()),
        Arc::new(recruited.finish()),
        Arc::new(bmi.finish()),
        Arc::new(sbp.finish()),
        Arc::new(smoking.finish()),
        Arc::new(diabetes.finish()),
        Arc::new(townsend.finish()),
    ];
    let mut written = Vec::new();
    let participants_path = out.join("participants.parquet");
    write(
        &participants_path,
        schema,
        columns,
        group_rows(participants, 1024),
    )?;
    written.push(participants_path);

    // Hospital episodes, in two files (a dataset may span several).
    let end = date(2022, 12, 31);
    let episodes_schema = Arc::new(Schema::new(vec![
        Field::new("participant_id", DataType::Int64, false),
        Field::new("episode_id", DataType::Int64, false),
        Field::new("admission_date", DataType::Date32, false),
        Field::new("icd10", DataType::Utf8, false),
        Field::new("diagnosis", DataType::Utf8, false),
        Field::new("length_of_stay_days", DataType::Int32, true),
    ]));
    let mut episode_id = 0i64;
    for (part, chunk) in people.chunks(people.len().div_ceil(2).max(1)).enumerate() {
        let mut pid = Int64Builder::new();
        let mut eid = Int64Builder::new();
        let mut admitted = Date32Builder::new();
        let mut code = StringBuilder::new();
        let mut description = StringBuilder::new();
        let mut stay = Int32Builder::new();
        for person in chunk {
            let n = rng.below(3 + (person.age as u64 - 40) / 8) + u64::from(person.diabetes) * 2;
            for _ in 0..n {
                let weights: Vec<(&str, f64)> = DIAGNOSES
                    .iter()
                    // no breast cancer in men, no prostate cancer in women
                    .filter(|d| !matches!((d.0, person.sex), ("C50.9", "M") | ("C61", "F")))
                    .map(|d| (d.0, d.2 + if person.diabetes { d.3 } else { 0.0 }))
                    .collect();
                let icd = rng.weighted(&weights);
                let diagnosis = DIAGNOSES.iter().find(|d| d.0 == icd).map_or("", |d| d.1);
                episode_id += 1;
                pid.append_value(person.id);
                eid.append_value(episode_id);
                admitted.append_value(
                    rng.range(i64::from(person.recruited) - 3650, i64::from(end)) as i32,
                );
                code.append_value(icd);
                description.append_value(diagnosis);
                if rng.chance(0.05) {
                    stay.append_null();
                } else {
                    stay.append_value(
                        rng.weighted(&[
                            ("0", 50.0),
                            ("1", 20.0),
                            ("3", 15.0),
                            ("7", 10.0),
                            ("21", 5.0),
                        ])
                        .parse::<i32>()?
                            + rng.range(0, 2) as i32,
                    );
                }
            }
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(pid.finish()),
            Arc::new(eid.finish()),
            Arc::new(admitted.finish()),
            Arc::new(code.finish()),
            Arc::new(description.finish()),
            Arc::new(stay.finish()),
        ];
        let path = out.join(format!("hospital_episodes-{part}.parquet"));
        let rows = columns[0].len();
        write(
            &path,
            episodes_schema.clone(),
            columns,
            group_rows(rows, 2048),
        )?;
        written.push(path);
    }

    // Prescriptions.
    let mut pid = Int64Builder::new();
    let mut issued = Date32Builder::new();
    let mut drug = StringBuilder::new();
    let mut bnf = StringBuilder::new();
    let mut quantity = Int32Builder::new();
    for person in &people {
        let n = rng.below(4) + u64::from(person.diabetes) * 3 + (person.age as u64 - 40) / 15;
        for _ in 0..n {
            let weights: Vec<(&str, f64)> = DRUGS
                .iter()
                .map(|d| (d.0, d.2 + if person.diabetes { d.3 } else { 0.0 }))
                .collect();
            let name = rng.weighted(&weights);
            let code = DRUGS.iter().find(|d| d.0 == name).map_or("", |d| d.1);
            pid.append_value(person.id);
            issued.append_value(rng.range(i64::from(person.recruited), i64::from(end)) as i32);
            drug.append_value(name);
            bnf.append_value(code);
            quantity.append_value([28, 56, 84][rng.below(3) as usize]);
        }
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("participant_id", DataType::Int64, false),
        Field::new("issue_date", DataType::Date32, false),
        Field::new("drug", DataType::Utf8, false),
        Field::new("bnf_code", DataType::Utf8, false),
        Field::new("quantity", DataType::Int32, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(pid.finish()),
        Arc::new(issued.finish()),
        Arc::new(drug.finish()),
        Arc::new(bnf.finish()),
        Arc::new(quantity.finish()),
    ];
    let path = out.join("prescriptions.parquet");
    let rows = columns[0].len();
    write(&path, schema, columns, group_rows(rows, 4096))?;
    written.push(path);
    Ok(written)
}

/// A measurement's unit and range of values.
type Measure = (&'static str, f64, f64);

/// (Read v2 code, measurement unit and its normal range, or none for a
/// coded event without a value, weight)
const GP_CODES: [(&str, Option<Measure>, f64); 12] = [
    ("246..", Some(("mmHg", 110.0, 160.0)), 8.0),
    ("22K..", Some(("kg/m2", 19.0, 38.0)), 4.0),
    ("44J3.", Some(("umol/L", 55.0, 130.0)), 5.0),
    ("42W5.", Some(("mmol/mol", 30.0, 75.0)), 3.0),
    ("44P..", Some(("mmol/L", 3.0, 7.5)), 4.0),
    ("137R.", None, 2.0),
    ("1371.", None, 2.0),
    ("G20..", None, 1.5),
    ("C10F.", None, 1.0),
    ("H33..", None, 1.0),
    ("9N1y.", None, 6.0),
    ("8B3S.", None, 3.0),
];

const PROVIDERS: [&str; 4] = ["England (Vision)", "England (TPP)", "Scotland", "Wales"];

/// Participants per GP events file.
const EVENT_FILE_PARTICIPANTS: usize = 250_000;
/// Rows per record batch handed to the writer (the generator never holds
/// more than this).
const EVENT_BATCH_ROWS: usize = 64 * 1024;

/// Writes `gp_events-NNN.parquet` files: primary-care events (a Read v2
/// code, a date, a value for measurements) for participants `1_000_001..`,
/// `per_participant` events each on average, sorted by participant as
/// extracts come, 250,000 participants per file and 1M-row row groups.
/// Streams: memory stays flat however many rows. Files are written on two
/// threads, each from its own seed, so the output does not depend on the
/// thread count.
pub fn generate_events(
    out: &Path,
    participants: usize,
    per_participant: u64,
    seed: u64,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let files = participants.div_ceil(EVENT_FILE_PARTICIPANTS);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let written = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    loop {
                        let file = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if file >= files {
                            return Ok(());
                        }
                        let first = file * EVENT_FILE_PARTICIPANTS;
                        let last = (first + EVENT_FILE_PARTICIPANTS).min(participants);
                        let path = out.join(format!("gp_events-{file:03}.parquet"));
                        events_file(&path, first..last, per_participant, seed ^ file as u64)?;
                        written.lock().expect("not poisoned").push(path);
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("generator thread")?;
        }
        Ok(())
    })?;
    let mut written = written.into_inner().expect("not poisoned");
    written.sort();
    Ok(written)
}

#[derive(Default)]
struct EventColumns {
    pid: Int64Builder,
    eid: Int64Builder,
    day: Date32Builder,
    code: StringBuilder,
    value: Float64Builder,
    unit: StringBuilder,
    provider: StringBuilder,
}

impl EventColumns {
    fn finish(&mut self, schema: &Arc<Schema>) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.pid.finish()),
            Arc::new(self.eid.finish()),
            Arc::new(self.day.finish()),
            Arc::new(self.code.finish()),
            Arc::new(self.value.finish()),
            Arc::new(self.unit.finish()),
            Arc::new(self.provider.finish()),
        ];
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }
}

fn events_file(
    path: &Path,
    people: std::ops::Range<usize>,
    per_participant: u64,
    seed: u64,
) -> Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("participant_id", DataType::Int64, false),
        Field::new("event_id", DataType::Int64, false),
        Field::new("event_date", DataType::Date32, false),
        Field::new("code", DataType::Utf8, false),
        Field::new("value", DataType::Float64, true),
        Field::new("unit", DataType::Utf8, true),
        Field::new("provider", DataType::Utf8, false),
    ]));
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(1024 * 1024))
        .set_created_by("tre fixtures".into())
        .build();
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(props))?;
    let mut rng = Rng(seed);
    let weights: Vec<(&str, f64)> = GP_CODES.iter().map(|c| (c.0, c.2)).collect();
    let (start, end) = (i64::from(date(1990, 1, 1)), i64::from(date(2022, 12, 31)));
    let mut b = EventColumns::default();
    for i in people {
        let id = 1_000_001 + i as i64;
        let from = PROVIDERS[rng.below(PROVIDERS.len() as u64) as usize];
        let n = rng.below(2 * per_participant + 1);
        for j in 0..n {
            let c = rng.weighted(&weights);
            let measured = GP_CODES.iter().find(|g| g.0 == c).and_then(|g| g.1);
            b.pid.append_value(id);
            b.eid.append_value(id * 1000 + j as i64);
            b.day.append_value(rng.range(start, end) as i32);
            b.code.append_value(c);
            match measured {
                Some((u, lo, hi)) => {
                    let tenths = rng.range((lo * 10.0) as i64, (hi * 10.0) as i64);
                    b.value.append_value(tenths as f64 / 10.0);
                    b.unit.append_value(u);
                }
                None => {
                    b.value.append_null();
                    b.unit.append_null();
                }
            }
            b.provider.append_value(from);
            if b.pid.len() == EVENT_BATCH_ROWS {
                writer.write(&b.finish(&schema)?)?;
            }
        }
    }
    writer.write(&b.finish(&schema)?)?;
    writer.close()?;
    Ok(())
}

/// Bulk files for the synthetic biobank: a resting ECG export (small
/// synthetic XML) for every `every`-th participant, under
/// `files/ecg/{participant_id}_20205_2_0.xml` (the file name carries the
/// participant id, as UK Biobank's bulk files do), and the file inventory
/// `files.tsv` that registers them (without checksums: the check job
/// computes them). Contents never hold the id: tre copies files byte for
/// byte (their checksums are checked) and rewrites only names, so keeping
/// identifiers out of contents is the custodian's part. Returns the
/// inventory's path.
pub fn generate_files(out: &Path, participants: usize, every: usize, seed: u64) -> Result<PathBuf> {
    let folder = out.join("files/ecg");
    std::fs::create_dir_all(&folder)
        .with_context(|| format!("cannot create {}", folder.display()))?;
    let mut rng = Rng(seed ^ 0xEC6);
    let mut tsv = String::from("entity\tcollection\tlocation\tsize\n");
    for i in (0..participants).step_by(every.max(1)) {
        let id = 1_000_001 + i as i64;
        let rate = rng.range(52, 96);
        let leads: String = [
            "I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6",
        ]
        .iter()
        .map(|lead| {
            let samples: Vec<String> = (0..12).map(|_| rng.range(-900, 1500).to_string()).collect();
            format!(
                "    <Lead name=\"{lead}\" units=\"uV\">{}</Lead>\n",
                samples.join(" ")
            )
        })
        .collect();
        let body = format!(
            "<?xml version=\"1.0\"?>\n<RestingECG synthetic=\"true\">\n  <VentricularRate>{rate}</VentricularRate>\n  <Waveform>\n{leads}  </Waveform>\n</RestingECG>\n"
        );
        let name = format!("{id}_20205_2_0.xml");
        std::fs::write(folder.join(&name), &body)?;
        tsv.push_str(&format!("{id}\tecg\tfiles/ecg/{name}\t{}\n", body.len()));
    }
    let path = out.join("files.tsv");
    std::fs::write(&path, tsv)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_fixed() {
        let mut rng = Rng(42);
        // SplitMix64's published sequence for seed 42
        assert_eq!(rng.next_u64(), 0xBDD7_3226_2FEB_6E95);
        let mut a = Rng(7);
        let mut b = Rng(7);
        assert!((0..1000).all(|_| a.next_u64() == b.next_u64()));
    }

    #[test]
    fn generation_is_deterministic() {
        let base = std::env::temp_dir().join(format!("tre-fixtures-{}", std::process::id()));
        let one = generate(&base.join("a"), 300, 42).unwrap();
        let two = generate(&base.join("b"), 300, 42).unwrap();
        assert_eq!(one.len(), 4);
        for (x, y) in one.iter().zip(&two) {
            assert_eq!(
                std::fs::read(x).unwrap(),
                std::fs::read(y).unwrap(),
                "{}",
                x.display()
            );
        }
        std::fs::remove_dir_all(base).unwrap();
    }
}
