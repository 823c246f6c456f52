//! Publishing the audit chain's head to the store: each node writes its
//! log's last entry (`seq`, `hash`) as `_audit/<node>/heads/<seq>.json`
//! now and then. The store is elsewhere than the node's disk, so someone
//! who cuts entries off the end of the log (which the chain alone cannot
//! show: what is left still chains) is caught by `bulkhead audit verify
//! --published`, which requires the latest published entry to be there
//! with the same hash.
use object_store::path::Path as ObjPath;
use serde::{Deserialize, Serialize};

use super::Anchor;
use crate::objects::Storage;
use crate::{Error, Result};

/// One published head.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedHead {
    pub node: String,
    pub seq: u64,
    pub hash: String,
    /// When it was published (RFC 3339).
    pub at: String,
}

impl PublishedHead {
    pub fn anchor(&self) -> Anchor {
        Anchor {
            seq: self.seq,
            hash: self.hash.clone(),
        }
    }
}

fn node_dir(node: &str) -> String {
    let safe: String = node
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("_audit/{safe}/heads")
}

/// Writes `head` of `node`'s log; returns where.
pub fn publish_head(storage: &Storage, node: &str, head: &Anchor, at: &str) -> Result<ObjPath> {
    let path = ObjPath::from(format!("{}/{:020}.json", node_dir(node), head.seq));
    let record = PublishedHead {
        node: node.to_string(),
        seq: head.seq,
        hash: head.hash.clone(),
        at: at.to_string(),
    };
    let bytes = serde_json::to_vec(&record).map_err(|e| Error::Storage(e.to_string()))?;
    storage.put(&path, bytes::Bytes::from(bytes))?;
    Ok(path)
}

/// Every head `node` published, oldest first: each must still be in its
/// log with the same hash (a log cut and then written on past an old head
/// disagrees with it).
pub fn published_heads(storage: &Storage, node: &str) -> Result<Vec<PublishedHead>> {
    let mut paths: Vec<ObjPath> = storage
        .list(&ObjPath::from(node_dir(node)))?
        .into_iter()
        .map(|o| o.location)
        .collect();
    paths.sort_by(|a, b| a.as_ref().cmp(b.as_ref()));
    let mut out = Vec::with_capacity(paths.len());
    for p in paths {
        let Some(bytes) = storage.get(&p)? else {
            continue;
        };
        out.push(serde_json::from_slice(&bytes).map_err(|e| Error::Storage(format!("{p}: {e}")))?);
    }
    Ok(out)
}

/// The latest head `node` published, if any.
pub fn latest_published(storage: &Storage, node: &str) -> Result<Option<PublishedHead>> {
    let Some(latest) = storage
        .list(&ObjPath::from(node_dir(node)))?
        .into_iter()
        .map(|o| o.location)
        .max_by(|a, b| a.as_ref().cmp(b.as_ref()))
    else {
        return Ok(None);
    };
    let bytes = storage
        .get(&latest)?
        .ok_or_else(|| Error::Storage(format!("{latest} went away")))?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::Storage(format!("{latest}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_head_is_found_by_its_seq() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(&crate::StorageConfig::Local {
            root: dir.path().to_path_buf(),
        })
        .unwrap();
        assert_eq!(latest_published(&storage, "node/1").unwrap(), None);
        for seq in [9, 10, 100] {
            let head = Anchor {
                seq,
                hash: format!("{seq:064}"),
            };
            publish_head(&storage, "node/1", &head, "now").unwrap();
        }
        let latest = latest_published(&storage, "node/1").unwrap().unwrap();
        let all: Vec<u64> = published_heads(&storage, "node/1")
            .unwrap()
            .iter()
            .map(|h| h.seq)
            .collect();
        assert_eq!(all, vec![9, 10, 100]);
        assert_eq!((latest.seq, latest.node.as_str()), (100, "node/1"));
        assert_eq!(latest_published(&storage, "node-2").unwrap(), None);
    }
}
