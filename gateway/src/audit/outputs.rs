//! The outputs a sink writes its lines to: a JSON Lines file with size-based rotation, standard
//! output, POSTs of JSON lines to an HTTP endpoint (Loki, Elasticsearch, Splunk HEC's raw
//! endpoint, Vector and the like), or records of a Kafka topic (`kafka`). Each write either completes or fails with a reason and
//! whether retrying can help; the sink task does the retrying.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

mod kafka;

pub use kafka::MESSAGE_TIMEOUT as KAFKA_MESSAGE_TIMEOUT;

use super::spool::FsyncPolicy;
use crate::config::{OutputKind, OutputSpec};

/// One POST of an HTTP output may take this long. Bodies are at most a few MiB.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of an HTTP error answer kept for the log line.
const ERROR_BODY_BYTES: usize = 256;

/// A failed write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct OutputError {
    /// True when the destination refused these lines (an HTTP 4xx other than 408 and 429):
    /// retrying the same lines will not help, so they count towards dead-lettering. Otherwise
    /// (unreachable, 5xx, disk full) the lines are retried until the destination is back.
    pub permanent: bool,
    /// What happened.
    pub message: String,
}

impl OutputError {
    pub(crate) fn transient(message: impl Into<String>) -> Self {
        OutputError {
            permanent: false,
            message: message.into(),
        }
    }
}

/// A sink's outputs, in the order of its grants.
pub struct Outputs {
    outputs: Vec<Output>,
}

struct Output {
    name: String,
    kind: Kind,
}

enum Kind {
    /// `None` while a write is running on the blocking pool (or after one was cancelled: the
    /// next write opens the file again).
    File(Option<FileOutput>, FileSpec),
    Stdout,
    Http(Result<HttpOutput, String>),
    Kafka(kafka::KafkaOutput),
}

impl Outputs {
    /// Sets up the outputs granted to a sink. Files are opened on first write; an HTTP output
    /// whose TLS setup fails fails every write with the reason (so it is logged and retried
    /// rather than silently dropped).
    pub fn new(specs: &[OutputSpec], fsync: FsyncPolicy) -> Outputs {
        let outputs = specs
            .iter()
            .map(|spec| Output {
                name: spec.name.clone(),
                kind: match &spec.kind {
                    OutputKind::File {
                        path,
                        max_size,
                        max_files,
                    } => Kind::File(
                        None,
                        FileSpec {
                            path: path.clone(),
                            max_size: *max_size,
                            max_files: *max_files,
                            fsync: fsync.syncs(),
                        },
                    ),
                    OutputKind::Stdout => Kind::Stdout,
                    OutputKind::Http {
                        url,
                        ca_file,
                        bearer_token_file,
                        batch_lines,
                    } => Kind::Http(HttpOutput::new(
                        url,
                        ca_file.as_deref(),
                        bearer_token_file.clone(),
                        *batch_lines,
                    )),
                    OutputKind::Kafka(spec) => Kind::Kafka(kafka::KafkaOutput::new(spec.clone())),
                },
            })
            .collect();
        Outputs { outputs }
    }

    /// The name of output `index`.
    pub fn name(&self, index: usize) -> &str {
        self.outputs.get(index).map_or("", |o| o.name.as_str())
    }

    /// Writes `lines[*done..]` to output `index`, advancing `done` past what was written (an
    /// HTTP output writes in several POSTs; a retry resumes after the last one that worked).
    pub async fn write(
        &mut self,
        index: usize,
        lines: &Arc<Vec<String>>,
        done: &mut usize,
    ) -> Result<(), OutputError> {
        let Some(output) = self.outputs.get_mut(index) else {
            return Err(OutputError::transient(format!("no output {index}")));
        };
        match &mut output.kind {
            Kind::File(open, spec) => {
                let file = open.take();
                let spec = spec.clone();
                let total = lines.len();
                let lines = lines.clone();
                let from = *done;
                let (file, result) = tokio::task::spawn_blocking(move || {
                    let mut file = match file {
                        Some(file) => file,
                        None => match FileOutput::open(spec) {
                            Ok(file) => file,
                            Err(e) => return (None, Err(e)),
                        },
                    };
                    let result = file.write(&lines[from..]);
                    (Some(file), result)
                })
                .await
                .map_err(|e| OutputError::transient(format!("file write task failed: {e}")))?;
                *open = file;
                result.map_err(|e| OutputError::transient(e.to_string()))?;
                *done = total;
                Ok(())
            }
            Kind::Stdout => {
                let total = lines.len();
                let lines = lines.clone();
                let from = *done;
                tokio::task::spawn_blocking(move || {
                    let mut out = io::stdout().lock();
                    for line in &lines[from..] {
                        out.write_all(line.as_bytes())?;
                        out.write_all(b"\n")?;
                    }
                    out.flush()
                })
                .await
                .map_err(|e| OutputError::transient(format!("stdout write task failed: {e}")))?
                .map_err(|e| OutputError::transient(format!("stdout: {e}")))?;
                *done = total;
                Ok(())
            }
            Kind::Http(Err(reason)) => Err(OutputError::transient(reason.clone())),
            Kind::Kafka(kafka) => kafka.write(lines, done).await,
            Kind::Http(Ok(http)) => {
                while *done < lines.len() {
                    let end = (*done + http.batch_lines).min(lines.len());
                    http.post(&lines[*done..end]).await?;
                    *done = end;
                }
                Ok(())
            }
        }
    }
}

// === impl FileOutput ===

#[derive(Debug, Clone)]
struct FileSpec {
    path: PathBuf,
    max_size: u64,
    max_files: u32,
    fsync: bool,
}

/// An open JSON Lines file.
struct FileOutput {
    spec: FileSpec,
    file: File,
    size: u64,
}

/// The length of `file` up to the end of its last complete line, the rest cut off. A gateway
/// killed in the middle of a write leaves part of a line at the end; its lines were never
/// acknowledged (the cursor moves on only once a write returns) and are written again whole
/// from the spool, so the fragment goes rather than glue itself to the next line.
fn complete_lines(file: &File, path: &Path) -> io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let size = file.metadata()?.len();
    let mut end = size;
    let mut chunk = [0u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let buf = &mut chunk[..(end - start) as usize];
        file.read_exact_at(buf, start)?;
        if let Some(i) = buf.iter().rposition(|&b| b == b'\n') {
            end = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    if end < size {
        file.set_len(end)?;
        tracing::warn!(
            path = %path.display(),
            bytes = size - end,
            "audit file output ended in part of a line (the gateway stopped mid-write): cut off; its lines are written again from the spool"
        );
    }
    Ok(end)
}

impl FileOutput {
    fn open(spec: FileSpec) -> io::Result<FileOutput> {
        if let Some(dir) = spec.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // Audit lines are sensitive: readable by the gateway's user only.
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o600)
            .open(&spec.path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", spec.path.display())))?;
        let size = complete_lines(&file, &spec.path)?;
        Ok(FileOutput { spec, file, size })
    }

    /// Appends `lines`, rotating first whenever the next line would take the file past its
    /// size (a line longer than that still goes, alone, into a fresh file). Synced afterwards
    /// unless `--fsync never`: the cursor moves on once this returns.
    fn write(&mut self, lines: &[String]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for line in lines {
            let len = (line.len() + 1) as u64;
            let pending = self.size + buf.len() as u64;
            if pending > 0 && pending + len > self.spec.max_size {
                self.append(&buf)?;
                buf.clear();
                self.rotate()?;
            }
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
        }
        self.append(&buf)?;
        if self.spec.fsync {
            self.file.sync_data()?;
        }
        Ok(())
    }

    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.file.write_all(buf) {
            // Leave no half line behind: the retry writes the lines again.
            let _ = self.file.set_len(self.size);
            return Err(io::Error::new(
                e.kind(),
                format!("{}: {e}", self.spec.path.display()),
            ));
        }
        self.size += buf.len() as u64;
        Ok(())
    }

    /// `path` becomes `path.1`, `path.1` becomes `path.2`, ... and `path.{maxFiles}` is
    /// deleted; then a fresh `path` is opened.
    fn rotate(&mut self) -> io::Result<()> {
        if self.spec.fsync {
            self.file.sync_data()?;
        }
        let path = &self.spec.path;
        let max = self.spec.max_files;
        if max == 0 {
            std::fs::remove_file(path)?;
        } else {
            remove_if_present(&rotated(path, max))?;
            for i in (1..max).rev() {
                let from = rotated(path, i);
                if from.exists() {
                    std::fs::rename(&from, rotated(path, i + 1))?;
                }
            }
            std::fs::rename(path, rotated(path, 1))?;
        }
        *self = FileOutput::open(self.spec.clone())?;
        Ok(())
    }
}

/// `path.N`.
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

// === impl HttpOutput ===

struct HttpOutput {
    client: reqwest::Client,
    url: String,
    bearer_token_file: Option<PathBuf>,
    batch_lines: usize,
}

impl HttpOutput {
    fn new(
        url: &str,
        ca_file: Option<&Path>,
        bearer_token_file: Option<PathBuf>,
        batch_lines: usize,
    ) -> Result<HttpOutput, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("caFile {}: {e}", path.display()))?;
                for cert in certs {
                    roots
                        .add(cert)
                        .map_err(|e| format!("caFile {}: {e}", path.display()))?;
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                for cert in native.certs {
                    // A system store with a certificate rustls cannot parse is common; skip it.
                    let _ = roots.add(cert);
                }
            }
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(HTTP_TIMEOUT)
            // A redirect would turn the POST into a GET and lose the body.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| error_chain(&e))?;
        Ok(HttpOutput {
            client,
            url: url.to_owned(),
            bearer_token_file,
            batch_lines: batch_lines.max(1),
        })
    }

    async fn post(&self, lines: &[String]) -> Result<(), OutputError> {
        let mut body = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for line in lines {
            body.push_str(line);
            body.push('\n');
        }
        let mut request = self
            .client
            .post(&self.url)
            .header(http::header::CONTENT_TYPE, "application/x-ndjson")
            .body(body);
        if let Some(file) = &self.bearer_token_file {
            // Read before every POST: projected tokens rotate under our feet.
            let token = tokio::fs::read_to_string(file).await.map_err(|e| {
                OutputError::transient(format!("bearerTokenFile {}: {e}", file.display()))
            })?;
            request = request.bearer_auth(token.trim());
        }
        let response = request.send().await.map_err(|e| {
            OutputError::transient(format!("POST {}: {}", self.url, error_chain(&e)))
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let mut text = response.text().await.unwrap_or_default();
        if text.len() > ERROR_BODY_BYTES {
            let mut cut = ERROR_BODY_BYTES;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        Err(OutputError {
            permanent: status.is_client_error()
                && status != http::StatusCode::REQUEST_TIMEOUT
                && status != http::StatusCode::TOO_MANY_REQUESTS,
            message: format!("POST {} answered {status}: {}", self.url, text.trim()),
        })
    }
}

/// An error and its causes, on one line (reqwest's own message omits the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests;
