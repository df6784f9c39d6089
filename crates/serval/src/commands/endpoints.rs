//! `model list | add | remove | canary | auto-update`: what a service serves.

use std::path::Path;

use anyhow::{Result, anyhow, ensure};
use serval_admin::endpoints::{AutoUpdateSpec, CanarySpec, EndpointSpec};
use serval_store::names::{endpoint_url, validate_endpoint_name};
use serval_store::{CodeKind, CodeRef};

use crate::cli::{AutoUpdateArgs, CanaryArgs, ModelAddArgs, ModelRemoveArgs};
use crate::context::{Context, cell, note, show, warn};
use crate::parse;

/// Stores preprocess code content-addressed: a `.py` file, a folder with `__init__.py` (packed),
/// or a `.zip` of such a folder.
pub fn store_preprocess(ctx: &Context, path: &Path) -> Result<CodeRef> {
    let meta = std::fs::metadata(path)
        .map_err(|_| anyhow!("Preprocessing code '{}' could not be found", path.display()))?;
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| {
            anyhow!(
                "Preprocessing code '{}' has no usable file name",
                path.display()
            )
        })?;
    if meta.is_dir() {
        ensure!(
            path.join("__init__.py").is_file(),
            "Preprocessing folder '{}' has no __init__.py: a package folder needs one (it defines class Preprocess)",
            path.display()
        );
        let packed = serval_artifacts::pack_dir(path)?;
        let name = format!("{file_name}{}", serval_artifacts::PACKAGE_SUFFIX);
        let tmp = tempfile::NamedTempFile::new()?;
        std::fs::write(tmp.path(), packed)?;
        return ctx
            .deployment()
            .store_code(tmp.path(), &name, CodeKind::Package);
    }
    let kind = if file_name.ends_with(".zip") {
        CodeKind::Zip
    } else {
        CodeKind::File
    };
    if kind == CodeKind::File && !file_name.ends_with(".py") {
        warn(format!(
            "preprocess code '{}' does not end with .py; it is run as a Python module",
            path.display()
        ));
    }
    ctx.deployment().store_code(path, &file_name, kind)
}

pub fn add(ctx: &Context, args: &ModelAddArgs) -> Result<()> {
    let service = ctx.service()?;
    let name = validate_endpoint_name(&args.endpoint)?;
    let url = endpoint_url(&name, args.version.as_deref());
    note(format!(
        "Serving service Task {}, Adding Model endpoint '/{url}/'",
        service.id
    ));
    let io = parse::io_spec(&args.io)?;
    let aux_config = parse::with_batching(parse::aux_config(&args.aux_config)?, &args.batch)?;
    let preprocess = args
        .preprocess
        .as_deref()
        .map(|p| store_preprocess(ctx, p))
        .transpose()?;
    let spec = EndpointSpec {
        engine: args.engine,
        version: args.version.clone(),
        model_id: args.model_id.clone(),
        model_name: args.name.clone(),
        project: args.project.clone(),
        tags: args.tags.clone(),
        only_published: args.published,
        preprocess,
        io,
        aux_config,
    };
    note("Updating serving service");
    let written = ctx.deployment().put_endpoint(&service.id, &name, &spec)?;
    show(&written);
    if ctx.json {
        return ctx.print_json(&written.result);
    }
    let view = &written.result;
    println!(
        "Endpoint '{}' {} (engine {}, model {}), service revision {}",
        view.url,
        if written.created { "added" } else { "replaced" },
        view.endpoint.engine,
        cell(view.endpoint.model_id.as_deref()),
        written.revision.unwrap_or_default()
    );
    Ok(())
}

pub fn remove(ctx: &Context, args: &ModelRemoveArgs) -> Result<()> {
    let service = ctx.service()?;
    let key = args.endpoint.trim_matches('/');
    note(format!(
        "Serving service Task {}, Removing Model endpoint={key}",
        service.id
    ));
    let written = ctx.deployment().remove(&service.id, key)?;
    show(&written);
    println!(
        "Removing {}: {}",
        written.result.removed, written.result.url
    );
    Ok(())
}

pub fn canary(ctx: &Context, args: &CanaryArgs) -> Result<()> {
    let service = ctx.service()?;
    let name = validate_endpoint_name(&args.endpoint)?;
    note(format!(
        "Serving service Task {}, Adding canary endpoint '/{name}/'",
        service.id
    ));
    let spec = CanarySpec {
        weights: args.weights.clone(),
        input_endpoints: args.input_endpoints.clone(),
        input_endpoint_prefix: args.input_endpoint_prefix.clone(),
        sticky: args.sticky.clone(),
    };
    let written = ctx.deployment().put_canary(&service.id, &name, &spec)?;
    show(&written);
    if ctx.json {
        return ctx.print_json(&written.result);
    }
    println!(
        "Canary '{name}' {}",
        if written.created { "added" } else { "replaced" }
    );
    Ok(())
}

pub fn auto_update(ctx: &Context, args: &AutoUpdateArgs) -> Result<()> {
    let service = ctx.service()?;
    let name = validate_endpoint_name(&args.endpoint)?;
    note(format!(
        "Serving service Task {}, Adding Model monitoring endpoint: '/{name}/'",
        service.id
    ));
    let io = parse::io_spec(&args.io)?;
    let aux_config = parse::with_batching(parse::aux_config(&args.aux_config)?, &args.batch)?;
    let preprocess = args
        .preprocess
        .as_deref()
        .map(|p| store_preprocess(ctx, p))
        .transpose()?;
    let spec = AutoUpdateSpec {
        engine: args.engine,
        model_name: args.name.clone(),
        name_regex: args.name_regex,
        project: args.project.clone(),
        tags: args.tags.clone(),
        only_published: args.published,
        max_versions: args.max_versions,
        preprocess,
        io,
        aux_config,
    };
    let written = ctx
        .deployment()
        .put_auto_update(&service.id, &name, &spec)?;
    show(&written);
    if ctx.json {
        return ctx.print_json(&written.result);
    }
    println!(
        "Auto-update rule '{name}' {}",
        if written.created { "added" } else { "replaced" }
    );
    Ok(())
}
