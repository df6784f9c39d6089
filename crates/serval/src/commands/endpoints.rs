//! `model list | add | remove | canary | auto-update`: what a service serves.

use std::path::Path;

use anyhow::{Result, anyhow, bail, ensure};
use serde::Serialize;
use serval_store::names::{
    endpoint_url, validate_endpoint_name, validate_endpoint_ref, validate_name_regex,
    validate_version,
};
use serval_store::{
    AutoUpdateRule, Canary, CanaryTarget, CodeKind, CodeRef, Endpoint, ModelQuery, ServiceConfig,
    StoreError, now_ms,
};

use crate::cli::{AutoUpdateArgs, CanaryArgs, ModelAddArgs, ModelRemoveArgs};
use crate::context::{Context, cell, note, warn};
use crate::parse;

/// An endpoint as `--json` shows it (also after `model add`).
#[derive(Serialize)]
pub(crate) struct EndpointView<'a> {
    pub url: String,
    #[serde(flatten)]
    pub endpoint: &'a Endpoint,
}

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
    let (stored, kind, name) = if meta.is_dir() {
        ensure!(
            path.join("__init__.py").is_file(),
            "Preprocessing folder '{}' has no __init__.py: a package folder needs one (it defines class Preprocess)",
            path.display()
        );
        let packed = serval_artifacts::pack_dir(path)?;
        let name = format!("{file_name}{}", serval_artifacts::PACKAGE_SUFFIX);
        let tmp = tempfile::NamedTempFile::new()?;
        std::fs::write(tmp.path(), packed)?;
        (
            ctx.store_file(tmp.path(), &name, None, &|_| {})?,
            CodeKind::Package,
            name,
        )
    } else {
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
        (
            ctx.store_file(path, &file_name, None, &|_| {})?,
            kind,
            file_name,
        )
    };
    Ok(CodeRef {
        sha256: stored.sha256,
        name,
        kind,
        uri: stored.uri,
    })
}

/// Fails if `name` is the base of an auto-update rule (its versions belong to the rule).
fn check_not_rule_owned(config: &ServiceConfig, name: &str) -> Result<(), StoreError> {
    if config.auto_update.contains_key(name) {
        return Err(StoreError::InvalidInput(format!(
            "endpoint '{name}' is served by an auto-update rule; remove the rule first (`serval model remove --endpoint {name}`) or use another name"
        )));
    }
    Ok(())
}

/// Does an url name something that is, or will be, served: a static endpoint or a version of an
/// auto-update rule.
pub(crate) fn is_known_endpoint(config: &ServiceConfig, url: &str) -> bool {
    config.endpoints.contains_key(url)
        || url.split_once('/').is_some_and(|(base, v)| {
            config.auto_update.contains_key(base) && v.parse::<u32>().is_ok()
        })
}

pub fn add(ctx: &Context, args: &ModelAddArgs) -> Result<()> {
    let service = ctx.service()?;
    let name = validate_endpoint_name(&args.endpoint)?;
    let version = args.version.as_deref().map(validate_version).transpose()?;
    let url = endpoint_url(&name, version.as_deref());
    note(format!(
        "Serving service Task {}, Adding Model endpoint '/{url}/'",
        service.id
    ));

    let model_id = match &args.model_id {
        Some(id) => {
            let id = id.to_ascii_lowercase();
            let model = ctx.store.model(&id)?;
            check_framework(args.engine, &model);
            Some(id)
        }
        None if args.name.is_some() || args.project.is_some() || !args.tags.is_empty() => {
            let query = ModelQuery {
                name: args.name.clone(),
                project: args.project.clone(),
                tags: args.tags.clone(),
                only_published: args.published,
                limit: Some(2),
                ..ModelQuery::default()
            };
            let found = ctx.store.query_models(&query)?;
            let Some(newest) = found.first() else {
                bail!(
                    "Could not find any Model to serve {}",
                    describe_query(&query)
                );
            };
            check_framework(args.engine, newest);
            if found.len() > 1 {
                warn(format!(
                    "found more than one model matching {}, using the newest: {}",
                    describe_query(&query),
                    newest.id
                ));
            }
            Some(newest.id.clone())
        }
        None => None,
    };
    if args.engine.needs_model() && model_id.is_none() {
        bail!(
            "engine '{}' needs a model: pass --model-id ID, or --name/--project/--tags to pick one from the registry",
            args.engine
        );
    }
    if !args.engine.needs_model() && args.preprocess.is_none() {
        bail!(
            "engine '{}' runs your code: pass --preprocess with a file that defines class Preprocess",
            args.engine
        );
    }
    let io = parse::io_spec(&args.io)?;
    let aux_config = parse::with_batching(
        parse::aux_config(&args.aux_config)?,
        &args.batch,
        args.engine,
    )?;
    let preprocess = args
        .preprocess
        .as_deref()
        .map(|p| store_preprocess(ctx, p))
        .transpose()?;

    let endpoint = Endpoint {
        name: name.clone(),
        version,
        engine: args.engine,
        model_id,
        preprocess,
        io,
        aux_config,
        created_ms: now_ms(),
    };
    let mut overwritten = false;
    let mut shadowed = false;
    note("Updating serving service");
    let after = ctx.store.update_service(&service.id, &mut |config| {
        check_not_rule_owned(config, &name)?;
        shadowed = config.canaries.contains_key(&url);
        overwritten = config
            .endpoints
            .insert(url.clone(), endpoint.clone())
            .is_some();
        Ok(())
    })?;
    if overwritten {
        warn(format!("Model endpoint '{url}' overwritten"));
    }
    if shadowed {
        warn(format!(
            "canary '{url}' has the same name and answers /serve/{url} before this endpoint"
        ));
    }
    if ctx.json {
        return ctx.print_json(&EndpointView {
            url: url.clone(),
            endpoint: &endpoint,
        });
    }
    println!(
        "Endpoint '{url}' {} (engine {}, model {}), service revision {}",
        if overwritten { "replaced" } else { "added" },
        endpoint.engine,
        cell(endpoint.model_id.as_deref()),
        after.revision
    );
    Ok(())
}

/// Warns when a model's registered framework does not fit the engine that will load it.
fn check_framework(engine: serval_store::EngineKind, model: &serval_store::Model) {
    use serval_store::EngineKind as E;
    let Some(framework) = model.framework.as_deref() else {
        return;
    };
    let fits = match engine {
        E::Xgboost => framework == "xgboost",
        E::Lightgbm => framework == "lightgbm",
        E::Onnx => framework == "onnx",
        E::Sklearn => framework == "scikitlearn",
        E::Triton | E::Custom | E::CustomAsync => true,
    };
    if !fits {
        warn(format!(
            "model {} is registered as '{framework}', but engine '{engine}' will load it",
            model.id
        ));
    }
}

pub(crate) fn describe_query(q: &ModelQuery) -> String {
    let mut parts = Vec::new();
    if let Some(n) = &q.name {
        parts.push(format!("name={n:?}"));
    }
    if let Some(p) = &q.project {
        parts.push(format!("project={p:?}"));
    }
    if !q.tags.is_empty() {
        parts.push(format!("tags={:?}", q.tags));
    }
    if q.only_published {
        parts.push("published".to_string());
    }
    format!("{{{}}}", parts.join(", "))
}

pub fn remove(ctx: &Context, args: &ModelRemoveArgs) -> Result<()> {
    let service = ctx.service()?;
    let key = args.endpoint.trim_matches('/').to_string();
    note(format!(
        "Serving service Task {}, Removing Model endpoint={key}",
        service.id
    ));
    let mut removed = "";
    let mut dangling = Vec::new();
    ctx.store.update_service(&service.id, &mut |config| {
        dangling.clear();
        removed = if config.endpoints.remove(&key).is_some() {
            "static endpoint"
        } else if config.auto_update.remove(&key).is_some() {
            "model monitoring endpoint"
        } else if config.canaries.remove(&key).is_some() {
            "model canary endpoint"
        } else {
            return Err(StoreError::NotFound(format!(
                "Could not find base endpoint URL: {key}"
            )));
        };
        for canary in config.canaries.values() {
            if let CanaryTarget::Endpoints(list) = &canary.target {
                for target in list.iter().filter(|t| !is_known_endpoint(config, t)) {
                    dangling.push((canary.name.clone(), target.clone()));
                }
            }
        }
        Ok(())
    })?;
    for (canary, target) in &dangling {
        warn(format!(
            "canary '{canary}' still names '{target}', which is not served: requests skip it"
        ));
    }
    println!("Removing {removed}: {key}");
    Ok(())
}

pub fn canary(ctx: &Context, args: &CanaryArgs) -> Result<()> {
    let service = ctx.service()?;
    let name = validate_endpoint_name(&args.endpoint)?;
    note(format!(
        "Serving service Task {}, Adding canary endpoint '/{name}/'",
        service.id
    ));
    ensure!(
        !args.weights.is_empty(),
        "canary '{name}' needs --weights, one per target"
    );
    for w in &args.weights {
        ensure!(
            w.is_finite() && *w >= 0.0,
            "canary weights must be non-negative numbers, got {w}"
        );
    }
    ensure!(
        args.weights.iter().sum::<f64>() > 0.0,
        "canary weights must not all be zero"
    );
    let target = match (&args.input_endpoints[..], &args.input_endpoint_prefix) {
        ([], None) => bail!("canary '{name}' needs --input-endpoints or --input-endpoint-prefix"),
        ([_, ..], Some(prefix)) => bail!(
            "Could not add canary endpoint with both prefix ({prefix}) and fixed set of endpoints ({})",
            args.input_endpoints.join(", ")
        ),
        (list @ [_, ..], None) => {
            ensure!(
                list.len() == args.weights.len(),
                "canary '{name}' has {} weights for {} endpoints: give one weight per endpoint",
                args.weights.len(),
                list.len()
            );
            CanaryTarget::Endpoints(
                list.iter()
                    .map(|e| validate_endpoint_ref(e))
                    .collect::<Result<_, _>>()?,
            )
        }
        ([], Some(prefix)) => {
            let prefix = prefix.trim_start_matches('/');
            ensure!(
                !prefix.is_empty(),
                "--input-endpoint-prefix must not be empty"
            );
            CanaryTarget::Prefix(prefix.to_string())
        }
    };
    let canary = Canary {
        name: name.clone(),
        weights: args.weights.clone(),
        target,
    };
    let mut overwritten = false;
    let mut missing = Vec::new();
    let mut no_match = false;
    let mut shadows = false;
    ctx.store.update_service(&service.id, &mut |config| {
        missing.clear();
        match &canary.target {
            CanaryTarget::Endpoints(list) => {
                missing.extend(
                    list.iter()
                        .filter(|t| !is_known_endpoint(config, t))
                        .cloned(),
                );
            }
            CanaryTarget::Prefix(prefix) => {
                no_match = !config
                    .endpoints
                    .keys()
                    .any(|u| u.starts_with(prefix.as_str()))
                    && !config
                        .auto_update
                        .keys()
                        .any(|b| format!("{b}/").starts_with(prefix.as_str()));
            }
        }
        shadows = config.endpoints.contains_key(&name);
        overwritten = config
            .canaries
            .insert(name.clone(), canary.clone())
            .is_some();
        Ok(())
    })?;
    if overwritten {
        warn(format!("Model canary '{name}' overwritten"));
    }
    for target in &missing {
        warn(format!(
            "canary target '{target}' is not an endpoint yet: requests skip it until it exists"
        ));
    }
    if no_match {
        warn(format!(
            "no endpoint starts with '{}' yet",
            args.input_endpoint_prefix.as_deref().unwrap_or("")
        ));
    }
    if shadows {
        warn(format!(
            "canary '{name}' answers /serve/{name} before the endpoint of the same name"
        ));
    }
    if ctx.json {
        return ctx.print_json(&canary);
    }
    println!(
        "Canary '{name}' {}",
        if overwritten { "replaced" } else { "added" }
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
    if args.name.is_none() && args.project.is_none() && args.tags.is_empty() {
        bail!(
            "Model monitoring requires at least a project / name / tag to monitor, none were provided."
        );
    }
    if args.name_regex {
        let pattern = args
            .name
            .as_deref()
            .ok_or_else(|| anyhow!("--name-regex needs --name PATTERN"))?;
        validate_name_regex(pattern)?;
    }
    ensure!(args.max_versions >= 1, "--max-versions must be at least 1");
    let io = parse::io_spec(&args.io)?;
    let aux_config = parse::with_batching(
        parse::aux_config(&args.aux_config)?,
        &args.batch,
        args.engine,
    )?;
    let preprocess = args
        .preprocess
        .as_deref()
        .map(|p| store_preprocess(ctx, p))
        .transpose()?;
    if !args.engine.needs_model() && preprocess.is_none() {
        bail!("engine '{}' runs your code: pass --preprocess", args.engine);
    }
    let rule = AutoUpdateRule {
        endpoint: name.clone(),
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
    let mut overwritten = false;
    ctx.store.update_service(&service.id, &mut |config| {
        if let Some(url) = config
            .endpoints
            .keys()
            .find(|u| **u == name || u.starts_with(&format!("{name}/")))
        {
            return Err(StoreError::InvalidInput(format!(
                "endpoint '{url}' already exists; an auto-update rule needs its own endpoint name"
            )));
        }
        overwritten = config
            .auto_update
            .insert(name.clone(), rule.clone())
            .is_some();
        Ok(())
    })?;
    if overwritten {
        warn(format!("Model monitoring '{name}' overwritten"));
    }
    let versions = ctx
        .store
        .snapshot(&service.id)?
        .config
        .auto_versions
        .remove(&name)
        .unwrap_or_default();
    if versions.is_empty() {
        note(format!(
            "No registry model matches yet; matching models will be served as /serve/{name}/<version>"
        ));
    } else {
        let served: Vec<String> = versions
            .iter()
            .map(|(v, id)| format!("/serve/{name}/{v} (model {id})"))
            .collect();
        note(format!("Serving {}", served.join(", ")));
    }
    if ctx.json {
        return ctx.print_json(&rule);
    }
    println!(
        "Auto-update rule '{name}' {}",
        if overwritten { "replaced" } else { "added" }
    );
    Ok(())
}
