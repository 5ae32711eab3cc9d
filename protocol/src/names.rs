//! Topic and channel names: validated once at the edge, then carried as
//! newtypes that can only hold valid values.

use std::fmt;

/// Longest topic or channel name, `#ephemeral` suffix included.
pub const MAX_NAME_LEN: usize = 64;
/// Suffix that makes a topic or channel ephemeral (memory only, deleted with
/// its last client).
pub const EPHEMERAL_SUFFIX: &str = "#ephemeral";

/// True when `name` matches `^[.a-zA-Z0-9_-]+(#ephemeral)?$` in 1..=64 bytes.
pub fn is_valid_name(name: &[u8]) -> bool {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return false;
    }
    let base = name
        .strip_suffix(EPHEMERAL_SUFFIX.as_bytes())
        .unwrap_or(name);
    !base.is_empty()
        && base
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Validate `raw`; `None` when it is not a legal name.
            pub fn new(raw: &[u8]) -> Option<Self> {
                if is_valid_name(raw) {
                    // Valid names are ASCII, hence UTF-8.
                    std::str::from_utf8(raw).ok().map(|s| Self(s.to_owned()))
                } else {
                    None
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Ephemeral names live in memory only and go away with their last user.
            pub fn is_ephemeral(&self) -> bool {
                self.0.ends_with(EPHEMERAL_SUFFIX)
            }
        }

        impl std::str::FromStr for $name {
            type Err = ();
            fn from_str(s: &str) -> Result<Self, ()> {
                Self::new(s.as_bytes()).ok_or(())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// A valid topic name.
    TopicName
);
name_type!(
    /// A valid channel name.
    ChannelName
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_rules() {
        assert!(is_valid_name(b"test"));
        assert!(is_valid_name(b"a.b_c-D9"));
        assert!(is_valid_name(b"t#ephemeral"));
        assert!(!is_valid_name(b"#ephemeral"));
        assert!(!is_valid_name(b""));
        assert!(!is_valid_name(b"a b"));
        assert!(!is_valid_name(b"a#b"));
        assert!(!is_valid_name(b"a#ephemeral#ephemeral"));
        assert!(!is_valid_name(b"t/x"));
        assert!(is_valid_name(&[b'a'; 64]));
        assert!(!is_valid_name(&[b'a'; 65]));
        let mut long = vec![b'a'; 54];
        long.extend_from_slice(b"#ephemeral");
        assert!(is_valid_name(&long));
        long.insert(0, b'a');
        assert!(!is_valid_name(&long));
    }

    #[test]
    fn ephemeral() {
        assert!(TopicName::new(b"x#ephemeral").unwrap().is_ephemeral());
        assert!(!ChannelName::new(b"x").unwrap().is_ephemeral());
    }
}
