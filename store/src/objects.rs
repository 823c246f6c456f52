//! Where tenant data lives: one object store, local disk or S3-compatible.
//!
//! Every byte of tenant data is read and written through the `object_store`
//! crate, behind [`Storage`]. Local disk is the embedded default; after each
//! put there the file and its directory are fsynced (the crate's local store
//! renames into place but does not fsync), so a put that returned survives a
//! power cut. S3-compatible storage is the scale-out backend: conditional
//! puts (`If-None-Match: *`) make manifest commits atomic across nodes.
//!
//! The store's methods are blocking (they run on the worker pool); the
//! object-store calls are async, so [`Storage`] drives them on a small
//! runtime of its own.
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::error::{Error, Result};

/// Where the store keeps its objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageConfig {
    /// A directory on local disk.
    Local { root: PathBuf },
    /// A bucket on S3 or an S3-compatible server. Credentials come from the
    /// environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`), never from the configuration file.
    S3(S3Config),
}

/// An S3-compatible bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix below which the store lives (`""` for the bucket's root).
    pub prefix: String,
    /// Endpoint of an S3-compatible server; none for AWS itself.
    pub endpoint: Option<String>,
    pub region: String,
    /// Allow `http://` endpoints (a server on loopback in tests).
    pub allow_http: bool,
    /// Keys given in code (tests and tools); the server's configuration
    /// leaves them unset, and the environment's are used.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

impl StorageConfig {
    /// A human-readable location, for logs and errors.
    pub fn describe(&self) -> String {
        match self {
            StorageConfig::Local { root } => root.display().to_string(),
            StorageConfig::S3(s3) => format!("s3://{}/{}", s3.bucket, s3.prefix),
        }
    }
}

/// The URL under which the store's objects are registered with the query
/// engine; object paths in a [`crate::Snapshot`] are relative to it.
pub const OBJECT_STORE_URL: &str = "bulkhead://store/";

/// The store's object storage.
pub struct Storage {
    objects: Arc<dyn ObjectStore>,
    /// The local root, when the backend is local disk (for fsync).
    local_root: Option<PathBuf>,
    describe: String,
    io: IoRuntime,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Storage({})", self.describe)
    }
}

/// A runtime for object-store calls, shut down without blocking when the
/// store is dropped (possibly inside another runtime).
struct IoRuntime(Option<tokio::runtime::Runtime>);

impl Drop for IoRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl Storage {
    /// Opens the configured backend. Local disk: the directory is created,
    /// and staging files a crash left behind are removed.
    pub fn open(config: &StorageConfig) -> Result<Self> {
        Self::open_inner(config, true)
    }

    /// [`Storage::open`] for a tool running beside a server: staging files
    /// are left alone (they may be the server's uploads in progress).
    pub fn open_beside_server(config: &StorageConfig) -> Result<Self> {
        Self::open_inner(config, false)
    }

    fn open_inner(config: &StorageConfig, cleanup: bool) -> Result<Self> {
        let io = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bulkhead-io")
            .enable_all()
            .build()
            .map_err(|e| Error::Storage(format!("starting the storage runtime: {e}")))?;
        let (objects, local_root): (Arc<dyn ObjectStore>, _) = match config {
            StorageConfig::Local { root } => {
                std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
                let root = std::fs::canonicalize(root).map_err(|e| Error::io(root, e))?;
                let removed = if cleanup {
                    remove_staging_files(&root)?
                } else {
                    0
                };
                if removed > 0 {
                    tracing::warn!(removed, root = %root.display(), "removed unfinished uploads");
                }
                let local = object_store::local::LocalFileSystem::new_with_prefix(&root)
                    .map_err(|e| Error::Storage(format!("{}: {e}", root.display())))?
                    .with_automatic_cleanup(true);
                (Arc::new(local), Some(root))
            }
            StorageConfig::S3(s3) => {
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(&s3.bucket)
                    .with_region(&s3.region)
                    .with_allow_http(s3.allow_http)
                    .with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch)
                    // every request's I/O on the storage runtime, whoever
                    // asks: the query engine reads through this store from
                    // its own threads, and a connection it opened would
                    // otherwise be driven by those threads (busy with a
                    // query) when the store's own writes reuse it
                    .with_http_connector(object_store::client::SpawnedReqwestConnector::new(
                        io.handle().clone(),
                    ));
                if let Some(e) = &s3.endpoint {
                    b = b.with_endpoint(e).with_virtual_hosted_style_request(false);
                }
                if let (Some(id), Some(secret)) = (&s3.access_key_id, &s3.secret_access_key) {
                    b = b.with_access_key_id(id).with_secret_access_key(secret);
                }
                let s3_store = b
                    .build()
                    .map_err(|e| Error::Storage(format!("{}: {e}", config.describe())))?;
                let objects: Arc<dyn ObjectStore> = if s3.prefix.trim_matches('/').is_empty() {
                    Arc::new(s3_store)
                } else {
                    Arc::new(object_store::prefix::PrefixStore::new(
                        s3_store,
                        s3.prefix.trim_matches('/'),
                    ))
                };
                (objects, None)
            }
        };
        Ok(Self {
            objects,
            local_root,
            describe: config.describe(),
            io: IoRuntime(Some(io)),
        })
    }

    /// The object store itself, for the query engine to read files with.
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.objects.clone()
    }

    /// The local root, when the backend is local disk.
    pub fn local_root(&self) -> Option<&std::path::Path> {
        self.local_root.as_deref()
    }

    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// Runs `f` on the storage runtime and waits for it. Works from any
    /// thread, inside another runtime too (the caller's thread blocks; the
    /// store's callers run on the worker pool).
    fn block_on<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        let Some(rt) = &self.io.0 else {
            unreachable!("the runtime lives as long as the storage")
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let _ = tx.send(f.await);
        });
        match rx.recv() {
            Ok(v) => v,
            // the task panicked (its sender dropped): carry the panic over
            Err(_) => panic!("object-store task failed"),
        }
    }

    fn err(&self, path: &ObjPath, e: object_store::Error) -> Error {
        Error::Object {
            path: format!("{}/{path}", self.describe.trim_end_matches('/')),
            source: Box::new(e),
        }
    }

    /// Writes `bytes` at `path`, replacing what was there; durable when it
    /// returns.
    pub fn put(&self, path: &ObjPath, bytes: Bytes) -> Result<()> {
        let created = self.missing_dirs(path);
        let (objects, p) = (self.objects.clone(), path.clone());
        self.block_on(async move { objects.put(&p, PutPayload::from_bytes(bytes)).await })
            .map_err(|e| self.err(path, e))?;
        self.sync_local(path, created)
    }

    /// Writes `bytes` at `path` only if nothing is there (atomically, also
    /// against other nodes). False when the path was taken.
    pub fn put_if_absent(&self, path: &ObjPath, bytes: Bytes) -> Result<bool> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let created = self.missing_dirs(path);
        let (objects, p) = (self.objects.clone(), path.clone());
        match self.block_on(async move {
            objects
                .put_opts(&p, PutPayload::from_bytes(bytes), opts)
                .await
        }) {
            Ok(_) => {
                self.sync_local(path, created)?;
                Ok(true)
            }
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.err(path, e)),
        }
    }

    /// The object at `path`, or none.
    pub fn get(&self, path: &ObjPath) -> Result<Option<Bytes>> {
        let (objects, p) = (self.objects.clone(), path.clone());
        let got = self.block_on(async move {
            match objects.get(&p).await {
                Ok(r) => r.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        got.map_err(|e| self.err(path, e))
    }

    /// Removes the object at `path`; an absent one is no error.
    pub fn delete(&self, path: &ObjPath) -> Result<()> {
        let (objects, p) = (self.objects.clone(), path.clone());
        match self.block_on(async move { objects.delete(&p).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(path, e)),
        }
    }

    /// Every object below `prefix`, recursively. For housekeeping (orphan
    /// sweeps) only: readers never list.
    pub fn list(&self, prefix: &ObjPath) -> Result<Vec<ObjectMeta>> {
        let (objects, p) = (self.objects.clone(), prefix.clone());
        self.block_on(async move { objects.list(Some(&p)).try_collect().await })
            .map_err(|e| self.err(prefix, e))
    }

    /// Whether anything is stored under `tenant`'s prefix (data, manifests,
    /// keys): one listing of that prefix, not of every tenant's.
    pub fn holds_tenant(&self, tenant: &bulkhead_rules::TenantId) -> Result<bool> {
        let prefix = crate::paths::tenant_prefix(tenant);
        let (objects, p) = (self.objects.clone(), prefix.clone());
        let listed = self
            .block_on(async move { objects.list_with_delimiter(Some(&p)).await })
            .map_err(|e| self.err(&prefix, e))?;
        Ok(!listed.common_prefixes.is_empty() || !listed.objects.is_empty())
    }

    /// The objects below `prefix` whose paths sort after `offset`, in path
    /// order (a reader that remembers where it stopped).
    pub fn list_after(&self, prefix: &ObjPath, offset: &ObjPath) -> Result<Vec<ObjectMeta>> {
        let (objects, p, o) = (self.objects.clone(), prefix.clone(), offset.clone());
        let mut listed: Vec<ObjectMeta> = self
            .block_on(async move { objects.list_with_offset(Some(&p), &o).try_collect().await })
            .map_err(|e| self.err(prefix, e))?;
        listed.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(listed)
    }

    /// The first-level "directories" below `prefix`.
    pub fn list_dirs(&self, prefix: Option<&ObjPath>) -> Result<Vec<ObjPath>> {
        let (objects, p) = (self.objects.clone(), prefix.cloned());
        let listed = self
            .block_on(async move { objects.list_with_delimiter(p.as_ref()).await })
            .map_err(|e| self.err(prefix.unwrap_or(&ObjPath::default()), e))?;
        Ok(listed.common_prefixes)
    }

    fn local_path(&self, path: &ObjPath) -> Option<PathBuf> {
        let mut file = self.local_root.clone()?;
        file.extend(path.parts().map(|p| p.as_ref().to_string()));
        Some(file)
    }

    /// On local disk, how many of `path`'s parent directories do not exist
    /// yet (a put creates them, and they must be fsynced into their parents).
    fn missing_dirs(&self, path: &ObjPath) -> usize {
        let Some(file) = self.local_path(path) else {
            return 0;
        };
        file.ancestors()
            .skip(1)
            .take_while(|d| Some(*d) != self.local_root.as_deref() && !d.is_dir())
            .count()
    }

    /// On local disk, fsyncs the file at `path`, its directory (the rename
    /// that published it) and the parents of the `created` directories.
    fn sync_local(&self, path: &ObjPath, created: usize) -> Result<()> {
        let Some(file) = self.local_path(path) else {
            return Ok(());
        };
        let sync = |p: &std::path::Path| {
            std::fs::File::open(p)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(p, e))
        };
        sync(&file)?;
        for dir in file.ancestors().skip(1).take(created + 1) {
            sync(dir)?;
        }
        Ok(())
    }
}

/// Removes the local store's unfinished uploads (`<name>#<n>` staging files
/// of an interrupted put); returns how many.
fn remove_staging_files(dir: &std::path::Path) -> Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
    {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            removed += remove_staging_files(&path)?;
        } else if is_staging_name(&entry.file_name().to_string_lossy()) {
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// `object_store`'s local staging names: the target name, `#`, a number.
pub fn is_staging_name(name: &str) -> bool {
    name.rsplit_once('#')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}
