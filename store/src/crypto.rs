//! Envelope encryption per tenant.
//!
//! Three levels of keys:
//! - a **master key** (32 bytes) per deployment, from the environment or a
//!   file; it only wraps key-encryption keys;
//! - a **key-encryption key** (KEK) per tenant, with versions, held by a
//!   [`KeyProvider`]: the local [`Keyring`] file by default (each KEK
//!   wrapped under the master key), or a KMS behind the same trait;
//! - **data keys** (DEKs), random AES-256 keys that encrypt Parquet files
//!   (Parquet modular encryption, footer and every column) and write-ahead
//!   log entries. A data key is stored wrapped under its tenant's KEK as a
//!   small object `tenant=<id>/_keys/<dek id>.json` beside the tenant's
//!   tables; a file names its data key in the footer's key metadata. A
//!   node makes a new data key for a tenant each UTC day.
//!
//! Rotating a tenant's KEK re-wraps its data-key objects, never the data.
//! Shredding destroys the tenant's KEK: from then its data keys cannot be
//! unwrapped, so no file, log entry or extract of the tenant can be read,
//! wherever a copy of it lives.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use bulkhead_rules::TenantId;
use bytes::Bytes;
use object_store::path::Path as ObjPath;
use parking_lot::{Mutex, RwLock};
use parquet::encryption::decrypt::{FileDecryptionProperties, KeyRetriever};
use parquet::errors::ParquetError;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::objects::Storage;
use crate::paths::tenant_prefix;

/// Bytes of every key here (AES-256).
pub const KEY_LEN: usize = 32;
/// Prefix of the key metadata Bulkhead writes in an encrypted file's footer.
pub const KEY_METADATA_PREFIX: &str = "bulkhead-dek:";
/// The environment variable that may hold the master key (64 hex digits or
/// base64 of 32 bytes).
pub const MASTER_KEY_ENV: &str = "BULKHEAD_MASTER_KEY";
/// Data keys of other tenants' kept in memory for reading, at most.
const READ_CACHE: usize = 4096;

/// What went wrong with a key.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("tenant {tenant}'s key was shredded at {at}: none of its data can be read or written")]
    Shredded { tenant: String, at: String },
    #[error("tenant {tenant} has no key-encryption key version {version} (retired or never made)")]
    NoVersion { tenant: String, version: u32 },
    #[error("data key {id} of tenant {tenant} is not in the store (the tenant was shredded or the key object removed)")]
    NoDataKey { tenant: String, id: String },
    #[error(
        "the master key does not open keyring {path} (wrong {MASTER_KEY_ENV} or master key file?)"
    )]
    WrongMasterKey { path: String },
    #[error("{0}")]
    Invalid(String),
    #[error("keyring {path}: {reason}")]
    Keyring { path: String, reason: String },
    #[error("key storage: {0}")]
    Storage(String),
}

/// A data key wrapped under a tenant's KEK version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wrapped {
    pub kek_version: u32,
    pub bytes: Vec<u8>,
}

/// Holds tenants' key-encryption keys; a KMS implements the same calls.
/// Every call sees shreds and rotations made by other processes (the CLI)
/// since the last.
pub trait KeyProvider: Send + Sync + fmt::Debug {
    /// Wraps `key` under the tenant's current KEK, making the tenant's
    /// first KEK if it has none.
    fn wrap(&self, tenant: &TenantId, key: &[u8], aad: &[u8]) -> Result<Wrapped, KeyError>;
    /// Unwraps what [`KeyProvider::wrap`] made, with the same `aad`.
    fn unwrap(&self, tenant: &TenantId, wrapped: &Wrapped, aad: &[u8])
        -> Result<Vec<u8>, KeyError>;
    /// Makes a new current KEK version; returns it. Older versions stay
    /// until [`KeyProvider::retire`].
    fn rotate(&self, tenant: &TenantId) -> Result<u32, KeyError>;
    /// Removes the tenant's KEK versions not current and not in `in_use`;
    /// returns those removed.
    fn retire(&self, tenant: &TenantId, in_use: &BTreeSet<u32>) -> Result<Vec<u32>, KeyError>;
    /// Destroys every KEK version of the tenant and remembers the shred.
    fn shred(&self, tenant: &TenantId, at: &str) -> Result<(), KeyError>;
    /// When the tenant was shredded, if it was.
    fn shredded(&self, tenant: &TenantId) -> Result<Option<String>, KeyError>;
    /// The tenant's KEK versions, current last; empty if it has none yet.
    fn versions(&self, tenant: &TenantId) -> Result<Vec<u32>, KeyError>;
    /// Every tenant's current KEK version and the tenants shredded, to
    /// notice changes other processes made.
    fn state(&self) -> Result<KeyState, KeyError>;
}

/// What [`KeyProvider::state`] tells.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyState {
    /// Tenant -> current KEK version.
    pub current: BTreeMap<String, u32>,
    /// Tenant -> when it was shredded.
    pub shredded: BTreeMap<String, String>,
}

fn rng_fill(buf: &mut [u8]) -> Result<(), KeyError> {
    SystemRandom::new()
        .fill(buf)
        .map_err(|_| KeyError::Invalid("the system's random number generator failed".into()))
}

/// A fresh random key.
pub fn random_key() -> Result<[u8; KEY_LEN], KeyError> {
    let mut k = [0u8; KEY_LEN];
    rng_fill(&mut k)?;
    Ok(k)
}

/// AES-256-GCM: `nonce || ciphertext || tag`.
pub fn seal(key: &[u8], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + 16);
    out.resize(NONCE_LEN, 0);
    rng_fill(&mut out[..NONCE_LEN])?;
    out.extend_from_slice(plaintext);
    seal_in_place(key, aad, &mut out, NONCE_LEN)?;
    Ok(out)
}

/// Encrypts `buf[from..]` in place under a nonce already in
/// `buf[from - 12..from]`, appending the tag.
pub fn seal_in_place(
    key: &[u8],
    aad: &[u8],
    buf: &mut Vec<u8>,
    from: usize,
) -> Result<(), KeyError> {
    let key = aead_key(key)?;
    let nonce = Nonce::try_assume_unique_for_key(&buf[from - NONCE_LEN..from])
        .map_err(|_| KeyError::Invalid("bad nonce".into()))?;
    let tag = key
        .seal_in_place_separate_tag(nonce, Aad::from(aad), &mut buf[from..])
        .map_err(|_| KeyError::Invalid("encryption failed".into()))?;
    buf.extend_from_slice(tag.as_ref());
    Ok(())
}

/// Fills `buf` with random bytes (a nonce).
pub fn fill_random(buf: &mut [u8]) -> Result<(), KeyError> {
    rng_fill(buf)
}

/// Opens what [`seal`] made; fails on any change to it or to `aad`.
pub fn open(key: &[u8], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, KeyError> {
    if sealed.len() < NONCE_LEN + 16 {
        return Err(KeyError::Invalid("sealed data too short".into()));
    }
    let key = aead_key(key)?;
    let nonce = Nonce::try_assume_unique_for_key(&sealed[..NONCE_LEN])
        .map_err(|_| KeyError::Invalid("bad nonce".into()))?;
    let mut body = sealed[NONCE_LEN..].to_vec();
    let n = key
        .open_in_place(nonce, Aad::from(aad), &mut body)
        .map_err(|_| {
            KeyError::Invalid("decryption failed: wrong key, or the data was changed".into())
        })?
        .len();
    body.truncate(n);
    Ok(body)
}

fn aead_key(key: &[u8]) -> Result<LessSafeKey, KeyError> {
    UnboundKey::new(&AES_256_GCM, key)
        .map(LessSafeKey::new)
        .map_err(|_| KeyError::Invalid(format!("a key must be {KEY_LEN} bytes, not {}", key.len())))
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// The deployment's master key.
#[derive(Clone)]
pub struct MasterKey([u8; KEY_LEN]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// Parses 64 hex digits or base64 of 32 bytes (surrounding space
    /// ignored).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let bytes = if text.len() == 2 * KEY_LEN && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|e| KeyError::Invalid(e.to_string()))?
        } else {
            b64().decode(text).map_err(|_| {
                KeyError::Invalid(format!(
                    "a master key is 64 hex digits or base64 of {KEY_LEN} bytes"
                ))
            })?
        };
        let arr: [u8; KEY_LEN] = bytes.try_into().map_err(|b: Vec<u8>| {
            KeyError::Invalid(format!(
                "a master key is {KEY_LEN} bytes, this one {}",
                b.len()
            ))
        })?;
        Ok(Self(arr))
    }

    /// Reads a master key file; with `create`, a missing file is made with
    /// a fresh random key (owner-only permissions).
    pub fn load_file(path: &Path, create: bool) -> Result<Self, KeyError> {
        let io = |e: std::io::Error| KeyError::Keyring {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text).map_err(|e| KeyError::Keyring {
                path: path.display().to_string(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                // written whole beside it, then linked into place: several
                // nodes starting at once agree on the first one made
                let key = random_key()?;
                let dir = path.parent().unwrap_or(Path::new("."));
                std::fs::create_dir_all(dir).map_err(io)?;
                let temp = dir.join(format!(".master-{}.tmp", Uuid::now_v7()));
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
                let written = (|| {
                    let mut f = opts.open(&temp)?;
                    std::io::Write::write_all(
                        &mut f,
                        format!("{}\n", hex::encode(key)).as_bytes(),
                    )?;
                    f.sync_all()?;
                    std::fs::hard_link(&temp, path)
                })();
                let _ = std::fs::remove_file(&temp);
                match written {
                    Ok(()) => {
                        crate::atomic::sync_dir(dir).map_err(io)?;
                        Ok(Self(key))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Self::load_file(path, false)
                    }
                    Err(e) => Err(io(e)),
                }
            }
            Err(e) => Err(io(e)),
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// The keyring file: each tenant's KEK versions wrapped under the master
/// key, and the tenants shredded.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct KeyringFile {
    format: u32,
    /// A known text sealed under the master key: tells a wrong master key
    /// from a damaged KEK.
    check: String,
    #[serde(default)]
    tenants: BTreeMap<String, TenantKeks>,
    /// Tenant -> when it was shredded (RFC 3339).
    #[serde(default)]
    shredded: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct TenantKeks {
    current: u32,
    /// Version -> KEK sealed under the master key (base64).
    versions: BTreeMap<u32, String>,
}

const CHECK_TEXT: &[u8] = b"bulkhead keyring v1";
const CHECK_AAD: &[u8] = b"bulkhead-keyring-check";

fn kek_aad(tenant: &str, version: u32) -> Vec<u8> {
    format!("bulkhead-kek|{tenant}|{version}").into_bytes()
}

/// Identity of the keyring file as last read: a rename over it (every
/// write) changes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileIdentity {
    inode: u64,
    modified: Option<std::time::SystemTime>,
    len: u64,
}

fn identity(path: &Path) -> Option<FileIdentity> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let inode = 0;
    Some(FileIdentity {
        inode,
        modified: m.modified().ok(),
        len: m.len(),
    })
}

/// The local keyring: a JSON file of KEKs wrapped under the master key.
/// Several processes (the server, the CLI) share it: writes take an
/// exclusive lock on `<file>.lock` and replace the file atomically; every
/// call re-reads the file when it changed.
pub struct Keyring {
    path: PathBuf,
    lock_path: PathBuf,
    master: MasterKey,
    cached: Mutex<Option<(FileIdentity, Arc<KeyringFile>)>>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keyring({})", self.path.display())
    }
}

impl Keyring {
    /// Opens the keyring at `path`, creating it if missing; fails if the
    /// master key does not open an existing one.
    pub fn open(path: impl Into<PathBuf>, master: MasterKey) -> Result<Self, KeyError> {
        let path = path.into();
        let lock_path = PathBuf::from(format!("{}.lock", path.display()));
        let ring = Self {
            path,
            lock_path,
            master,
            cached: Mutex::new(None),
        };
        if identity(&ring.path).is_none() {
            ring.update(|_| Ok(()))?;
        }
        ring.read()?;
        Ok(ring)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, reason: impl fmt::Display) -> KeyError {
        KeyError::Keyring {
            path: self.path.display().to_string(),
            reason: reason.to_string(),
        }
    }

    fn lock(&self, exclusive: bool) -> Result<std::fs::File, KeyError> {
        if let Some(dir) = self.lock_path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| self.err(e))?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)
            .map_err(|e| self.err(e))?;
        if exclusive {
            f.lock().map_err(|e| self.err(e))?;
        } else {
            f.lock_shared().map_err(|e| self.err(e))?;
        }
        Ok(f)
    }

    /// The file as it is now (read again only if it changed).
    fn read(&self) -> Result<Arc<KeyringFile>, KeyError> {
        let now = identity(&self.path);
        if let (Some(now), Some((seen, file))) = (now, self.cached.lock().as_ref()) {
            if *seen == now {
                return Ok(file.clone());
            }
        }
        let _lock = self.lock(false)?;
        self.read_locked()
    }

    fn read_locked(&self) -> Result<Arc<KeyringFile>, KeyError> {
        let id = identity(&self.path).ok_or_else(|| self.err("missing"))?;
        let text = std::fs::read(&self.path).map_err(|e| self.err(e))?;
        let file: KeyringFile = serde_json::from_slice(&text).map_err(|e| self.err(e))?;
        if file.format != 1 {
            return Err(self.err(format!("format {} is not understood", file.format)));
        }
        let check = b64().decode(&file.check).map_err(|e| self.err(e))?;
        if open(self.master.bytes(), CHECK_AAD, &check).ok().as_deref() != Some(CHECK_TEXT) {
            return Err(KeyError::WrongMasterKey {
                path: self.path.display().to_string(),
            });
        }
        let file = Arc::new(file);
        *self.cached.lock() = Some((id, file.clone()));
        Ok(file)
    }

    /// Read, change and write the file under the exclusive lock.
    fn update<T>(
        &self,
        change: impl FnOnce(&mut KeyringFile) -> Result<T, KeyError>,
    ) -> Result<T, KeyError> {
        let _lock = self.lock(true)?;
        let mut file = if identity(&self.path).is_some() {
            (*self.read_locked()?).clone()
        } else {
            KeyringFile {
                format: 1,
                check: b64().encode(seal(self.master.bytes(), CHECK_AAD, CHECK_TEXT)?),
                ..KeyringFile::default()
            }
        };
        let out = change(&mut file)?;
        let text = serde_json::to_vec_pretty(&file).map_err(|e| self.err(e))?;
        crate::atomic::write_atomic(&self.path, &text).map_err(|e| self.err(e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o600));
        }
        self.read_locked()?;
        Ok(out)
    }

    fn new_kek(&self, tenant: &str, version: u32) -> Result<String, KeyError> {
        let kek = random_key()?;
        Ok(b64().encode(seal(self.master.bytes(), &kek_aad(tenant, version), &kek)?))
    }

    fn kek(
        &self,
        file: &KeyringFile,
        tenant: &TenantId,
        version: u32,
    ) -> Result<Vec<u8>, KeyError> {
        if let Some(at) = file.shredded.get(tenant.as_str()) {
            return Err(KeyError::Shredded {
                tenant: tenant.to_string(),
                at: at.clone(),
            });
        }
        let sealed = file
            .tenants
            .get(tenant.as_str())
            .and_then(|t| t.versions.get(&version))
            .ok_or_else(|| KeyError::NoVersion {
                tenant: tenant.to_string(),
                version,
            })?;
        let sealed = b64().decode(sealed).map_err(|e| self.err(e))?;
        open(
            self.master.bytes(),
            &kek_aad(tenant.as_str(), version),
            &sealed,
        )
        .map_err(|_| {
            self.err(format!(
                "KEK version {version} of tenant {tenant} is damaged"
            ))
        })
    }
}

impl KeyProvider for Keyring {
    fn wrap(&self, tenant: &TenantId, key: &[u8], aad: &[u8]) -> Result<Wrapped, KeyError> {
        let mut file = self.read()?;
        if !file.tenants.contains_key(tenant.as_str()) {
            let t = tenant.as_str().to_string();
            self.update(|f| {
                if let Some(at) = f.shredded.get(&t) {
                    return Err(KeyError::Shredded {
                        tenant: t.clone(),
                        at: at.clone(),
                    });
                }
                if !f.tenants.contains_key(&t) {
                    let sealed = self.new_kek(&t, 1)?;
                    f.tenants.insert(
                        t.clone(),
                        TenantKeks {
                            current: 1,
                            versions: BTreeMap::from([(1, sealed)]),
                        },
                    );
                }
                Ok(())
            })?;
            file = self.read()?;
        }
        let current = file
            .tenants
            .get(tenant.as_str())
            .map(|t| t.current)
            .unwrap_or(1);
        let kek = self.kek(&file, tenant, current)?;
        Ok(Wrapped {
            kek_version: current,
            bytes: seal(&kek, aad, key)?,
        })
    }

    fn unwrap(
        &self,
        tenant: &TenantId,
        wrapped: &Wrapped,
        aad: &[u8],
    ) -> Result<Vec<u8>, KeyError> {
        let file = self.read()?;
        let kek = self.kek(&file, tenant, wrapped.kek_version)?;
        open(&kek, aad, &wrapped.bytes)
    }

    fn rotate(&self, tenant: &TenantId) -> Result<u32, KeyError> {
        let t = tenant.as_str().to_string();
        self.update(|f| {
            if let Some(at) = f.shredded.get(&t) {
                return Err(KeyError::Shredded {
                    tenant: t.clone(),
                    at: at.clone(),
                });
            }
            let next = f.tenants.get(&t).map_or(1, |k| k.current + 1);
            let sealed = self.new_kek(&t, next)?;
            let entry = f.tenants.entry(t.clone()).or_default();
            entry.versions.insert(next, sealed);
            entry.current = next;
            Ok(next)
        })
    }

    fn retire(&self, tenant: &TenantId, in_use: &BTreeSet<u32>) -> Result<Vec<u32>, KeyError> {
        let t = tenant.as_str().to_string();
        self.update(|f| {
            let Some(entry) = f.tenants.get_mut(&t) else {
                return Ok(Vec::new());
            };
            let current = entry.current;
            let gone: Vec<u32> = entry
                .versions
                .keys()
                .copied()
                .filter(|v| *v != current && !in_use.contains(v))
                .collect();
            for v in &gone {
                entry.versions.remove(v);
            }
            Ok(gone)
        })
    }

    fn shred(&self, tenant: &TenantId, at: &str) -> Result<(), KeyError> {
        let t = tenant.as_str().to_string();
        self.update(|f| {
            f.tenants.remove(&t);
            f.shredded
                .entry(t.clone())
                .or_insert_with(|| at.to_string());
            Ok(())
        })
    }

    fn shredded(&self, tenant: &TenantId) -> Result<Option<String>, KeyError> {
        Ok(self.read()?.shredded.get(tenant.as_str()).cloned())
    }

    fn versions(&self, tenant: &TenantId) -> Result<Vec<u32>, KeyError> {
        let file = self.read()?;
        let Some(t) = file.tenants.get(tenant.as_str()) else {
            return Ok(Vec::new());
        };
        let mut v: Vec<u32> = t
            .versions
            .keys()
            .copied()
            .filter(|v| *v != t.current)
            .collect();
        v.push(t.current);
        Ok(v)
    }

    fn state(&self) -> Result<KeyState, KeyError> {
        let file = self.read()?;
        Ok(KeyState {
            current: file
                .tenants
                .iter()
                .map(|(t, k)| (t.clone(), k.current))
                .collect(),
            shredded: file.shredded.clone(),
        })
    }
}

/// A tenant's data key, unwrapped.
pub struct DataKey {
    pub tenant: TenantId,
    pub id: Uuid,
    key: [u8; KEY_LEN],
    /// The UTC day (days since the epoch) it was made for writing.
    day: i64,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DataKey({}/{})", self.tenant, self.id)
    }
}

impl DataKey {
    /// A fresh random key of `tenant`'s, stored nowhere (tests and tools).
    pub fn random(tenant: &TenantId) -> Result<Self, KeyError> {
        Ok(Self {
            tenant: tenant.clone(),
            id: Uuid::now_v7(),
            key: random_key()?,
            day: i64::MIN,
        })
    }

    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The footer key metadata naming this key.
    pub fn metadata(&self) -> Vec<u8> {
        format!("{KEY_METADATA_PREFIX}{}", self.id).into_bytes()
    }
}

/// The data key an encrypted file's footer names.
pub fn key_id_from_metadata(metadata: &[u8]) -> Option<Uuid> {
    std::str::from_utf8(metadata)
        .ok()?
        .strip_prefix(KEY_METADATA_PREFIX)
        .and_then(|id| Uuid::parse_str(id).ok())
}

/// The stored form of a data key.
#[derive(Debug, Serialize, Deserialize)]
struct DataKeyObject {
    format: u32,
    tenant: String,
    id: String,
    kek_version: u32,
    /// The key sealed under the KEK (base64).
    wrapped: String,
    created: String,
}

fn dek_aad(tenant: &str, id: &Uuid) -> Vec<u8> {
    format!("bulkhead-dek|{tenant}|{id}").into_bytes()
}

/// Where a tenant's data-key objects live.
pub fn keys_prefix(tenant: &TenantId) -> ObjPath {
    tenant_prefix(tenant).join("_keys")
}

fn key_path(tenant: &TenantId, id: &Uuid) -> ObjPath {
    keys_prefix(tenant).join(format!("{id}.json").as_str())
}

/// Counts from a rotation.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Rotation {
    pub kek_version: u32,
    pub data_keys_rewrapped: usize,
    pub versions_retired: Vec<u32>,
}

/// Data keys of every tenant: made, stored, found and cached.
#[derive(Debug)]
pub struct DataKeys {
    provider: Arc<dyn KeyProvider>,
    /// Whether new files and log entries are encrypted (reading works
    /// either way).
    encrypt: bool,
    /// Each tenant's key for writing today.
    writing: Mutex<HashMap<TenantId, Arc<DataKey>>>,
    /// Keys met when reading, by id.
    reading: RwLock<HashMap<Uuid, Arc<DataKey>>>,
}

impl DataKeys {
    /// Keys that encrypt everything written from now on.
    pub fn new(provider: Arc<dyn KeyProvider>) -> Self {
        Self::with_encryption(provider, true)
    }

    /// Keys that read encrypted data but, with `encrypt` false, write new
    /// data in the clear (a deployment with encryption turned off).
    pub fn with_encryption(provider: Arc<dyn KeyProvider>, encrypt: bool) -> Self {
        Self {
            provider,
            encrypt,
            writing: Mutex::default(),
            reading: RwLock::default(),
        }
    }

    pub fn provider(&self) -> &Arc<dyn KeyProvider> {
        &self.provider
    }

    /// Whether new data is encrypted.
    pub fn encrypts(&self) -> bool {
        self.encrypt
    }

    /// Fails if the tenant was shredded (dropping its cached keys).
    pub fn check(&self, tenant: &TenantId) -> Result<(), KeyError> {
        if let Some(at) = self.provider.shredded(tenant)? {
            self.forget(tenant);
            return Err(KeyError::Shredded {
                tenant: tenant.to_string(),
                at,
            });
        }
        Ok(())
    }

    /// Drops the tenant's keys from memory.
    pub fn forget(&self, tenant: &TenantId) {
        self.writing.lock().remove(tenant);
        self.reading.write().retain(|_, k| &k.tenant != tenant);
    }

    /// The tenant's data key for writing at `now_nanos`: today's, made and
    /// stored (wrapped) if this node has none for today yet.
    pub fn for_writing(
        &self,
        storage: &Storage,
        tenant: &TenantId,
        now_nanos: i64,
    ) -> Result<Arc<DataKey>, KeyError> {
        self.check(tenant)?;
        let day = now_nanos.div_euclid(86_400 * 1_000_000_000);
        if let Some(k) = self.writing.lock().get(tenant) {
            if k.day == day {
                return Ok(k.clone());
            }
        }
        let id = Uuid::now_v7();
        let key = random_key()?;
        let wrapped = self
            .provider
            .wrap(tenant, &key, &dek_aad(tenant.as_str(), &id))?;
        let object = DataKeyObject {
            format: 1,
            tenant: tenant.to_string(),
            id: id.to_string(),
            kek_version: wrapped.kek_version,
            wrapped: b64().encode(&wrapped.bytes),
            created: chrono::DateTime::from_timestamp_nanos(now_nanos).to_rfc3339(),
        };
        let bytes = serde_json::to_vec(&object).map_err(|e| KeyError::Invalid(e.to_string()))?;
        storage
            .put(&key_path(tenant, &id), Bytes::from(bytes))
            .map_err(|e| KeyError::Storage(e.to_string()))?;
        let k = Arc::new(DataKey {
            tenant: tenant.clone(),
            id,
            key,
            day,
        });
        self.writing.lock().insert(tenant.clone(), k.clone());
        self.reading.write().insert(id, k.clone());
        Ok(k)
    }

    /// The tenant's data key `id`, from memory or the store.
    pub fn by_id(
        &self,
        storage: &Storage,
        tenant: &TenantId,
        id: Uuid,
    ) -> Result<Arc<DataKey>, KeyError> {
        self.check(tenant)?;
        if let Some(k) = self.reading.read().get(&id) {
            if &k.tenant == tenant {
                return Ok(k.clone());
            }
        }
        let bytes = storage
            .get(&key_path(tenant, &id))
            .map_err(|e| KeyError::Storage(e.to_string()))?
            .ok_or_else(|| KeyError::NoDataKey {
                tenant: tenant.to_string(),
                id: id.to_string(),
            })?;
        let (object, key) = self.open_object(tenant, &bytes)?;
        if object.id != id.to_string() {
            return Err(KeyError::Invalid(format!(
                "data key object {id} names key {}",
                object.id
            )));
        }
        let k = Arc::new(DataKey {
            tenant: tenant.clone(),
            id,
            key,
            day: i64::MIN,
        });
        let mut reading = self.reading.write();
        if reading.len() >= READ_CACHE {
            reading.clear();
        }
        reading.insert(id, k.clone());
        Ok(k)
    }

    fn open_object(
        &self,
        tenant: &TenantId,
        bytes: &[u8],
    ) -> Result<(DataKeyObject, [u8; KEY_LEN]), KeyError> {
        let object: DataKeyObject = serde_json::from_slice(bytes)
            .map_err(|e| KeyError::Invalid(format!("data key object: {e}")))?;
        if object.tenant != tenant.as_str() {
            return Err(KeyError::Invalid(format!(
                "data key {} belongs to tenant {}, not {tenant}",
                object.id, object.tenant
            )));
        }
        let id = Uuid::parse_str(&object.id).map_err(|e| KeyError::Invalid(e.to_string()))?;
        let wrapped = Wrapped {
            kek_version: object.kek_version,
            bytes: b64()
                .decode(&object.wrapped)
                .map_err(|e| KeyError::Invalid(e.to_string()))?,
        };
        let key = self
            .provider
            .unwrap(tenant, &wrapped, &dek_aad(tenant.as_str(), &id))?;
        let key: [u8; KEY_LEN] = key
            .try_into()
            .map_err(|_| KeyError::Invalid("a data key is not 32 bytes".into()))?;
        Ok((object, key))
    }

    /// Rotates the tenant's KEK: a new version, every data-key object
    /// re-wrapped under it, then the versions nothing uses any more
    /// removed. The data is not touched. Safe to run again after a crash.
    pub fn rotate(&self, storage: &Storage, tenant: &TenantId) -> Result<Rotation, KeyError> {
        self.check(tenant)?;
        let version = self.provider.rotate(tenant)?;
        let mut out = Rotation {
            kek_version: version,
            ..Rotation::default()
        };
        let mut in_use = BTreeSet::new();
        for meta in storage
            .list(&keys_prefix(tenant))
            .map_err(|e| KeyError::Storage(e.to_string()))?
        {
            let Some(bytes) = storage
                .get(&meta.location)
                .map_err(|e| KeyError::Storage(e.to_string()))?
            else {
                continue;
            };
            let (mut object, key) = self.open_object(tenant, &bytes)?;
            if object.kek_version != version {
                let id =
                    Uuid::parse_str(&object.id).map_err(|e| KeyError::Invalid(e.to_string()))?;
                let wrapped = self
                    .provider
                    .wrap(tenant, &key, &dek_aad(tenant.as_str(), &id))?;
                object.kek_version = wrapped.kek_version;
                object.wrapped = b64().encode(&wrapped.bytes);
                let bytes =
                    serde_json::to_vec(&object).map_err(|e| KeyError::Invalid(e.to_string()))?;
                storage
                    .put(&meta.location, Bytes::from(bytes))
                    .map_err(|e| KeyError::Storage(e.to_string()))?;
                out.data_keys_rewrapped += 1;
            }
            in_use.insert(object.kek_version);
        }
        out.versions_retired = self.provider.retire(tenant, &in_use)?;
        Ok(out)
    }

    /// Shreds the tenant: its KEK destroyed, its data-key objects deleted,
    /// its keys dropped from memory. Returns how many data keys were
    /// deleted.
    pub fn shred(&self, storage: &Storage, tenant: &TenantId, at: &str) -> Result<usize, KeyError> {
        self.provider.shred(tenant, at)?;
        self.forget(tenant);
        let mut deleted = 0;
        for meta in storage
            .list(&keys_prefix(tenant))
            .map_err(|e| KeyError::Storage(e.to_string()))?
        {
            storage
                .delete(&meta.location)
                .map_err(|e| KeyError::Storage(e.to_string()))?;
            deleted += 1;
        }
        Ok(deleted)
    }
}

/// Finds the data key an encrypted file's footer names, among `tenant`'s.
struct TenantKeyRetriever {
    keys: Arc<DataKeys>,
    storage: Arc<Storage>,
    tenant: TenantId,
}

impl KeyRetriever for TenantKeyRetriever {
    fn retrieve_key(&self, key_metadata: &[u8]) -> parquet::errors::Result<Vec<u8>> {
        let id = key_id_from_metadata(key_metadata).ok_or_else(|| {
            ParquetError::General(format!(
                "the file's key metadata is not a Bulkhead data key of tenant {}",
                self.tenant
            ))
        })?;
        self.keys
            .by_id(&self.storage, &self.tenant, id)
            .map(|k| k.key.to_vec())
            .map_err(|e| ParquetError::General(e.to_string()))
    }
}

/// Decryption properties for `tenant`'s files: each file's data key is
/// looked up by the id its footer names, among the tenant's keys only.
pub fn decryption_properties(
    keys: Arc<DataKeys>,
    storage: Arc<Storage>,
    tenant: &TenantId,
) -> Result<Arc<FileDecryptionProperties>, KeyError> {
    keys.check(tenant)?;
    FileDecryptionProperties::with_key_retriever(Arc::new(TenantKeyRetriever {
        keys,
        storage,
        tenant: tenant.clone(),
    }))
    .build()
    .map_err(|e| KeyError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(s: &str) -> TenantId {
        TenantId::new(s).unwrap()
    }

    #[test]
    fn seal_and_open_round_trip_and_detect_changes() {
        let key = random_key().unwrap();
        let sealed = seal(&key, b"aad", b"hello").unwrap();
        assert_eq!(open(&key, b"aad", &sealed).unwrap(), b"hello");
        assert!(open(&key, b"other", &sealed).is_err());
        let mut bad = sealed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(open(&key, b"aad", &bad).is_err());
        assert!(open(&random_key().unwrap(), b"aad", &sealed).is_err());
    }

    #[test]
    fn master_keys_parse_from_hex_and_base64_only_at_32_bytes() {
        let k = [7u8; 32];
        assert!(MasterKey::parse(&hex::encode(k)).is_ok());
        assert!(MasterKey::parse(&b64().encode(k)).is_ok());
        assert!(MasterKey::parse(&hex::encode([7u8; 16])).is_err());
        assert!(MasterKey::parse("not a key").is_err());
    }

    #[test]
    fn a_keyring_refuses_the_wrong_master_key_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        let master = MasterKey::from_bytes([1; 32]);
        let ring = Keyring::open(&path, master.clone()).unwrap();
        let t = tenant("acme");
        let w = ring
            .wrap(&t, b"0123456789abcdef0123456789abcdef", b"x")
            .unwrap();
        assert_eq!(w.kek_version, 1);
        drop(ring);
        let again = Keyring::open(&path, master).unwrap();
        assert_eq!(
            again.unwrap(&t, &w, b"x").unwrap(),
            b"0123456789abcdef0123456789abcdef"
        );
        // another tenant's KEK does not open it
        let other = tenant("globex");
        assert!(again.unwrap(&other, &w, b"x").is_err());
        let wrong = Keyring::open(&path, MasterKey::from_bytes([2; 32])).unwrap_err();
        assert!(matches!(wrong, KeyError::WrongMasterKey { .. }), "{wrong}");
    }

    #[test]
    fn a_shred_seen_by_another_handle_of_the_same_keyring() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        let master = MasterKey::from_bytes([3; 32]);
        let server = Keyring::open(&path, master.clone()).unwrap();
        let cli = Keyring::open(&path, master).unwrap();
        let t = tenant("acme");
        let w = server.wrap(&t, &[9; 32], b"").unwrap();
        assert!(server.unwrap(&t, &w, b"").is_ok());
        cli.shred(&t, "2026-12-04T00:00:00Z").unwrap();
        let e = server.unwrap(&t, &w, b"").unwrap_err();
        assert!(matches!(e, KeyError::Shredded { .. }), "{e}");
        assert!(matches!(
            server.wrap(&t, &[9; 32], b""),
            Err(KeyError::Shredded { .. })
        ));
        assert!(matches!(server.rotate(&t), Err(KeyError::Shredded { .. })));
    }

    #[test]
    fn rotation_keeps_old_versions_until_retired() {
        let dir = tempfile::tempdir().unwrap();
        let ring =
            Keyring::open(dir.path().join("k.json"), MasterKey::from_bytes([4; 32])).unwrap();
        let t = tenant("acme");
        let old = ring.wrap(&t, &[5; 32], b"a").unwrap();
        assert_eq!(ring.rotate(&t).unwrap(), 2);
        let new = ring.wrap(&t, &[5; 32], b"a").unwrap();
        assert_eq!(new.kek_version, 2);
        assert_eq!(ring.unwrap(&t, &old, b"a").unwrap(), vec![5; 32]);
        assert_eq!(
            ring.retire(&t, &BTreeSet::from([1])).unwrap(),
            Vec::<u32>::new()
        );
        assert_eq!(ring.retire(&t, &BTreeSet::new()).unwrap(), vec![1]);
        assert!(matches!(
            ring.unwrap(&t, &old, b"a"),
            Err(KeyError::NoVersion { .. })
        ));
        assert_eq!(ring.versions(&t).unwrap(), vec![2]);
    }
}
