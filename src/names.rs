//! Checked names: every name in a manifest (fleet, environment, host, runtime, version, label
//! key) ends up as a directory name, a file name or a shell environment value on a host, so it is
//! checked once, here, and carried as a newtype from then on. Names are cloned into every
//! host's resolved state, so each shares one allocation (`Arc<str>`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a string is not a valid name; shown to users next to the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("a name may not be empty")]
    Empty,
    #[error("a name may be at most 128 characters long ({0} given)")]
    TooLong(usize),
    #[error("a name must start with a letter or digit")]
    BadStart,
    #[error("{0:?} is not allowed in a name: use letters, digits and . _ + -")]
    BadChar(char),
    #[error("a name may not contain `..`")]
    DotDot,
    #[error("`current` is reserved (it names the active-version link)")]
    Reserved,
}

/// Checks the grammar shared by every name: `[A-Za-z0-9][A-Za-z0-9._+-]{0,127}` and no `..`.
pub fn check_name(s: &str) -> Result<(), NameError> {
    let mut chars = s.chars();
    let first = chars.next().ok_or(NameError::Empty)?;
    if !first.is_ascii_alphanumeric() {
        return Err(if first.is_ascii_graphic() || first == ' ' {
            NameError::BadStart
        } else {
            NameError::BadChar(first)
        });
    }
    if let Some(bad) = chars.find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-'))) {
        return Err(NameError::BadChar(bad));
    }
    if s.len() > 128 {
        return Err(NameError::TooLong(s.len()));
    }
    if s.contains("..") {
        return Err(NameError::DotDot);
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$meta:meta])* $ty:ident) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(std::sync::Arc<str>);

        impl $ty {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $ty {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                Self::check(&s)?;
                Ok(Self(s.into()))
            }
        }

        impl std::str::FromStr for $ty {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::try_from(s.to_owned())
            }
        }

        impl From<$ty> for String {
            fn from(n: $ty) -> String {
                n.0.to_string()
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $ty {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(&self.0)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
    };
}

name_type!(
    /// The fleet's name; recorded in every host's `state.json` so one fleet never
    /// overwrites another's host.
    FleetName
);
name_type!(
    /// An environment's name: the stem of its file under `environments/`.
    EnvName
);
name_type!(
    /// A host's name, unique in the fleet.
    HostName
);
name_type!(
    /// A runtime's name: the stem of its file under `runtimes/`, and a directory on hosts.
    RuntimeName
);
name_type!(
    /// A runtime version: a directory name under the runtime's directory on hosts.
    Version
);
name_type!(
    /// A label key; label values are free text.
    LabelKey
);

impl FleetName {
    fn check(s: &str) -> Result<(), NameError> {
        check_name(s)
    }
}
impl EnvName {
    fn check(s: &str) -> Result<(), NameError> {
        check_name(s)
    }
}
impl HostName {
    fn check(s: &str) -> Result<(), NameError> {
        check_name(s)
    }
}
impl RuntimeName {
    fn check(s: &str) -> Result<(), NameError> {
        check_name(s)
    }
}
impl LabelKey {
    fn check(s: &str) -> Result<(), NameError> {
        check_name(s)
    }
}
impl Version {
    fn check(s: &str) -> Result<(), NameError> {
        check_name(s)?;
        if s == "current" {
            return Err(NameError::Reserved);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in ["a", "web-01", "python-3.11-ml", "1.2.3+build_4", &"x".repeat(128)] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejects_names_that_would_escape_a_directory() {
        assert_eq!(check_name(""), Err(NameError::Empty));
        assert_eq!(check_name(".hidden"), Err(NameError::BadStart));
        assert_eq!(check_name("a/b"), Err(NameError::BadChar('/')));
        assert_eq!(check_name("a..b"), Err(NameError::DotDot));
        assert_eq!(check_name("a b"), Err(NameError::BadChar(' ')));
        assert_eq!(check_name("a\nb"), Err(NameError::BadChar('\n')));
        assert_eq!(check_name(&"x".repeat(129)), Err(NameError::TooLong(129)));
        assert_eq!("current".parse::<Version>(), Err(NameError::Reserved));
        assert!("current".parse::<RuntimeName>().is_ok());
    }
}
