//! Reading a bot's files within bounds: a file is at most
//! [`MAX_FLOW_FILE_BYTES`], and a file reached through a symbolic link must stay
//! inside its bot folder. A link to `/etc/passwd` or to another bot's folder
//! would otherwise be read, and its lines shown in diagnostics, `check` output
//! and the admin API. Links inside the folder (as a Kubernetes ConfigMap mount
//! makes them, `bot.yaml -> ..data/bot.yaml`) are fine.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::domain::Diagnostic;

/// The largest flow file (`bot.yaml`, node files, scripts, transcript tests)
/// read. The biggest real bot file is a few tens of KiB; a bot can spread its
/// nodes over any number of files.
pub const MAX_FLOW_FILE_BYTES: u64 = 1024 * 1024;

/// Whether a file or folder name is not the author's: hidden (`.name`, which
/// includes editors' `.name.swp` and `.#name` lock files) or a file an editor
/// writes beside the real one (swap, backup, autosave, write-test files). Such
/// files are never loaded, never tests, and never trigger a reload.
pub fn is_ignored(name: &str) -> bool {
    const SUFFIXES: [&str; 8] = [
        "~",
        ".swp",
        ".swo",
        ".swx",
        ".swpx",
        ".tmp",
        "___jb_tmp___",
        "___jb_old___",
    ];
    // vim probes a folder's writability with a file named 4913; emacs autosaves
    // to `#name#`.
    name.starts_with('.')
        || name.starts_with('#')
        || name == "4913"
        || SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// Reads `path`, a file of the bot folder `bot_dir`, as UTF-8 text; every
/// refusal is a whole-file error naming `path`.
pub(crate) fn read_bot_file(bot_dir: &Path, path: &Path) -> Result<String, Diagnostic> {
    let real = resolve_inside(bot_dir, path)?;
    read_text(path, &real)
}

/// Reads an author file that belongs to no bot folder (`chat --stubs`) within
/// the same size limit, as UTF-8 text.
pub(crate) fn read_author_file(path: &Path) -> Result<String, Diagnostic> {
    read_text(path, path)
}

/// Reads `real` (the file `path` names) within [`MAX_FLOW_FILE_BYTES`];
/// diagnostics name `path`.
fn read_text(path: &Path, real: &Path) -> Result<String, Diagnostic> {
    let cannot_read =
        |e: std::io::Error| Diagnostic::file_error(path, format!("cannot read this file: {e}"));
    let file = fs::File::open(real).map_err(cannot_read)?;
    let mut bytes = Vec::new();
    // One byte past the limit tells "too big" without reading a huge file.
    file.take(MAX_FLOW_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot_read)?;
    if bytes.len() as u64 > MAX_FLOW_FILE_BYTES {
        return Err(Diagnostic::file_error(
            path,
            format!(
                "this file is larger than {} MiB, the most a flow file may be",
                MAX_FLOW_FILE_BYTES / (1024 * 1024)
            ),
        )
        .with_hint("split it: nodes can be spread over any number of .yaml files, tests over several files in tests/"));
    }
    String::from_utf8(bytes).map_err(|_| {
        Diagnostic::file_error(path, "this file is not UTF-8 text")
            .with_hint("save it with the UTF-8 encoding")
    })
}

/// Where `path` really is, when that is inside `bot_dir` (both resolved, so a
/// bot folder under a linked flows folder is fine).
fn resolve_inside(bot_dir: &Path, path: &Path) -> Result<PathBuf, Diagnostic> {
    let cannot_read =
        |e: std::io::Error| Diagnostic::file_error(path, format!("cannot read this file: {e}"));
    let root = bot_dir.canonicalize().map_err(cannot_read)?;
    let is_link = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    let real = match path.canonicalize() {
        Ok(real) => real,
        Err(e) if is_link => {
            let target = fs::read_link(path).unwrap_or_default();
            return Err(Diagnostic::file_error(
                path,
                format!(
                    "this file is a symbolic link to {}, which cannot be read: {e}",
                    target.display()
                ),
            )
            .with_hint("copy the file into the bot folder instead of linking to it"));
        }
        Err(e) => return Err(cannot_read(e)),
    };
    if real.starts_with(&root) {
        return Ok(real);
    }
    let message = if is_link {
        format!(
            "this file is a symbolic link to {}, outside the bot folder {}",
            real.display(),
            bot_dir.display()
        )
    } else {
        format!(
            "this file is reached through a symbolic link: it is {}, outside the bot folder {}",
            real.display(),
            bot_dir.display()
        )
    };
    Err(Diagnostic::file_error(path, message).with_hint(
        "copy the file into the bot folder instead of linking to it: files outside a bot folder are never read",
    ))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn bot_folder() -> (tempfile::TempDir, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let bot = root.path().join("flows").join("shop");
        fs::create_dir_all(bot.join("tests")).unwrap();
        (root, bot)
    }

    #[test]
    fn a_link_leading_outside_the_bot_folder_is_refused() {
        let (root, bot) = bot_folder();
        let secret = root.path().join("passwd");
        fs::write(&secret, "root:x:0:0:root:/root:/bin/bash\n").unwrap();
        symlink(&secret, bot.join("menus.yaml")).unwrap();
        // Another bot's file is outside too.
        let other = root.path().join("flows").join("other");
        fs::create_dir_all(&other).unwrap();
        fs::write(other.join("bot.yaml"), "name: Other\n").unwrap();
        symlink(other.join("bot.yaml"), bot.join("bot.yaml")).unwrap();

        for name in ["menus.yaml", "bot.yaml"] {
            let err = read_bot_file(&bot, &bot.join(name)).unwrap_err();
            assert_eq!(err.file, bot.join(name));
            assert!(
                err.message.starts_with("this file is a symbolic link to ")
                    && err.message.contains("outside the bot folder"),
                "{err}"
            );
            assert!(!err.to_string().contains("root:x"), "{err}");
            assert!(err.hint.unwrap().contains("copy the file"));
        }
        let err = read_bot_file(&bot, &bot.join("menus.yaml")).unwrap_err();
        assert!(err.message.contains(&secret.display().to_string()), "{err}");
    }

    #[test]
    fn a_linked_tests_folder_outside_is_refused() {
        let (root, bot) = bot_folder();
        let elsewhere = root.path().join("elsewhere");
        fs::create_dir_all(&elsewhere).unwrap();
        fs::write(elsewhere.join("t.yaml"), "name: t\n").unwrap();
        fs::remove_dir(bot.join("tests")).unwrap();
        symlink(&elsewhere, bot.join("tests")).unwrap();
        let err = read_bot_file(&bot, &bot.join("tests/t.yaml")).unwrap_err();
        assert!(
            err.message
                .starts_with("this file is reached through a symbolic link"),
            "{err}"
        );
    }

    #[test]
    fn links_inside_the_bot_folder_and_a_linked_flows_folder_are_fine() {
        let (root, bot) = bot_folder();
        fs::create_dir_all(bot.join("..data")).unwrap();
        fs::write(bot.join("..data/menus.yaml"), "main:\n  say: hi\n").unwrap();
        symlink("..data/menus.yaml", bot.join("menus.yaml")).unwrap();
        assert_eq!(
            read_bot_file(&bot, &bot.join("menus.yaml")).unwrap(),
            "main:\n  say: hi\n"
        );
        let linked_flows = root.path().join("current");
        symlink(root.path().join("flows"), &linked_flows).unwrap();
        let via_link = linked_flows.join("shop");
        assert_eq!(
            read_bot_file(&via_link, &via_link.join("menus.yaml")).unwrap(),
            "main:\n  say: hi\n"
        );
    }

    #[test]
    fn a_dangling_link_says_where_it_points() {
        let (_root, bot) = bot_folder();
        symlink("/nonexistent/menus.yaml", bot.join("menus.yaml")).unwrap();
        let err = read_bot_file(&bot, &bot.join("menus.yaml")).unwrap_err();
        assert!(
            err.message.starts_with(
                "this file is a symbolic link to /nonexistent/menus.yaml, which cannot be read"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_file_over_one_mib_is_refused_and_one_at_the_limit_is_read() {
        let (_root, bot) = bot_folder();
        let at_limit = "#".repeat(MAX_FLOW_FILE_BYTES as usize);
        fs::write(bot.join("big.rhai"), &at_limit).unwrap();
        assert_eq!(
            read_bot_file(&bot, &bot.join("big.rhai")).unwrap().len(),
            at_limit.len()
        );
        fs::write(bot.join("big.rhai"), format!("{at_limit}#")).unwrap();
        let err = read_bot_file(&bot, &bot.join("big.rhai")).unwrap_err();
        assert_eq!(
            err.message,
            "this file is larger than 1 MiB, the most a flow file may be"
        );
        assert!(err.hint.unwrap().starts_with("split it"));
    }
}
