//! What [`CommandNode`] applies: config edits through [`crate::files`], and upgrades by
//! switching a `current` symlink; their revert, and whether the running process has them.
//!
//! The [`ApplyRecord`]'s backup map holds `file:<path relative to the deploy dir>` → the
//! backup's path for each edited file, and `link:<current_link>` → the link's previous target
//! for an upgrade (plus `version` → the version installed).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use rollout_core::{ApplyRecord, Change, ConfigEdit};

use crate::command::CommandNode;
use crate::config::inside;
use crate::error::ProcessError;
use crate::files;
use crate::runner::shell_quote_path;

/// Switches `@LINK@` to `@TARGET@` atomically (a new link under a temporary name, renamed
/// over the old one). The previous target is kept in `<link>.rollout-prev`, so that a second
/// run after a crash still reports the original target. Prints `old <target>`, or
/// `missing-version` / `not-a-link`.
const SWITCH: &str = r#"link=@LINK@
target=@TARGET@
prev="$link.rollout-prev"
tmp="$link.rollout-tmp"
[ -d "$target" ] || { echo missing-version; exit 0; }
[ -L "$link" ] || { echo not-a-link; exit 0; }
old=$(readlink "$link") || exit 1
if [ "$(readlink -f "$link")" = "$(readlink -f "$target")" ] && [ -f "$prev" ]; then
  old=$(cat -- "$prev") || exit 1
else
  printf '%s\n' "$old" > "$prev" || exit 1
fi
ln -sfn -- "$target" "$tmp" && mv -T -- "$tmp" "$link" || exit 1
printf 'old %s\n' "$old"
"#;

/// Switches `@LINK@` back to `@TARGET@` and forgets the kept previous target.
const SWITCH_BACK: &str = r#"link=@LINK@
target=@TARGET@
tmp="$link.rollout-tmp"
[ -L "$link" ] || { echo not-a-link; exit 0; }
ln -sfn -- "$target" "$tmp" && mv -T -- "$tmp" "$link" || exit 1
rm -f -- "$link.rollout-prev"
echo ok
"#;

impl CommandNode {
    /// [`Node::apply`](rollout_core::Node::apply).
    pub(crate) async fn apply_change(&self, change: &Change) -> Result<ApplyRecord, ProcessError> {
        match change {
            Change::Restart => Ok(ApplyRecord::new(self.c.id.clone(), BTreeMap::new())),
            Change::Config { edits } => self.apply_edits(edits).await,
            Change::Upgrade { version } => self.upgrade(version).await,
        }
    }

    /// Checks every edit before touching anything, then edits file by file; when one fails,
    /// the files already edited are restored.
    async fn apply_edits(&self, edits: &[ConfigEdit]) -> Result<ApplyRecord, ProcessError> {
        let mut planned: Vec<(PathBuf, &str, &str)> = Vec::new();
        for edit in edits {
            let (file, key, value) = match edit {
                ConfigEdit::Set { file, key, value } => (file, key, value),
                ConfigEdit::Unset { file, key } => {
                    return Err(self.refused(
                        format!("unsetting {key} in {file}"),
                        "this backend can only set values for now",
                    ));
                }
            };
            let rel = self.config_file(file)?;
            if key.trim().is_empty() || key.contains(['\n', '=']) || value.contains('\n') {
                return Err(self.refused(
                    format!("setting {key:?} in {file}"),
                    "a key must be non-empty without '=' or a newline, and a value a single line",
                ));
            }
            planned.push((rel, key.as_str(), value.as_str()));
        }
        self.refuse_if_running("editing config files").await?;
        let mut backup = BTreeMap::new();
        let mut done: Vec<PathBuf> = Vec::new();
        for (rel, key, value) in planned {
            let abs = self.c.deploy_dir.join(&rel);
            if let Err(source) = files::edit(&self.c.runner, &abs, key, value).await {
                for undo in done.iter().rev() {
                    if let Err(e) = files::revert(&self.c.runner, undo).await {
                        tracing::warn!(node = %self.c.id, file = %undo.display(), error = %e,
                            "could not restore a file after a failed edit");
                    }
                }
                return Err(ProcessError::Files {
                    node: self.c.id.clone(),
                    what: "editing",
                    file: abs.display().to_string(),
                    source: Box::new(source),
                });
            }
            if !done.contains(&abs) {
                done.push(abs.clone());
            }
            backup.insert(
                format!("file:{}", rel.display()),
                format!("{}.bak", abs.display()),
            );
        }
        Ok(ApplyRecord::new(self.c.id.clone(), backup))
    }

    /// `file` relative to the deploy dir, when it stays inside it and is a listed config file.
    fn config_file(&self, file: &str) -> Result<PathBuf, ProcessError> {
        let dir = &self.c.deploy_dir;
        let rel = inside(dir, Path::new(file)).ok_or_else(|| {
            self.refused(
                format!("an edit of {file}"),
                &format!("the path leaves the deploy dir {}", dir.display()),
            )
        })?;
        if !self.c.config_files.contains(&rel) {
            let listed: Vec<String> = self
                .c
                .config_files
                .iter()
                .map(|f| f.display().to_string())
                .collect();
            return Err(self.refused(
                format!("an edit of {file}"),
                &format!(
                    "it is not one of the node's config_files [{}]",
                    listed.join(", ")
                ),
            ));
        }
        Ok(rel)
    }

    /// Switches the `current` link to `<packages_dir>/<version>`.
    async fn upgrade(&self, version: &str) -> Result<ApplyRecord, ProcessError> {
        let what = format!("an upgrade to {version:?}");
        let (Some(packages), Some(link)) = (&self.c.packages_dir, &self.c.current_link) else {
            return Err(self.refused(what, "packages_dir and current_link are not configured"));
        };
        if version.is_empty()
            || version == "."
            || version == ".."
            || version.contains(['/', '\n', '\0'])
        {
            return Err(self.refused(what, "a version must be one directory name"));
        }
        self.refuse_if_running("an upgrade").await?;
        let target = packages.join(version);
        let script = SWITCH
            .replace("@LINK@", &shell_quote_path(link))
            .replace("@TARGET@", &shell_quote_path(&target));
        let doing = format!("switching {} to {}", link.display(), target.display());
        let out = self
            .c
            .runner
            .run(&doing, &script, self.c.command_timeout)
            .await?;
        self.check(&out, &doing)?;
        let answer = out.stdout.trim();
        if answer == "missing-version" {
            return Err(self.refused(
                what,
                &format!("{} is not a directory on the host", target.display()),
            ));
        }
        if answer == "not-a-link" {
            return Err(self.refused(what, &format!("{} is not a symbolic link", link.display())));
        }
        let Some(old) = answer.lines().last().and_then(|l| l.strip_prefix("old ")) else {
            return Err(ProcessError::BadOutput {
                host: self.host(),
                what: doing,
                reason: "no `old <target>` line; check the link by hand".to_string(),
                text: answer.chars().take(300).collect(),
            });
        };
        tracing::info!(node = %self.c.id, link = %link.display(), from = old, to = %target.display(),
            "switched the current link");
        let backup = BTreeMap::from([
            (format!("link:{}", link.display()), old.to_string()),
            ("version".to_string(), version.to_string()),
        ]);
        Ok(ApplyRecord::new(self.c.id.clone(), backup))
    }

    /// [`Node::revert`](rollout_core::Node::revert): restores each `file:` entry's backup
    /// and switches each `link:` entry back.
    pub(crate) async fn revert_record(&self, record: &ApplyRecord) -> Result<(), ProcessError> {
        if record.node != self.c.id {
            return Err(self.refused(
                "a revert".to_string(),
                &format!("the record is for node {}", record.node),
            ));
        }
        for (key, value) in &record.backup {
            if let Some(file) = key.strip_prefix("file:") {
                let rel = self.config_file(file)?;
                let abs = self.c.deploy_dir.join(rel);
                files::revert(&self.c.runner, &abs)
                    .await
                    .map_err(|source| ProcessError::Files {
                        node: self.c.id.clone(),
                        what: "restoring",
                        file: abs.display().to_string(),
                        source: Box::new(source),
                    })?;
            } else if let Some(link) = key.strip_prefix("link:") {
                self.switch_back(link, value).await?;
            }
        }
        Ok(())
    }

    async fn switch_back(&self, link: &str, old: &str) -> Result<(), ProcessError> {
        let what = format!("switching {link} back to {old}");
        if self.c.current_link.as_deref() != Some(Path::new(link)) || old.contains('\n') {
            return Err(self.refused(what, "the record names another link than current_link"));
        }
        let script = SWITCH_BACK
            .replace("@LINK@", &crate::runner::shell_quote(link))
            .replace("@TARGET@", &crate::runner::shell_quote(old));
        let out = self
            .c
            .runner
            .run(&what, &script, self.c.command_timeout)
            .await?;
        self.check(&out, &what)?;
        if out.stdout.trim() != "ok" {
            return Err(self.refused(what, &format!("{link} is not a symbolic link")));
        }
        Ok(())
    }

    /// [`Node::is_applied`](rollout_core::Node::is_applied).
    ///
    /// - A restart: `false` (the engine recognises a restart by the boot id).
    /// - An upgrade: the running process reports exactly `version`.
    /// - A config change: the process runs, every edited file holds the value set (or no
    ///   longer has the key unset), and the process started no earlier than each file's last
    ///   modification, to the second (the host's boot time plus the process's start ticks,
    ///   against `stat -c %Y`). A file edited in the same second as an earlier start reads as
    ///   applied.
    pub(crate) async fn change_applied(&self, change: &Change) -> Result<bool, ProcessError> {
        match change {
            Change::Restart => Ok(false),
            Change::Upgrade { version } => {
                let (seen, _) = self.read(&[]).await?;
                if seen.component().live.is_none() {
                    return Ok(false);
                }
                Ok(self.version().await.as_deref() == Some(version.as_str()))
            }
            Change::Config { edits } => self.edits_applied(edits).await,
        }
    }

    async fn edits_applied(&self, edits: &[ConfigEdit]) -> Result<bool, ProcessError> {
        // A file the component does not have is refused whether or not it runs.
        let mut wanted = Vec::new();
        for edit in edits {
            let (file, key, want) = match edit {
                ConfigEdit::Set { file, key, value } => (file, key, Some(value.as_str())),
                ConfigEdit::Unset { file, key } => (file, key, None),
            };
            wanted.push((self.config_file(file)?, key.as_str(), want));
        }
        let (seen, _) = self.read(&[]).await?;
        let Some(live) = seen.component().live else {
            return Ok(false);
        };
        let distinct: BTreeSet<&PathBuf> = wanted.iter().map(|(rel, _, _)| rel).collect();
        let mut texts: BTreeMap<&PathBuf, String> = BTreeMap::new();
        for rel in distinct {
            let what = format!("reading {}", rel.display());
            let script = format!("cat -- {}", shell_quote_path(rel));
            let out = self
                .c
                .runner
                .run_in(&self.c.deploy_dir, &what, &script, self.c.command_timeout)
                .await?;
            self.check(&out, &what)?;
            texts.insert(rel, out.stdout);
        }
        for (rel, key, want) in &wanted {
            let name = rel.display().to_string();
            let have = rollout_core::conf::get(&name, &texts[rel], key).map_err(|e| {
                ProcessError::Refused {
                    node: self.c.id.clone(),
                    what: format!("reading {key} in {name}"),
                    reason: e.to_string(),
                }
            })?;
            if have.as_deref() != *want {
                return Ok(false);
            }
        }
        let files: Vec<&PathBuf> = texts.keys().copied().collect();
        let (boot_secs, hz, mtimes) = self.times(&files).await?;
        // Whole seconds on both sides (the boot time and `stat %Y`), so a file written in the
        // second the process started counts as read by it.
        let started = boot_secs + live.start_ticks / hz;
        Ok(mtimes.iter().all(|&m| started + 1 >= m))
    }

    /// The host's boot time (seconds since the epoch), its clock ticks per second, and the
    /// modification time (seconds since the epoch) of each of `files`.
    async fn times(&self, files: &[&PathBuf]) -> Result<(u64, u64, Vec<u64>), ProcessError> {
        let mut script = String::from(
            "awk '$1 == \"btime\" { print \"btime\", $2 }' /proc/stat\n\
             printf 'hz %s\\n' \"$(getconf CLK_TCK)\"\n",
        );
        for f in files {
            script.push_str("printf 'mtime %s\\n' \"$(stat -c %Y -- ");
            script.push_str(&shell_quote_path(f));
            script.push_str(")\"\n");
        }
        let what = "reading the boot time and the config files' modification times";
        let out = self
            .c
            .runner
            .run_in(&self.c.deploy_dir, what, &script, self.c.command_timeout)
            .await?;
        self.check(&out, what)?;
        let bad = |reason: &str| ProcessError::BadOutput {
            host: self.host(),
            what: what.to_string(),
            reason: format!(
                "{reason}; check that the host has /proc/stat, getconf and GNU or BusyBox stat"
            ),
            text: out.stdout.chars().take(300).collect(),
        };
        let (mut boot, mut hz, mut mtimes) = (None, None, Vec::new());
        for line in out.stdout.lines() {
            let (name, value) = line
                .split_once(' ')
                .ok_or_else(|| bad("a line without a value"))?;
            let value: u64 = value.trim().parse().map_err(|_| bad("not a number"))?;
            match name {
                "btime" => boot = Some(value),
                "hz" => hz = Some(value),
                "mtime" => mtimes.push(value),
                _ => return Err(bad("an unexpected line")),
            }
        }
        match (boot, hz.filter(|&h| h > 0)) {
            (Some(boot), Some(hz)) if mtimes.len() == files.len() => Ok((boot, hz, mtimes)),
            _ => Err(bad("missing lines")),
        }
    }

    /// Fails with [`ProcessError::Refused`] when any process of the component runs.
    async fn refuse_if_running(&self, what: &str) -> Result<(), ProcessError> {
        let (seen, _) = self.read(&[]).await?;
        if let Some(t) = seen.live().first() {
            return Err(self.refused(
                what.to_string(),
                &format!("{} runs (pid {}); stop it first", self.component(), t.pid),
            ));
        }
        Ok(())
    }

    fn refused(&self, what: String, reason: &str) -> ProcessError {
        ProcessError::Refused {
            node: self.c.id.clone(),
            what,
            reason: reason.to_string(),
        }
    }
}
