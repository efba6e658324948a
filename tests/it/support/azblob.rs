//! Clients of blobcache's Azure-compatible endpoint and of the GitHub Actions
//! cache service: Microsoft's SDK replaying BuildKit (`tests/sdk/*.mjs`), the
//! real `@actions/cache`, and raw requests signed with Shared Key for the bad
//! input no SDK would send.

use std::path::Path;
use std::process::Command;

use super::{repo_root, Body, Connection, Response};

/// Azurite's development account and key, which an open server accepts.
pub const DEV_ACCOUNT: &str = "devstoreaccount1";
pub const DEV_KEY: &str = blobcache_azure::account::DEV_KEY;

/// Runs `node tests/sdk/<script> '<plan>'` and returns the JSON it prints;
/// panics on a failure, with what the script printed.
pub fn node(script: &str, plan: &serde_json::Value, env: &[(&str, &str)]) -> serde_json::Value {
    let output = node_output(script, &[plan.to_string()], env, &repo_root());
    let last = output.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|_| panic!("{script} printed no JSON:\n{output}"))
}

/// Runs a Node script with `args` in `dir`; its standard output (and error, on failure).
pub fn node_output(script: &str, args: &[String], env: &[(&str, &str)], dir: &Path) -> String {
    let output = Command::new("node")
        .arg(repo_root().join("tests/sdk").join(script))
        .args(args)
        .envs(env.iter().copied())
        .env("NODE_PATH", repo_root().join("node_modules"))
        .current_dir(dir)
        .output()
        .expect("running node (./test.sh installs the packages)");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        text.push_str(&String::from_utf8_lossy(&output.stderr));
    }
    text
}

/// Issues a credential with `blobcache credentials <args>` under `env`.
pub fn issue(args: &[&str], env: &[(&str, &str)]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_blobcache"))
        .arg("credentials")
        .args(args)
        .env_remove("BLOBCACHE_TOKENS")
        .env_remove("BLOBCACHE_SECRET")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "blobcache credentials {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// Raw requests to `/azure/<account>` on a server, signed with Shared Key by
/// the `azure` crate (as blobcache signs its own Azure calls).
pub struct SignedClient {
    pub addr: String,
    account: blobcache_azure::Account,
    base: String,
}

impl SignedClient {
    pub fn new(addr: &str, account: &str, key: &str) -> SignedClient {
        let base = format!("/azure/{account}");
        let endpoint = format!("http://{addr}{base}");
        SignedClient {
            addr: addr.to_string(),
            account: blobcache_azure::Account::new(account, key, Some(&endpoint)).unwrap(),
            base,
        }
    }

    /// The headers of a request signed over `signed_path`, declaring `length`.
    fn signed_headers(
        &self,
        method: &str,
        signed_path: &str,
        headers: &[(&str, &str)],
        length: usize,
    ) -> Vec<(String, String)> {
        let mut builder = http::Request::builder()
            .method(method)
            .uri(format!("http://{}{}{signed_path}", self.addr, self.base))
            .header("x-ms-version", "2024-11-04");
        if !headers.iter().any(|(name, _)| *name == "x-ms-date") {
            let date = httpdate::fmt_http_date(std::time::SystemTime::now());
            builder = builder.header("x-ms-date", date);
        }
        if length > 0 {
            builder = builder.header("content-length", length.to_string());
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let mut request = builder.body(()).unwrap();
        blobcache_azure::signing::sign(&self.account, &mut request);
        request
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect()
    }

    /// Sends `method` to `<base><path>` with `headers`, signed over exactly
    /// what is sent unless `signed_path` names another path to sign over.
    pub fn send_signed_as(
        &self,
        method: &str,
        path: &str,
        signed_path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        let sent = self.signed_headers(method, signed_path, headers, body.len());
        let pairs: Vec<(&str, &str)> = sent.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let mut connection = Connection::open(&self.addr);
        let body = match body {
            [] => Body::Empty,
            bytes => Body::Bytes(bytes),
        };
        connection.send(method, &format!("{}{path}", self.base), &pairs, body);
        connection.receive(method == "HEAD").collect()
    }

    /// The answer to a signed PUT declaring `declared` bytes (with `Expect:
    /// 100-continue`) of which nothing is sent: only an answer given without
    /// the body can arrive.
    pub fn declared_without_body(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        declared: usize,
    ) -> Response {
        let mut headers = headers.to_vec();
        headers.push(("expect", "100-continue"));
        let mut connection = self.put_head(path, &headers, declared);
        connection.receive(false).collect()
    }

    /// A signed PUT declaring `declared` bytes that sends `sent` of them and hangs up.
    pub fn send_cut(&self, path: &str, headers: &[(&str, &str)], declared: usize, sent: usize) {
        let mut connection = self.put_head(path, headers, declared);
        connection.write_raw(&vec![7u8; sent]);
        std::thread::sleep(std::time::Duration::from_millis(200));
        connection.shutdown();
        std::thread::sleep(std::time::Duration::from_millis(500));
    }

    /// A connection that has sent the signed head of a PUT declaring `declared` bytes.
    fn put_head(&self, path: &str, headers: &[(&str, &str)], declared: usize) -> Connection {
        let signed = self.signed_headers("PUT", path, headers, declared);
        let mut head = format!(
            "PUT {}{path} HTTP/1.1\r\nhost: {}\r\n",
            self.base, self.addr
        );
        for (name, value) in &signed {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut connection = Connection::open(&self.addr);
        connection.write_raw(head.as_bytes());
        connection
    }

    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.send_signed_as(method, path, path, headers, body)
    }
}
