//! The deployment files agree with the code. A variable, topic or port the code uses but the
//! manifests do not provide would otherwise show up only in a cluster, as a silent default (a
//! service talking to `127.0.0.1:9092`) or a consumer stuck on a topic nobody created.
//!
//! What the code needs is read from the code itself: the variables each service's
//! `Settings::from_env` reads (recorded by `shop_runtime::config::recording`), the topics it
//! produces and consumes (`shop_proto::topics`, and the topic settings), the dead-letter topic
//! of its consumer group (`<group>.dlq`), its ports. What the deployment provides is read from
//! `k8s/` (the base Deployments with their ConfigMaps; a KafkaTopic anywhere under `k8s/`) and
//! from `docker-compose.yml` (each service's `environment`, and the `TOPICS` of the one-shot
//! `kafka-topics` service). Every check collects all its findings, each naming the file to fix.
//!
//! The syntax of those files (schemas, lint) is checked by `deploy/check-deploy.sh`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize as _;
use serde_norway::Value;
use shop_runtime::config::recording;
use shop_testkit::Topology;

/// The repository root (this crate is `crates/suite`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `path` relative to the repository root, for messages.
fn shown(path: &Path) -> String {
    let root = root().canonicalize().expect("repository root");
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    path.strip_prefix(&root)
        .unwrap_or(&path)
        .display()
        .to_string()
}

// --- what the code needs ----------------------------------------------------------------------

/// A setting of a service with the value the code uses when it is not set.
#[derive(Clone, Debug)]
struct Setting {
    var: String,
    default: String,
}

impl Setting {
    fn new(var: impl Into<String>, default: impl ToString) -> Self {
        Self {
            var: var.into(),
            default: default.to_string(),
        }
    }

    /// Its value in `env` (unset or empty: the default, as `shop_runtime::config` reads it).
    fn value_in(&self, env: &Env) -> String {
        match env.vars.get(&self.var) {
            Some(Some(value)) if !value.is_empty() => value.clone(),
            _ => self.default.clone(),
        }
    }
}

/// What one service needs from its deployment, read from its code.
#[derive(Debug)]
struct Needs {
    /// The k8s Deployment, Service and ConfigMap name (`k8s/base/<name>/`), and the compose
    /// service.
    name: &'static str,
    binary: &'static str,
    /// Every variable its settings read, in order; `A|B` means either.
    reads: Vec<String>,
    /// The topics it produces or consumes.
    topics: Vec<Setting>,
    /// Its consumer group, whose dead letters go to `<group>.dlq`.
    group: Setting,
    /// Its gRPC, metrics and admin API listen addresses.
    grpc_addr: Setting,
    metrics_addr: Setting,
    admin_addr: Setting,
    /// How long its inbox remembers an applied event, in milliseconds.
    inbox_retention: Setting,
}

impl Needs {
    /// The topics this service uses when run with `env`, each with why.
    fn topics_in(&self, env: &Env) -> Vec<(String, String)> {
        let mut topics: Vec<(String, String)> = self
            .topics
            .iter()
            .map(|t| (t.value_in(env), format!("{} of {}", t.var, self.binary)))
            .collect();
        topics.push((
            format!("{}.dlq", self.group.value_in(env)),
            format!("dead letters of {}, group {}", self.binary, self.group.var),
        ));
        topics
    }
}

fn shown_port(port: Option<&u16>) -> String {
    port.map_or_else(|| "missing".to_owned(), u16::to_string)
}

fn port_of(addr: &str) -> Option<u16> {
    addr.parse::<SocketAddr>().ok().map(|a| a.port())
}

/// Reads each service's settings the way its `main` does, noting every variable read.
fn services() -> Vec<Needs> {
    use inventory_service::startup::Inventory;
    use notification_service::startup::Notifications;
    use order_service::startup::Orders;
    use payment_service::startup::Payments;
    use shop_runtime::config::Settings as _;
    use shop_runtime::skeleton::Service;

    /// What a service needs, from the settings it read (`reads`) and its `topics`.
    fn needs<S: Service>(topics: impl FnOnce(&S::Settings) -> Vec<Setting>) -> Needs {
        let identity = S::IDENTITY;
        let (settings, reads) = recording(S::Settings::from_env);
        let settings = settings
            .unwrap_or_else(|e| panic!("{} settings from this environment: {e}", identity.binary));
        let p = identity.prefix();
        let common = settings.service();
        Needs {
            name: identity.name,
            binary: identity.binary,
            reads,
            topics: topics(&settings),
            group: Setting::new(format!("{p}_CONSUMER_GROUP"), &common.consumer_group),
            grpc_addr: Setting::new(format!("{p}_GRPC_ADDR"), common.grpc_addr),
            metrics_addr: Setting::new(format!("{p}_METRICS_ADDR"), common.metrics_addr),
            admin_addr: Setting::new(format!("{p}_ADMIN_ADDR"), common.admin_addr),
            inbox_retention: Setting::new(
                format!("{p}_INBOX_RETENTION_MS"),
                common.inbox_retention.as_millis(),
            ),
        }
    }

    vec![
        needs::<Orders>(|s| {
            vec![
                Setting::new("ORDER_EVENTS_TOPIC", &s.order_events_topic),
                Setting::new("INVENTORY_EVENTS_TOPIC", &s.inventory_events_topic),
                Setting::new("PAYMENT_EVENTS_TOPIC", &s.payment_events_topic),
            ]
        }),
        needs::<Inventory>(|s| {
            vec![
                Setting::new("ORDER_EVENTS_TOPIC", &s.order_events_topic),
                Setting::new("INVENTORY_EVENTS_TOPIC", &s.inventory_events_topic),
            ]
        }),
        needs::<Payments>(|s| {
            vec![
                Setting::new("ORDER_EVENTS_TOPIC", &s.order_events_topic),
                Setting::new("PAYMENT_EVENTS_TOPIC", &s.payment_events_topic),
            ]
        }),
        needs::<Notifications>(|s| vec![Setting::new("ORDER_EVENTS_TOPIC", &s.order_events_topic)]),
    ]
}

/// The topics of the protobuf contracts: produced or consumed whatever the settings say.
fn contract_topics() -> [(&'static str, &'static str); 3] {
    use shop_proto::topics::*;
    [
        (ORDER_EVENTS, "shop_proto::topics::ORDER_EVENTS"),
        (INVENTORY_EVENTS, "shop_proto::topics::INVENTORY_EVENTS"),
        (PAYMENT_EVENTS, "shop_proto::topics::PAYMENT_EVENTS"),
    ]
}

// --- what the deployment provides ---------------------------------------------------------------

/// The environment of one process: a k8s container or a compose service.
#[derive(Clone, Debug)]
struct Env {
    /// Which process, and in which file, for messages.
    what: String,
    /// Where to add a missing variable.
    fix_in: String,
    /// Name -> value; `None` when the value comes from elsewhere (a Secret, the downward API).
    vars: BTreeMap<String, Option<String>>,
}

/// A container of a base Deployment.
#[derive(Clone, Debug)]
struct Container {
    /// The Deployment's name.
    deployment: String,
    env: Env,
    /// Named container ports.
    ports: BTreeMap<String, u16>,
    /// Ports of its gRPC probes.
    probe_ports: Vec<(&'static str, u16)>,
    /// The app container (not an init container).
    main: bool,
}

#[derive(Debug)]
struct K8s {
    containers: Vec<Container>,
    /// Service name -> (port name -> port, file).
    services: BTreeMap<String, (BTreeMap<String, u16>, String)>,
    /// Topic name -> the file declaring its KafkaTopic.
    kafka_topics: BTreeMap<String, String>,
    /// Topic name -> its KafkaTopic `spec`.
    kafka_topic_specs: BTreeMap<String, Value>,
}

#[derive(Debug)]
struct Compose {
    services: BTreeMap<String, Env>,
    /// Topics the one-shot `kafka-topics` service creates.
    topics: BTreeSet<String>,
    /// Its `NAME:PARTITIONS:RETENTION_MS` entries, by name.
    topic_specs: BTreeMap<String, (String, String)>,
}

fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            let mut value = Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
            value
                .apply_merge()
                .unwrap_or_else(|e| panic!("{}: bad YAML merge key: {e}", path.display()));
            value
        })
        .collect()
}
fn str_of<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(value, |v, key| v.get(*key))
        .and_then(Value::as_str)
}

fn seq_of<'a>(value: &'a Value, path: &[&str]) -> &'a [Value] {
    path.iter()
        .try_fold(value, |v, key| v.get(*key))
        .and_then(Value::as_sequence)
        .map_or(&[], Vec::as_slice)
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

/// A kustomize env file: `KEY=value` lines, `#` comments.
fn env_file(path: &Path) -> BTreeMap<String, Option<String>> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (key, value) = line.split_once('=').unwrap_or((line, ""));
            (key.to_owned(), Some(value.to_owned()))
        })
        .collect()
}

/// Every `*.yaml` file under `dir`.
fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

impl K8s {
    fn load() -> Self {
        let base = root().join("k8s/base");
        let kustomization = yaml_documents(&base.join("kustomization.yaml"))
            .pop()
            .expect("k8s/base/kustomization.yaml");

        // ConfigMaps: generated from env files or literals, or plain resources.
        let mut config_maps: BTreeMap<String, (BTreeMap<String, Option<String>>, String)> =
            BTreeMap::new();
        for generator in seq_of(&kustomization, &["configMapGenerator"]) {
            let name = str_of(generator, &["name"]).expect("configMapGenerator name");
            let mut vars = BTreeMap::new();
            let mut files = Vec::new();
            for file in seq_of(generator, &["envs"]) {
                let path = base.join(file.as_str().expect("envs entry"));
                vars.extend(env_file(&path));
                files.push(shown(&path));
            }
            for literal in seq_of(generator, &["literals"]) {
                let (key, value) = literal
                    .as_str()
                    .and_then(|l| l.split_once('='))
                    .expect("literal KEY=value");
                vars.insert(key.to_owned(), Some(value.to_owned()));
            }
            if files.is_empty() {
                files.push(shown(&base.join("kustomization.yaml")));
            }
            config_maps.insert(name.to_owned(), (vars, files.join(", ")));
        }
        let resources: Vec<PathBuf> = seq_of(&kustomization, &["resources"])
            .iter()
            .map(|r| base.join(r.as_str().expect("resource path")))
            .collect();
        let documents: Vec<(Value, String)> = resources
            .iter()
            .flat_map(|path| {
                let file = shown(path);
                yaml_documents(path)
                    .into_iter()
                    .map(move |d| (d, file.clone()))
            })
            .collect();
        for (doc, file) in &documents {
            if str_of(doc, &["kind"]) == Some("ConfigMap") {
                let name = str_of(doc, &["metadata", "name"]).expect("ConfigMap name");
                let vars = doc
                    .get("data")
                    .and_then(Value::as_mapping)
                    .into_iter()
                    .flatten()
                    .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), scalar(v))))
                    .collect();
                config_maps.insert(name.to_owned(), (vars, file.clone()));
            }
        }

        let mut containers = Vec::new();
        let mut services = BTreeMap::new();
        for (doc, file) in &documents {
            let name = str_of(doc, &["metadata", "name"])
                .unwrap_or_default()
                .to_owned();
            match str_of(doc, &["kind"]) {
                Some("Deployment") => {
                    let pod = &doc["spec"]["template"]["spec"];
                    let init = seq_of(pod, &["initContainers"]).iter().map(|c| (c, false));
                    let main = seq_of(pod, &["containers"]).iter().map(|c| (c, true));
                    for (container, main) in init.chain(main) {
                        containers.push(Self::container(
                            &name,
                            container,
                            main,
                            file,
                            &config_maps,
                        ));
                    }
                }
                Some("Service") => {
                    let ports = seq_of(doc, &["spec", "ports"])
                        .iter()
                        .filter_map(|p| {
                            let port = u16::try_from(p.get("port")?.as_u64()?).ok()?;
                            Some((str_of(p, &["name"]).unwrap_or_default().to_owned(), port))
                        })
                        .collect();
                    services.insert(name, (ports, file.clone()));
                }
                _ => {}
            }
        }

        let mut files = Vec::new();
        yaml_files(&root().join("k8s"), &mut files);
        let mut kafka_topics = BTreeMap::new();
        let mut kafka_topic_specs = BTreeMap::new();
        for path in files {
            for doc in yaml_documents(&path) {
                if str_of(&doc, &["kind"]) == Some("KafkaTopic") {
                    let topic = str_of(&doc, &["spec", "topicName"])
                        .or_else(|| str_of(&doc, &["metadata", "name"]))
                        .expect("KafkaTopic name");
                    kafka_topics.insert(topic.to_owned(), shown(&path));
                    kafka_topic_specs.insert(
                        topic.to_owned(),
                        doc.get("spec").cloned().unwrap_or(Value::Null),
                    );
                }
            }
        }
        Self {
            containers,
            services,
            kafka_topics,
            kafka_topic_specs,
        }
    }

    fn container(
        deployment: &str,
        container: &Value,
        main: bool,
        file: &str,
        config_maps: &BTreeMap<String, (BTreeMap<String, Option<String>>, String)>,
    ) -> Container {
        let name = str_of(container, &["name"]).unwrap_or_default();
        let mut vars = BTreeMap::new();
        let mut sources = Vec::new();
        for from in seq_of(container, &["envFrom"]) {
            if let Some(map) = str_of(from, &["configMapRef", "name"]) {
                let (map_vars, map_file) = config_maps.get(map).unwrap_or_else(|| {
                    panic!("{file}: container {name} loads ConfigMap {map}, which k8s/base does not define")
                });
                vars.extend(map_vars.clone());
                sources.push(map_file.clone());
            }
        }
        for var in seq_of(container, &["env"]) {
            let key = str_of(var, &["name"]).expect("env name").to_owned();
            vars.insert(key, str_of(var, &["value"]).map(str::to_owned));
        }
        sources.push(file.to_owned());
        let ports = seq_of(container, &["ports"])
            .iter()
            .filter_map(|p| {
                let port = u16::try_from(p.get("containerPort")?.as_u64()?).ok()?;
                Some((str_of(p, &["name"])?.to_owned(), port))
            })
            .collect();
        let probe_ports = ["startupProbe", "readinessProbe", "livenessProbe"]
            .iter()
            .filter_map(|probe| {
                let port = container.get(*probe)?.get("grpc")?.get("port")?.as_u64()?;
                Some((*probe, u16::try_from(port).ok()?))
            })
            .collect();
        Container {
            deployment: deployment.to_owned(),
            env: Env {
                what: format!("container {name} of the Deployment {deployment} ({file})"),
                fix_in: sources.join(" or "),
                vars,
            },
            ports,
            probe_ports,
            main,
        }
    }

    /// The containers of `service`'s Deployment.
    fn containers_of<'a>(&'a self, service: &str) -> impl Iterator<Item = &'a Container> + use<'a> {
        let service = service.to_owned();
        self.containers
            .iter()
            .filter(move |c| c.deployment == service)
    }
}

impl Compose {
    fn load() -> Self {
        let path = root().join("docker-compose.yml");
        let file = shown(&path);
        let doc = yaml_documents(&path).pop().expect("docker-compose.yml");
        let mut services = BTreeMap::new();
        let mut topics = BTreeSet::new();
        let mut topic_specs = BTreeMap::new();
        for (name, service) in doc
            .get("services")
            .and_then(Value::as_mapping)
            .expect("docker-compose.yml: services")
        {
            let name = name.as_str().expect("service name").to_owned();
            let mut vars = BTreeMap::new();
            match service.get("environment") {
                Some(Value::Mapping(map)) => {
                    for (k, v) in map {
                        vars.insert(k.as_str().expect("variable").to_owned(), scalar(v));
                    }
                }
                Some(Value::Sequence(list)) => {
                    for entry in list.iter().filter_map(Value::as_str) {
                        let (k, v) = entry.split_once('=').unwrap_or((entry, ""));
                        vars.insert(k.to_owned(), Some(v.to_owned()));
                    }
                }
                _ => {}
            }
            if name == "kafka-topics" {
                let spec = vars.get("TOPICS").cloned().flatten().unwrap_or_default();
                for entry in spec.split_whitespace() {
                    let mut parts = entry.split(':');
                    let topic = parts.next().unwrap_or(entry).to_owned();
                    let partitions = parts.next().unwrap_or_default().to_owned();
                    let retention = parts.next().unwrap_or_default().to_owned();
                    topics.insert(topic.clone());
                    topic_specs.insert(topic, (partitions, retention));
                }
            }
            let env = Env {
                what: format!("the compose service {name} ({file})"),
                fix_in: format!("services.{name}.environment in {file}"),
                vars,
            };
            services.insert(name, env);
        }
        Self {
            services,
            topics,
            topic_specs,
        }
    }
}

// --- the checks -------------------------------------------------------------------------------

/// Every variable `needs` reads is set in `env` (for `A|B`, one of them).
fn missing_vars(needs: &Needs, env: &Env, problems: &mut Vec<String>) {
    for read in &needs.reads {
        if !read.split('|').any(|var| env.vars.contains_key(var)) {
            let var = read.replace('|', " (or ") + if read.contains('|') { ")" } else { "" };
            problems.push(format!(
                "{} reads {var}, but {} does not set it: add it to {}",
                needs.binary, env.what, env.fix_in
            ));
        }
    }
}

fn check_k8s_env(needs: &[Needs], k8s: &K8s) -> Vec<String> {
    let mut problems = Vec::new();
    for service in needs {
        let mut any = false;
        for container in k8s.containers_of(service.name) {
            any = true;
            missing_vars(service, &container.env, &mut problems);
        }
        if !any {
            problems.push(format!(
                "{}: no Deployment {} in k8s/base (k8s/base/kustomization.yaml resources)",
                service.binary, service.name
            ));
        }
    }
    problems
}

fn check_compose_env(needs: &[Needs], compose: &Compose) -> Vec<String> {
    let mut problems = Vec::new();
    for service in needs {
        match compose.services.get(service.name) {
            Some(env) => missing_vars(service, env, &mut problems),
            None => problems.push(format!(
                "{}: no service {} in docker-compose.yml",
                service.binary, service.name
            )),
        }
    }
    problems
}

/// Every topic the code uses, with why, given each service's environment.
fn needed_topics<'a>(
    needs: &[Needs],
    env_of: impl Fn(&str) -> Option<&'a Env>,
) -> BTreeMap<String, String> {
    let mut topics: BTreeMap<String, String> = contract_topics()
        .iter()
        .map(|(t, why)| ((*t).to_owned(), (*why).to_owned()))
        .collect();
    let empty = Env {
        what: String::new(),
        fix_in: String::new(),
        vars: BTreeMap::new(),
    };
    for service in needs {
        let env = env_of(service.name).unwrap_or(&empty);
        for (topic, why) in service.topics_in(env) {
            topics.entry(topic).or_insert(why);
        }
    }
    topics
}

fn check_topics(needs: &[Needs], k8s: &K8s, compose: &Compose) -> Vec<String> {
    let mut problems = Vec::new();
    let in_k8s = needed_topics(needs, |name| {
        k8s.containers_of(name).find(|c| c.main).map(|c| &c.env)
    });
    let declared = k8s
        .kafka_topics
        .values()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
        .join(", ");
    for (topic, why) in &in_k8s {
        if !k8s.kafka_topics.contains_key(topic) {
            problems.push(format!(
                "topic {topic} ({why}) has no KafkaTopic under k8s/ (the others are in {declared})"
            ));
        }
    }
    let in_compose = needed_topics(needs, |name| compose.services.get(name));
    for (topic, why) in &in_compose {
        if !compose.topics.contains(topic) {
            problems.push(format!(
                "topic {topic} ({why}) is not created by docker-compose.yml: add it to services.kafka-topics.environment.TOPICS"
            ));
        }
    }
    problems
}

fn check_k8s_ports(needs: &[Needs], k8s: &K8s) -> Vec<String> {
    let mut problems = Vec::new();
    for service in needs {
        for container in k8s.containers_of(service.name).filter(|c| c.main) {
            let env = &container.env;
            for (setting, port_name) in [
                (&service.grpc_addr, "grpc"),
                (&service.metrics_addr, "metrics"),
            ] {
                let Some(port) = port_of(&setting.value_in(env)) else {
                    problems.push(format!("{}: {} is not host:port", env.what, setting.var));
                    continue;
                };
                if container.ports.get(port_name) != Some(&port) {
                    problems.push(format!(
                        "{}: the container port named {port_name} is {}, but {} listens on {port} ({})",
                        env.what,
                        shown_port(container.ports.get(port_name)),
                        service.binary,
                        setting.var
                    ));
                }
                let (ports, file) = match k8s.services.get(service.name) {
                    Some(found) => found,
                    None => {
                        problems.push(format!(
                            "{}: no Service {} in k8s/base",
                            service.binary, service.name
                        ));
                        continue;
                    }
                };
                if ports.get(port_name) != Some(&port) {
                    problems.push(format!(
                        "the Service {} ({file}) port {port_name} is {}, not {port} ({} of {})",
                        service.name,
                        shown_port(ports.get(port_name)),
                        setting.var,
                        service.binary
                    ));
                }
            }
            // The admin API: its container port, on a Service of its own (`<name>-admin`), never
            // on the public one.
            match port_of(&service.admin_addr.value_in(env)) {
                None => problems.push(format!(
                    "{}: {} is not host:port",
                    env.what, service.admin_addr.var
                )),
                Some(port) => {
                    if container.ports.get("admin") != Some(&port) {
                        problems.push(format!(
                            "{}: the container port named admin is {}, but {} serves its admin API on {port} ({})",
                            env.what,
                            shown_port(container.ports.get("admin")),
                            service.binary,
                            service.admin_addr.var
                        ));
                    }
                    let admin = format!("{}-admin", service.name);
                    match k8s.services.get(&admin) {
                        None => problems.push(format!(
                            "{}: no Service {admin} in k8s/base (its admin API)",
                            service.binary
                        )),
                        Some((ports, file)) => {
                            if ports.get("admin") != Some(&port) || ports.len() != 1 {
                                problems.push(format!(
                                    "the Service {admin} ({file}) has ports {ports:?}: only admin, {port} ({} of {})",
                                    service.admin_addr.var, service.binary
                                ));
                            }
                        }
                    }
                    if let Some((ports, file)) = k8s.services.get(service.name)
                        && (ports.contains_key("admin") || ports.values().any(|p| *p == port))
                    {
                        problems.push(format!(
                            "the public Service {} ({file}) exposes the admin API (port {port}): it belongs on {admin} only",
                            service.name
                        ));
                    }
                }
            }
            let grpc = port_of(&service.grpc_addr.value_in(env));
            for (probe, port) in &container.probe_ports {
                if Some(*port) != grpc {
                    problems.push(format!(
                        "{}: the {probe} checks gRPC port {port}, but {} serves gRPC on {}",
                        env.what,
                        service.binary,
                        shown_port(grpc.as_ref())
                    ));
                }
            }
            // gRPC URLs of other services (INVENTORY_GRPC_URL) name a Service and its port.
            for (var, value) in &env.vars {
                let Some(url) = value.as_deref().filter(|_| var.ends_with("_GRPC_URL")) else {
                    continue;
                };
                let authority = url.split("://").nth(1).unwrap_or(url).trim_end_matches('/');
                let (host, port) = authority.rsplit_once(':').unwrap_or((authority, "80"));
                let host = host.split('.').next().unwrap_or(host);
                let served = k8s
                    .services
                    .get(host)
                    .is_some_and(|(ports, _)| ports.values().any(|p| p.to_string() == port));
                if !served {
                    problems.push(format!(
                        "{}: {var}={url}, but k8s/base has no Service {host} with port {port}",
                        env.what
                    ));
                }
            }
        }
    }
    problems
}

fn check_compose_urls(needs: &[Needs], compose: &Compose) -> Vec<String> {
    let mut problems = Vec::new();
    for service in needs {
        let Some(env) = compose.services.get(service.name) else {
            continue;
        };
        for (var, value) in &env.vars {
            let Some(url) = value.as_deref().filter(|_| var.ends_with("_GRPC_URL")) else {
                continue;
            };
            let authority = url.split("://").nth(1).unwrap_or(url).trim_end_matches('/');
            let (host, port) = authority.rsplit_once(':').unwrap_or((authority, "80"));
            let served = needs.iter().any(|other| {
                other.name == host
                    && compose.services.get(other.name).is_some_and(|e| {
                        port_of(&other.grpc_addr.value_in(e)).map(|p| p.to_string())
                            == Some(port.to_owned())
                    })
            });
            if !served {
                problems.push(format!(
                    "{}: {var}={url}, but no compose service {host} serves gRPC on port {port}",
                    env.what
                ));
            }
        }
    }
    problems
}

/// `deploy/topology.yaml` (the one declaration the local brokers, the run scripts and the process
/// launcher read) against the code, k8s and compose: the same topics with the same partitions,
/// replicas and configuration; each service's ports, consumer group and topics as its settings
/// default them.
fn check_topology(
    topology: &Topology,
    needs: &[Needs],
    k8s: &K8s,
    compose: &Compose,
) -> Vec<String> {
    let mut problems = Vec::new();
    let file = "deploy/topology.yaml";
    let declared = topology.topics_to_create(true);
    for topic in &declared {
        match k8s.kafka_topic_specs.get(&topic.name) {
            None => problems.push(format!(
                "{file} declares topic {}, which has no KafkaTopic under k8s/",
                topic.name
            )),
            Some(spec) => {
                let at = &k8s.kafka_topics[&topic.name];
                let int = |key: &str| spec.get(key).and_then(Value::as_i64);
                if int("partitions") != Some(i64::from(topic.partitions)) {
                    problems.push(format!(
                        "{at}: KafkaTopic {} has {:?} partitions, {file} says {}",
                        topic.name,
                        int("partitions"),
                        topic.partitions
                    ));
                }
                if int("replicas") != Some(i64::from(topic.replicas)) {
                    problems.push(format!(
                        "{at}: KafkaTopic {} has {:?} replicas, {file} says {}",
                        topic.name,
                        int("replicas"),
                        topic.replicas
                    ));
                }
                let config: BTreeMap<String, String> = spec
                    .get("config")
                    .and_then(Value::as_mapping)
                    .into_iter()
                    .flatten()
                    .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), scalar(v)?)))
                    .collect();
                if config != topic.config {
                    problems.push(format!(
                        "{at}: KafkaTopic {} has config {config:?}, {file} says {:?}",
                        topic.name, topic.config
                    ));
                }
            }
        }
        let retention = topic
            .config
            .get("retention.ms")
            .cloned()
            .unwrap_or_default();
        match compose.topic_specs.get(&topic.name) {
            None => problems.push(format!(
                "{file} declares topic {}, which docker-compose.yml's kafka-topics does not create",
                topic.name
            )),
            Some((partitions, compose_retention)) => {
                if *partitions != topic.partitions.to_string() || *compose_retention != retention {
                    problems.push(format!(
                        "docker-compose.yml creates {}:{partitions}:{compose_retention}, {file} says {}:{}:{retention}",
                        topic.name, topic.name, topic.partitions
                    ));
                }
            }
        }
    }
    let names: BTreeSet<&str> = declared.iter().map(|t| t.name.as_str()).collect();
    for topic in k8s.kafka_topics.keys() {
        if !names.contains(topic.as_str()) {
            problems.push(format!(
                "{}: KafkaTopic {topic} is not declared in {file}",
                k8s.kafka_topics[topic]
            ));
        }
    }
    for topic in compose.topics.iter() {
        if !names.contains(topic.as_str()) {
            problems.push(format!(
                "docker-compose.yml creates topic {topic}, which is not declared in {file}"
            ));
        }
    }
    let no_env = Env {
        what: String::new(),
        fix_in: String::new(),
        vars: BTreeMap::new(),
    };
    for service in needs {
        let Some(spec) = topology.services.iter().find(|s| s.name == service.name) else {
            problems.push(format!("{} is not declared in {file}", service.binary));
            continue;
        };
        let defaults = [
            (
                "gRPC port",
                port_of(&service.grpc_addr.value_in(&no_env)),
                spec.grpc_port,
            ),
            (
                "metrics port",
                port_of(&service.metrics_addr.value_in(&no_env)),
                Some(spec.metrics_port),
            ),
            (
                "admin port",
                port_of(&service.admin_addr.value_in(&no_env)),
                spec.admin_port,
            ),
        ];
        for (what, code, declared) in defaults {
            if code != declared {
                problems.push(format!(
                    "{} defaults its {what} to {code:?}, {file} says {declared:?}",
                    service.binary
                ));
            }
        }
        let group = service.group.value_in(&no_env);
        if group != spec.consumer_group {
            problems.push(format!(
                "{} defaults its consumer group ({}) to {group}, {file} says {}",
                service.binary, service.group.var, spec.consumer_group
            ));
        }
        if service.binary != spec.binary {
            problems.push(format!(
                "{file}: service {} runs {}, the binary is {}",
                spec.name, spec.binary, service.binary
            ));
        }
        let used: BTreeSet<String> = service.topics.iter().map(|t| t.value_in(&no_env)).collect();
        let declared: BTreeSet<String> = spec
            .produces
            .iter()
            .chain(&spec.consumes)
            .cloned()
            .collect();
        if used != declared {
            problems.push(format!(
                "{} uses the topics {used:?} by default, {file} declares {declared:?}",
                service.binary
            ));
        }
        if !service
            .group
            .var
            .starts_with(&format!("{}_", spec.env_prefix))
        {
            problems.push(format!(
                "{}: its variables start with {}_, {file} says the prefix is {}",
                service.binary,
                service.group.var.split('_').next().unwrap_or_default(),
                spec.env_prefix
            ));
        }
    }
    problems
}

/// How long after its publication a record of `topic` can still be read: Kafka deletes a
/// segment once its newest record is older than `retention.ms`, and a segment spans up to
/// `segment.ms` (both at Kafka's defaults when the topic does not set them).
fn readable_for_ms(topic: &shop_testkit::topology::TopicSpec) -> u128 {
    let ms = |key: &str, default: Duration| {
        topic
            .config
            .get(key)
            .and_then(|v| v.parse::<u128>().ok())
            .unwrap_or(default.as_millis())
    };
    ms("retention.ms", Duration::from_secs(7 * 24 * 3600))
        + ms(
            "segment.ms",
            shop_eventing::Retention::KAFKA_DEFAULT_SEGMENT,
        )
}

/// Each service's inbox remembers an event at least as long as the topics it consumes can hand
/// the record out (`shop_eventing::Retention`): a shorter window lets a replay, or a late
/// redelivery, apply an event a second time. Checked for the code's default and for the value
/// every k8s container and compose service sets.
fn check_inbox_windows(
    topology: &Topology,
    needs: &[Needs],
    k8s: &K8s,
    compose: &Compose,
) -> Vec<String> {
    let mut problems = Vec::new();
    let code = Env {
        what: "the code's default".into(),
        fix_in: String::new(),
        vars: BTreeMap::new(),
    };
    for service in needs {
        let Some(spec) = topology.services.iter().find(|s| s.name == service.name) else {
            continue;
        };
        let longest = spec
            .consumes
            .iter()
            .filter_map(|name| topology.topics.iter().find(|t| t.name == *name))
            .map(|topic| (topic.name.as_str(), readable_for_ms(topic)))
            .max_by_key(|(_, ms)| *ms);
        let Some((topic, readable)) = longest else {
            continue;
        };
        let mut envs: Vec<&Env> = vec![&code];
        envs.extend(
            k8s.containers_of(service.name)
                .filter(|c| c.main)
                .map(|c| &c.env),
        );
        envs.extend(compose.services.get(service.name));
        for env in envs {
            let value = service.inbox_retention.value_in(env);
            if value.parse::<u128>().is_ok_and(|window| window >= readable) {
                continue;
            }
            problems.push(format!(
                "{}: {}={value} in {}, but {topic} hands out a record for up to {readable} ms \
                 (retention.ms + segment.ms, deploy/topology.yaml): the inbox would forget events a \
                 replay can still deliver",
                service.binary, service.inbox_retention.var, env.what
            ));
        }
    }
    problems
}

fn assert_none(what: &str, problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s):\n  - {}",
        problems.len(),
        problems.join("\n  - ")
    );
}

#[test]
fn every_variable_a_service_reads_is_set_by_its_k8s_deployment() {
    assert_none(
        "k8s/base vs Settings::from_env",
        &check_k8s_env(&services(), &K8s::load()),
    );
}

#[test]
fn every_variable_a_service_reads_is_set_by_its_compose_service() {
    assert_none(
        "docker-compose.yml vs Settings::from_env",
        &check_compose_env(&services(), &Compose::load()),
    );
}

#[test]
fn every_topic_and_dead_letter_topic_is_declared_for_k8s_and_compose() {
    assert_none(
        "topics",
        &check_topics(&services(), &K8s::load(), &Compose::load()),
    );
}

#[test]
fn the_topology_declaration_matches_the_code_k8s_and_compose() {
    assert_none(
        "deploy/topology.yaml",
        &check_topology(
            &Topology::of_repository(),
            &services(),
            &K8s::load(),
            &Compose::load(),
        ),
    );
}

#[test]
fn every_inbox_remembers_events_as_long_as_its_topics_keep_them() {
    assert_none(
        "inbox retention vs topic retention",
        &check_inbox_windows(
            &Topology::of_repository(),
            &services(),
            &K8s::load(),
            &Compose::load(),
        ),
    );
}

#[test]
fn a_topic_retention_raised_past_the_inbox_window_is_reported() {
    let mut topology = Topology::of_repository();
    let payment = topology
        .topics
        .iter_mut()
        .find(|t| t.name == "payment.events.v1")
        .expect("payment.events.v1 in deploy/topology.yaml");
    // 30 days: longer than the 15 days the order service's inbox remembers.
    payment
        .config
        .insert("retention.ms".into(), "2592000000".into());
    let problems = check_inbox_windows(&topology, &services(), &K8s::load(), &Compose::load());
    let all = problems.join("\n");
    for expected in [
        "order-service: ORDER_INBOX_RETENTION_MS=1296000000 in the code's default, but payment.events.v1 hands out a record for up to 3196800000 ms",
        "ORDER_INBOX_RETENTION_MS=1296000000 in container order of the Deployment order",
        "ORDER_INBOX_RETENTION_MS=1296000000 in the compose service order",
    ] {
        assert!(
            all.contains(expected),
            "expected {expected:?} among:\n{all}"
        );
    }
    assert!(
        problems.iter().all(|p| p.starts_with("order-service")),
        "only order consumes payment.events.v1: {all}"
    );
}

/// Each deployed service's KafkaUser (k8s/components/kafka-strimzi/users.yaml) has exactly the
/// ACLs deploy/topology.yaml grants it (the same the local Apache Kafka gets), and its Deployment
/// logs in as that user with that user's Secret.
fn check_kafka_users(topology: &Topology) -> Vec<String> {
    let mut problems = Vec::new();
    let dir = root().join("k8s/components/kafka-strimzi");
    let mut users: BTreeMap<String, BTreeSet<(String, String, String)>> = BTreeMap::new();
    for doc in yaml_documents(&dir.join("users.yaml")) {
        if str_of(&doc, &["kind"]) != Some("KafkaUser") {
            continue;
        }
        let name = str_of(&doc, &["metadata", "name"])
            .unwrap_or_default()
            .to_owned();
        let mut acls = BTreeSet::new();
        for acl in seq_of(&doc, &["spec", "authorization", "acls"]) {
            for op in seq_of(acl, &["operations"]) {
                acls.insert((
                    str_of(acl, &["resource", "type"])
                        .unwrap_or_default()
                        .to_owned(),
                    str_of(acl, &["resource", "name"])
                        .unwrap_or_default()
                        .to_owned(),
                    op.as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
        users.insert(name, acls);
    }
    let mut logins: BTreeMap<String, (Option<String>, Option<String>)> = BTreeMap::new();
    for doc in yaml_documents(&dir.join("service-identities.yaml")) {
        let deployment = str_of(&doc, &["metadata", "name"])
            .unwrap_or_default()
            .to_owned();
        for container in seq_of(&doc, &["spec", "template", "spec", "containers"]) {
            for var in seq_of(container, &["env"]) {
                let entry = logins.entry(deployment.clone()).or_default();
                match str_of(var, &["name"]) {
                    Some("KAFKA_SASL_USERNAME") => {
                        entry.0 = str_of(var, &["value"]).map(str::to_owned);
                    }
                    Some("KAFKA_SASL_PASSWORD") => {
                        entry.1 =
                            str_of(var, &["valueFrom", "secretKeyRef", "name"]).map(str::to_owned);
                    }
                    _ => {}
                }
            }
        }
    }
    for service in topology.services.iter().filter(|s| s.deployed) {
        let grants = service.kafka_grants();
        let mut wanted = BTreeSet::new();
        for (kind, names, ops) in [
            ("topic", &grants.write, ["Write", "Describe"]),
            ("topic", &grants.read, ["Read", "Describe"]),
            ("group", &grants.groups, ["Read", "Describe"]),
        ] {
            for name in names {
                for op in ops {
                    wanted.insert((kind.to_owned(), name.clone(), op.to_owned()));
                }
            }
        }
        match users.remove(&grants.user) {
            None => problems.push(format!(
                "k8s/components/kafka-strimzi/users.yaml has no KafkaUser {}",
                grants.user
            )),
            Some(acls) if acls != wanted => problems.push(format!(
                "KafkaUser {} allows {acls:?}; deploy/topology.yaml grants {wanted:?}",
                grants.user
            )),
            Some(_) => {}
        }
        let login = logins.get(&service.name).cloned().unwrap_or_default();
        let user = Some(grants.user.clone());
        if login != (user.clone(), user) {
            problems.push(format!(
                "k8s/components/kafka-strimzi/service-identities.yaml: the Deployment {} logs in as {:?} with the Secret {:?}, not as its KafkaUser {}",
                service.name, login.0, login.1, grants.user
            ));
        }
    }
    for extra in users.keys() {
        problems.push(format!(
            "KafkaUser {extra} belongs to no deployed service of deploy/topology.yaml"
        ));
    }
    problems
}

#[test]
fn each_service_has_a_kafka_user_with_exactly_its_acls() {
    assert_none(
        "KafkaUsers vs deploy/topology.yaml",
        &check_kafka_users(&Topology::of_repository()),
    );
}

#[test]
fn a_kafka_user_whose_acls_drift_from_the_topology_is_reported() {
    let mut topology = Topology::of_repository();
    topology.services[1]
        .consumes
        .push("payment.events.v1".into());
    topology.services[3].binary = "someone-else".into();
    let all = check_kafka_users(&topology).join("\n");
    for expected in [
        "KafkaUser inventory-service allows",
        "has no KafkaUser someone-else",
        "KafkaUser notification-service belongs to no deployed service",
    ] {
        assert!(
            all.contains(expected),
            "expected {expected:?} among:\n{all}"
        );
    }
}

/// The Apache Kafka release the local runs resolve (deploy/kafka/pom.xml) is the one compose
/// runs: one pinned version, so the tests run against what `docker compose up` deploys.
#[test]
fn compose_runs_the_apache_kafka_release_the_tests_run_against() {
    let pom = std::fs::read_to_string(root().join("deploy/kafka/pom.xml")).expect("pom.xml");
    let pinned = pom
        .split("<kafka.version>")
        .nth(1)
        .and_then(|rest| rest.split("</kafka.version>").next())
        .expect("<kafka.version> in deploy/kafka/pom.xml");
    let compose = yaml_documents(&root().join("docker-compose.yml"))
        .pop()
        .expect("docker-compose.yml");
    let images: Vec<&str> = ["kafka", "kafka-topics"]
        .iter()
        .map(|s| str_of(&compose, &["services", s, "image"]).expect("image"))
        .collect();
    for image in images {
        assert_eq!(
            image,
            format!("apache/kafka:{pinned}"),
            "docker-compose.yml runs {image}, deploy/kafka/pom.xml pins Apache Kafka {pinned}"
        );
    }
}

#[test]
fn a_topology_that_drifts_from_k8s_compose_or_the_code_is_reported() {
    let mut topology = Topology::of_repository();
    topology.topics[0].partitions += 1;
    topology.topics[1]
        .config
        .insert("retention.ms".into(), "1".into());
    topology.services[0].metrics_port += 1;
    topology.services[1].consumer_group = "renamed".into();
    topology.services[2].consumes.clear();
    let problems = check_topology(&topology, &services(), &K8s::load(), &Compose::load());
    let all = problems.join("\n");
    for expected in [
        "KafkaTopic order.events.v1 has Some(6) partitions, deploy/topology.yaml says 7",
        "docker-compose.yml creates order.events.v1:6:604800000",
        "KafkaTopic inventory.events.v1 has config",
        "order-service defaults its metrics port to Some(9101), deploy/topology.yaml says Some(9102)",
        "inventory-service defaults its consumer group (INVENTORY_CONSUMER_GROUP) to inventory-service",
        "payment-service uses the topics",
        "topic renamed.dlq, which has no KafkaTopic",
    ] {
        assert!(
            all.contains(expected),
            "expected {expected:?} among:\n{all}"
        );
    }
}

#[test]
fn ports_probes_services_and_grpc_urls_agree() {
    let needs = services();
    let mut problems = check_k8s_ports(&needs, &K8s::load());
    problems.extend(check_compose_urls(&needs, &Compose::load()));
    assert_none("ports", &problems);
}

// The checks above must fail on broken input, or they prove nothing: each case below breaks
// one thing in the real files (in memory) and expects the finding that names it.

#[test]
fn a_variable_missing_from_a_config_map_is_reported_with_the_file_to_fix() {
    let needs = services();
    let mut k8s = K8s::load();
    for container in k8s
        .containers
        .iter_mut()
        .filter(|c| c.deployment == "order")
    {
        container.env.vars.remove("INVENTORY_DEADLINE_MS");
    }
    let problems = check_k8s_env(&needs, &k8s);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("order-service reads INVENTORY_DEADLINE_MS")
                && p.contains("k8s/base/order/config.env")),
        "{problems:#?}"
    );
}

#[test]
fn a_database_url_from_neither_name_is_reported() {
    let needs = services();
    let mut k8s = K8s::load();
    for container in k8s
        .containers
        .iter_mut()
        .filter(|c| c.deployment == "payment")
    {
        container.env.vars.remove("PAYMENT_DATABASE_URL");
    }
    let problems = check_k8s_env(&needs, &k8s);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("PAYMENT_DATABASE_URL (or DATABASE_URL)")),
        "{problems:#?}"
    );
}

#[test]
fn a_variable_missing_from_a_compose_service_is_reported() {
    let needs = services();
    let mut compose = Compose::load();
    compose
        .services
        .get_mut("notification")
        .expect("compose service notification")
        .vars
        .remove("NOTIFICATION_WEBHOOK_TIMEOUT_MS");
    let problems = check_compose_env(&needs, &compose);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("NOTIFICATION_WEBHOOK_TIMEOUT_MS")
                && p.contains("services.notification.environment in docker-compose.yml")),
        "{problems:#?}"
    );
}

#[test]
fn a_topic_without_a_kafka_topic_or_a_compose_entry_is_reported() {
    let needs = services();
    let mut k8s = K8s::load();
    let mut compose = Compose::load();
    k8s.kafka_topics.remove("payment-service.dlq");
    compose.topics.remove("inventory.events.v1");
    let problems = check_topics(&needs, &k8s, &compose);
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("topic payment-service.dlq") && p.contains("no KafkaTopic")),
        "{problems:#?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("topic inventory.events.v1")
                && p.contains("services.kafka-topics.environment.TOPICS")),
        "{problems:#?}"
    );
}

#[test]
fn a_renamed_consumer_group_needs_its_own_dead_letter_topic() {
    let needs = services();
    let mut k8s = K8s::load();
    for container in k8s
        .containers
        .iter_mut()
        .filter(|c| c.deployment == "inventory")
    {
        container
            .env
            .vars
            .insert("INVENTORY_CONSUMER_GROUP".into(), Some("stock".into()));
    }
    let problems = check_topics(&needs, &k8s, &Compose::load());
    assert!(
        problems.iter().any(|p| p.starts_with("topic stock.dlq")),
        "{problems:#?}"
    );
}

#[test]
fn a_port_that_drifts_from_the_settings_is_reported() {
    let needs = services();
    let mut k8s = K8s::load();
    for container in k8s
        .containers
        .iter_mut()
        .filter(|c| c.deployment == "inventory" && c.main)
    {
        container
            .env
            .vars
            .insert("INVENTORY_GRPC_ADDR".into(), Some("0.0.0.0:6000".into()));
    }
    let problems = check_k8s_ports(&needs, &k8s);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("port named grpc") && p.contains("6000")),
        "{problems:#?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("readinessProbe checks gRPC port 50052")),
        "{problems:#?}"
    );
}

/// Where a file a service reads at the path of a variable comes from.
struct MountedFile {
    var: &'static str,
    /// The ConfigMap or Secret (k8s) holding it, under the file's name as its key.
    source: &'static str,
}

/// What each Deployment's mounts put at `path`: the ConfigMap or Secret behind it, or a problem.
fn k8s_mount_source(deployment: &Value, path: &str, file: &str) -> Result<String, String> {
    let pod = deployment
        .get("spec")
        .and_then(|s| s.get("template"))
        .and_then(|t| t.get("spec"))
        .expect("a pod template");
    let container = seq_of(pod, &["containers"]).first().expect("a container");
    let (dir, name) = path.rsplit_once('/').ok_or("not an absolute path")?;
    let mount = seq_of(container, &["volumeMounts"])
        .iter()
        .find(|m| str_of(m, &["mountPath"]) == Some(dir))
        .ok_or(format!("nothing is mounted at {dir}"))?;
    if mount.get("subPath").is_some() {
        // A subPath mount is never updated by the kubelet: a rotated key or renewed token
        // would not reach the running pod.
        return Err(format!("{dir} is mounted with a subPath"));
    }
    let volume_name = str_of(mount, &["name"]).expect("mount name");
    let volume = seq_of(pod, &["volumes"])
        .iter()
        .find(|v| str_of(v, &["name"]) == Some(volume_name))
        .ok_or(format!("no volume {volume_name}"))?;
    let source = str_of(volume, &["configMap", "name"])
        .or_else(|| str_of(volume, &["secret", "secretName"]))
        .ok_or(format!(
            "volume {volume_name} is neither a ConfigMap nor a Secret"
        ))?;
    if name != file {
        return Err(format!("the file is {name}, the key {file}"));
    }
    Ok(source.to_owned())
}

#[test]
fn the_token_files_a_service_reads_are_mounted_where_its_variables_point() {
    let jwks = MountedFile {
        var: "AUTH_JWKS_FILE",
        source: "shop-auth-jwks",
    };
    let own_token = MountedFile {
        var: "ORDER_SERVICE_TOKEN_FILE",
        source: "order-service-token",
    };
    let compose = yaml_documents(&root().join("docker-compose.yml"))
        .pop()
        .expect("docker-compose.yml");
    let mut problems = Vec::new();
    for (service, files) in [
        ("order", vec![&jwks, &own_token]),
        ("inventory", vec![&jwks]),
        ("payment", vec![&jwks]),
        ("notification", vec![&jwks]),
    ] {
        let config = env_file(&root().join(format!("k8s/base/{service}/config.env")));
        let deployment =
            yaml_documents(&root().join(format!("k8s/base/{service}/deployment.yaml")))
                .pop()
                .expect("a Deployment");
        let compose_service = compose
            .get("services")
            .and_then(|s| s.get(service))
            .expect("a compose service");
        for file in files {
            // The key in the ConfigMap or Secret is the file's name (`jwks.json`, `token`).
            let key = if file.var == "AUTH_JWKS_FILE" {
                "jwks.json"
            } else {
                "token"
            };
            match config.get(file.var).cloned().flatten() {
                None => problems.push(format!(
                    "k8s/base/{service}/config.env does not set {}",
                    file.var
                )),
                Some(path) => match k8s_mount_source(&deployment, &path, key) {
                    Ok(source) if source == file.source => {}
                    Ok(source) => problems.push(format!(
                        "k8s/base/{service}/deployment.yaml mounts {source} at {path} ({}), not {}",
                        file.var, file.source
                    )),
                    Err(problem) => problems.push(format!(
                        "k8s/base/{service}/deployment.yaml, {} = {path}: {problem}",
                        file.var
                    )),
                },
            }
            // Compose: the variable points into a directory the service mounts.
            let path = str_of(compose_service, &["environment", file.var]);
            let mounted = path.is_some_and(|path| {
                seq_of(compose_service, &["volumes"]).iter().any(|v| {
                    // SOURCE:TARGET[:MODE], where SOURCE may hold `${VAR:-default}`.
                    let parts: Vec<&str> = v.as_str().unwrap_or_default().split(':').collect();
                    let target = match parts.as_slice() {
                        [.., target, "ro" | "rw"] | [.., target] => *target,
                        [] => "",
                    };
                    !target.is_empty() && path.starts_with(&format!("{target}/"))
                })
            });
            if !mounted {
                problems.push(format!(
                    "docker-compose.yml: {service}'s {} ({path:?}) is not in a mounted directory",
                    file.var
                ));
            }
        }
    }
    assert_none("token files", &problems);
}
