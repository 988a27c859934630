//! The files of a Bazel package on disk, and the ones a `srcs`-like attribute names:
//! its string entries and Bazel's `glob` over the package.

use std::path::Path;

use regex::Regex;

use crate::{Error, Value};

/// The files a `srcs`-like attribute names in `package` (a folder): its string
/// entries and its `glob` calls, as paths relative to the package.
pub fn files_of(value: &Value, package: &Path) -> Result<Vec<String>, Error> {
    let mut files: Vec<String> = value
        .strings()
        .into_iter()
        .filter(|entry| !entry.starts_with(':') && !entry.contains("//"))
        .map(str::to_owned)
        .collect();
    for call in value
        .calls()
        .into_iter()
        .filter(|call| call.function == "glob")
    {
        let patterns = |value: Option<&Value>| -> Vec<String> {
            value
                .map(|v| v.strings().into_iter().map(str::to_owned).collect())
                .unwrap_or_default()
        };
        let include = patterns(call.positional.first().or(call.get("include")));
        let exclude = patterns(call.get("exclude"));
        files.extend(glob(package, &include, &exclude)?);
    }
    Ok(files)
}

/// Bazel's `glob`: the files under `package` matching an `include` pattern and no
/// `exclude` one (`*` within a path segment, `**` across segments), not descending into
/// sub-packages (folders with a `BUILD.bazel`) or `target/`.
pub fn glob(package: &Path, include: &[String], exclude: &[String]) -> Result<Vec<String>, Error> {
    let compile = |patterns: &[String]| -> Vec<Regex> {
        patterns
            .iter()
            .map(|pattern| {
                let mut regex = String::from("^");
                let mut rest = pattern.as_str();
                while !rest.is_empty() {
                    if let Some(after) = rest.strip_prefix("**/") {
                        regex.push_str("(?:.*/)?");
                        rest = after;
                    } else if let Some(after) = rest.strip_prefix("**") {
                        regex.push_str(".*");
                        rest = after;
                    } else if let Some(after) = rest.strip_prefix('*') {
                        regex.push_str("[^/]*");
                        rest = after;
                    } else {
                        let next = rest.chars().next().unwrap_or_default();
                        regex.push_str(&regex::escape(&next.to_string()));
                        rest = &rest[next.len_utf8()..];
                    }
                }
                regex.push('$');
                Regex::new(&regex).expect("a glob pattern gives a valid regex")
            })
            .collect()
    };
    let (include, exclude) = (compile(include), compile(exclude));
    Ok(package_files(package)?
        .into_iter()
        .filter(|file| include.iter().any(|re| re.is_match(file)))
        .filter(|file| !exclude.iter().any(|re| re.is_match(file)))
        .collect())
}

/// Every file of the package in `dir` (relative paths, sorted): not in sub-packages,
/// `target/` or hidden folders.
pub fn package_files(dir: &Path) -> Result<Vec<String>, Error> {
    fn walk(root: &Path, dir: &Path, files: &mut Vec<String>) -> Result<(), Error> {
        let read_error = |source| Error::Read {
            path: dir.to_path_buf(),
            source,
        };
        for entry in std::fs::read_dir(dir).map_err(read_error)? {
            let path = entry.map_err(read_error)?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if path.is_dir() {
                if name != "target" && !name.starts_with('.') && !path.join("BUILD.bazel").exists()
                {
                    walk(root, &path, files)?;
                }
            } else if let Ok(relative) = path.strip_prefix(root) {
                files.push(relative.to_string_lossy().into_owned());
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, dir, &mut files)?;
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_bazel() {
        let dir = std::env::temp_dir().join(format!("bazelcheck-glob-{}", std::process::id()));
        for file in [
            "src/lib.rs",
            "src/a/b.rs",
            "src/bin/x.rs",
            "tests/t.rs",
            "sub/BUILD.bazel",
            "sub/s.rs",
        ] {
            let path = dir.join(file);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, "").expect("write");
        }
        let found = glob(&dir, &["**/*.rs".into()], &["src/bin/**".into()]);
        std::fs::remove_dir_all(&dir).expect("cleanup");
        assert_eq!(
            found.expect("glob"),
            ["src/a/b.rs", "src/lib.rs", "tests/t.rs"]
        );
    }
}
