//! Whether a function binary was built from the sources as they are now.
//!
//! The stack runs whatever binaries cargo built last; a change made to a function or a shared
//! crate since would go untested, silently. A binary is stale when one of its sources under
//! `functions/` or `shared/` (a `*.rs` file, or the `Cargo.toml` of a package it is built from)
//! was modified after it.
//!
//! Its sources are the files listed in the dep-info file cargo writes beside it
//! (`debug/stk-push.d`): the files rustc read to build it. Only those, because a change cargo
//! does not rebuild for (another function's code, a `#[cfg(test)]` module in its own file)
//! leaves the binary as it is, and the error would never clear. Without a dep-info file, or
//! with one that lists no file of this workspace (the binary was built from another checkout
//! sharing the target directory), every file of the function's own package and of `shared/`
//! counts.

use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The directories, under the workspace root, whose files a function binary is built from.
const SOURCE_DIRS: [&str; 2] = ["functions", "shared"];

/// A source modified after the binary `function` (a binary name, also its package's name) at
/// `binary`: the newest one, or `None` when the binary is up to date. `root` is the workspace
/// root, canonical.
pub(super) fn newer_source(
    binary: &Path,
    function: &str,
    root: &Path,
) -> io::Result<Option<PathBuf>> {
    let built = std::fs::metadata(binary)?.modified()?;
    let sources = match listed_sources(binary, root) {
        Some(listed) if !listed.is_empty() => listed,
        _ => scanned_sources(function, root),
    };
    let newest = sources
        .into_iter()
        .filter_map(|path| Some((modified(&path)?, path)))
        .filter(|(at, _)| *at > built)
        .max_by_key(|(at, _)| *at);
    Ok(newest.map(|(_, path)| path))
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The binary's sources under [`SOURCE_DIRS`] as its dep-info file lists them, and the
/// `Cargo.toml` of each package they belong to; `None` without a readable dep-info file.
fn listed_sources(binary: &Path, root: &Path) -> Option<Vec<PathBuf>> {
    let mut name = binary.file_name()?.to_os_string();
    name.push(".d");
    let text = std::fs::read_to_string(binary.with_file_name(name)).ok()?;
    let mut sources = Vec::new();
    for listed in dep_info_paths(&text) {
        // A listed file since removed: the file that declared it changed too.
        let Ok(path) = listed.canonicalize() else {
            continue;
        };
        let Ok(relative) = path.strip_prefix(root) else {
            continue;
        };
        let mut parts = relative.components();
        let (Some(dir), Some(package)) = (parts.next(), parts.next()) else {
            continue;
        };
        if !SOURCE_DIRS.iter().any(|d| dir.as_os_str() == *d) {
            continue;
        }
        let manifest = root.join(dir).join(package).join("Cargo.toml");
        if !sources.contains(&manifest) {
            sources.push(manifest);
        }
        sources.push(path);
    }
    Some(sources)
}

/// The dependencies of the first rule of a Makefile-style dep-info file
/// (`target: dep dep …`, a space inside a path written `\ `).
fn dep_info_paths(text: &str) -> Vec<PathBuf> {
    let joined = text.replace("\\\n", " ");
    let Some((_, deps)) = joined.lines().next().and_then(|rule| rule.split_once(": ")) else {
        return Vec::new();
    };
    let mut paths = Vec::new();
    let mut current = String::new();
    let mut chars = deps.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if matches!(chars.peek(), Some(' ' | '\\')) => {
                current.extend(chars.next());
            }
            ' ' | '\t' => {
                if !current.is_empty() {
                    paths.push(PathBuf::from(std::mem::take(&mut current)));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        paths.push(PathBuf::from(current));
    }
    paths
}

/// Every `*.rs` and `Cargo.toml` of the function's package and of `shared/`.
fn scanned_sources(function: &str, root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    collect(&root.join("functions").join(function), &mut found);
    collect(&root.join("shared"), &mut found);
    found
}

fn collect(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            // A build directory or a hidden one holds no sources.
            if name != "target" && !name.starts_with('.') {
                collect(&path, found);
            }
        } else if name == "Cargo.toml" || name.ends_with(".rs") {
            found.push(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A scratch workspace: `functions/stk-push`, `functions/reconcile`, `shared/app`, and a
    /// target directory, removed when dropped.
    struct Scratch {
        root: PathBuf,
        binary: PathBuf,
        /// When every file was written: two hours ago.
        base: SystemTime,
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            // Best effort: a leftover scratch directory only costs space.
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    impl Scratch {
        fn new() -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let root = std::env::temp_dir().join(format!(
                "local-stack-fresh-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            let _ = std::fs::remove_dir_all(&root);
            let root = {
                std::fs::create_dir_all(&root).unwrap();
                root.canonicalize().unwrap()
            };
            let scratch = Self {
                binary: root.join("target/debug/stk-push"),
                root,
                base: SystemTime::now() - 2 * HOUR,
            };
            for file in [
                "functions/stk-push/Cargo.toml",
                "functions/stk-push/src/main.rs",
                "functions/reconcile/Cargo.toml",
                "functions/reconcile/src/main.rs",
                "shared/app/Cargo.toml",
                "shared/app/src/lib.rs",
                "shared/app/src/tests.rs",
                "target/debug/stk-push",
            ] {
                scratch.write(file, scratch.base);
            }
            scratch
        }

        fn write(&self, file: &str, modified: SystemTime) {
            let path = self.root.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, "").unwrap();
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(modified)
                .unwrap();
        }

        /// Writes the binary's dep-info: built from its main.rs and shared/app's lib.rs.
        fn dep_info(&self) {
            let text = format!(
                "{}: {} {} /nonexistent/registry/src/dep.rs\n",
                self.binary.display(),
                self.root.join("functions/stk-push/src/main.rs").display(),
                self.root.join("shared/app/src/lib.rs").display(),
            );
            std::fs::write(self.root.join("target/debug/stk-push.d"), text).unwrap();
        }

        /// Modifies `file` an hour after everything was written.
        fn touch(&self, file: &str) {
            self.write(file, self.base + HOUR);
        }

        fn newer(&self) -> Option<PathBuf> {
            newer_source(&self.binary, "stk-push", &self.root).unwrap()
        }
    }

    #[test]
    fn a_binary_built_after_its_sources_is_fresh() {
        let scratch = Scratch::new();
        scratch.dep_info();
        scratch.touch("target/debug/stk-push");
        assert_eq!(scratch.newer(), None);
    }

    #[test]
    fn a_source_it_lists_modified_since_makes_it_stale() {
        let scratch = Scratch::new();
        scratch.dep_info();
        scratch.touch("shared/app/src/lib.rs");
        assert_eq!(
            scratch.newer(),
            Some(scratch.root.join("shared/app/src/lib.rs"))
        );
    }

    #[test]
    fn a_manifest_of_a_package_it_is_built_from_counts() {
        let scratch = Scratch::new();
        scratch.dep_info();
        scratch.touch("shared/app/Cargo.toml");
        assert_eq!(
            scratch.newer(),
            Some(scratch.root.join("shared/app/Cargo.toml"))
        );
    }

    #[test]
    fn files_cargo_would_not_rebuild_it_for_do_not_count() {
        let scratch = Scratch::new();
        scratch.dep_info();
        // Another function's code and its manifest, and a module only tests compile.
        scratch.touch("functions/reconcile/src/main.rs");
        scratch.touch("functions/reconcile/Cargo.toml");
        scratch.touch("shared/app/src/tests.rs");
        assert_eq!(scratch.newer(), None);
    }

    #[test]
    fn without_dep_info_every_file_of_its_package_and_of_shared_counts() {
        let scratch = Scratch::new();
        scratch.touch("functions/reconcile/src/main.rs");
        assert_eq!(scratch.newer(), None);
        scratch.touch("shared/app/src/tests.rs");
        assert_eq!(
            scratch.newer(),
            Some(scratch.root.join("shared/app/src/tests.rs"))
        );
    }

    #[test]
    fn dep_info_paths_keep_escaped_spaces_and_continued_lines() {
        let text = "/t/debug/x: /a/one.rs /a/with\\ space.rs \\\n /a/two.rs\n\n/a/one.rs:\n";
        assert_eq!(
            dep_info_paths(text),
            ["/a/one.rs", "/a/with space.rs", "/a/two.rs"].map(PathBuf::from)
        );
    }
}
