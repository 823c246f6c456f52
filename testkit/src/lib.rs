//! Test support shared by Bulkhead's suites: the Python interpreter that
//! holds the test clients (`tests/python/requirements.txt`, installed by
//! `.ci/run`), and a real S3-compatible server (moto) on loopback.
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// The Python interpreter with the test clients: `BULKHEAD_TEST_PYTHON`, as
/// `.ci/run` sets it; else the venv `.ci/run` makes in `target/test-venv`;
/// else `python3`.
pub fn python() -> String {
    if let Ok(p) = std::env::var("BULKHEAD_TEST_PYTHON") {
        return p;
    }
    let venv = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/test-venv/bin/python"
    );
    if std::path::Path::new(venv).exists() {
        return venv.into();
    }
    "python3".into()
}

/// Access key and secret the test server accepts (any do; these are used).
pub const S3_ACCESS_KEY: &str = "bulkhead-test";
pub const S3_SECRET_KEY: &str = "bulkhead-test-secret";
/// The bucket the test server starts with.
pub const S3_BUCKET: &str = "bulkhead-test";

/// An S3-compatible server (moto) on a loopback port, one per test process.
/// It stops when the test process ends: it watches its standard input,
/// which closes with the process.
pub struct S3Server {
    endpoint: String,
    _child: Mutex<Child>,
    _stdin: Mutex<ChildStdin>,
    next_prefix: AtomicU64,
}

const SERVE: &str = r#"
import sys
import boto3
from moto.server import ThreadedMotoServer

port = int(sys.argv[1])
server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
server.start()
s3 = boto3.client(
    "s3",
    endpoint_url=f"http://127.0.0.1:{port}",
    aws_access_key_id=sys.argv[2],
    aws_secret_access_key=sys.argv[3],
    region_name="us-east-1",
)
s3.create_bucket(Bucket=sys.argv[4])
print("ready", flush=True)
sys.stdin.read()
server.stop()
"#;

impl S3Server {
    /// The server of this test process, started on first use.
    pub fn shared() -> &'static S3Server {
        static SERVER: OnceLock<S3Server> = OnceLock::new();
        SERVER.get_or_init(|| Self::start().unwrap_or_else(|e| panic!("{e}")))
    }

    fn start() -> Result<Self, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let mut child = Command::new(python())
            .args(["-c", SERVE, &port.to_string()])
            .args([S3_ACCESS_KEY, S3_SECRET_KEY, S3_BUCKET])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start {} for the S3 test server ({e}); `bash .ci/run` installs moto[server]",
                    python()
                )
            })?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        if line.trim() != "ready" {
            let _ = child.kill();
            return Err(format!(
                "the S3 test server (moto) did not start: {line:?}; `bash .ci/run` installs moto[server] from tests/python/requirements.txt"
            ));
        }
        let stdin = child.stdin.take().ok_or("no stdin")?;
        Ok(Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            _child: Mutex::new(child),
            _stdin: Mutex::new(stdin),
            next_prefix: AtomicU64::new(0),
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A key prefix no other test of this process uses.
    pub fn unique_prefix(&self, name: &str) -> String {
        let n = self.next_prefix.fetch_add(1, Ordering::Relaxed);
        format!("{name}-{}-{n}", std::process::id())
    }

    /// Runs Python `code` with the server's endpoint, keys and bucket in
    /// `sys.argv[1..5]`; returns its standard output, panicking with its
    /// output when it fails.
    pub fn run_python(&self, code: &str, args: &[&str]) -> String {
        let mut child = Command::new(python())
            .args([
                "-c",
                code,
                &self.endpoint,
                S3_ACCESS_KEY,
                S3_SECRET_KEY,
                S3_BUCKET,
            ])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", python()));
        if let Some(mut i) = child.stdin.take() {
            let _ = i.flush();
        }
        let out = child.wait_with_output().expect("python output");
        assert!(
            out.status.success(),
            "python failed\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}
