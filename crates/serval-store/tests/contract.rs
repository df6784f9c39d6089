//! The store contract, run against both backends: the embedded SQLite file and a real
//! PostgreSQL server (a throwaway cluster from serval-testkit, one fresh database per test).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use serval_store::{
    AutoUpdateRule, Canary, CanaryTarget, Change, CodeKind, CodeRef, Endpoint, EngineKind,
    InstanceStatus, IoSpec, MetricRule, MetricVariable, NewModel, NewService, PostgresStore,
    Service, SqliteStore, Store, StoreError,
};

/// Where a test's store lives; `open` gives a new handle (its own connection) each time.
enum Target {
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

impl Target {
    fn sqlite() -> Target {
        Target::Sqlite(tempfile::tempdir().unwrap())
    }

    fn postgres() -> Target {
        Target::Postgres(serval_testkit::shared_postgres().fresh_database())
    }

    fn open(&self) -> Box<dyn Store> {
        match self {
            Target::Sqlite(dir) => {
                Box::new(SqliteStore::open(&dir.path().join("serval.db")).unwrap())
            }
            Target::Postgres(url) => Box::new(PostgresStore::open(url).unwrap()),
        }
    }
}

/// Runs each contract test against SQLite and against PostgreSQL.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $name() {
                super::$name(&super::Target::sqlite());
            })*
        }
        mod postgres {
            $(#[test]
            fn $name() {
                super::$name(&super::Target::postgres());
            })*
        }
    };
}

on_both_backends!(
    config_round_trips_and_revision_counts_changes,
    unknown_service_is_not_found,
    registry_queries_are_newest_first_and_bump_watching_services,
    instance_status_is_kept_without_bumping_the_revision,
    auto_update_versions_follow_the_registry_and_persist,
    ten_concurrent_writers_lose_nothing,
    models_added_in_one_millisecond_keep_their_order,
    export_then_import_reproduces_the_store,
    reopening_keeps_data_and_schema,
    writes_are_audited_and_stale_revisions_refused,
    fleet_statistics_add_up_across_instances_and_fold_into_hours,
    a_lease_has_one_holder_until_it_expires,
);

fn service(store: &dyn Store) -> Service {
    store
        .create_service(
            &NewService {
                name: "demo".into(),
                project: "DevOps".into(),
                tags: vec!["a".into()],
            },
            &Change::local("test", "test"),
        )
        .unwrap()
}

/// Rule "b": published models named `name`, two versions.
fn rule(name: &str) -> AutoUpdateRule {
    AutoUpdateRule {
        endpoint: "b".into(),
        engine: EngineKind::Xgboost,
        model_name: Some(name.into()),
        name_regex: false,
        project: None,
        tags: vec![],
        only_published: true,
        max_versions: 2,
        preprocess: None,
        io: IoSpec::default(),
        aux_config: None,
    }
}

fn endpoint(name: &str, version: Option<&str>) -> Endpoint {
    Endpoint {
        name: name.into(),
        version: version.map(Into::into),
        engine: EngineKind::Xgboost,
        model_id: Some("m1".into()),
        preprocess: Some(CodeRef {
            sha256: "ab".into(),
            name: "preprocess.py".into(),
            kind: CodeKind::File,
            uri: "file:///x".into(),
        }),
        io: IoSpec {
            input_size: vec![vec![1, 4]],
            ..IoSpec::default()
        },
        aux_config: Some(serde_json::json!({"a": 1})),
        created_ms: 5,
    }
}

fn config_round_trips_and_revision_counts_changes(target: &Target) {
    let store = &*target.open();
    let svc = service(store);
    assert_eq!(svc.revision, 1);
    let after = store
        .update_service(&svc.id, &Change::local("test", "test"), &mut |c| {
            let e = endpoint("m", Some("1"));
            c.endpoints.insert(e.url(), e);
            c.canaries.insert(
                "c".into(),
                Canary {
                    name: "c".into(),
                    weights: vec![0.1, 0.9],
                    target: CanaryTarget::Prefix("m/".into()),
                    sticky: None,
                },
            );
            c.metrics.insert(
                "m*".into(),
                MetricRule {
                    endpoint: "m*".into(),
                    log_frequency: Some(0.5),
                    variables: [(
                        "x".to_string(),
                        MetricVariable::Scalar {
                            buckets: vec![0.0, 1.0],
                        },
                    )]
                    .into(),
                },
            );
            c.settings.metric_log_freq = Some(0.25);
            Ok(())
        })
        .unwrap();
    assert_eq!(after.revision, 2);
    let snap = store.snapshot(&svc.id).unwrap();
    assert_eq!(snap.config.endpoints["m/1"], endpoint("m", Some("1")));
    assert_eq!(snap.config.canaries["c"].weights, vec![0.1, 0.9]);
    assert_eq!(snap.config.settings.metric_log_freq, Some(0.25));
    assert_eq!(snap.config.metrics["m*"].log_frequency, Some(0.5));

    // No change: no bump. A failing edit: nothing written.
    assert_eq!(
        store
            .update_service(&svc.id, &Change::local("test", "test"), &mut |_| Ok(()))
            .unwrap()
            .revision,
        2
    );
    let err = store
        .update_service(&svc.id, &Change::local("test", "test"), &mut |c| {
            c.endpoints.clear();
            Err(StoreError::InvalidInput("no".into()))
        })
        .unwrap_err();
    assert_eq!(err.kind(), "invalid_input");
    assert_eq!(store.snapshot(&svc.id).unwrap().config.endpoints.len(), 1);
    assert_eq!(store.revision(&svc.id).unwrap(), 2);

    // Removal is written as a delete.
    store
        .update_service(&svc.id, &Change::local("test", "test"), &mut |c| {
            c.endpoints.remove("m/1");
            Ok(())
        })
        .unwrap();
    assert!(store.snapshot(&svc.id).unwrap().config.endpoints.is_empty());
    assert_eq!(store.revision(&svc.id).unwrap(), 3);
}

fn unknown_service_is_not_found(target: &Target) {
    let store = &*target.open();
    assert_eq!(store.snapshot("nope").unwrap_err().kind(), "not_found");
    assert_eq!(store.revision("nope").unwrap_err().kind(), "not_found");
    assert_eq!(
        store
            .update_service("nope", &Change::local("test", "test"), &mut |_| Ok(()))
            .unwrap_err()
            .kind(),
        "not_found"
    );
}

fn registry_queries_are_newest_first_and_bump_watching_services(target: &Target) {
    let store = &*target.open();
    let svc = service(store);
    store
        .update_service(&svc.id, &Change::local("test", "test"), &mut |c| {
            c.auto_update.insert("b".into(), rule("iris"));
            Ok(())
        })
        .unwrap();
    let new = |name: &str| NewModel {
        name: name.into(),
        uri: "file:///m".into(),
        ..NewModel::default()
    };
    let a = store
        .add_model(&new("iris"), &Change::local("test", "test"))
        .unwrap();
    let b = store
        .add_model(&new("iris"), &Change::local("test", "test"))
        .unwrap();
    store
        .add_model(&new("other"), &Change::local("test", "test"))
        .unwrap();
    // Unpublished models do not match the rule: no bump yet.
    assert_eq!(store.revision(&svc.id).unwrap(), 2);
    let found = store
        .query_models(&serval_store::ModelQuery {
            name: Some("iris".into()),
            ..serval_store::ModelQuery::default()
        })
        .unwrap();
    assert_eq!(
        found.iter().map(|m| &m.id).collect::<Vec<_>>(),
        vec![&b.id, &a.id]
    );

    store
        .update_model(&a.id, &Change::local("test", "test"), &mut |m| {
            m.published = true;
            Ok(())
        })
        .unwrap();
    assert_eq!(store.revision(&svc.id).unwrap(), 3);
    let published = store
        .query_models(&serval_store::ModelQuery {
            name: Some("iri.*".into()),
            name_regex: true,
            only_published: true,
            ..serval_store::ModelQuery::default()
        })
        .unwrap();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].id, a.id);
}

fn instance_status_is_kept_without_bumping_the_revision(target: &Target) {
    let store = &*target.open();
    let svc = service(store);
    let mut status = InstanceStatus {
        id: "i1".into(),
        service_id: svc.id.clone(),
        host: "127.0.0.1".into(),
        port: 8080,
        pid: 42,
        started_ms: 1,
        heartbeat_ms: 2,
        revision: 1,
        ready: false,
        endpoints: Default::default(),
        grpc_port: Some(8081),
    };
    store.put_instance(&status).unwrap();
    status.ready = true;
    status.endpoints.insert(
        "m/1".into(),
        serval_store::EndpointStatus {
            state: "failed".into(),
            engine: EngineKind::Xgboost,
            model_id: Some("abc".into()),
            error: Some("corrupt".into()),
            serving: false,
            path: None,
            python: Some(serval_store::PythonStatus {
                workers: 2,
                alive: 1,
                restarts: 3,
                last_exit: Some("worker was killed by signal 9".into()),
                library_requests: 0,
            }),
        },
    );
    store.put_instance(&status).unwrap();
    assert_eq!(store.instances(&svc.id).unwrap(), vec![status]);
    assert_eq!(store.revision(&svc.id).unwrap(), 1);
    store.remove_instance("i1").unwrap();
    assert!(store.instances(&svc.id).unwrap().is_empty());
}

fn auto_update_versions_follow_the_registry_and_persist(target: &Target) {
    let store = &*target.open();
    let svc = service(store);
    store
        .update_service(&svc.id, &Change::local("test", "test"), &mut |c| {
            c.auto_update.insert("b".into(), rule("m"));
            Ok(())
        })
        .unwrap();
    let versions = || {
        store
            .snapshot(&svc.id)
            .unwrap()
            .config
            .auto_versions
            .get("b")
            .cloned()
            .unwrap_or_default()
    };
    let publish = |id: &str| {
        store
            .update_model(id, &Change::local("test", "test"), &mut |m| {
                m.published = true;
                Ok(())
            })
            .unwrap();
    };
    let new = || {
        store
            .add_model(
                &NewModel {
                    name: "m".into(),
                    uri: "file:///m".into(),
                    ..NewModel::default()
                },
                &Change::local("test", "test"),
            )
            .unwrap()
            .id
    };
    let (a, b, c) = (new(), new(), new());
    assert!(versions().is_empty(), "nothing published yet");
    let before = store.revision(&svc.id).unwrap();
    publish(&a);
    assert_eq!(versions(), [(1, a.clone())].into());
    assert_eq!(store.revision(&svc.id).unwrap(), before + 1);
    publish(&b);
    publish(&c);
    assert_eq!(versions(), [(2, b.clone()), (3, c.clone())].into());
    let served = store.snapshot(&svc.id).unwrap().config.served_endpoints();
    assert_eq!(served.keys().collect::<Vec<_>>(), vec!["b/2", "b/3"]);
    assert_eq!(served["b/3"].model_id.as_deref(), Some(c.as_str()));
    // Editing the rule applies to the versions it serves; the numbers stay.
    store
        .update_service(&svc.id, &Change::local("test", "test"), &mut |c| {
            c.auto_update.get_mut("b").unwrap().io.input_name = vec!["f".into()];
            Ok(())
        })
        .unwrap();
    let served = store.snapshot(&svc.id).unwrap().config.served_endpoints();
    assert_eq!(served.keys().collect::<Vec<_>>(), vec!["b/2", "b/3"]);
    assert!(
        served
            .values()
            .all(|e| e.io.input_name == vec!["f".to_string()])
    );
    // Removing the rule removes what it served.
    store
        .update_service(&svc.id, &Change::local("test", "test"), &mut |c| {
            c.auto_update.remove("b");
            Ok(())
        })
        .unwrap();
    assert!(
        store
            .snapshot(&svc.id)
            .unwrap()
            .config
            .served_endpoints()
            .is_empty()
    );
}

/// Ten writers, each with its own connection, add an endpoint and a model at the same time.
fn ten_concurrent_writers_lose_nothing(target: &Target) {
    let store = target.open();
    let svc = service(&*store);
    std::thread::scope(|scope| {
        for i in 0..10 {
            let id = svc.id.clone();
            scope.spawn(move || {
                let store = target.open();
                store
                    .update_service(&id, &Change::local("test", "test"), &mut |c| {
                        let e = endpoint(&format!("ep{i}"), None);
                        c.endpoints.insert(e.url(), e);
                        Ok(())
                    })
                    .unwrap();
                store
                    .add_model(
                        &NewModel {
                            name: format!("m{i}"),
                            uri: "file:///m".into(),
                            ..NewModel::default()
                        },
                        &Change::local("test", "test"),
                    )
                    .unwrap();
            });
        }
    });
    let snap = store.snapshot(&svc.id).unwrap();
    let urls: Vec<_> = snap.config.endpoints.keys().cloned().collect();
    let mut expected: Vec<_> = (0..10).map(|i| format!("ep{i}")).collect();
    expected.sort();
    assert_eq!(urls, expected);
    assert_eq!(
        snap.service.revision,
        svc.revision + 10,
        "one revision per write"
    );
    let models = store
        .query_models(&serval_store::ModelQuery::default())
        .unwrap();
    assert_eq!(models.len(), 10);
}

fn models_added_in_one_millisecond_keep_their_order(target: &Target) {
    let store = target.open();
    let ids: Vec<String> = (0..20)
        .map(|i| {
            store
                .add_model(
                    &NewModel {
                        name: format!("m{i}"),
                        uri: "file:///m".into(),
                        ..NewModel::default()
                    },
                    &Change::local("test", "test"),
                )
                .unwrap()
                .id
        })
        .collect();
    let newest_first: Vec<String> = store
        .query_models(&serval_store::ModelQuery::default())
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    let mut expected = ids;
    expected.reverse();
    assert_eq!(newest_first, expected);
}

/// A store with one of everything: endpoint, canary, auto-update rule serving two versions,
/// metric rule, settings, and an unrelated model.
fn populate(store: &dyn Store) -> Service {
    let svc = service(store);
    store
        .update_service(&svc.id, &Change::local("test", "test"), &mut |c| {
            let e = endpoint("m", Some("1"));
            c.endpoints.insert(e.url(), e);
            c.canaries.insert(
                "c".into(),
                Canary {
                    name: "c".into(),
                    weights: vec![0.25, 0.75],
                    target: CanaryTarget::Endpoints(vec!["m/1".into(), "b/2".into()]),
                    sticky: Some("header:x-user-id".into()),
                },
            );
            c.auto_update.insert("b".into(), rule("iris"));
            c.shadows.insert(
                serval_store::Shadow::key("m/1", "b/2"),
                serval_store::Shadow {
                    endpoint: "m/1".into(),
                    target: "b/2".into(),
                    fraction: 0.25,
                    tolerance: 1e-3,
                    created_ms: 11,
                },
            );
            c.payload_logs.insert(
                "m*".into(),
                serval_store::PayloadLog {
                    endpoint: "m*".into(),
                    sample: 0.25,
                    destination: "s3://bucket/logs".into(),
                    max_file_mb: 64,
                    max_file_seconds: 300,
                    created_ms: 13,
                },
            );
            c.drift_references.insert(
                "m".into(),
                serval_store::DriftReference {
                    endpoint: "m".into(),
                    window_seconds: 600,
                    features: vec![
                        serval_store::FeatureReference {
                            name: "x".into(),
                            bins: serval_store::ReferenceBins::Numeric {
                                edges: vec![0.5],
                                proportions: vec![0.25, 0.75],
                            },
                        },
                        serval_store::FeatureReference {
                            name: "colour".into(),
                            bins: serval_store::ReferenceBins::Categorical {
                                categories: vec!["red".into()],
                                proportions: vec![0.5, 0.5],
                            },
                        },
                    ],
                    rows: 4,
                    source: "ref.csv".into(),
                    created_ms: 14,
                },
            );
            c.rollouts.insert(
                "c".into(),
                serval_store::Rollout {
                    canary: "c".into(),
                    from: "m/1".into(),
                    to: "b/2".into(),
                    steps: vec![5.0, 100.0],
                    interval_ms: 60_000,
                    max_error_ratio: Some(0.01),
                    max_p99_ms: None,
                    min_agreement: None,
                    shadow_first_ms: None,
                    min_requests: 10,
                    state: serval_store::RolloutState::Running,
                    step: Some(0),
                    step_started_ms: 12,
                    paused_in: None,
                    created_ms: 12,
                    events: vec![serval_store::RolloutEvent {
                        time_ms: 12,
                        kind: "started".into(),
                        detail: "m/1 → b/2".into(),
                    }],
                },
            );
            c.metrics.insert(
                "m/1".into(),
                MetricRule {
                    endpoint: "m/1".into(),
                    log_frequency: None,
                    variables: [(
                        "y".to_string(),
                        MetricVariable::Enum {
                            buckets: vec!["a".into(), "b".into()],
                        },
                    )]
                    .into(),
                },
            );
            c.settings.serving_base_url = Some("http://127.0.0.1:8080/serve".into());
            c.api_keys.insert(
                "ci".into(),
                serval_store::ApiKey {
                    name: "ci".into(),
                    sha256: "cd".repeat(32),
                    endpoints: Some("m*".into()),
                    created_ms: 7,
                    expires_ms: Some(9),
                    role: serval_store::Role::Admin,
                },
            );
            Ok(())
        })
        .unwrap();
    for _ in 0..3 {
        store
            .add_model(
                &NewModel {
                    name: "iris".into(),
                    uri: "s3://bucket/iris.json".into(),
                    published: true,
                    sha256: Some("ab".repeat(32)),
                    size: Some(42),
                    ..NewModel::default()
                },
                &Change::local("test", "test"),
            )
            .unwrap();
    }
    store
        .add_model(
            &NewModel {
                name: "other".into(),
                uri: "file:///other".into(),
                tags: vec!["x".into()],
                ..NewModel::default()
            },
            &Change::local("test", "test"),
        )
        .unwrap();
    store.service(&svc.id).unwrap()
}

fn export_then_import_reproduces_the_store(target: &Target) {
    let source = target.open();
    let svc = populate(&*source);
    let dump = source.export().unwrap();
    assert_eq!(dump.services.len(), 1);
    assert_eq!(dump.models.len(), 4);
    assert_eq!(dump.services[0].config.auto_versions["b"].len(), 2);

    // Into the other backend, and into one of the same kind.
    for destination in [Target::sqlite(), Target::postgres()] {
        let dest = destination.open();
        dest.import(&dump, &Change::local("test", "test")).unwrap();
        let mut again = dest.export().unwrap();
        again.exported_ms = dump.exported_ms;
        assert_eq!(again, dump);
        assert_eq!(dest.revision(&svc.id).unwrap(), svc.revision);
        // The registry keeps working: a new model joins the rule as the next version.
        dest.add_model(
            &NewModel {
                name: "iris".into(),
                uri: "file:///iris".into(),
                published: true,
                ..NewModel::default()
            },
            &Change::local("test", "test"),
        )
        .unwrap();
        let versions = dest.snapshot(&svc.id).unwrap().config.auto_versions["b"].clone();
        assert_eq!(versions.keys().copied().collect::<Vec<_>>(), vec![3, 4]);
        // A second import would duplicate ids: refused, nothing written.
        let err = dest
            .import(&dump, &Change::local("test", "test"))
            .unwrap_err();
        assert_eq!(err.kind(), "invalid_input", "{err}");
        assert!(err.to_string().contains("nothing was imported"), "{err}");
        assert_eq!(dest.list_services().unwrap().len(), 1);
    }
}

fn fleet_statistics_add_up_across_instances_and_fold_into_hours(target: &Target) {
    use serval_store::StatsRow;
    let store = &*target.open();
    let svc = populate(store);
    let revision = store.revision(&svc.id).unwrap();
    let row = |target: &str, bucket_ms: i64, counts: &[(&str, u64)]| StatsRow {
        kind: "shadow".into(),
        endpoint: "m/1".into(),
        target: target.into(),
        bucket_ms,
        counts: counts.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
    };
    let now = serval_store::now_ms();
    let recent = now - now.rem_euclid(10_000) - 60_000;
    store
        .add_stats(
            &svc.id,
            "i1",
            &[
                row("b/2", recent, &[("compared", 3), ("agreed", 2)]),
                row("c/1", recent, &[("compared", 1)]),
            ],
        )
        .unwrap();
    // The same key adds up; another instance's rows are summed by readers.
    store
        .add_stats(&svc.id, "i1", &[row("b/2", recent, &[("compared", 1)])])
        .unwrap();
    store
        .add_stats(
            &svc.id,
            "i2",
            &[
                row("b/2", recent, &[("compared", 10), ("dropped", 1)]),
                row("b/2", recent + 10_000, &[("compared", 5)]),
            ],
        )
        .unwrap();
    let rows = store.stats(&svc.id, "shadow", "m/1", recent).unwrap();
    assert_eq!(
        rows,
        vec![
            row(
                "b/2",
                recent,
                &[("agreed", 2), ("compared", 14), ("dropped", 1)]
            ),
            row("c/1", recent, &[("compared", 1)]),
            row("b/2", recent + 10_000, &[("compared", 5)]),
        ]
    );
    assert!(
        store
            .stats(&svc.id, "shadow", "m/1", recent + 20_000)
            .unwrap()
            .is_empty()
    );
    assert!(store.stats(&svc.id, "shadow", "b/2", 0).unwrap().is_empty());
    // Rows older than an hour become hourly; older than 30 days go.
    let hour = 3_600_000;
    let old = now - now.rem_euclid(hour) - 3 * hour;
    store
        .add_stats(
            &svc.id,
            "i3",
            &[
                row("b/2", old + 10_000, &[("compared", 1)]),
                row("b/2", old + 20_000, &[("compared", 2)]),
                row("b/2", now - 40 * 24 * hour, &[("compared", 100)]),
            ],
        )
        .unwrap();
    let rows = store.stats(&svc.id, "shadow", "m/1", 0).unwrap();
    assert_eq!(rows[0], row("b/2", old, &[("compared", 3)]));
    let total: u64 = rows.iter().map(|r| r.counts["compared"]).sum();
    assert_eq!(total, 3 + 14 + 1 + 5);
    // Statistics are not configuration.
    assert_eq!(store.revision(&svc.id).unwrap(), revision);
    store.remove_instance("i2").unwrap();
    assert_eq!(store.stats(&svc.id, "shadow", "m/1", 0).unwrap(), rows);
}

fn a_lease_has_one_holder_until_it_expires(target: &Target) {
    let store = &*target.open();
    let svc = service(store);
    let take = |holder: &str, now: i64| {
        store
            .lease(&svc.id, "rollout/c", holder, 1_000, now)
            .unwrap()
    };
    let first = take("a", 10_000);
    assert!(first.held && first.taken_from.is_none());
    assert!(!take("b", 10_500).held, "a holds it until 11,000");
    let renewed = take("a", 10_900);
    assert!(renewed.held && renewed.taken_from.is_none());
    assert!(!take("b", 11_800).held, "renewed until 11,900");
    let taken = take("b", 12_000);
    assert!(taken.held);
    assert_eq!(taken.taken_from.as_deref(), Some("a"));
    assert!(!take("a", 12_100).held);
    // Leases are not configuration.
    assert_eq!(store.revision(&svc.id).unwrap(), 1);
}

fn reopening_keeps_data_and_schema(target: &Target) {
    let id = service(&*target.open()).id;
    assert_eq!(target.open().service(&id).unwrap().name, "demo");
}

#[test]
fn postgres_notifies_revision_changes() {
    let target = Target::postgres();
    let store = target.open();
    let svc = service(&*store);
    let mut feed = store.changes().unwrap().expect("PostgreSQL pushes changes");
    let writer = target.open();
    writer
        .update_service(&svc.id, &Change::local("test", "test"), &mut |c| {
            c.settings.python = Some("python3".into());
            Ok(())
        })
        .unwrap();
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while seen.is_empty() && std::time::Instant::now() < deadline {
        seen = feed.wait(Duration::from_secs(1)).unwrap();
    }
    assert_eq!(seen, vec![svc.id.clone()]);
    assert!(
        SqliteStore::open(&tempfile::tempdir().unwrap().path().join("s.db"))
            .unwrap()
            .changes()
            .unwrap()
            .is_none()
    );
}

#[test]
fn unreachable_postgres_is_unavailable_and_never_shows_the_password() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let url = format!("postgres://serval:s3cret-pw@127.0.0.1:{port}/serval");
    let err = match PostgresStore::open(&url) {
        Ok(_) => panic!("nothing listens on {port}"),
        Err(e) => e,
    };
    assert_eq!(err.kind(), "unavailable", "{err}");
    let text = err.to_string();
    assert!(!text.contains("s3cret-pw"), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    let bad = serval_store::open("mysql://root:hunter2@db/x")
        .err()
        .unwrap();
    assert!(!bad.to_string().contains("hunter2"), "{bad}");
}

/// The server goes away and comes back: the same handle fails with `unavailable` meanwhile and
/// works again afterwards (the pool reconnects), and the feed reports the break.
#[test]
fn postgres_outage_is_unavailable_then_recovers() {
    let mut pg = serval_testkit::Postgres::start();
    let url = pg.fresh_database();
    let store: Arc<dyn Store> = Arc::new(PostgresStore::open(&url).unwrap());
    let svc = service(&*store);
    let mut feed = store.changes().unwrap().unwrap();
    pg.stop();
    let err = store.revision(&svc.id).unwrap_err();
    assert_eq!(err.kind(), "unavailable", "{err}");
    assert!(matches!(err, StoreError::Unavailable(_)));
    assert!(
        feed.wait(Duration::from_secs(5)).is_err(),
        "a dead feed reports an error"
    );
    pg.resume();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match store.revision(&svc.id) {
            Ok(r) => {
                assert_eq!(r, svc.revision);
                break;
            }
            Err(e) if std::time::Instant::now() < deadline => {
                assert_eq!(e.kind(), "unavailable", "{e}");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("the store did not come back: {e}"),
        }
    }
}

/// Every write records who made it, what and the revision it led to, in its own transaction; a
/// write made against an older revision (`If-Match`) is refused and recorded nowhere.
fn writes_are_audited_and_stale_revisions_refused(target: &Target) {
    let store = &*target.open();
    let svc = service(store);
    let by = |key: &str, op: &str| Change::new(key, op, format!("services/{}/config", svc.id));
    let after = store
        .update_service(
            &svc.id,
            &by("ops", "config.set").if_revision(Some(1)),
            &mut |c| {
                c.settings.metric_log_freq = Some(0.5);
                Ok(())
            },
        )
        .unwrap();
    assert_eq!(after.revision, 2);
    // Revision 1 is gone: refused, nothing written or recorded.
    let stale = store
        .update_service(
            &svc.id,
            &by("ops", "config.set").if_revision(Some(1)),
            &mut |c| {
                c.settings.metric_log_freq = Some(0.75);
                Ok(())
            },
        )
        .unwrap_err();
    assert_eq!(stale.kind(), "stale");
    assert!(stale.to_string().contains("revision 2"), "{stale}");
    assert_eq!(
        store
            .snapshot(&svc.id)
            .unwrap()
            .config
            .settings
            .metric_log_freq,
        Some(0.5)
    );
    // A failed edit is not recorded either.
    let _ = store.update_service(&svc.id, &by("ops", "endpoint.put"), &mut |_| {
        Err(StoreError::InvalidInput("no".into()))
    });
    let model = store
        .add_model(
            &NewModel {
                name: "iris".into(),
                uri: "file:///iris".into(),
                ..NewModel::default()
            },
            &Change::local("model.upload", "models"),
        )
        .unwrap();

    let all = store.audit(None, 100).unwrap();
    let seen: Vec<_> = all
        .iter()
        .map(|e| (e.key.as_str(), e.operation.as_str(), e.revision))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("local", "test", Some(1)),
            ("ops", "config.set", Some(2)),
            ("local", "model.upload", None),
        ]
    );
    assert_eq!(all[1].service_id.as_deref(), Some(svc.id.as_str()));
    assert_eq!(all[1].target, format!("services/{}/config", svc.id));
    // A created record's path ends in its new id.
    assert_eq!(all[2].target, format!("models/{}", model.id));
    assert!(all.windows(2).all(|w| w[0].time_ms <= w[1].time_ms));
    // The newest `limit`, still oldest first; `since` filters by time.
    let last_two = store.audit(None, 2).unwrap();
    assert_eq!(last_two, all[1..].to_vec());
    assert!(
        store
            .audit(Some(all[2].time_ms + 1), 100)
            .unwrap()
            .is_empty()
    );
    assert_eq!(model.name, "iris");
}
