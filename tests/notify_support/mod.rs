//! Real servers for the notification tests: aiosmtpd (from PyPI, installed into the
//! target directory when it is missing) storing mail in a maildir, an axum webhook
//! receiver, and a test CA with a certificate for 127.0.0.1.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use base64::Engine as _;

/// The aiosmtpd release the tests use.
const AIOSMTPD: &str = "aiosmtpd==1.4.*";

/// Where aiosmtpd is installed for the tests (`.ci/run` installs it there too).
pub fn aiosmtpd_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("aiosmtpd-1.4")
}

fn importable(dir: &Path) -> bool {
    Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .env("PYTHONPATH", dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Finds aiosmtpd for `python3`, installing it from PyPI into `aiosmtpd_dir()` if
/// need be; the reason when it cannot be had.
pub fn find_aiosmtpd() -> Result<PathBuf, String> {
    let dir = aiosmtpd_dir();
    if importable(&dir) {
        return Ok(dir);
    }
    let out = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg("--target")
        .arg(&dir)
        .arg(AIOSMTPD)
        .output()
        .map_err(|e| format!("running python3 -m pip: {e}"))?;
    if importable(&dir) {
        return Ok(dir);
    }
    Err(format!(
        "aiosmtpd is not importable and `pip install {AIOSMTPD}` failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

/// A test CA and a server certificate it signed for 127.0.0.1 and localhost, as files.
pub struct Certs {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Certs {
    pub fn generate(dir: &Path) -> Certs {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        let certs = Certs {
            ca: dir.join("smtp-ca.pem"),
            cert: dir.join("smtp-cert.pem"),
            key: dir.join("smtp-key.pem"),
        };
        std::fs::write(&certs.ca, ca.pem()).unwrap();
        std::fs::write(&certs.cert, cert.pem()).unwrap();
        std::fs::write(&certs.key, key.serialize_pem()).unwrap();
        certs
    }
}

/// How an aiosmtpd server is run.
#[derive(Clone)]
pub struct SmtpSettings {
    pub port: u16,
    pub maildir: PathBuf,
    /// STARTTLS with this certificate (required when set).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// AUTH with this account (required when set).
    pub account: Option<(String, String)>,
}

/// An aiosmtpd child process.
pub struct SmtpServer {
    child: Child,
    pub settings: SmtpSettings,
}

impl SmtpServer {
    /// Starts aiosmtpd (from `pythonpath`) and waits until it answers.
    pub fn start(pythonpath: &Path, settings: SmtpSettings) -> SmtpServer {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/notify_support/smtp_server.py");
        let mut command = Command::new("python3");
        command
            .arg(script)
            .args(["--port", &settings.port.to_string(), "--maildir"])
            .arg(&settings.maildir)
            .env("PYTHONPATH", pythonpath)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some((cert, key)) = &settings.tls {
            command.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        if let Some((user, password)) = &settings.account {
            command.args(["--user", user, "--password", password]);
        }
        let mut child = command.spawn().expect("starting aiosmtpd");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.starts_with("listening on"),
            "aiosmtpd did not start: {line:?}"
        );
        SmtpServer { child, settings }
    }

    /// Kills it (the port is free again once this returns).
    pub fn stop(mut self) -> SmtpSettings {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.settings.clone()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A message from the maildir, its body decoded.
#[derive(Debug, Clone)]
pub struct Mail {
    pub file: String,
    pub headers: String,
    pub body: String,
}

impl Mail {
    /// A header's value (unfolded), by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<String> {
        let unfolded = self.headers.replace("\n ", " ").replace("\n\t", " ");
        unfolded.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    /// The whole message as stored, for checks that nothing secret is anywhere in it.
    pub fn raw(&self) -> String {
        format!("{}\n\n{}", self.headers, self.body)
    }
}

fn decode_quoted_printable(text: &str) -> String {
    let mut out = Vec::new();
    let bytes = text.replace("=\n", "").into_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && let Some(hex) = bytes.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(std::str::from_utf8(hex).unwrap_or("zz"), 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every message in the maildir, oldest first (by file name: aiosmtpd's names start
/// with the delivery time).
pub fn mails(maildir: &Path) -> Vec<Mail> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(maildir.join("new"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    files
        .into_iter()
        .filter_map(|f| {
            let text = std::fs::read_to_string(&f).ok()?.replace("\r\n", "\n");
            let (headers, body) = text.split_once("\n\n")?;
            let mut mail = Mail {
                file: f.file_name()?.to_string_lossy().into_owned(),
                headers: headers.to_string(),
                body: body.to_string(),
            };
            let encoding = mail
                .header("Content-Transfer-Encoding")
                .unwrap_or_default()
                .to_ascii_lowercase();
            mail.body = match encoding.as_str() {
                "quoted-printable" => decode_quoted_printable(&mail.body),
                "base64" => String::from_utf8_lossy(
                    &base64::engine::general_purpose::STANDARD
                        .decode(mail.body.replace('\n', ""))
                        .unwrap_or_default(),
                )
                .into_owned(),
                _ => mail.body,
            };
            Some(mail)
        })
        .collect()
}

/// A POST the webhook receiver got.
#[derive(Debug, Clone)]
pub struct Posted {
    pub path: String,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub body: serde_json::Value,
    pub raw: String,
}

async fn record(
    axum::extract::State(posted): axum::extract::State<Arc<Mutex<Vec<Posted>>>>,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    headers: axum::http::HeaderMap,
    body: String,
) -> &'static str {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    posted.lock().unwrap().push(Posted {
        path: uri.path().to_string(),
        authorization: header("authorization"),
        content_type: header("content-type"),
        body: serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
        raw: body,
    });
    "ok"
}

/// An HTTP server on 127.0.0.1 that records every POST and answers 200.
pub struct Receiver {
    pub port: u16,
    pub posted: Arc<Mutex<Vec<Posted>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let posted: Arc<Mutex<Vec<Posted>>> = Arc::default();
        let app = axum::Router::new()
            .route("/{*path}", axum::routing::post(record))
            .with_state(posted.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { port, posted, task }
    }

    pub fn received(&self) -> Vec<Posted> {
        self.posted.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
