//! Notifications: every one goes to the recipient's inbox in SQL (their
//! review queue, for reviewers); with an SMTP server configured, also by
//! email to recipients who have an address; with a webhook configured, each
//! event is also POSTed as JSON, signed with HMAC-SHA256. Every attempt to
//! reach an outside channel is logged, and one that succeeded is never
//! repeated by a retried job.
//!
//! Webhook requests carry:
//! - `X-Tre-Event`: e.g. `review_requested`;
//! - `X-Tre-Delivery`: the delivery key (stable across retries: receivers
//!   deduplicate on it);
//! - `X-Tre-Timestamp`: seconds since the epoch;
//! - `X-Tre-Signature`: `sha256=` + hex HMAC-SHA256 of
//!   `"{timestamp}.{body}"` under the shared secret.

use std::time::Duration;
use tre_jobs::ClaimedJob;

use hmac::{Hmac, KeyInit, Mac};
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde_json::json;
use sha2::Sha256;
use tracing::info;
use tre_app::{App, System};
use tre_domain::redact::{redact_url, url_origin};
use tre_domain::{
    AccessRequest, AdminAlert, Environment, EnvironmentId, RequestId, RequestState, ReviewStage,
    UserId,
};
use tre_jobs::JobError;
use tre_store::{Delivery, Notification, Store, now};

/// Where webhooks go. Every field documents its default. `Debug` shows
/// neither the secret nor more of the url than where it points.
#[derive(Clone)]
pub struct WebhookConfig {
    /// `http(s)://...`; no default (no webhooks).
    pub url: String,
    /// The HMAC key shared with the receiver; no default.
    pub secret: tre_domain::redact::Secret,
    /// Per request. Default: 10 s.
    pub timeout: Duration,
}

/// Where email goes. Every field documents its default. `Debug` hides the
/// url's password.
#[derive(Clone)]
pub struct EmailConfig {
    /// `smtp://host:port` (plain, for a local relay), `smtp://host:587?tls=required`
    /// (STARTTLS) or `smtps://host:465`, with optional `user:password@`. No default.
    pub url: String,
    /// The sender, e.g. `Biobank TRE <tre@biobank.example>`. No default.
    pub from: String,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &url_origin(&self.url))
            .field("secret", &self.secret)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl std::fmt::Debug for EmailConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailConfig")
            .field("url", &redact_url(&self.url))
            .field("from", &self.from)
            .finish()
    }
}

struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    target: String,
}

impl std::fmt::Debug for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Email")
            .field("target", &self.target)
            .field("from", &self.from)
            .finish()
    }
}

/// What a notification says.
struct Message<'a> {
    kind: &'a str,
    subject: &'a str,
    body: &'a str,
}

/// Sends notifications to inboxes and the webhook.
#[derive(Debug, Clone)]
pub struct Notifier {
    webhook: Option<WebhookConfig>,
    http: reqwest::Client,
    email: Option<std::sync::Arc<Email>>,
}

/// `sha256=` + hex HMAC-SHA256 of `"{timestamp}.{body}"`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any size");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The request, its environment and the stage, while `stage` of `round` is
/// the one open for decisions; `None` once it has closed.
async fn open_stage(
    app: &App,
    system: &System,
    request_id: &RequestId,
    round: u32,
    stage: usize,
) -> Result<Option<(AccessRequest, Environment, ReviewStage)>, JobError> {
    let request = app.request(system, request_id).await?;
    if request.round != round || request.state != (RequestState::InReview { stage }) {
        return Ok(None);
    }
    let env = app.environment(system, &request.environment_id).await?;
    let pipeline_stage =
        env.pipeline.stages.get(stage).cloned().ok_or_else(|| {
            JobError::Permanent(format!("the pipeline has no stage {}", stage + 1))
        })?;
    Ok(Some((request, env, pipeline_stage)))
}

impl Notifier {
    pub fn new(webhook: Option<WebhookConfig>) -> Self {
        // One process-wide TLS provider (ring); a second install is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let timeout = webhook
            .as_ref()
            .map_or(Duration::from_secs(10), |w| w.timeout);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("tre/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client with default settings builds");
        Self {
            webhook,
            http,
            email: None,
        }
    }

    /// Also sends email through an SMTP server. Fails on a malformed URL or
    /// sender (checked at start-up, not at the first notification).
    pub fn with_email(mut self, config: &EmailConfig) -> Result<Self, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&config.url)
            .map_err(|e| format!("smtp_url: {e}"))?
            .timeout(Some(Duration::from_secs(15)))
            .build();
        let from: Mailbox = config.from.parse().map_err(|e| format!("smtp_from: {e}"))?;
        let target = config
            .url
            .rsplit('@')
            .next()
            .unwrap_or(&config.url)
            .to_owned();
        self.email = Some(std::sync::Arc::new(Email {
            transport,
            from,
            target,
        }));
        Ok(self)
    }

    /// Emails one recipient once: a delivery that already succeeded is skipped.
    async fn email(
        &self,
        store: &Store,
        job: &ClaimedJob,
        user: &UserId,
        message: &Message<'_>,
    ) -> Result<(), JobError> {
        let Some(email) = &self.email else {
            return Ok(());
        };
        let Some(address) = store.user(user.as_str()).await?.and_then(|u| u.email) else {
            return Ok(());
        };
        let key = format!("{}:{user}:email", job.key);
        if store.was_delivered(&key).await? {
            return Ok(());
        }
        let to: Mailbox = match address.parse() {
            Ok(to) => to,
            Err(e) => {
                return Err(JobError::Permanent(format!(
                    "address of {user} is invalid: {e}"
                )));
            }
        };
        let mail = lettre::Message::builder()
            .from(email.from.clone())
            .to(to)
            .subject(message.subject)
            .header(lettre::message::header::ContentType::TEXT_PLAIN)
            .body(format!(
                "{}\n\n-- \nThis message was sent by tre. Delivery {key}.\n",
                message.body
            ))
            .map_err(|e| JobError::Permanent(format!("cannot build the email: {e}")))?;
        let sent = email.transport.send(mail).await;
        let (status, detail, error) = match sent {
            Ok(response) => ("delivered", format!("{:?}", response.code()), None),
            Err(e) => {
                let message = format!("smtp {}: {e}", email.target);
                let error = if e.is_permanent() {
                    JobError::Permanent(message)
                } else {
                    JobError::Transient(message)
                };
                ("failed", e.to_string(), Some(error))
            }
        };
        store
            .record_delivery(&Delivery {
                key,
                attempt: 0,
                channel: "email".into(),
                target: address,
                status: status.into(),
                detail,
                at: now().0,
            })
            .await?;
        error.map_or(Ok(()), Err)
    }

    async fn inbox(
        &self,
        store: &Store,
        job: &ClaimedJob,
        users: &[UserId],
        request: Option<&RequestId>,
        message: Message<'_>,
    ) -> Result<(), JobError> {
        for user in users {
            store
                .add_notification(&Notification {
                    key: format!("{}:{user}", job.key),
                    user_id: user.clone(),
                    kind: message.kind.to_owned(),
                    request_id: request.map(ToString::to_string),
                    subject: message.subject.to_owned(),
                    body: message.body.to_owned(),
                    created_at: now().0,
                    read_at: None,
                })
                .await?;
            self.email(store, job, user, &message).await?;
        }
        Ok(())
    }

    /// POSTs one event, once: a delivery that already succeeded is skipped.
    async fn webhook(
        &self,
        store: &Store,
        job: &ClaimedJob,
        event: &str,
        data: serde_json::Value,
    ) -> Result<(), JobError> {
        let Some(hook) = &self.webhook else {
            return Ok(());
        };
        let key = format!("{}:webhook", job.key);
        if store.was_delivered(&key).await? {
            return Ok(());
        }
        let body = serde_json::to_vec(&json!({"event": event, "delivery": key, "data": data}))
            .expect("json");
        let timestamp = now().0 / 1000;
        let sent = self
            .http
            .post(&hook.url)
            .header("content-type", "application/json")
            .header("x-tre-event", event)
            .header("x-tre-delivery", &key)
            .header("x-tre-timestamp", timestamp.to_string())
            .header(
                "x-tre-signature",
                signature(hook.secret.expose(), timestamp, &body),
            )
            .body(body)
            .send()
            .await;
        let (status, detail, error) = match sent {
            Ok(response) if response.status().is_success() => {
                ("delivered", response.status().to_string(), None)
            }
            Ok(response) => {
                let code = response.status();
                let detail = code.to_string();
                // a receiver that refuses the request will refuse it again
                let permanent =
                    code.is_client_error() && code.as_u16() != 408 && code.as_u16() != 429;
                let message = format!("webhook {} answered {code}", url_origin(&hook.url));
                let error = if permanent {
                    JobError::Permanent(message)
                } else {
                    JobError::Transient(message)
                };
                ("failed", detail, Some(error))
            }
            Err(e) => {
                // reqwest's message names the whole url: never shown
                let e = e.without_url();
                (
                    "failed",
                    e.to_string(),
                    Some(JobError::Transient(format!(
                        "webhook {}: {e}",
                        url_origin(&hook.url)
                    ))),
                )
            }
        };
        store
            .record_delivery(&Delivery {
                key,
                attempt: 0,
                channel: "webhook".into(),
                target: url_origin(&hook.url),
                status: status.into(),
                detail,
                at: now().0,
            })
            .await?;
        match error {
            None => {
                info!(event, "webhook delivered");
                Ok(())
            }
            Some(e) => Err(e),
        }
    }

    /// Asks the reviewers of a stage to review; alerts admins when the stage
    /// has nobody who may decide it.
    pub async fn reviewers(
        &self,
        app: &App,
        job: &ClaimedJob,
        request_id: &RequestId,
        round: u32,
        stage: usize,
    ) -> Result<(), JobError> {
        let (store, system) = (app.store(), System::new(&job.key));
        // a stage that closed before we got here: nothing to ask
        let Some((request, env, pipeline_stage)) =
            open_stage(app, &system, request_id, round, stage).await?
        else {
            return Ok(());
        };
        let pipeline_stage = &pipeline_stage;
        let reviewers: Vec<UserId> = pipeline_stage
            .reviewers
            .iter()
            .filter(|r| !request.is_requester(r))
            .cloned()
            .collect();
        let needed = pipeline_stage.approvals_needed();
        if reviewers.len() < needed || reviewers.is_empty() {
            let admins: Vec<UserId> = env.admins.iter().cloned().collect();
            let subject = format!("Review stage {:?} is blocked", pipeline_stage.name);
            let body = format!(
                "Request {:?} waits at stage {:?}, which needs {needed} approval(s) but has {} eligible reviewer(s). Assign reviewers to unblock it.",
                request.title,
                pipeline_stage.name,
                reviewers.len()
            );
            let message = Message {
                kind: "stage_blocked",
                subject: &subject,
                body: &body,
            };
            self.inbox(store, job, &admins, Some(&request.id), message)
                .await?;
            return self
                .webhook(
                    store,
                    job,
                    "stage_blocked",
                    json!({"request": request.id, "stage": pipeline_stage.id, "admins": admins}),
                )
                .await;
        }
        let subject = format!("Review requested: {}", request.title);
        let body = format!(
            "Request {} is waiting for your decision at stage {} ({}), round {round}.",
            request.id,
            stage + 1,
            pipeline_stage.name
        );
        let message = Message {
            kind: "review_requested",
            subject: &subject,
            body: &body,
        };
        self.inbox(store, job, &reviewers, Some(&request.id), message)
            .await?;
        self.webhook(
            store,
            job,
            "review_requested",
            json!({"request": request.id, "environment": env.id, "round": round, "stage": pipeline_stage.id, "reviewers": reviewers}),
        )
        .await
    }

    /// Reminds the stage's reviewers who have not decided yet, if the stage
    /// is still open (the review SLA has passed).
    pub async fn remind(
        &self,
        app: &App,
        job: &ClaimedJob,
        request_id: &RequestId,
        round: u32,
        stage: usize,
    ) -> Result<(), JobError> {
        let (store, system) = (app.store(), System::new(&job.key));
        // a stage decided in time: nobody to remind
        let Some((request, env, pipeline_stage)) =
            open_stage(app, &system, request_id, round, stage).await?
        else {
            return Ok(());
        };
        let decided: Vec<UserId> = app
            .decisions(&system, request_id)
            .await?
            .into_iter()
            .filter(|d| d.round == round && d.stage == stage)
            .map(|d| d.reviewer)
            .collect();
        let waiting: Vec<UserId> = pipeline_stage
            .reviewers
            .iter()
            .filter(|r| !request.is_requester(r) && !decided.contains(r))
            .cloned()
            .collect();
        let hours = env.policies.review_sla_hours.unwrap_or(0);
        let subject = format!(
            "Reminder: review waiting for {hours} hours: {}",
            request.title
        );
        let body = format!(
            "Request {} has waited at stage {} ({}) longer than the environment's review time of {hours} hours.",
            request.id,
            stage + 1,
            pipeline_stage.name
        );
        let message = Message {
            kind: "review_reminder",
            subject: &subject,
            body: &body,
        };
        self.inbox(store, job, &waiting, Some(&request.id), message)
            .await?;
        self.webhook(
            store,
            job,
            "review_reminder",
            json!({"request": request.id, "round": round, "stage": pipeline_stage.id, "reviewers": waiting}),
        )
        .await
    }

    /// Tells an environment's admins about something that needs them.
    pub async fn admins(
        &self,
        app: &App,
        job: &ClaimedJob,
        environment: &EnvironmentId,
        alert: &AdminAlert,
    ) -> Result<(), JobError> {
        let store = app.store();
        let env = app.environment(&System::new(&job.key), environment).await?;
        // the admin who made a change is not told of it
        let admins: Vec<UserId> = env
            .admins
            .iter()
            .filter(|a| !matches!(alert, AdminAlert::PoliciesLoosened { by, .. } if by == *a))
            .cloned()
            .collect();
        let (kind, subject, body, request) = match alert {
            AdminAlert::OwnerRemoved { request, owner } => (
                "owner_removed",
                format!("The owner of an approved request left {:?}", env.name),
                format!(
                    "{owner} owns approved request {request} but is no longer an authorized user of the environment: they cannot create or use its project. Revoke the request if its access should end."
                ),
                Some(request),
            ),
            AdminAlert::ReviewersChanged {
                stage_id,
                added,
                removed,
                waiting,
                ..
            } => {
                let names = |users: &std::collections::BTreeSet<UserId>| {
                    let names: Vec<&str> = users.iter().map(UserId::as_str).collect();
                    if names.is_empty() {
                        "nobody".to_owned()
                    } else {
                        names.join(", ")
                    }
                };
                (
                    "reviewers_changed",
                    format!("Reviewers of stage {stage_id:?} changed in {:?}", env.name),
                    format!(
                        "While {waiting} request(s) wait at stage {stage_id:?}, its reviewers changed: added {}, removed {}.",
                        names(added),
                        names(removed)
                    ),
                    None,
                )
            }
            AdminAlert::ReviewerDisabled { reviewer, stages } => {
                let waiting: Vec<String> = stages
                    .iter()
                    .map(|(stage, n)| format!("{stage:?} ({n} waiting)"))
                    .collect();
                (
                    "reviewer_disabled",
                    format!("A reviewer was disabled in {:?}", env.name),
                    format!(
                        "{reviewer} was disabled and can no longer decide at stage(s) {}. Change the stages' reviewers so requests do not wait for them.",
                        waiting.join(", ")
                    ),
                    None,
                )
            }
            AdminAlert::PoliciesLoosened { by, loosened } => {
                let changes: Vec<String> = loosened
                    .iter()
                    .map(|l| format!("{} {} -> {}", l.policy, l.from, l.to))
                    .collect();
                (
                    "policies_loosened",
                    format!("Policies of {:?} were loosened", env.name),
                    format!(
                        "{by} changed the environment's policies so that it protects less: {}. If this was not agreed, set them back (PATCH /v1/environments/{}/policies) and review the audit log.",
                        changes.join("; "),
                        env.id
                    ),
                    None,
                )
            }
            AdminAlert::ShowcaseFailed { version, reason } => (
                "showcase_failed",
                format!("The showcase of {:?} could not be computed", env.name),
                format!(
                    "The showcase of inventory version {version} could not be computed: {reason}. Members see no showcase and cannot use the cohort builder. Put the source right (`tre env check {}`), then have an operator retry the dead compute_showcase job (`tre jobs retry`).",
                    env.id
                ),
                None,
            ),
            AdminAlert::FilesRejected {
                file_inventory,
                reason,
            } => (
                "files_rejected",
                format!("A file inventory of {:?} was rejected", env.name),
                format!(
                    "File inventory {file_inventory} was checked against the source and rejected; nothing of it was kept: {reason}. Put it right and upload it again (`tre env files {}`).",
                    env.id
                ),
                None,
            ),
            AdminAlert::StageOutOfReach {
                request, stage_id, ..
            } => (
                "stage_out_of_reach",
                format!("A review stage cannot pass in {:?}", env.name),
                format!(
                    "Request {request} was returned to its owner at stage {stage_id:?}: too few of the stage's reviewers may decide it (they own or collaborate on it, or were removed) for its rule to pass. Add reviewers to the stage before it is submitted again."
                ),
                Some(request),
            ),
        };
        let message = Message {
            kind,
            subject: &subject,
            body: &body,
        };
        self.inbox(store, job, &admins, request, message).await?;
        self.webhook(
            store,
            job,
            kind,
            json!({"environment": environment, "alert": alert, "admins": admins}),
        )
        .await
    }

    /// Tells owner and collaborators how a round ended.
    pub async fn owner(
        &self,
        app: &App,
        job: &ClaimedJob,
        request_id: &RequestId,
        round: u32,
        outcome: &str,
    ) -> Result<(), JobError> {
        let store = app.store();
        let system = System::new(&job.key);
        let request = app.request(&system, request_id).await?;
        let mut people: Vec<UserId> = vec![request.owner.clone()];
        people.extend(request.collaborators.iter().cloned());
        let subject = match outcome {
            "cohort_too_small" => format!("Your request's cohort is too small: {}", request.title),
            "cohort_not_counted" => {
                format!(
                    "Your request's cohort could not be counted: {}",
                    request.title
                )
            }
            _ => format!("Your request was {outcome}: {}", request.title),
        };
        let body = match outcome {
            "returned" => {
                "The reviewers returned it for revision; see its history for their comments."
                    .to_owned()
            }
            "approved" => "You may now create the project.".to_owned(),
            "cohort_too_small" => {
                let minimum = app
                    .environment(&system, &request.environment_id)
                    .await?
                    .policies
                    .min_cohort_size;
                format!(
                    "It selects fewer participants than the environment's minimum of {minimum}, so no reviewer has seen it. Widen the cohort and submit it again."
                )
            }
            "cohort_not_counted" => "It could not be counted, so no reviewer has seen it; see its history for the reason, and ask the environment's admins if it persists.".to_owned(),
            _ => "See its history for the reviewers' comments.".to_owned(),
        };
        let kind = format!("request_{outcome}");
        let message = Message {
            kind: &kind,
            subject: &subject,
            body: &body,
        };
        self.inbox(store, job, &people, Some(&request.id), message)
            .await?;
        self.webhook(
            store,
            job,
            &format!("request_{outcome}"),
            json!({"request": request.id, "round": round, "outcome": outcome, "recipients": people}),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_and_body() {
        // expected values from Python's hmac module; the first is RFC 4231 case 2
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            signature("Jefe", 1_700_000_000, b"what do ya want for nothing?"),
            "sha256=1cdd0650c8be1cb0974b1788d458b1e781206cfef59b85faafc582d2e182c57e"
        );
        assert_ne!(
            signature("other", 1_700_000_000, b"what do ya want for nothing?"),
            signature("Jefe", 1_700_000_000, b"what do ya want for nothing?")
        );
    }
}
