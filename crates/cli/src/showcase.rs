//! `tre showcase ENV_ID --as USER`: the data showcase as a person reads it,
//! the released numbers only (what `GET /v1/environments/{id}/showcase`
//! answers), one table per field.

use anyhow::Result;
use tre_app::App;
use tre_domain::EnvironmentId;
use tre_domain::disclosure::{DisclosureRules, Released};
use tre_store::{ShowcaseView, Store};

use crate::{Acting, caller, explain};

pub async fn print(store: &Store, id: String, acting: &Acting) -> Result<()> {
    let caller = caller(store, acting).await?;
    let id = EnvironmentId(id);
    let app = App::new(store.clone());
    let env = app
        .showcase_environment(&caller, &id)
        .await
        .map_err(explain)?;
    let view = app
        .released_showcase(&env, &caller.actor.id)
        .await
        .map_err(explain)?;
    print!(
        "{}",
        table(&env.name, &view, &DisclosureRules::of(&env.policies))
    );
    Ok(())
}

fn count(r: &Released) -> String {
    r.count
        .map_or_else(|| "suppressed".to_owned(), |n| n.to_string())
}

/// The showcase as text.
pub fn table(name: &str, view: &ShowcaseView, rules: &DisclosureRules) -> String {
    let mut out = format!(
        "{name}: showcase of inventory version {}{}\n",
        view.showcase
            .as_ref()
            .map_or(view.current_version, |s| s.version),
        if view.computing {
            format!(" (version {} is being computed)", view.current_version)
        } else {
            String::new()
        }
    );
    if let Some(reason) = &view.failed {
        out.push_str(&format!(
            "version {} could not be computed: {reason}\n",
            view.current_version
        ));
    }
    let Some(showcase) = &view.showcase else {
        if view.computing {
            out.push_str("no showcase yet: it is being computed\n");
        }
        return out;
    };
    out.push_str(&format!(
        "counts perturbed and rounded to {}; cells under {} suppressed\nparticipants: {}\n",
        rules.rounding_base,
        rules.min_cell_size,
        count(&showcase.participants)
    ));
    for field in &showcase.fields {
        out.push_str(&format!(
            "\n{}.{} ({}): {} with a value, {} missing\n",
            field.dataset,
            field.field,
            field.field_type.as_str(),
            count(&field.present),
            count(&field.missing)
        ));
        let width = field.cells.iter().map(|c| c.label.len()).max().unwrap_or(0);
        for cell in &field.cells {
            out.push_str(&format!(
                "  {:<width$}  {:>10}\n",
                cell.label,
                count(&cell.count)
            ));
        }
    }
    out
}
