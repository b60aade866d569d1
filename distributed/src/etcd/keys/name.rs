//! Recipe names and the keys under them.
//!
//! A recipe's name is a key prefix, and every key under it is written
//! `<name>/<rest>`: the `/` is what keeps the queue `a` from seeing the items
//! of the queue `ab`.

use crate::etcd::EtcdError;

/// A validated recipe name: non-empty, no NUL.
///
/// Keys are always `<name>/<rest>`, as in Go, whatever the name ends with:
/// a name written the way Go's examples write it, `"/my-lock/"`, gives the
/// keys Go gives it, `"/my-lock//<lease>"`, so both share one lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecipeName(String);

impl RecipeName {
    pub(crate) fn new(name: &str) -> Result<Self, EtcdError> {
        let reason = if name.is_empty() {
            Some("a name cannot be empty")
        } else if name.contains('\0') {
            Some("a name cannot contain a NUL byte")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(EtcdError::InvalidName {
                name: name.to_string(),
                reason,
            }),
            None => Ok(RecipeName(name.to_string())),
        }
    }

    /// The name itself.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// `<name>/`: the prefix every key of this recipe starts with.
    pub(crate) fn prefix(&self) -> String {
        format!("{}/", self.0)
    }

    /// Whether `key` is `<name>/<one segment>`: a key of this recipe, not of
    /// a nested name such as `<name>/sub` (whose keys are
    /// `<name>/sub/<segment>`).
    pub(crate) fn is_direct_child(&self, key: &[u8]) -> bool {
        key.strip_prefix(self.0.as_bytes())
            .is_some_and(|rest| is_direct_child_of("/", rest))
    }

    /// `<name>/<sub>/`: a sub-prefix, such as the readers of a RwMutex.
    pub(crate) fn sub_prefix(&self, sub: &str) -> String {
        format!("{}/{sub}/", self.0)
    }

    /// `<name>/<lease id in lowercase hex>`: the key layout of etcd's Go
    /// Mutex and Election (and so of `etcdctl lock` and `etcdctl elect`).
    pub(crate) fn lease_key(&self, lease: i64) -> String {
        format!("{}/{lease:x}", self.0)
    }
}

/// Whether `key` is `<prefix><one segment>`: one more segment, without a
/// `/` of its own. `prefix` ends with `/`.
pub(crate) fn is_direct_child_of(prefix: &str, key: &[u8]) -> bool {
    key.strip_prefix(prefix.as_bytes())
        .is_some_and(|segment| !segment.is_empty() && !segment.contains(&b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_are_rejected_with_the_reason() {
        for bad in ["", "a\0b"] {
            let error = RecipeName::new(bad).unwrap_err();
            assert!(
                matches!(error, EtcdError::InvalidName { .. }),
                "{bad:?}: {error}"
            );
        }
    }

    #[test]
    fn keys_use_a_slash_so_prefixes_never_overlap() {
        let a = RecipeName::new("a").unwrap();
        let ab = RecipeName::new("ab").unwrap();
        assert!(!ab.prefix().starts_with(&a.prefix()));
        assert_eq!(a.lease_key(0x694d), "a/694d");
        assert_eq!(a.sub_prefix("read"), "a/read/");
    }

    #[test]
    fn a_trailing_slash_keeps_gos_layout() {
        // Go: NewMutex(s, "/my-lock/") locks "/my-lock/" + "/" + lease.
        let go_style = RecipeName::new("/my-lock/").unwrap();
        assert_eq!(go_style.lease_key(0x694d), "/my-lock//694d");
        assert!(go_style.is_direct_child(b"/my-lock//694d"));
        // And it does not share keys with the name without the slash.
        let plain = RecipeName::new("/my-lock").unwrap();
        assert!(!plain.is_direct_child(b"/my-lock//694d"));
        assert!(!go_style.is_direct_child(b"/my-lock/694d"));
    }

    #[test]
    fn only_direct_children_belong_to_a_name() {
        let a = RecipeName::new("a").unwrap();
        assert!(a.is_direct_child(b"a/694d"));
        for foreign in [&b"a/b/694d"[..], b"a/", b"ab/1", b"a", b"b/a/1"] {
            assert!(!a.is_direct_child(foreign), "{foreign:?}");
        }
    }
}
