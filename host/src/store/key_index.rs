//! The sorted keys of the directory store's published blobs, so a prefix
//! listing reads only the blobs under its prefix. Blob files are named by a
//! hash of their key, so without it every listing reads every trailer (the
//! GitHub Actions cache looks entries up by prefix on every miss).
//!
//! Built by one scan of the store on the first listing, then kept current by
//! every publish and delete of this process. Changes that happen while the scan
//! runs are recorded and replayed over its result in order, so none is lost.
//! A key whose blob has gone anyway is dropped when a listing finds it missing.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::Mutex;

#[derive(Default)]
pub struct KeyIndex {
    state: Mutex<State>,
    /// Held by the one scan that builds the index.
    building: Mutex<()>,
}

#[derive(Default)]
enum State {
    #[default]
    Unbuilt,
    /// A scan is running: what changed meanwhile (`true`: published).
    Building(Vec<(bool, String)>),
    Built(BTreeSet<String>),
}

impl KeyIndex {
    /// Records a publish of `key`.
    pub fn insert(&self, key: &str) {
        self.change(true, key);
    }

    /// Records a delete of `key`.
    pub fn remove(&self, key: &str) {
        self.change(false, key);
    }

    fn change(&self, published: bool, key: &str) {
        match &mut *self.state.lock().unwrap() {
            State::Unbuilt => {}
            State::Building(changes) => changes.push((published, key.to_string())),
            State::Built(keys) if published => {
                keys.insert(key.to_string());
            }
            State::Built(keys) => {
                keys.remove(key);
            }
        }
    }

    /// Up to `limit` keys starting with `prefix`, after `cursor`, in order,
    /// and whether more follow; `scan` lists every key when the index is not
    /// built yet.
    pub fn range(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
        scan: impl FnOnce() -> std::io::Result<Vec<String>>,
    ) -> std::io::Result<(Vec<String>, bool)> {
        self.ensure_built(scan)?;
        let state = self.state.lock().unwrap();
        let State::Built(keys) = &*state else {
            unreachable!("built above");
        };
        let start = match cursor {
            Some(cursor) if cursor >= prefix => Bound::Excluded(cursor.to_string()),
            _ => Bound::Included(prefix.to_string()),
        };
        let mut found = keys
            .range((start, Bound::Unbounded))
            .take_while(|key| key.starts_with(prefix));
        let page: Vec<String> = found.by_ref().take(limit).cloned().collect();
        let more = found.next().is_some();
        Ok((page, more))
    }

    fn ensure_built(
        &self,
        scan: impl FnOnce() -> std::io::Result<Vec<String>>,
    ) -> std::io::Result<()> {
        if matches!(*self.state.lock().unwrap(), State::Built(_)) {
            return Ok(());
        }
        let _building = self.building.lock().unwrap();
        {
            let mut state = self.state.lock().unwrap();
            match &*state {
                State::Built(_) => return Ok(()),
                _ => *state = State::Building(Vec::new()),
            }
        }
        let scanned = scan();
        let mut state = self.state.lock().unwrap();
        let changes = match std::mem::take(&mut *state) {
            State::Building(changes) => changes,
            _ => Vec::new(),
        };
        let mut keys: BTreeSet<String> = match scanned {
            Ok(keys) => keys.into_iter().collect(),
            Err(error) => {
                *state = State::Unbuilt;
                return Err(error);
            }
        };
        for (published, key) in changes {
            match published {
                true => keys.insert(key),
                false => keys.remove(&key),
            };
        }
        *state = State::Built(keys);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_through_a_prefix_in_order() {
        let index = KeyIndex::default();
        let scan = || {
            Ok(vec![
                "b/2".into(),
                "a/1".into(),
                "b/1".into(),
                "b/3".into(),
                "c".into(),
            ])
        };
        let (page, more) = index.range("b/", None, 2, scan).unwrap();
        assert_eq!(
            (page.as_slice(), more),
            (&["b/1".to_string(), "b/2".into()][..], true)
        );
        let (page, more) = index
            .range("b/", Some("b/2"), 2, || unreachable!())
            .unwrap();
        assert_eq!((page, more), (vec!["b/3".to_string()], false));
        index.insert("b/25");
        index.remove("b/3");
        let (page, _) = index
            .range("b/", Some("b/2"), 5, || unreachable!())
            .unwrap();
        assert_eq!(page, vec!["b/25".to_string()]);
        let (all, _) = index.range("", None, 10, || unreachable!()).unwrap();
        assert_eq!(all.len(), 5);
    }

    #[test]
    fn changes_during_the_scan_are_kept() {
        let index = std::sync::Arc::new(KeyIndex::default());
        let during = index.clone();
        let (page, _) = index
            .range("", None, 10, move || {
                // Published and deleted while the scan runs.
                during.insert("new");
                during.remove("gone");
                Ok(vec!["gone".into(), "old".into()])
            })
            .unwrap();
        assert_eq!(page, vec!["new".to_string(), "old".into()]);
    }
}
