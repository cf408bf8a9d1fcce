//! The S3-compatible store: blobs as objects `<prefix>/<aa>/<bb>/<sha256>` in one bucket, so
//! workers on several hosts share documents without a shared file system.
//!
//! Client: Apache Arrow's `object_store` (one trait for S3 and the other clouds, multipart and
//! conditional puts; README says why it was preferred to the AWS SDK). Stage threads are plain
//! threads and the trait is blocking, so the store runs its requests on a small runtime of its
//! own and waits for them: it works the same from a stage thread, a blocking task or a test.

use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
// The base trait's methods, not `ObjectStoreExt`'s: those futures are not `Send`, and requests
// run on the store's own runtime.
use object_store::{GetOptions, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::{checked_key, digest_of, verified, BlobError, BlobStore, HashingWriter};
use crate::config::S3Config;

/// Files up to this size go up in one request; larger ones in parts of this size.
const PART: usize = 8 << 20;
/// Parts uploaded at once: memory held by one upload is at most this many parts.
const PARTS_IN_FLIGHT: usize = 4;
/// Downloaded pieces waiting for the reader: bounds memory when the reader is slower.
const PIECES_AHEAD: usize = 4;

pub struct S3Store {
    client: Arc<dyn ObjectStore>,
    prefix: String,
    /// For messages: `s3://bucket at endpoint`, never credentials.
    name: String,
    /// Taken on drop to shut down without blocking, which a runtime dropped inside another
    /// runtime's task could not do.
    runtime: Option<tokio::runtime::Runtime>,
}

impl S3Store {
    pub fn new(config: &S3Config) -> Result<Self, BlobError> {
        if config.bucket.is_empty() {
            return Err(BlobError::Config("blobs.s3.bucket is empty".into()));
        }
        let plain_http = config.endpoint.starts_with("http://");
        if plain_http && !config.allow_http {
            return Err(BlobError::Config(format!(
                "blobs.s3.endpoint {} is plain HTTP: documents and credentials would cross the network unencrypted; use https:// or set blobs.s3.allow_http = true for a loopback or private test server",
                config.endpoint
            )));
        }
        let (key_id, secret) = config.credentials().map_err(BlobError::Config)?;
        // One process-wide TLS provider for https endpoints (ring: already built for the broker's
        // TLS, where aws-lc would add a C build). Installing twice is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_access_key_id(key_id)
            .with_secret_access_key(secret)
            .with_virtual_hosted_style_request(!config.path_style)
            .with_allow_http(config.allow_http)
            .with_retry(object_store::RetryConfig {
                max_retries: 5,
                retry_timeout: Duration::from_secs(config.retry_secs),
                ..Default::default()
            });
        if !config.endpoint.is_empty() {
            builder = builder.with_endpoint(&config.endpoint);
        }
        let client = builder.build().map_err(|e| BlobError::Config(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("docpipe-s3")
            .enable_all()
            .build()
            .map_err(|e| BlobError::Config(format!("cannot start the S3 client's runtime: {e}")))?;
        let endpoint = if config.endpoint.is_empty() { "AWS" } else { &config.endpoint };
        Ok(Self {
            client: Arc::new(client),
            prefix: config.prefix.trim_matches('/').to_owned(),
            name: format!("s3://{} at {endpoint}", config.bucket),
            runtime: Some(runtime),
        })
    }

    fn location(&self, digest: &str) -> ObjectPath {
        let name = format!("{}/{}/{digest}", &digest[..2], &digest[2..4]);
        match self.prefix.is_empty() {
            true => ObjectPath::from(name),
            false => ObjectPath::from(format!("{}/{name}", self.prefix)),
        }
    }

    /// Run `request` on the store's runtime and wait for it.
    fn run<T: Send + 'static>(&self, request: impl Future<Output = T> + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.runtime.as_ref().expect("runtime until drop").spawn(async move {
            let _ = tx.send(request.await);
        });
        rx.recv().expect("the S3 request task answers")
    }

    fn remote(&self, e: object_store::Error) -> BlobError {
        BlobError::Remote { store: self.name.clone(), message: e.to_string() }
    }

    fn not_found_or_remote(&self, key: &str, e: object_store::Error) -> BlobError {
        match e {
            object_store::Error::NotFound { .. } => BlobError::NotFound { key: key.to_owned() },
            e => self.remote(e),
        }
    }

    /// One PUT of a small object whose digest was checked and which is not stored yet.
    fn upload(&self, digest: &str, bytes: Vec<u8>) -> Result<(), BlobError> {
        let (client, location) = (self.client.clone(), self.location(digest));
        let payload = PutPayload::from(bytes);
        self.run(async move { client.put_opts(&location, payload, PutOptions::default()).await }).map_err(|e| self.remote(e))?;
        Ok(())
    }

    fn head(&self, digest: &str) -> Result<bool, object_store::Error> {
        let (client, location) = (self.client.clone(), self.location(digest));
        match self.run(async move { client.get_opts(&location, GetOptions::new().with_head(true)).await }) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl Drop for S3Store {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl BlobStore for S3Store {
    fn put(&self, sha256: &str, bytes: &[u8]) -> Result<String, BlobError> {
        let key = checked_key(sha256, bytes)?;
        // Content-addressed: an object under this name already holds these bytes (reads check).
        if self.head(sha256).map_err(|e| self.remote(e))? {
            return Ok(key);
        }
        self.upload(sha256, bytes.to_vec())?;
        Ok(key)
    }

    /// The file is read twice: once to learn its digest (its name) and skip what is stored
    /// already, once to upload, hashing again on the way. A file that changed in between is not
    /// stored under the first digest: the upload is abandoned and the error names both.
    fn put_file(&self, source: &Path) -> Result<(String, u64), BlobError> {
        let io = |e| BlobError::Io { path: source.to_owned(), source: e };
        let (digest, size) = {
            let mut hasher = Sha256::new();
            let size = std::io::copy(&mut std::fs::File::open(source).map_err(io)?, &mut hasher).map_err(io)?;
            (hex::encode(hasher.finalize()), size)
        };
        if self.head(&digest).map_err(|e| self.remote(e))? {
            return Ok((digest, size));
        }
        if size <= PART as u64 {
            let bytes = std::fs::read(source).map_err(io)?;
            // Hashed again: a file that changed since is refused, not stored under the old name.
            checked_key(&digest, &bytes)?;
            let size = bytes.len() as u64;
            self.upload(&digest, bytes)?;
            return Ok((digest, size));
        }
        let (client, location, path, expected) = (self.client.clone(), self.location(&digest), source.to_owned(), digest.clone());
        let uploaded = self.run(async move {
            let upload = client.put_multipart_opts(&location, PutMultipartOptions::default()).await.map_err(Upload::Remote)?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
            let streamed = async {
                let mut file = tokio::fs::File::open(&path).await.map_err(Upload::Io)?;
                let mut hasher = Sha256::new();
                let mut buffer = vec![0u8; PART];
                let mut size = 0u64;
                loop {
                    let n = file.read(&mut buffer).await.map_err(Upload::Io)?;
                    if n == 0 {
                        break;
                    }
                    writer.wait_for_capacity(PARTS_IN_FLIGHT).await.map_err(Upload::Remote)?;
                    hasher.update(&buffer[..n]);
                    writer.write(&buffer[..n]);
                    size += n as u64;
                }
                Ok::<_, Upload>((hex::encode(hasher.finalize()), size))
            }
            .await;
            match streamed {
                Ok((actual, size)) if actual == expected => {
                    writer.finish().await.map_err(Upload::Remote)?;
                    Ok(size)
                }
                Ok((actual, _)) => {
                    let _ = writer.abort().await;
                    Err(Upload::Changed(actual))
                }
                Err(e) => {
                    let _ = writer.abort().await;
                    Err(e)
                }
            }
        });
        match uploaded {
            Ok(size) => Ok((digest, size)),
            Err(Upload::Io(e)) => Err(io(e)),
            Err(Upload::Remote(e)) => Err(self.remote(e)),
            Err(Upload::Changed(actual)) => Err(BlobError::Io {
                path: source.to_owned(),
                source: std::io::Error::other(format!("the file changed while it was stored (hashed {digest}, then {actual})")),
            }),
        }
    }

    fn read_into(&self, key: &str, out: &mut dyn Write) -> Result<u64, BlobError> {
        let digest = digest_of(key)?;
        let (client, location) = (self.client.clone(), self.location(digest));
        // Pieces come over a bounded channel as they arrive, so a 2 GB object is never held
        // whole here: the reader's pace holds the download back.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<bytes::Bytes, object_store::Error>>(PIECES_AHEAD);
        self.runtime.as_ref().expect("runtime until drop").spawn(async move {
            let mut stream = match client.get_opts(&location, GetOptions::default()).await {
                Ok(found) => found.into_stream(),
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            while let Some(piece) = stream.next().await {
                let failed = piece.is_err();
                // A sender blocked on a full channel holds one runtime thread, which is why the
                // runtime has two.
                if tx.send(piece).is_err() || failed {
                    return;
                }
            }
        });
        let mut hashing = HashingWriter::new(out);
        for piece in rx {
            let piece = piece.map_err(|e| self.not_found_or_remote(key, e))?;
            hashing.write_all(&piece).map_err(|e| BlobError::Io { path: Default::default(), source: e })?;
        }
        hashing.finish(key, digest)
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, BlobError> {
        let digest = digest_of(key)?;
        let (client, location) = (self.client.clone(), self.location(digest));
        // Sized from the object's length: one allocation, no doubling copies of a large document.
        let bytes = self
            .run(async move {
                let found = client.get_opts(&location, GetOptions::default()).await?;
                let mut bytes = Vec::with_capacity(usize::try_from(found.meta.size).unwrap_or(0));
                let mut stream = found.into_stream();
                while let Some(piece) = stream.next().await {
                    bytes.extend_from_slice(&piece?);
                }
                Ok(bytes)
            })
            .map_err(|e| self.not_found_or_remote(key, e))?;
        verified(key, digest, bytes)
    }

    fn has(&self, key: &str) -> Result<bool, BlobError> {
        self.head(digest_of(key)?).map_err(|e| self.remote(e))
    }

    fn check(&self) -> Result<(), BlobError> {
        // A listing of one page answers whether the bucket exists and these credentials may read it.
        let client = self.client.clone();
        let prefix = ObjectPath::from(self.prefix.clone());
        self.run(async move { client.list_with_delimiter(Some(&prefix)).await.map(|_| ()) }).map_err(|e| self.remote(e))
    }
}

/// How a multipart upload ended, inside the runtime.
enum Upload {
    Io(std::io::Error),
    Remote(object_store::Error),
    Changed(String),
}
