//! Real servers for tests, started on loopback on free ports, with data in temp folders, and
//! stopped when dropped (or, for the per-process shared ones, when the test process exits).
//!
//! - [`Postgres`]: a throwaway PostgreSQL cluster (Debian's `postgresql` package, found through
//!   `$SERVAL_PG_BIN` or `/usr/lib/postgresql/*/bin`; `scripts/setup-postgres.sh` installs it), run
//!   as the unprivileged `postgres` user when the tests run as root.
//! - [`Moto`]: moto's S3 server (`moto_server` from the test venv, `scripts/setup-python.sh`).
//! - [`Azurite`]: Microsoft's Azure Blob emulator (`scripts/setup-azurite.sh`).
//!
//! A missing tool is a test failure that names the setup script, never a skipped test.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a server may take to come up before the test fails.
const START_DEADLINE: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The folder of PostgreSQL's server binaries.
fn pg_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("SERVAL_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop().unwrap_or_else(|| {
        panic!(
            "PostgreSQL's server binaries were not found (no /usr/lib/postgresql/*/bin/initdb and no \
             $SERVAL_PG_BIN): run scripts/setup-postgres.sh"
        )
    })
}

/// A throwaway PostgreSQL cluster. Superuser `serval`, trust authentication on 127.0.0.1.
pub struct Postgres {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
    /// Run the server as this user (when the tests run as root).
    user: Option<String>,
    server: Option<Child>,
}

impl Postgres {
    /// initdb + start: about a second.
    pub fn start() -> Postgres {
        Postgres::init(false)
    }

    /// A cluster that accepts TLS connections only (`hostssl`), with a server certificate for
    /// 127.0.0.1 signed by a throwaway CA at [`Postgres::ca_file`].
    pub fn start_tls_only() -> Postgres {
        Postgres::init(true)
    }

    /// The CA certificate of a [`Postgres::start_tls_only`] cluster.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("data/ca.crt")
    }

    fn init(tls: bool) -> Postgres {
        let bin = pg_bin();
        let user = is_root().then(|| "postgres".to_string());
        let dir = tempfile::Builder::new()
            .prefix("serval-pg-")
            .tempdir()
            .expect("temp dir")
            .keep();
        if let Some(user) = &user {
            let status = Command::new("chown")
                .args([user.as_str(), dir.to_str().unwrap()])
                .status()
                .expect("chown");
            assert!(status.success(), "chown {user} {}", dir.display());
        }
        let mut pg = Postgres {
            dir,
            port: free_port(),
            bin,
            user,
            server: None,
        };
        let data = pg.dir.join("data");
        let out = pg
            .as_user(&pg.bin.join("initdb"))
            .args(["-D", data.to_str().unwrap(), "-U", "serval", "-A", "trust"])
            .args(["-E", "UTF8", "--no-locale", "--no-sync"])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if tls {
            pg.make_certificates();
        }
        pg.resume();
        pg
    }

    /// A CA and a server certificate (IP 127.0.0.1) in the data folder; `ssl = on` and only
    /// `hostssl` connections in its configuration.
    fn make_certificates(&self) {
        let data = self.dir.join("data");
        let d = |name: &str| data.join(name).to_str().unwrap().to_string();
        make_tls_files(&data);
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        conf.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        std::fs::write(data.join("postgresql.conf"), conf).unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        if let Some(user) = &self.user {
            for file in ["server.key", "server.crt", "postgresql.conf", "pg_hba.conf"] {
                let _ = Command::new("chown")
                    .args([user.as_str(), &d(file)])
                    .status();
            }
        }
        let _ = Command::new("chmod")
            .args(["600", &d("server.key")])
            .status();
    }

    fn as_user(&self, program: &Path) -> Command {
        match &self.user {
            Some(user) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", user, "--"]).arg(program);
                cmd
            }
            None => Command::new(program),
        }
    }

    /// The URL of a database of this cluster (`postgres` always exists).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://serval@127.0.0.1:{}/{database}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A new, empty database; returns its URL. (Over TLS-less TCP: not for a TLS-only cluster.)
    pub fn fresh_database(&self) -> String {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("t{}_{n}", std::process::id());
        let mut client = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
            .expect("connect to the test cluster");
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create database");
        self.url(&name)
    }

    /// Stops the server (SIGINT: fast shutdown, connections cut), keeping the data.
    pub fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let pid = std::fs::read_to_string(self.dir.join("data/postmaster.pid"))
                .ok()
                .and_then(|t| t.lines().next().map(str::to_string));
            if let Some(pid) = pid {
                let _ = Command::new("kill").args(["-INT", &pid]).status();
            }
            let _ = server.wait();
        }
    }

    /// Starts the server again on the same port and data, and waits until it accepts connections.
    pub fn resume(&mut self) {
        assert!(self.server.is_none(), "the server is already running");
        let data = self.dir.join("data");
        // The shell stops the server (and removes its folder) if the test process dies first.
        let script = format!(
            "\"$0\" -D \"$1\" -p {port} -k \"$2\" -c listen_addresses=127.0.0.1 -c fsync=off \
             -c max_connections=200 >>\"$2/server.log\" 2>&1 & pg=$!; \
             while kill -0 $pg 2>/dev/null; do \
               if [ ! -d /proc/{parent} ]; then kill -INT $pg; wait $pg; rm -rf \"$2\"; exit 0; fi; \
               sleep 0.5; \
             done",
            port = self.port,
            parent = std::process::id(),
        );
        let server = self
            .as_user(Path::new("sh"))
            .arg("-c")
            .arg(script)
            .arg(self.bin.join("postgres"))
            .arg(&data)
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start postgres");
        self.server = Some(server);
        let deadline = Instant::now() + START_DEADLINE;
        let log = self.dir.join("server.log");
        let ready_before = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("ready to accept connections")
            .count();
        loop {
            let ready = std::fs::read_to_string(&log)
                .unwrap_or_default()
                .matches("ready to accept connections")
                .count();
            if ready > ready_before {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start; its log:\n{}",
                std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Certificates for a TLS server on 127.0.0.1, made with `openssl` in `dir`: a throwaway CA
/// (`ca.crt`) and a server certificate (`server.crt`, key `server.key`) it signed.
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn make_tls_files(dir: &Path) -> TlsFiles {
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    let steps: [&[&str]; 3] = [
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=serval test CA",
            "-keyout",
            &p("ca.key"),
            "-out",
            &p("ca.crt"),
        ],
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            &p("server.key"),
            "-out",
            &p("server.csr"),
        ],
        &[
            "x509",
            "-req",
            "-in",
            &p("server.csr"),
            "-CA",
            &p("ca.crt"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &p("san.ext"),
            "-out",
            &p("server.crt"),
        ],
    ];
    for args in steps {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    TlsFiles {
        ca: dir.join("ca.crt"),
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
    }
}

/// One cluster shared by every test of this process (each test takes a fresh database).
pub fn shared_postgres() -> &'static Postgres {
    static SHARED: OnceLock<Postgres> = OnceLock::new();
    SHARED.get_or_init(Postgres::start)
}

/// The test venv's Python: `$SERVAL_PYTHON`, else the project's `.venv`.
pub fn venv_python() -> PathBuf {
    if let Some(python) = std::env::var_os("SERVAL_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        venv.is_file(),
        "the test venv is missing: run scripts/setup-python.sh (or set SERVAL_PYTHON)"
    );
    venv
}

/// Reads a child's log lines (stderr if piped, else stdout) until one holds
/// `http://127.0.0.1:PORT`; returns the port. The log keeps being drained afterwards.
fn port_from_log(child: &mut Child, what: &str) -> u16 {
    let out: Box<dyn std::io::Read + Send> = match child.stderr.take() {
        Some(err) => Box::new(err),
        None => Box::new(child.stdout.take().expect("piped stdout or stderr")),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("http://127.0.0.1:").nth(1) {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                if let Ok(port) = digits.parse::<u16>() {
                    let _ = tx.send(port);
                }
            }
        }
    });
    match rx.recv_timeout(START_DEADLINE) {
        Ok(port) => port,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not print its address")
        }
    }
}

/// moto's S3 server.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Moto {
    pub fn start() -> Moto {
        let python = venv_python();
        let moto = python.with_file_name("moto_server");
        assert!(
            moto.is_file(),
            "{} is missing: run scripts/setup-python.sh (moto[server] is in scripts/requirements-test.txt)",
            moto.display()
        );
        let mut child = Command::new(&moto)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start moto_server");
        let port = port_from_log(&mut child, "moto_server");
        Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Creates a bucket (moto needs no signature for it).
    pub fn create_bucket(&self, name: &str) {
        ureq::put(&format!("{}/{name}", self.endpoint))
            .send_empty()
            .expect("create bucket");
    }

    /// The environment `object_store` needs to use this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT", self.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing-secret"),
            ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Azurite's well-known development account and key (public, documented by Microsoft).
const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Microsoft's Azure Blob emulator, in memory.
pub struct Azurite {
    child: Child,
    pub endpoint: String,
}

impl Azurite {
    pub fn start() -> Azurite {
        let bin = std::env::var_os("SERVAL_AZURITE").map_or_else(
            || {
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../../.cache/azurite/node_modules/.bin/azurite-blob")
            },
            PathBuf::from,
        );
        assert!(
            bin.is_file(),
            "{} is missing: run scripts/setup-azurite.sh (or set SERVAL_AZURITE)",
            bin.display()
        );
        let mut child = Command::new(&bin)
            .args(["--blobHost", "127.0.0.1", "--blobPort", "0"])
            .args([
                "--inMemoryPersistence",
                "--disableTelemetry",
                "--skipApiVersionCheck",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start azurite-blob");
        // It prints "starting on 127.0.0.1:0" first, then the bound address as a URL.
        let port = port_from_log(&mut child, "azurite-blob");
        Azurite {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Creates a container (a request signed with the development account's shared key).
    pub fn create_container(&self, name: &str) {
        use base64::Engine as _;
        use hmac::{KeyInit, Mac};
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        let version = "2021-08-06";
        let to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{name}\nrestype:container"
        );
        let key = base64::engine::general_purpose::STANDARD
            .decode(AZURITE_KEY)
            .unwrap();
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        mac.update(to_sign.as_bytes());
        let signature =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let response = ureq::put(&format!(
            "{}/{AZURITE_ACCOUNT}/{name}?restype=container",
            self.endpoint
        ))
        .header("x-ms-date", &date)
        .header("x-ms-version", version)
        .header(
            "Authorization",
            &format!("SharedKey {AZURITE_ACCOUNT}:{signature}"),
        )
        .send_empty();
        if let Err(e) = response {
            panic!("creating container {name} in Azurite failed: {e}");
        }
    }

    /// The environment `object_store` needs to use this emulator.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AZURE_STORAGE_USE_EMULATOR".into(), "true".into()),
            ("AZURITE_BLOB_STORAGE_URL".into(), self.endpoint.clone()),
            ("AZURE_STORAGE_ACCOUNT_NAME".into(), AZURITE_ACCOUNT.into()),
            ("AZURE_STORAGE_ACCOUNT_KEY".into(), AZURITE_KEY.into()),
        ]
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
