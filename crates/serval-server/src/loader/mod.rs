//! Building the next routing table from a store snapshot: endpoints whose configuration and model
//! file are unchanged keep their loaded engine; new or changed ones are loaded (in parallel) and
//! warmed; a failed load keeps the previous version serving and is reported in the status.

mod error;
mod plan;
mod pyenv;
mod python;
mod signature;
pub(crate) mod triton;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use serval_engine::{Instance, NamedOutput, NamedTensor, Tensor, TensorData};
use serval_onnx::OnnxOptions;
use serval_store::{Endpoint, EndpointStatus, EngineKind, ServiceSettings, Snapshot, Store};

use self::plan::{Model, Plan};
use crate::endpoint::{self, NativeModel, Runner};
use crate::table::{Attempt, FileStamp, Fingerprint, Retry, RoutingTable, Slot};

pub use error::LoadError;
pub use python::needs_python;

pub struct Loader {
    pub store: Arc<dyn Store>,
    pub cache_dir: PathBuf,
    /// Bound of the download cache in bytes (`serve --cache-size`); `None`: unbounded.
    pub cache_size: Option<u64>,
    /// Requests in flight per endpoint (admission control).
    pub max_in_flight_per_endpoint: usize,
    pub onnx: OnnxOptions,
    /// Where Python worker pools run their tasks (`None`: Python endpoints fail to load).
    pub runtime: Option<tokio::runtime::Handle>,
    /// `send_request` from user code.
    pub calls: Arc<dyn serval_python::Calls>,
    /// The interpreter when the service names none (`serve --python`, else `python3`).
    pub python: Option<String>,
    /// Worker processes per Python endpoint.
    pub python_workers: usize,
    /// Threads of a native model's runner: ONNX Runtime sessions per ONNX model, and threads
    /// per batched model.
    pub runner_threads: usize,
    /// Bounds `send_request` calls that are not tied to a request.
    pub request_timeout: Duration,
    /// `None` when metrics are off.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// How long starting a worker and loading the user's code and model may take.
const PYTHON_LOAD_TIMEOUT: Duration = Duration::from_secs(120);

struct Loaded {
    endpoint: endpoint::Endpoint,
    stamp: Option<FileStamp>,
}

impl Loader {
    fn fingerprint(&self, endpoint: &Endpoint, settings: &ServiceSettings) -> Fingerprint {
        let model = endpoint
            .model_id
            .as_deref()
            .and_then(|id| self.store.model(id).ok());
        Fingerprint {
            engine: endpoint.engine,
            model_id: endpoint.model_id.clone(),
            model_uri: model.as_ref().map(|m| m.uri.clone()),
            model_sha256: model.and_then(|m| m.sha256),
            preprocess_sha256: endpoint.preprocess.as_ref().map(|p| p.sha256.clone()),
            settings: serde_json::to_string(&(&endpoint.io, &endpoint.aux_config))
                .unwrap_or_default(),
            forward: (endpoint.engine == EngineKind::Triton)
                .then(|| {
                    settings
                        .triton_grpc_server
                        .clone()
                        .or_else(|| std::env::var("SERVAL_TRITON_GRPC_SERVER").ok())
                        .filter(|a| !a.trim().is_empty())
                        .map(|a| (a, settings.triton_grpc_compression.unwrap_or(false)))
                })
                .flatten(),
            // A triton model may turn out to need Python (TorchScript, Keras): known at load.
            python: (needs_python(endpoint) || endpoint.engine == EngineKind::Triton).then(|| {
                let interpreter = settings
                    .python
                    .clone()
                    .or_else(|| self.python.clone())
                    .unwrap_or_else(|| "python3".to_string());
                let packages = pyenv::packages(settings.extra_python_packages.as_deref());
                (interpreter, self.python_workers.max(1), packages)
            }),
        }
    }

    /// The local file of the endpoint's model (downloading remote models into the cache).
    fn model_file(&self, endpoint: &Endpoint) -> Result<(PathBuf, Option<String>), LoadError> {
        let id = endpoint.model_id.as_deref().ok_or(LoadError::NoModel {
            engine: endpoint.engine,
            hint: "",
        })?;
        let model = self.store.model(id).map_err(|source| LoadError::Registry {
            id: id.to_string(),
            source,
        })?;
        let fetch = |reason: String| LoadError::Fetch {
            what: format!("model {id}"),
            reason,
        };
        let path = serval_artifacts::block_on(serval_artifacts::fetch(
            &model.uri,
            model.sha256.as_deref(),
            &self.cache_dir,
        ))
        .map_err(|e| fetch(e.to_string()))?
        .map_err(|e| fetch(e.to_string()))?;
        Ok((path, model.sha256))
    }

    /// The endpoint's model file if it is local or already downloaded (no network).
    fn model_file_cached(&self, endpoint: &Endpoint) -> Option<PathBuf> {
        let model = self.store.model(endpoint.model_id.as_deref()?).ok()?;
        serval_artifacts::cached(&model.uri, model.sha256.as_deref(), &self.cache_dir)
    }

    /// The model's local file, checked against the registry's sha256. Its bytes are read into
    /// memory only for a native engine (`with_bytes`); a Python endpoint's model is hashed as a
    /// stream and loaded by its worker process.
    fn verified_model(
        &self,
        endpoint: &Endpoint,
        with_bytes: bool,
    ) -> Result<(PathBuf, Vec<u8>), LoadError> {
        let (path, sha256) = self.model_file(endpoint)?;
        let read = |source| LoadError::Read {
            path: path.clone(),
            source,
        };
        let (actual, bytes) = if with_bytes {
            let bytes = std::fs::read(&path).map_err(read)?;
            (serval_artifacts::hash_bytes(&bytes), bytes)
        } else if sha256.is_some() {
            let (actual, _) =
                serval_artifacts::hash_file(&path, &|_| {}).map_err(|e| LoadError::Fetch {
                    what: format!("model {}", endpoint.model_id.as_deref().unwrap_or_default()),
                    reason: e.to_string(),
                })?;
            (actual, Vec::new())
        } else {
            return Ok((path, Vec::new()));
        };
        if let Some(expected) = sha256
            && actual != expected
        {
            return Err(LoadError::Checksum {
                what: "model file",
                path,
                actual,
                expected,
            });
        }
        Ok((path, bytes))
    }

    /// Executes the endpoint's [`plan::plan`].
    fn load(
        &self,
        url: &str,
        endpoint: &Endpoint,
        fingerprint: Fingerprint,
    ) -> Result<Loaded, LoadError> {
        let plan = plan::plan(
            endpoint,
            fingerprint.forward.is_some(),
            batching(endpoint)?.is_some(),
        )?;
        let (model, python_needed) = match (plan, &fingerprint.forward) {
            (Plan::Forward { python }, Some((address, compression))) => {
                let upstream = (address.as_str(), *compression);
                return self.load_forwarded(url, endpoint, &fingerprint, python, upstream);
            }
            (Plan::Load { model, python }, _) => (model, python),
            (Plan::Forward { .. }, None) => return Err(LoadError::NoRunner),
        };
        let (triton, native_kind) = (model == Model::Triton, model == Model::Native);
        let model = match model {
            Model::None => None,
            _ => Some(self.verified_model(endpoint, native_kind)?),
        };
        let stamp = model.as_ref().and_then(|(path, _)| FileStamp::read(path));
        // What runs a triton model: ONNX natively, other formats in Python with their library.
        let mut triton_python = None;
        let triton_onnx = match (&model, triton) {
            (Some((path, _)), true) => {
                let key = fingerprint.model_sha256.clone().unwrap_or_else(|| {
                    serval_artifacts::hash_bytes(path.display().to_string().as_bytes())
                });
                match triton::locate(path, &self.cache_dir.join("models").join(key))? {
                    triton::TritonModel::Onnx { bytes, name } => Some((bytes, name)),
                    triton::TritonModel::Python { path, runtime } => {
                        triton_python = Some((path, runtime));
                        None
                    }
                }
            }
            _ => None,
        };
        let native = match (&model, native_kind, triton_onnx) {
            (Some((path, bytes)), true, _) => {
                let name = path.file_name().map_or_else(
                    || path.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                );
                Some(self.native_model(url, endpoint, endpoint.engine, bytes, &name)?)
            }
            (_, _, Some((bytes, name))) => {
                Some(self.native_model(url, endpoint, EngineKind::Onnx, &bytes, &name)?)
            }
            _ => None,
        };
        let python_needed = python_needed || triton_python.is_some();
        let pool = match &fingerprint.python {
            Some((interpreter, workers, packages)) if python_needed => {
                let interpreter = self.interpreter(interpreter, packages.as_deref())?;
                let model_path = match &triton_python {
                    Some((path, _)) => Some(path.as_path()),
                    None => model.as_ref().map(|(p, _)| p.as_path()),
                };
                Some(Arc::new(self.start_python(
                    url,
                    endpoint,
                    model_path,
                    triton_python.as_ref().map(|(_, runtime)| runtime.name()),
                    &interpreter,
                    *workers,
                )?))
            }
            _ => None,
        };
        // A plain scikit-learn linear model (its parameters read by the worker from the pickle)
        // runs natively between the endpoint's preprocess and postprocess.
        let native = match (&pool, native) {
            (Some(pool), None)
                if endpoint.engine == EngineKind::Sklearn && endpoint.preprocess.is_some() =>
            {
                pool.native_model()
                    .and_then(|params| {
                        serval_core::linear::LinearEngine::from_json(&params)
                            .map_err(|e| tracing::warn!(endpoint = url, "runs in Python: {e}"))
                            .ok()
                    })
                    .map(|engine| {
                        let engine: Arc<dyn serval_engine::Engine> = Arc::new(engine);
                        (NativeModel::shared(EngineKind::Sklearn, engine), None)
                    })
            }
            (_, native) => native,
        };
        let (runner, signature) = match (pool, native) {
            (None, Some((model, warm))) => {
                let kind = if triton {
                    EngineKind::Onnx
                } else {
                    endpoint.engine
                };
                let signature = signature::native(kind, &model, warm.as_deref());
                (Runner::Native(model), signature)
            }
            (Some(pool), None) => (Runner::Python(pool), signature::python(endpoint)),
            (Some(pool), Some((model, _))) => (
                Runner::PythonNative { pool, model },
                signature::python(endpoint),
            ),
            (None, None) => return Err(LoadError::NoRunner),
        };
        Ok(Loaded {
            endpoint: self.endpoint(url, endpoint, runner, signature),
            stamp,
        })
    }

    /// Loads a native model and warms it: a tree model without batching is one shared engine
    /// called where requests run; an ONNX model (one session per runner thread) and any batched
    /// model get a runner.
    fn native_model(
        &self,
        url: &str,
        endpoint: &Endpoint,
        kind: EngineKind,
        bytes: &[u8],
        name: &str,
    ) -> Result<(NativeModel, Option<Vec<NamedOutput>>), LoadError> {
        let batching = batching(endpoint)?;
        let loaded = serval_core::load_model(kind, bytes, name, &self.onnx, self.runner_threads)
            .map_err(LoadError::Model)?;
        let check = |meta: &serval_engine::ModelMetadata| {
            if endpoint.engine == EngineKind::Triton {
                triton::check_io(&endpoint.io, meta).map_err(|e| LoadError::Io {
                    model: name.to_string(),
                    reason: e.0,
                })?;
            }
            Ok::<_, LoadError>(())
        };
        // A shared engine also explains (trees); instances (ONNX sessions) do not.
        let mut explainer = None;
        let mut instances = match loaded {
            serval_core::Loaded::Shared(engine) => {
                check(engine.metadata())?;
                let warm = warm_up(&mut engine.clone())?;
                if batching.is_none() {
                    return Ok((NativeModel::shared(kind, engine), warm));
                }
                explainer = Some(engine.clone());
                (0..self.runner_threads.max(1))
                    .map(|_| Box::new(engine.clone()) as Box<dyn Instance>)
                    .collect()
            }
            serval_core::Loaded::Instances(instances) => instances,
        };
        let meta = instances[0].metadata().clone();
        check(&meta)?;
        let mut warm = None;
        for instance in &mut instances {
            warm = warm_up(instance.as_mut())?;
        }
        let runtime = self
            .runtime
            .clone()
            .or_else(|| tokio::runtime::Handle::try_current().ok())
            .ok_or(LoadError::NoRuntime("the model's runner"))?;
        let metrics = self
            .metrics
            .as_ref()
            .map(|m| (Arc::new(m.batch(url)), m.endpoint(url)));
        let runner = endpoint::ModelRunner::start(url, instances, batching, &runtime, metrics)
            .map_err(LoadError::Threads)?;
        Ok((NativeModel::runner(meta, runner, explainer), warm))
    }

    /// The interpreter workers run: the service's, or its environment with extra packages.
    fn interpreter(&self, base: &str, packages: Option<&str>) -> Result<String, LoadError> {
        Ok(match packages {
            Some(packages) => pyenv::ensure(base, packages, &self.cache_dir)?
                .display()
                .to_string(),
            None => base.to_string(),
        })
    }

    fn endpoint(
        &self,
        url: &str,
        endpoint: &Endpoint,
        runner: Runner,
        signature: endpoint::Signature,
    ) -> endpoint::Endpoint {
        endpoint::Endpoint {
            url: url.to_string(),
            version: endpoint.version.clone(),
            kind: endpoint.engine,
            runner,
            signature,
            input_names: endpoint.io.input_name.clone(),
            output_names: endpoint.io.output_name.clone(),
            metrics: self.metrics.as_ref().map(|m| m.endpoint(url)),
            monitor: arc_swap::ArcSwapOption::empty(),
            library_requests: AtomicU64::new(0),
            admission: endpoint::Admission::new(self.max_in_flight_per_endpoint),
        }
    }

    /// A `triton` endpoint forwarded to a V2 gRPC server: its model file is neither fetched nor
    /// checked here; its preprocess code runs in workers as usual.
    fn load_forwarded(
        &self,
        url: &str,
        endpoint: &Endpoint,
        fingerprint: &Fingerprint,
        python: bool,
        (address, compression): (&str, bool),
    ) -> Result<Loaded, LoadError> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or(LoadError::NoRuntime("forwarding"))?;
        let upstream = {
            let _entered = runtime.enter();
            endpoint::Upstream::new(address, url, compression).map_err(|e| LoadError::Upstream {
                address: address.to_string(),
                reason: e.to_string(),
            })?
        };
        let pool = match &fingerprint.python {
            Some((interpreter, workers, packages)) if python => {
                let interpreter = self.interpreter(interpreter, packages.as_deref())?;
                Some(Arc::new(self.start_python(
                    url,
                    endpoint,
                    None,
                    Some("upstream"),
                    &interpreter,
                    *workers,
                )?))
            }
            _ => None,
        };
        let runner = Runner::Forward { pool, upstream };
        Ok(Loaded {
            endpoint: self.endpoint(url, endpoint, runner, signature::python(endpoint)),
            stamp: None,
        })
    }

    /// Builds the next table. Blocking: loads models.
    pub fn build(&self, snapshot: &Snapshot, previous: &RoutingTable) -> RoutingTable {
        let mut slots: HashMap<String, Slot> = HashMap::new();
        let mut to_load = Vec::new();
        let endpoints = snapshot.config.served_endpoints();
        for (url, endpoint) in &endpoints {
            let fingerprint = self.fingerprint(endpoint, &snapshot.config.settings);
            let previous_slot = previous.slots.get(url);
            let unchanged = previous_slot
                .and_then(|s| s.attempt.as_ref())
                .is_some_and(|a| {
                    a.fingerprint == fingerprint
                        && a.stamp
                            .as_ref()
                            .is_none_or(|st| FileStamp::read(&st.path).as_ref() == Some(st))
                        && a.retry.is_none_or(|r| std::time::Instant::now() < r.at)
                });
            match previous_slot {
                Some(slot) if unchanged => {
                    slots.insert(url.clone(), slot.clone());
                }
                _ => to_load.push((url, endpoint, fingerprint)),
            }
        }
        let results: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = to_load
                .iter()
                .map(|(url, endpoint, fingerprint)| {
                    scope.spawn(move || {
                        let start = std::time::Instant::now();
                        let result = self.load(url, endpoint, fingerprint.clone());
                        if let Some(metrics) = &self.metrics {
                            metrics.loaded(url, start.elapsed(), result.is_ok());
                        }
                        result
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(Err(LoadError::Panicked)))
                .collect()
        });
        for ((url, endpoint, fingerprint), result) in to_load.into_iter().zip(results) {
            let previous_serving = previous
                .slots
                .get(url.as_str())
                .and_then(|s| s.serving.clone());
            let slot = match result {
                Ok(loaded) => {
                    let path = Some(loaded.endpoint.runner.describe(loaded.endpoint.kind));
                    tracing::info!(endpoint = %url, "loaded: {}", path.as_deref().unwrap_or_default());
                    Slot {
                        status: status(endpoint, "loaded", None, true, path),
                        client_error: None,
                        attempt: Some(Attempt {
                            fingerprint,
                            stamp: loaded.stamp,
                            retry: None,
                        }),
                        serving: Some(Arc::new(loaded.endpoint)),
                    }
                }
                Err(error) => {
                    let client_error = error.client_text();
                    let keeps = previous_serving.is_some();
                    let stamp = self
                        .model_file_cached(endpoint)
                        .and_then(|p| FileStamp::read(&p));
                    // A failure that may pass (storage down, a corrupt object, I/O, a worker
                    // that did not start) is tried again with a doubling wait; a model that was
                    // read and refused waits for a change.
                    let retry = error.may_pass().then(|| {
                        let previous = previous_slot_retry(previous, url, &fingerprint);
                        let after = previous.map_or(FIRST_RETRY, |r| (r.after * 2).min(MAX_RETRY));
                        Retry {
                            at: std::time::Instant::now() + after,
                            after,
                        }
                    });
                    let mut error = error.to_string();
                    if let Some(retry) = retry {
                        error.push_str(&format!(" (tried again in {} s)", retry.after.as_secs()));
                    }
                    tracing::warn!(
                        endpoint = %url,
                        "failed to load: {error}{}",
                        if keeps { " (the previous version keeps serving)" } else { "" }
                    );
                    Slot {
                        status: status(endpoint, "failed", Some(error), keeps, None),
                        client_error: Some(client_error),
                        attempt: Some(Attempt {
                            fingerprint,
                            stamp,
                            retry,
                        }),
                        serving: previous_serving,
                    }
                }
            };
            slots.insert(url.clone(), slot);
        }
        if let Some(metrics) = &self.metrics {
            let urls: Vec<&str> = slots.keys().map(String::as_str).collect();
            let mut monitors = metrics.monitors(&snapshot.config, &urls);
            for (url, slot) in &slots {
                if let Some(serving) = &slot.serving {
                    serving.monitor.store(monitors.remove(url));
                }
            }
        }
        if let Some(limit) = self.cache_size {
            self.evict(limit, &slots);
        }
        let canaries: Vec<_> = snapshot.config.canaries.values().collect();
        let mut table = RoutingTable::new(snapshot.service.revision, slots, &canaries)
            .with_shadows(snapshot.config.shadows.values());
        table.api_keys = snapshot.config.api_keys.values().cloned().collect();
        table.snapshot = Some(Arc::new(snapshot.clone()));
        table
    }

    /// Keeps the download cache under `limit` bytes, never removing a file a slot was loaded from.
    fn evict(&self, limit: u64, slots: &HashMap<String, Slot>) {
        let in_use = slots
            .values()
            .filter_map(|s| s.attempt.as_ref()?.stamp.as_ref())
            .map(|stamp| stamp.path.clone())
            .collect();
        match serval_artifacts::evict(&self.cache_dir, limit, &in_use) {
            Ok(evicted) if evicted.files > 0 => tracing::info!(
                "model cache: evicted {} least recently used file(s), {} bytes; {} bytes kept (limit {limit})",
                evicted.files,
                evicted.bytes,
                evicted.kept
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("model cache eviction failed: {e}"),
        }
    }
}

/// The first wait before a failed load that may pass is tried again, and the longest.
const FIRST_RETRY: Duration = Duration::from_secs(2);
const MAX_RETRY: Duration = Duration::from_secs(300);

/// The retry of the previous failed attempt with the same configuration (its wait doubles).
fn previous_slot_retry(
    previous: &RoutingTable,
    url: &str,
    fingerprint: &Fingerprint,
) -> Option<Retry> {
    previous
        .slots
        .get(url)?
        .attempt
        .as_ref()
        .filter(|a| &a.fingerprint == fingerprint)?
        .retry
}

/// The endpoint's dynamic batching (its aux configuration's Triton keys), if on.
fn batching(endpoint: &Endpoint) -> Result<Option<endpoint::Batching>, LoadError> {
    Ok(serval_store::batch_config(endpoint.aux_config.as_ref())
        .map_err(LoadError::Batching)?
        .map(|c| endpoint::Batching {
            max_rows: usize::try_from(c.max_batch_size).unwrap_or(usize::MAX),
            max_delay: Duration::from_micros(c.max_queue_delay_us),
            max_queue: c.max_queue_size.map_or(endpoint::DEFAULT_MAX_QUEUE, |n| {
                usize::try_from(n).unwrap_or(usize::MAX)
            }),
            preferred: c
                .preferred
                .iter()
                .map(|&n| usize::try_from(n).unwrap_or(usize::MAX))
                .collect(),
        }))
}

fn status(
    endpoint: &Endpoint,
    state: &str,
    error: Option<String>,
    serving: bool,
    path: Option<String>,
) -> EndpointStatus {
    EndpointStatus {
        state: state.to_string(),
        engine: endpoint.engine,
        model_id: endpoint.model_id.clone(),
        error,
        serving,
        path,
        python: None,
    }
}

/// Runs one row of zeros through a tabular model so the first request does not pay for lazy
/// initialisation; a model that cannot predict fails to load here rather than on traffic. Returns
/// the outputs (`None` for models that are not tabular), which tell the width of ZipMap outputs.
fn warm_up(engine: &mut dyn Instance) -> Result<Option<Vec<NamedOutput>>, LoadError> {
    let meta = engine.metadata();
    let (Some(width), [input]) = (meta.num_features(), meta.inputs.as_slice()) else {
        return Ok(None);
    };
    let data = match input.dtype {
        serval_engine::DataType::F32 => TensorData::F32(vec![0.0; width]),
        serval_engine::DataType::F64 => TensorData::F64(vec![0.0; width]),
        serval_engine::DataType::I64 => TensorData::I64(vec![0; width]),
        serval_engine::DataType::I32 => TensorData::I32(vec![0; width]),
        _ => return Ok(None),
    };
    let tensor = Tensor::new(vec![1, width], data).map_err(LoadError::WarmUp)?;
    engine
        .run(
            &[NamedTensor {
                name: input.name.clone(),
                tensor,
            }],
            &|| false,
        )
        .map(Some)
        .map_err(LoadError::WarmUp)
}
