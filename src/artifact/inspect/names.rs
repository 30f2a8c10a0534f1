//! Entry names and symlink targets: components, depth, control characters, and how a name is
//! shown in a refusal.

use super::*;

/// Splits an entry name into its normal components (dropping `.` and empty ones), refusing
/// empty, absolute and `..` names, control characters, and more than [`COMPONENT_LIMIT`]
/// components.
pub(super) fn components(name: &[u8]) -> Result<Vec<&[u8]>, TarProblem> {
    if name.is_empty() {
        return Err(TarProblem::EmptyName);
    }
    if has_control(name) {
        return Err(TarProblem::ControlCharacter);
    }
    if name.starts_with(b"/") {
        return Err(TarProblem::Absolute);
    }
    let mut parts = Vec::new();
    for part in name.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err(TarProblem::ParentDir),
            _ if parts.len() == COMPONENT_LIMIT => {
                return Err(TarProblem::TooManyComponents {
                    limit: COMPONENT_LIMIT,
                });
            }
            _ => parts.push(part),
        }
    }
    Ok(parts)
}

/// Checks a symlink's target, given the depth of the directory the symlink is in (0 for the
/// version directory itself).
///
/// Resolved lexically, the target must stay inside the version directory. That alone is not
/// enough when other symlinks are on the way (`a -> .` then `b -> a/../x` looks inside but is
/// not), so `..` is only accepted at the start of a target: leading `..`s climb through real
/// directories (nothing is unpacked beneath a symlink), and from there only names follow, each
/// a real directory or a symlink that by the same rule stays inside.
pub(super) fn check_symlink(depth: usize, target: &[u8]) -> Result<(), TarProblem> {
    let shown = || show(target);
    if target.is_empty() {
        return Err(TarProblem::EmptyLinkTarget);
    }
    if has_control(target) {
        return Err(TarProblem::ControlCharacter);
    }
    if target.starts_with(b"/") {
        return Err(TarProblem::SymlinkAbsolute { target: shown() });
    }
    let mut ups = 0usize;
    let mut named = false;
    for part in target.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." if named => return Err(TarProblem::SymlinkClimbsAfterName { target: shown() }),
            b".." => ups += 1,
            _ => named = true,
        }
    }
    if ups > depth {
        return Err(TarProblem::SymlinkEscapes { target: shown() });
    }
    Ok(())
}

/// C0 controls and DEL as bytes, and C1 controls in UTF-8 names.
pub(super) fn has_control(name: &[u8]) -> bool {
    name.iter().any(|&b| b < 0x20 || b == 0x7f) || String::from_utf8_lossy(name).chars().any(char::is_control)
}

/// A name for messages: lossy UTF-8 with control characters escaped, so a hostile name cannot
/// rewrite the terminal it is shown on. Long names are cut.
pub(super) fn show(name: &[u8]) -> String {
    let text = String::from_utf8_lossy(name);
    let cut: String = text.chars().take(200).collect();
    let mut out = crate::text::escape_controls(&cut);
    if text.chars().nth(200).is_some() {
        out.push('…');
    }
    out
}
