//! What the whole system holds, for dashboards and alerts: projects by
//! state, the data dispensed so far, and how far the audit sealer is
//! behind. Read from SQL (the truth), so every API replica reports the same.

use std::collections::BTreeMap;
use std::fmt::Write;

use sqlx::Row;
use tre_domain::{ProjectState, Timestamp};

use crate::{Store, StoreError};

/// A snapshot of the system's gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemGauges {
    /// Projects in each state (every state present, zero when none).
    pub projects: BTreeMap<&'static str, i64>,
    /// Dispense units done, over all projects so far.
    pub units_done: i64,
    /// Bytes those units wrote.
    pub bytes_dispensed: i64,
    /// Audit events committed but not yet sealed into the chain.
    pub audit_pending: i64,
    /// Milliseconds since the oldest of those committed (0 when none).
    pub audit_lag_ms: i64,
    /// Projects still dispensing whose units were all done over
    /// [`STALL_AFTER_MS`] ago, with no manifest: their finish never ran.
    pub dispense_stalled: i64,
}

/// How long after its last unit a dispensing project must have finished.
pub const STALL_AFTER_MS: i64 = 10 * 60 * 1000;

impl SystemGauges {
    /// The Prometheus exposition text.
    pub fn to_prometheus(&self) -> String {
        let mut out =
            String::from("# HELP tre_projects Projects by state.\n# TYPE tre_projects gauge\n");
        for (state, n) in &self.projects {
            let _ = writeln!(out, "tre_projects{{state=\"{state}\"}} {n}");
        }
        let _ = write!(
            out,
            "# HELP tre_dispense_units_done_total Dispense units done, over all projects.\n\
             # TYPE tre_dispense_units_done_total counter\n\
             tre_dispense_units_done_total {}\n\
             # HELP tre_dispense_bytes_total Bytes written into projects by dispensing.\n\
             # TYPE tre_dispense_bytes_total counter\n\
             tre_dispense_bytes_total {}\n\
             # HELP tre_audit_pending_events Audit events committed, not yet sealed into the chain.\n\
             # TYPE tre_audit_pending_events gauge\n\
             tre_audit_pending_events {}\n\
             # HELP tre_audit_sealing_lag_seconds Age of the oldest audit event not yet sealed.\n\
             # TYPE tre_audit_sealing_lag_seconds gauge\n\
             tre_audit_sealing_lag_seconds {}\n\
             # HELP tre_dispense_stalled_projects Projects dispensing whose units were all done over 10 minutes ago, not finished.\n\
             # TYPE tre_dispense_stalled_projects gauge\n\
             tre_dispense_stalled_projects {}\n",
            self.units_done,
            self.bytes_dispensed,
            self.audit_pending,
            self.audit_lag_ms as f64 / 1000.0,
            self.dispense_stalled,
        );
        out
    }
}

impl Store {
    /// The system's gauges as of `now`.
    pub async fn gauges(&self, now: Timestamp) -> Result<SystemGauges, StoreError> {
        let mut gauges = SystemGauges {
            projects: ProjectState::ALL.iter().map(|s| (s.as_str(), 0)).collect(),
            ..SystemGauges::default()
        };
        let rows = sqlx::query("SELECT state, COUNT(*) FROM projects GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        for row in rows {
            let state: String = row.try_get(0)?;
            let state = ProjectState::parse(&state).ok_or_else(|| StoreError::Corrupt {
                object: "project state",
                id: state.clone(),
                message: "not a project state".into(),
            })?;
            gauges.projects.insert(state.as_str(), row.try_get(1)?);
        }
        let row = sqlx::query(
            "SELECT COUNT(*), CAST(COALESCE(SUM(bytes), 0) AS BIGINT) FROM dispense_units WHERE done_at IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        gauges.units_done = row.try_get(0)?;
        gauges.bytes_dispensed = row.try_get(1)?;
        let row = sqlx::query("SELECT COUNT(*), COALESCE(MIN(at), 0) FROM audit_pending")
            .fetch_one(&self.pool)
            .await?;
        gauges.audit_pending = row.try_get(0)?;
        let oldest: i64 = row.try_get(1)?;
        if gauges.audit_pending > 0 {
            gauges.audit_lag_ms = (now.0 - oldest).max(0);
        }
        let row = sqlx::query(
            "SELECT COUNT(*) FROM dispense_plans d JOIN projects p ON p.id = d.project_id \
             WHERE p.state = 'dispensing' AND d.manifest IS NULL AND d.units_done >= d.units_total \
             AND (SELECT MAX(u.done_at) FROM dispense_units u WHERE u.project_id = d.project_id) < $1",
        )
        .bind(now.0 - STALL_AFTER_MS)
        .fetch_one(&self.pool)
        .await?;
        gauges.dispense_stalled = row.try_get(0)?;
        Ok(gauges)
    }
}
