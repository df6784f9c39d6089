//! Endpoints, canaries and auto-update rules of a service.

use serde::{Deserialize, Serialize};
use serval_store::names::{
    endpoint_url, validate_endpoint_name, validate_endpoint_ref, validate_name_regex,
    validate_version,
};
use serval_store::{
    AutoUpdateRule, Canary, CanaryTarget, CodeRef, Endpoint, EngineKind, IoSpec, Model, ModelQuery,
    ServiceConfig, Store, StoreError, now_ms,
};

use crate::{Caller, Result, Written, ensure, invalid, service_target};

/// An endpoint to add or replace (`PUT /api/v1/services/{service}/endpoints/{endpoint}`, `serval
/// model add`). The model is `model_id`, or the newest registry model matching `model_name`,
/// `project`, `tags` and `only_published`; the preprocess code is stored before.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    pub engine: EngineKind,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub model_id: Option<String>,
    #[serde(default)]
    pub model_name: Option<String>,
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub only_published: bool,
    #[serde(default)]
    pub preprocess: Option<CodeRef>,
    #[serde(default)]
    pub io: IoSpec,
    /// Engine configuration, batching included (Triton's `max_batch_size` and
    /// `dynamic_batching` keys).
    #[serde(default)]
    pub aux_config: Option<serde_json::Value>,
}

/// An endpoint as `--json` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EndpointView {
    pub url: String,
    #[serde(flatten)]
    pub endpoint: Endpoint,
}

/// Does `url` name something that is, or will be, served: a static endpoint or a version of an
/// auto-update rule.
pub fn is_known_endpoint(config: &ServiceConfig, url: &str) -> bool {
    config.endpoints.contains_key(url)
        || url.split_once('/').is_some_and(|(base, v)| {
            config.auto_update.contains_key(base) && v.parse::<u32>().is_ok()
        })
}

/// Fails if `name` is the base of an auto-update rule (its versions belong to the rule).
fn check_not_rule_owned(config: &ServiceConfig, name: &str) -> Result<()> {
    if config.auto_update.contains_key(name) {
        return Err(invalid(format!(
            "endpoint '{name}' is served by an auto-update rule; remove the rule first (`serval model remove --endpoint {name}`) or use another name"
        )));
    }
    Ok(())
}

/// Checks input and output types against the types the server reads.
fn check_io(io: &IoSpec) -> Result<()> {
    for dtype in io.input_type.iter().chain(&io.output_type) {
        ensure(serval_engine::Datatype::from_numpy(dtype).is_some(), || {
            format!(
                "'{dtype}' is not a supported type (use numpy names: float32, float64, int32, int64, uint8, bool, str, ...)"
            )
        })?;
    }
    Ok(())
}

/// Batching values that cannot run, or batching on an engine that runs its model in Python,
/// are refused here rather than at load.
pub fn check_batching(engine: EngineKind, aux: Option<&serde_json::Value>) -> Result<()> {
    let batching = serval_store::batch_config(aux).map_err(invalid)?;
    if batching.is_some() {
        use EngineKind::*;
        ensure(!matches!(engine, Sklearn | Custom | CustomAsync), || {
            format!(
                "dynamic batching merges rows for a native model (xgboost, lightgbm, onnx, triton); \
                 engine '{engine}' runs its model in Python workers"
            )
        })?;
    }
    Ok(())
}

/// A warning when a model's registered framework does not fit the engine that will load it.
fn framework_mismatch(engine: EngineKind, model: &Model) -> Option<String> {
    use EngineKind as E;
    let framework = model.framework.as_deref()?;
    let fits = match engine {
        E::Xgboost => framework == "xgboost",
        E::Lightgbm => framework == "lightgbm",
        E::Onnx => framework == "onnx",
        E::Sklearn => framework == "scikitlearn",
        E::Triton | E::Custom | E::CustomAsync => true,
    };
    (!fits).then(|| {
        format!(
            "model {} is registered as '{framework}', but engine '{engine}' will load it",
            model.id
        )
    })
}

/// A registry query in words, for messages.
pub fn describe_query(q: &ModelQuery) -> String {
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

/// The model an endpoint serves: `model_id` (which must exist) or the newest match.
fn pick_model(
    store: &dyn Store,
    spec: &EndpointSpec,
    warnings: &mut Vec<String>,
) -> Result<Option<String>> {
    let model = match &spec.model_id {
        Some(id) => Some(store.model(&id.to_ascii_lowercase())?),
        None if spec.model_name.is_some() || spec.project.is_some() || !spec.tags.is_empty() => {
            let query = ModelQuery {
                name: spec.model_name.clone(),
                project: spec.project.clone(),
                tags: spec.tags.clone(),
                only_published: spec.only_published,
                limit: Some(2),
                ..ModelQuery::default()
            };
            let found = store.query_models(&query)?;
            let Some(newest) = found.first() else {
                return Err(StoreError::NotFound(format!(
                    "Could not find any Model to serve {}",
                    describe_query(&query)
                )));
            };
            if found.len() > 1 {
                warnings.push(format!(
                    "found more than one model matching {}, using the newest: {}",
                    describe_query(&query),
                    newest.id
                ));
            }
            Some(newest.clone())
        }
        None => None,
    };
    if let Some(model) = &model {
        warnings.extend(framework_mismatch(spec.engine, model));
    }
    Ok(model.map(|m| m.id))
}

/// Adds or replaces the endpoint `name` (`name/version` with `spec.version`).
pub fn put_endpoint(
    store: &dyn Store,
    caller: &Caller,
    service_id: &str,
    name: &str,
    spec: &EndpointSpec,
) -> Result<Written<EndpointView>> {
    let name = validate_endpoint_name(name)?;
    let version = spec.version.as_deref().map(validate_version).transpose()?;
    let url = endpoint_url(&name, version.as_deref());
    let mut warnings = Vec::new();
    let model_id = pick_model(store, spec, &mut warnings)?;
    let engine = spec.engine;
    ensure(!engine.needs_model() || model_id.is_some(), || {
        format!(
            "engine '{engine}' needs a model: pass --model-id ID, or --name/--project/--tags to pick one from the registry"
        )
    })?;
    ensure(engine.needs_model() || spec.preprocess.is_some(), || {
        format!(
            "engine '{engine}' runs your code: pass --preprocess with a file that defines class Preprocess"
        )
    })?;
    check_io(&spec.io)?;
    check_batching(engine, spec.aux_config.as_ref())?;
    let endpoint = Endpoint {
        name: name.clone(),
        version,
        engine,
        model_id,
        preprocess: spec.preprocess.clone(),
        io: spec.io.clone(),
        aux_config: spec.aux_config.clone(),
        created_ms: now_ms(),
    };
    let (mut overwritten, mut shadowed) = (false, false);
    let change = caller.change(
        "endpoint.put",
        service_target(service_id, &format!("endpoints/{url}")),
    );
    let after = store.update_service(service_id, &change, &mut |config| {
        check_not_rule_owned(config, &name)?;
        shadowed = config.canaries.contains_key(&url);
        overwritten = config
            .endpoints
            .insert(url.clone(), endpoint.clone())
            .is_some();
        Ok(())
    })?;
    if overwritten {
        warnings.push(format!("Model endpoint '{url}' overwritten"));
    }
    if shadowed {
        warnings.push(format!(
            "canary '{url}' has the same name and answers /serve/{url} before this endpoint"
        ));
    }
    let mut written = Written::new(EndpointView { url, endpoint }, Some(after.revision));
    written.created = !overwritten;
    written.warnings = warnings;
    Ok(written)
}

/// What `remove` took away.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Removed {
    /// `static endpoint`, `model monitoring endpoint` or `model canary endpoint`.
    pub removed: String,
    pub url: String,
}

/// Removes the static endpoint, auto-update rule or canary `url` (looked for in that order).
pub fn remove(
    store: &dyn Store,
    caller: &Caller,
    service_id: &str,
    url: &str,
) -> Result<Written<Removed>> {
    let key = url.trim_matches('/').to_string();
    let mut removed = "";
    let mut dangling = Vec::new();
    let change = caller.change(
        "endpoint.remove",
        service_target(service_id, &format!("endpoints/{key}")),
    );
    let after = store.update_service(service_id, &change, &mut |config| {
        dangling.clear();
        removed = if config.endpoints.remove(&key).is_some() {
            "static endpoint"
        } else if config.auto_update.remove(&key).is_some() {
            "model monitoring endpoint"
        } else if config.canaries.contains_key(&key) {
            refuse_driven(config, &key)?;
            config.canaries.remove(&key);
            "model canary endpoint"
        } else {
            return Err(StoreError::NotFound(format!(
                "Could not find base endpoint URL: {key}"
            )));
        };
        for canary in config.canaries.values() {
            if let CanaryTarget::Endpoints(list) = &canary.target {
                for target in list.iter().filter(|t| !is_known_endpoint(config, t)) {
                    dangling.push(format!(
                        "canary '{}' still names '{target}', which is not served: requests skip it",
                        canary.name
                    ));
                }
            }
        }
        Ok(())
    })?;
    let mut written = Written::new(
        Removed {
            removed: removed.to_string(),
            url: key,
        },
        Some(after.revision),
    );
    written.warnings = dangling;
    Ok(written)
}

/// A canary a rollout drives (not ended) is changed only by the rollout.
fn refuse_driven(config: &serval_store::ServiceConfig, canary: &str) -> Result<()> {
    match config.rollouts.get(canary) {
        Some(rollout) if !rollout.state.is_final() => Err(invalid(format!(
            "canary '{canary}' is driven by a rollout ({}): abort it first (serval model rollout abort --endpoint {canary})",
            rollout.state.as_str()
        ))),
        _ => Ok(()),
    }
}

/// A canary to add or replace (`PUT .../canaries/{endpoint}`, `serval model canary`): one weight
/// per endpoint of `input_endpoints`, or weights for the newest endpoints under
/// `input_endpoint_prefix`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CanarySpec {
    pub weights: Vec<f64>,
    #[serde(default)]
    pub input_endpoints: Vec<String>,
    #[serde(default)]
    pub input_endpoint_prefix: Option<String>,
    /// `header:NAME`, `query:NAME` or `field:NAME`: the same key always goes to the same target
    /// while the weights stay (requests without the key get the random split).
    #[serde(default)]
    pub sticky: Option<String>,
}

/// Adds or replaces the canary `name`.
pub fn put_canary(
    store: &dyn Store,
    caller: &Caller,
    service_id: &str,
    name: &str,
    spec: &CanarySpec,
) -> Result<Written<Canary>> {
    let name = validate_endpoint_name(name)?;
    ensure(!spec.weights.is_empty(), || {
        format!("canary '{name}' needs --weights, one per target")
    })?;
    for w in &spec.weights {
        ensure(w.is_finite() && *w >= 0.0, || {
            format!("canary weights must be non-negative numbers, got {w}")
        })?;
    }
    ensure(spec.weights.iter().sum::<f64>() > 0.0, || {
        "canary weights must not all be zero".to_string()
    })?;
    let target = match (&spec.input_endpoints[..], &spec.input_endpoint_prefix) {
        ([], None) => {
            return Err(invalid(format!(
                "canary '{name}' needs --input-endpoints or --input-endpoint-prefix"
            )));
        }
        ([_, ..], Some(prefix)) => {
            return Err(invalid(format!(
                "Could not add canary endpoint with both prefix ({prefix}) and fixed set of endpoints ({})",
                spec.input_endpoints.join(", ")
            )));
        }
        (list @ [_, ..], None) => {
            ensure(list.len() == spec.weights.len(), || {
                format!(
                    "canary '{name}' has {} weights for {} endpoints: give one weight per endpoint",
                    spec.weights.len(),
                    list.len()
                )
            })?;
            CanaryTarget::Endpoints(
                list.iter()
                    .map(|e| validate_endpoint_ref(e))
                    .collect::<Result<_, _>>()?,
            )
        }
        ([], Some(prefix)) => {
            let prefix = prefix.trim_start_matches('/');
            ensure(!prefix.is_empty(), || {
                "--input-endpoint-prefix must not be empty".to_string()
            })?;
            CanaryTarget::Prefix(prefix.to_string())
        }
    };
    if let Some(sticky) = &spec.sticky {
        serval_store::Sticky::parse(sticky).map_err(invalid)?;
    }
    let canary = Canary {
        name: name.clone(),
        weights: spec.weights.clone(),
        target,
        sticky: spec.sticky.clone(),
    };
    let (mut overwritten, mut no_match, mut shadows) = (false, false, false);
    let mut missing = Vec::new();
    let change = caller.change(
        "canary.put",
        service_target(service_id, &format!("canaries/{name}")),
    );
    let after = store.update_service(service_id, &change, &mut |config| {
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
        refuse_driven(config, &name)?;
        shadows = config.endpoints.contains_key(&name);
        overwritten = config
            .canaries
            .insert(name.clone(), canary.clone())
            .is_some();
        Ok(())
    })?;
    let mut warnings = Vec::new();
    if overwritten {
        warnings.push(format!("Model canary '{name}' overwritten"));
    }
    for target in &missing {
        warnings.push(format!(
            "canary target '{target}' is not an endpoint yet: requests skip it until it exists"
        ));
    }
    if let (true, CanaryTarget::Prefix(prefix)) = (no_match, &canary.target) {
        warnings.push(format!("no endpoint starts with '{prefix}' yet"));
    }
    if shadows {
        warnings.push(format!(
            "canary '{name}' answers /serve/{name} before the endpoint of the same name"
        ));
    }
    let mut written = Written::new(canary, Some(after.revision));
    written.created = !overwritten;
    written.warnings = warnings;
    Ok(written)
}

/// An auto-update rule to add or replace (`PUT .../auto-update/{endpoint}`, `serval model
/// auto-update`): the field names of the rule's `--json`, without `endpoint` (the path's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AutoUpdateSpec {
    pub engine: EngineKind,
    #[serde(default)]
    pub model_name: Option<String>,
    #[serde(default)]
    pub name_regex: bool,
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub only_published: bool,
    #[serde(default = "default_max_versions")]
    pub max_versions: u32,
    #[serde(default)]
    pub preprocess: Option<CodeRef>,
    #[serde(default)]
    pub io: IoSpec,
    #[serde(default)]
    pub aux_config: Option<serde_json::Value>,
}

fn default_max_versions() -> u32 {
    1
}

/// Adds or replaces the auto-update rule serving `name/<version>`.
pub fn put_auto_update(
    store: &dyn Store,
    caller: &Caller,
    service_id: &str,
    name: &str,
    spec: &AutoUpdateSpec,
) -> Result<Written<AutoUpdateRule>> {
    let name = validate_endpoint_name(name)?;
    ensure(
        spec.model_name.is_some() || spec.project.is_some() || !spec.tags.is_empty(),
        || {
            "Model monitoring requires at least a project / name / tag to monitor, none were provided."
                .to_string()
        },
    )?;
    if spec.name_regex {
        let pattern = spec
            .model_name
            .as_deref()
            .ok_or_else(|| invalid("--name-regex needs --name PATTERN"))?;
        validate_name_regex(pattern)?;
    }
    ensure(spec.max_versions >= 1, || {
        "--max-versions must be at least 1".to_string()
    })?;
    check_io(&spec.io)?;
    check_batching(spec.engine, spec.aux_config.as_ref())?;
    ensure(
        spec.engine.needs_model() || spec.preprocess.is_some(),
        || format!("engine '{}' runs your code: pass --preprocess", spec.engine),
    )?;
    let rule = AutoUpdateRule {
        endpoint: name.clone(),
        engine: spec.engine,
        model_name: spec.model_name.clone(),
        name_regex: spec.name_regex,
        project: spec.project.clone(),
        tags: spec.tags.clone(),
        only_published: spec.only_published,
        max_versions: spec.max_versions,
        preprocess: spec.preprocess.clone(),
        io: spec.io.clone(),
        aux_config: spec.aux_config.clone(),
    };
    let mut overwritten = false;
    let change = caller.change(
        "auto_update.put",
        service_target(service_id, &format!("auto-update/{name}")),
    );
    let after = store.update_service(service_id, &change, &mut |config| {
        if let Some(url) = config
            .endpoints
            .keys()
            .find(|u| **u == name || u.starts_with(&format!("{name}/")))
        {
            return Err(invalid(format!(
                "endpoint '{url}' already exists; an auto-update rule needs its own endpoint name"
            )));
        }
        overwritten = config
            .auto_update
            .insert(name.clone(), rule.clone())
            .is_some();
        Ok(())
    })?;
    let mut written = Written::new(rule, Some(after.revision));
    written.created = !overwritten;
    if overwritten {
        written
            .warnings
            .push(format!("Model monitoring '{name}' overwritten"));
    }
    let versions = store
        .snapshot(service_id)?
        .config
        .auto_versions
        .remove(&name)
        .unwrap_or_default();
    written.notes.push(if versions.is_empty() {
        format!(
            "No registry model matches yet; matching models will be served as /serve/{name}/<version>"
        )
    } else {
        let served: Vec<String> = versions
            .iter()
            .map(|(v, id)| format!("/serve/{name}/{v} (model {id})"))
            .collect();
        format!("Serving {}", served.join(", "))
    });
    Ok(written)
}
