//! Owns `wasmgate new`: starting a plugin from its language's template (a folder copied under
//! `plugins/<language>/`), and for Rust adding the crate to `members` and to the lock file. Only
//! files under the plugins folder; must not build, load or run a plugin.
//!
//! The templates are whatever the plugins folder holds, so a template updated there is what the
//! next `new` copies: `plugins/<language>/template-<kind>/` when it exists; else for Rust the
//! first-party plugin of that kind (a crate with its tests), for the other languages
//! `plugins/<language>/template/` when its `WORLD` file names the kind.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A language `wasmgate new` can start a plugin in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    /// A crate in `plugins/rust/` using the guest SDK.
    Rust,
    /// componentize-py, in `plugins/python/`.
    Python,
    /// componentize-js or jco/QuickJS, in `plugins/javascript/`.
    Javascript,
    /// wit-bindgen C bindings and zig cc, in `plugins/c/`.
    C,
    /// wit-bindgen's Go generator, in `plugins/go/`.
    Go,
}

impl Language {
    /// The folder under the plugins folder.
    pub fn dir(self) -> &'static str {
        match self {
            Language::Rust => "rust",
            Language::Python => "python",
            Language::Javascript => "javascript",
            Language::C => "c",
            Language::Go => "go",
        }
    }
}

/// The WIT world a new plugin implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// `validate`: allow or deny (served on `/validate`).
    Validator,
    /// `initialize`: change the object (served on `/mutate`).
    Initializer,
    /// `deliver`: audit events to outputs.
    AuditSink,
}

impl Kind {
    /// The world's name, as in `WORLD` files and the SDK's features.
    pub fn world(self) -> &'static str {
        match self {
            Kind::Validator => "validator",
            Kind::Initializer => "initializer",
            Kind::AuditSink => "audit-sink",
        }
    }

    /// The first-party Rust plugin a new Rust plugin of this kind starts from.
    fn rust_example(self) -> &'static str {
        match self {
            Kind::Validator => "require-labels",
            Kind::Initializer => "always-pull-images",
            Kind::AuditSink => "exec-alert",
        }
    }
}

/// Why `wasmgate new` refused or failed. Nothing is left behind in either case.
#[derive(Debug, thiserror::Error)]
pub enum NewError {
    /// The name cannot be a plugin's.
    #[error("{0:?} is not a plugin name: {1}")]
    BadName(String, String),
    /// The plugin's folder or package exists.
    #[error("{0} already exists")]
    Exists(String),
    /// No template of that kind in that language.
    #[error("no {language} template for {} {kind}: {why}", article(kind))]
    NoTemplate {
        /// The language's folder name.
        language: &'static str,
        /// The world asked for.
        kind: &'static str,
        /// What was looked for and what there is.
        why: String,
    },
    /// A file could not be read or written.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// `cargo update` could not add the crate to the lock file.
    #[error("cannot add {name} to {lock}: {why}")]
    Lock {
        /// The new crate.
        name: String,
        /// The lock file.
        lock: String,
        /// cargo's message.
        why: String,
    },
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// What `new` made, and how to go on.
#[derive(Debug)]
pub struct Created {
    /// The new plugin's folder.
    pub dir: PathBuf,
    /// The template it was copied from.
    pub template: PathBuf,
    /// The workspace manifest it was added to (Rust).
    pub workspace: Option<PathBuf>,
    /// Where `build` writes the component.
    pub component: PathBuf,
    /// The commands to build and test it, `(what, command)`, for a shell in the repository.
    pub next: Vec<(&'static str, String)>,
}

impl fmt::Display for Created {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "created {} from {}",
            self.dir.display(),
            self.template.display()
        )?;
        if let Some(workspace) = &self.workspace {
            writeln!(
                f,
                "added to `members` in {} and to its Cargo.lock",
                workspace.display()
            )?;
        }
        for (what, command) in &self.next {
            writeln!(f, "  {what:<6} {command}")?;
        }
        Ok(())
    }
}

/// Creates plugin `name` of `kind` in `language` under `plugins` (the repository's `plugins/`).
pub fn create(
    plugins: &Path,
    language: Language,
    name: &str,
    kind: Kind,
) -> Result<Created, NewError> {
    crate::config::validate_name(name).map_err(|why| NewError::BadName(name.into(), why))?;
    let root = plugins.join(language.dir());
    let dir = root.join(name);
    if dir.exists() {
        return Err(NewError::Exists(dir.display().to_string()));
    }
    let template = template(&root, language, kind)?;
    let dist = plugins.join("dist");
    let component = if language == Language::Rust {
        dist.join(format!("{name}.wasm"))
    } else {
        dist.join(format!("{}-{name}.wasm", language.dir()))
    };
    let try_it = match kind {
        Kind::Validator => format!(
            "wasmgate check --config YOUR-POLICIES.yaml --request tests/fixtures/reviews/pod-create.json --explain   # a policy naming {}",
            component.display()
        ),
        Kind::Initializer => format!(
            "wasmgate check --mutate --config YOUR-POLICIES.yaml --request tests/fixtures/reviews/pod-create.json --explain   # a policy naming {}",
            component.display()
        ),
        Kind::AuditSink => format!(
            "wasmgate serve --config YOUR-POLICIES.yaml   # an auditSinks entry naming {} (README: Audit)",
            component.display()
        ),
    };
    if language == Language::Rust {
        let workspace = root.join("Cargo.toml");
        let from = template
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        rust(&root, &template, &from, &dir, name, kind)?;
        let mut next = vec![
            ("build", "scripts/build-plugins".to_owned()),
            (
                "test",
                format!(
                    "cargo test --manifest-path {} -p {name}",
                    workspace.display()
                ),
            ),
            ("try", try_it),
        ];
        // The template's test suite came along (audit sinks have none yet).
        let suite = dir.join("tests.yaml");
        if suite.is_file() {
            next.insert(1, ("suite", format!("wasmgate test {}", suite.display())));
        }
        return Ok(Created {
            next,
            component,
            workspace: Some(workspace),
            template,
            dir,
        });
    }
    let language = language.dir();
    let from = template
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    let suite = dir.join("tests.yaml");
    (|| {
        copy_dir(&template, &dir)?;
        // The template's test suite names its component (`<language>-template.wasm`) and its
        // own path: retargeted, it tests the new plugin.
        for file in [suite.clone(), dir.join("policy.yaml")] {
            if file.is_file() {
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| NewError::Io(file.display().to_string(), e))?
                    .replace(&format!("{language}-{from}"), &format!("{language}-{name}"))
                    .replace(
                        &format!("plugins/{language}/{from}/"),
                        &format!("plugins/{language}/{name}/"),
                    );
                std::fs::write(&file, text)
                    .map_err(|e| NewError::Io(file.display().to_string(), e))?;
            }
        }
        Ok(())
    })()
    .inspect_err(|_| {
        let _ = std::fs::remove_dir_all(&dir);
    })?;
    let mut next = vec![
        (
            "build",
            format!("scripts/build-polyglot-plugins --no-templates {language}"),
        ),
        (
            "test",
            format!("scripts/build-polyglot-plugins --no-templates --test {language}"),
        ),
        ("try", try_it),
    ];
    if suite.is_file() {
        next.insert(1, ("suite", format!("wasmgate test {}", suite.display())));
    }
    Ok(Created {
        next,
        component,
        workspace: None,
        template,
        dir,
    })
}

/// The folder a new plugin is copied from (see the module's doc).
fn template(root: &Path, language: Language, kind: Kind) -> Result<PathBuf, NewError> {
    let no = |why: String| NewError::NoTemplate {
        language: language.dir(),
        kind: kind.world(),
        why,
    };
    let per_kind = root.join(format!("template-{}", kind.world()));
    if per_kind.is_dir() {
        return Ok(per_kind);
    }
    if language == Language::Rust {
        let example = root.join(kind.rust_example());
        return if example.join("Cargo.toml").is_file() {
            Ok(example)
        } else {
            Err(no(format!(
                "neither {} nor {} is there",
                per_kind.display(),
                example.display()
            )))
        };
    }
    let template = root.join("template");
    let world_file = template.join("WORLD");
    let world = std::fs::read_to_string(&world_file)
        .map_err(|e| no(format!("{}: {e}", world_file.display())))?;
    let world = world.trim();
    if world != kind.world() {
        return Err(no(format!(
            "{} is {} {world}, and there is no {}",
            template.display(),
            article(world),
            per_kind.display(),
        )));
    }
    Ok(template)
}

/// Copies the crate, renames its package, adds it to `members` and to the lock file; undoes it
/// all when a step fails.
fn rust(
    root: &Path,
    template: &Path,
    from: &str,
    dir: &Path,
    name: &str,
    kind: Kind,
) -> Result<(), NewError> {
    let workspace = root.join("Cargo.toml");
    let lock = root.join("Cargo.lock");
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|e| NewError::Io(path.display().to_string(), e))
    };
    let manifest = read(&workspace)?;
    let old_lock = read(&lock).ok();
    if let Some(lock_text) = &old_lock
        && lock_text.lines().any(|l| l == format!("name = \"{name}\""))
    {
        return Err(NewError::Exists(format!(
            "a package named {name} (in {})",
            lock.display()
        )));
    }
    let members = add_member(&manifest, name).ok_or_else(|| NewError::NoTemplate {
        language: "rust",
        kind: kind.world(),
        why: format!("{} has no `members = [` list", workspace.display()),
    })?;
    let crate_manifest = read(&template.join("Cargo.toml"))?;
    let renamed = rename_package(&crate_manifest, name).ok_or_else(|| NewError::NoTemplate {
        language: "rust",
        kind: kind.world(),
        why: format!(
            "{} has no `name = \"...\"` line",
            template.join("Cargo.toml").display()
        ),
    })?;
    let undo = || {
        let _ = std::fs::remove_dir_all(dir);
        let _ = std::fs::write(&workspace, &manifest);
        if let Some(old) = &old_lock {
            let _ = std::fs::write(&lock, old);
        }
    };
    let result = (|| {
        copy_dir(template, dir)?;
        let write = |path: PathBuf, text: &str| {
            std::fs::write(&path, text).map_err(|e| NewError::Io(path.display().to_string(), e))
        };
        write(dir.join("Cargo.toml"), &renamed)?;
        write(
            dir.join("README.md"),
            &format!(
                "# {name} ({world})\n\nStarted by `wasmgate new rust {name} --kind {world}` from \
                 `{from}`: change `src/lib.rs` (what it decides) and `src/tests.rs` (its native \
                 tests), then say here what it allows, denies or changes, its settings, and its \
                 failures.\n",
                world = kind.world()
            ),
        )?;
        // The template's test suite names its policy and module (`../../dist/<from>.wasm`), and
        // its expected messages the policy: retargeted, it tests the new plugin.
        for file in ["tests.yaml", "policy.yaml"] {
            let path = dir.join(file);
            if path.is_file() {
                write(path.clone(), &read(&path)?.replace(from, name))?;
            }
        }
        write(workspace.clone(), &members)?;
        let out = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args([
                "update",
                "--quiet",
                "--workspace",
                "--offline",
                "--manifest-path",
            ])
            .arg(&workspace)
            .output()
            .map_err(|e| NewError::Io("cargo".into(), e))?;
        if !out.status.success() {
            return Err(NewError::Lock {
                name: name.into(),
                lock: lock.display().to_string(),
                why: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(())
    })();
    result.inspect_err(|_| undo())
}

/// The workspace manifest with `"name",` added as the last entry of its `members = [` list, one
/// entry a line as the list is written. `None` when there is no such list.
fn add_member(manifest: &str, name: &str) -> Option<String> {
    let start = manifest.find("\nmembers = [")? + 1;
    let close = start + manifest[start..].find(']')?;
    let list = &manifest[start..close];
    let indent = list
        .lines()
        .nth(1)
        .map(|l| &l[..l.len() - l.trim_start().len()])
        .filter(|i| !i.is_empty())
        .unwrap_or("    ");
    let (head, tail) = manifest.split_at(close);
    let head = head.trim_end();
    let comma = if head.ends_with(['[', ',']) { "" } else { "," };
    Some(format!("{head}{comma}\n{indent}\"{name}\",\n{tail}"))
}

/// The crate manifest with its package's `name = "..."` (the first one) set to `name`.
fn rename_package(manifest: &str, name: &str) -> Option<String> {
    let mut done = false;
    let lines: Vec<String> = manifest
        .lines()
        .map(|line| {
            if !done && line.starts_with("name = \"") {
                done = true;
                format!("name = \"{name}\"")
            } else {
                line.to_owned()
            }
        })
        .collect();
    done.then(|| lines.join("\n") + "\n")
}

/// Copies a folder (files and folders, no symbolic links followed out of it).
fn copy_dir(from: &Path, to: &Path) -> Result<(), NewError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |e| NewError::Io(path, e)
    };
    std::fs::create_dir_all(to).map_err(io(to))?;
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().map_err(io(&source))?;
        if kind.is_dir() {
            copy_dir(&source, &target)?;
        } else if kind.is_file() {
            std::fs::copy(&source, &target).map_err(io(&source))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_a_member_at_the_end_of_the_list() {
        let manifest = "[workspace]\nmembers = [\n    \"sdk\",\n    \"a\",\n]\n\n[x]\ny = [1]\n";
        assert_eq!(
            add_member(manifest, "b").unwrap(),
            "[workspace]\nmembers = [\n    \"sdk\",\n    \"a\",\n    \"b\",\n]\n\n[x]\ny = [1]\n"
        );
        let manifest = "[workspace]\nmembers = [\n  \"sdk\"\n]\n";
        assert_eq!(
            add_member(manifest, "b").unwrap(),
            "[workspace]\nmembers = [\n  \"sdk\",\n  \"b\",\n]\n"
        );
        assert_eq!(add_member("[workspace]\n", "b"), None);
    }

    #[test]
    fn renames_only_the_package() {
        let manifest = "[package]\nname = \"require-labels\"\nversion.workspace = true\n\n[lib]\n";
        assert_eq!(
            rename_package(manifest, "my-check").unwrap(),
            "[package]\nname = \"my-check\"\nversion.workspace = true\n\n[lib]\n"
        );
        assert_eq!(rename_package("[package]\n", "x"), None);
    }
}
