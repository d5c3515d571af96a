//! What an environment's admins see of the projects made from it: state,
//! dispense progress, why a dispense failed, and who has access to what
//! until when; never the data, its manifest or its objects.

use tre_domain::{Action, EnvironmentId};
use tre_store::{Page, ProjectGrant, ProjectOverview, StoreError};

use crate::project_data::may;
use crate::{App, Caller};

impl App {
    /// The projects made from environment `id`, for its admins (anyone
    /// else is refused as for configuring it), in id order after `after`.
    pub async fn environment_projects(
        &self,
        caller: &Caller,
        id: &EnvironmentId,
        after: &str,
        limit: usize,
    ) -> Result<Page<ProjectOverview>, StoreError> {
        let (env, _) = self
            .environment_for(caller, id, Action::ConfigureEnvironment)
            .await?;
        let rows = self
            .store
            .environment_project_rows(id, after, limit)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for (project, request) in rows {
            may(caller, Action::OverseeProject, &env, &project)?;
            let progress = self.store.dispense_progress(&project.id).await?;
            out.push(ProjectOverview {
                access: ProjectGrant {
                    request_title: request.title,
                    collections: request.collections.into_iter().collect(),
                    expires_at: request.expires_at,
                },
                project,
                progress,
            });
        }
        Ok(Page::cut(out, limit, |p| p.project.id.to_string()))
    }
}
