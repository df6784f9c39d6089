//! `model upload | publish | tag | info | registry`: the model registry.

use std::path::Path;

use anyhow::{Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serval_admin::registry::{ModelSpec, TagChange};
use serval_store::{Model, ModelQuery};

use crate::cli::{ModelIdArgs, ModelTagArgs, ModelUploadArgs, RegistryArgs};
use crate::context::{Context, cell, note, print_table, table, time, warn};
use crate::parse;

/// Files at least this large get a progress bar (when stderr is a terminal).
const PROGRESS_FROM_BYTES: u64 = 8 << 20;

fn progress_bar(total: u64, what: &str) -> ProgressBar {
    if total < PROGRESS_FROM_BYTES {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

/// Stores the model file (a folder is packed first) and registers it as `spec`.
fn upload_path(
    ctx: &Context,
    path: &Path,
    destination: Option<&str>,
    spec: ModelSpec,
) -> Result<Model> {
    let meta = std::fs::metadata(path)
        .map_err(|_| anyhow!("--path='{}' could not be found", path.display()))?;
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("--path='{}' has no usable file name", path.display()))?
        .to_string();
    let packed;
    let (src, name): (&Path, String) = if meta.is_dir() {
        let bytes = serval_artifacts::pack_dir(path)?;
        let tmp = tempfile::NamedTempFile::new()?;
        std::fs::write(tmp.path(), bytes)?;
        packed = tmp;
        (
            packed.path(),
            format!("{file_name}{}", serval_artifacts::PACKAGE_SUFFIX),
        )
    } else {
        (path, file_name)
    };
    let size = std::fs::metadata(src)?.len();
    note(format!(
        "Uploading model file '{}' to {}",
        path.display(),
        ctx.deployment().upload_target(destination)
    ));
    let bar = progress_bar(
        size * ctx.deployment().upload_passes(destination),
        "uploading",
    );
    let written = ctx
        .deployment()
        .upload_model(src, &name, destination, spec, &|done| {
            bar.set_position(done)
        })?;
    bar.finish_and_clear();
    Ok(written.result)
}

pub fn upload(ctx: &Context, args: &ModelUploadArgs) -> Result<()> {
    if args.name.trim().is_empty() {
        bail!("--name must not be empty");
    }
    if let Some(framework) = &args.framework {
        parse::framework(framework)?;
    }
    let mut spec = ModelSpec {
        name: args.name.clone(),
        project: args.project.clone(),
        tags: args.tags.clone(),
        framework: args.framework.clone(),
        publish: args.publish,
        uri: String::new(),
        size: None,
        sha256: None,
    };
    let announce = || {
        note(format!(
            "Creating new Model name='{}' project='{}' tags={:?}",
            args.name,
            args.project.as_deref().unwrap_or(""),
            args.tags
        ))
    };
    let model = match (&args.path, &args.url) {
        (None, None) => bail!("Either --path or --url must be specified"),
        (Some(_), Some(_)) => bail!("Either --path or --url but not both"),
        (Some(path), None) => {
            if spec.framework.is_none() {
                spec.framework = parse::sniff_framework(path).map(str::to_string);
            }
            announce();
            upload_path(ctx, path, args.destination.as_deref(), spec)?
        }
        (None, Some(url)) => {
            if args.destination.is_some() {
                warn("--destination is ignored with --url: the model stays where it is");
            }
            let parsed = serval_artifacts::parse_uri(url)?;
            // A missing object is refused; storage this machine cannot reach (no credentials
            // here, say) only gets a warning: the servers may well reach it.
            spec.size = match serval_artifacts::block_on(serval_artifacts::head(url))? {
                Ok(size) => Some(size),
                Err(e) if parsed.scheme() == "file" || e.kind() == "not_found" => {
                    return Err(e.into());
                }
                Err(e) => {
                    warn(format!(
                        "cannot check '{url}' from here ({e}); registering it anyway"
                    ));
                    None
                }
            };
            note(format!("Registering model file '{url}'"));
            announce();
            spec.uri = url.clone();
            ctx.deployment().register_model(&spec)?.result
        }
    };
    if ctx.json {
        return ctx.print_json(&model);
    }
    println!("Model created and registered, new Model ID={}", model.id);
    if model.published {
        println!("Published Model ID={}", model.id);
    }
    Ok(())
}

pub fn publish(ctx: &Context, args: &ModelIdArgs) -> Result<()> {
    let model = ctx.deployment().publish_model(&args.model_id)?.result;
    if ctx.json {
        return ctx.print_json(&model);
    }
    println!("Published Model ID={}", model.id);
    Ok(())
}

pub fn tag(ctx: &Context, args: &ModelTagArgs) -> Result<()> {
    let tags = TagChange {
        add: args.add.clone(),
        remove: args.remove.clone(),
    };
    let model = ctx.deployment().tag_model(&args.model_id, &tags)?.result;
    if ctx.json {
        return ctx.print_json(&model);
    }
    println!(
        "Model {} tags: {}",
        model.id,
        if model.tags.is_empty() {
            "(none)".to_string()
        } else {
            model.tags.join(", ")
        }
    );
    Ok(())
}

pub fn info(ctx: &Context, args: &ModelIdArgs) -> Result<()> {
    let model = ctx
        .deployment()
        .model(&args.model_id.to_ascii_lowercase())?;
    if ctx.json {
        return ctx.print_json(&model);
    }
    let mut t = table(&["field", "value"]);
    let rows = [
        ("id", model.id.clone()),
        ("name", model.name.clone()),
        ("project", cell(model.project.as_deref())),
        ("tags", model.tags.join(", ")),
        ("framework", cell(model.framework.as_deref())),
        ("published", model.published.to_string()),
        ("uri", model.uri.clone()),
        (
            "size",
            model.size.map_or("-".to_string(), |s| s.to_string()),
        ),
        ("sha256", cell(model.sha256.as_deref())),
        ("created", time(model.created_ms)),
    ];
    for (k, v) in rows {
        t.add_row(vec![k.to_string(), v]);
    }
    print_table(&t);
    Ok(())
}

pub fn registry(ctx: &Context, args: &RegistryArgs) -> Result<()> {
    let models: Vec<Model> = ctx.deployment().query_models(&ModelQuery {
        name: args.name.clone(),
        project: args.project.clone(),
        tags: args.tags.clone(),
        only_published: args.published,
        ..ModelQuery::default()
    })?;
    if ctx.json {
        return ctx.print_json(&models);
    }
    if models.is_empty() {
        note("No models found: register one with `serval model upload --name NAME --path FILE`");
        return Ok(());
    }
    let mut t = table(&[
        "id",
        "name",
        "project",
        "tags",
        "framework",
        "published",
        "created",
    ]);
    for m in &models {
        t.add_row(vec![
            m.id.clone(),
            m.name.clone(),
            cell(m.project.as_deref()),
            m.tags.join(","),
            cell(m.framework.as_deref()),
            if m.published { "yes" } else { "no" }.to_string(),
            time(m.created_ms),
        ]);
    }
    print_table(&t);
    Ok(())
}
