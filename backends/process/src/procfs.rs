//! Pid files and `/proc/<pid>/stat` on a host, read in one shell snippet and parsed here.
//!
//! The snippet prints one line per pid file (`file <i> absent` or `file <i> pid <content>`,
//! the content being its first 64 bytes without whitespace) and one line per live pid
//! (`proc <pid> <the stat line>`), for the pids the files name and the extra ones asked for.
//! Nothing a host answers makes the parser panic: it returns the reason instead.

use std::collections::BTreeMap;
use std::path::Path;

use crate::runner::shell_quote_path;

/// What a pid file holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PidFile {
    /// There is no such file.
    Absent,
    /// The file is empty (or holds only whitespace): being written, or truncated.
    Empty,
    /// A process id (2 or more).
    Pid(u32),
    /// Anything else, as read.
    Garbage(String),
}

/// A process as `/proc/<pid>/stat` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Proc {
    /// Field 3: `R`, `S`, `D`, `Z` (zombie), `X` (dead), ...
    pub(crate) state: char,
    /// Field 22: when the process started, in clock ticks since the host booted.
    pub(crate) start_ticks: u64,
}

impl Proc {
    /// Whether the process still runs (it is neither a zombie nor dead).
    pub(crate) fn alive(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// What one run of the snippet saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Probe {
    /// The pid files, in the order asked.
    pub(crate) files: Vec<PidFile>,
    /// Every pid asked about (named by a file, or extra) whose `/proc` entry exists.
    pub(crate) procs: BTreeMap<u32, Proc>,
}

impl Probe {
    /// `pid`'s process when it runs.
    pub(crate) fn alive(&self, pid: u32) -> Option<Proc> {
        self.procs.get(&pid).copied().filter(Proc::alive)
    }
}

/// The snippet: run it in the deploy dir. `@FILES@` and `@EXTRA@` are filled in.
const PROBE: &str = r#"set -f
pids=''
i=0
for f in @FILES@; do
  if [ -e "$f" ]; then
    c=$(head -c 64 -- "$f" 2>/dev/null | tr -d ' \t\r\n')
    printf 'file %s pid %s\n' "$i" "$c"
    pids="$pids $c"
  else
    printf 'file %s absent\n' "$i"
  fi
  i=$((i + 1))
done
for p in $pids @EXTRA@; do
  case $p in ''|*[!0-9]*) continue ;; esac
  if s=$(tr '\n' ' ' 2>/dev/null < "/proc/$p/stat"); then
    printf 'proc %s %s\n' "$p" "$s"
  fi
done
exit 0
"#;

/// The snippet that reads `files` (relative to the directory it runs in) and the processes
/// they name, plus `extra` pids.
pub(crate) fn script(files: &[&Path], extra: &[u32]) -> String {
    let files: Vec<String> = files.iter().copied().map(shell_quote_path).collect();
    let extra: Vec<String> = extra.iter().map(u32::to_string).collect();
    PROBE
        .replace("@FILES@", &files.join(" "))
        .replace("@EXTRA@", &extra.join(" "))
}

/// Parses the snippet's answer for `n_files` pid files.
///
/// # Errors
/// Why the answer is not the snippet's.
pub(crate) fn parse(text: &str, n_files: usize) -> Result<Probe, String> {
    let mut files = vec![None; n_files];
    let mut procs = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.splitn(3, ' ');
        match words.next() {
            Some("file") => {
                let i = words
                    .next()
                    .and_then(|w| w.parse::<usize>().ok())
                    .filter(|&i| i < n_files)
                    .ok_or_else(|| format!("unexpected line {line:?}"))?;
                let rest = words.next().unwrap_or("");
                files[i] = Some(if rest == "absent" {
                    PidFile::Absent
                } else if let Some(content) = rest.strip_prefix("pid") {
                    pid_file(content.trim())
                } else {
                    return Err(format!("unexpected line {line:?}"));
                });
            }
            Some("proc") => {
                let pid = words
                    .next()
                    .and_then(|w| w.parse::<u32>().ok())
                    .ok_or_else(|| format!("unexpected line {line:?}"))?;
                procs.insert(pid, stat(words.next().unwrap_or(""))?);
            }
            _ => return Err(format!("unexpected line {line:?}")),
        }
    }
    let files = files
        .into_iter()
        .enumerate()
        .map(|(i, f)| f.ok_or_else(|| format!("no line for pid file {i}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Probe { files, procs })
}

/// Reads a pid file's content (already without whitespace).
pub(crate) fn pid_file(content: &str) -> PidFile {
    if content.is_empty() {
        return PidFile::Empty;
    }
    if !content.bytes().all(|b| b.is_ascii_digit()) {
        return PidFile::Garbage(content.to_string());
    }
    // Never 0 or 1: `kill 0` signals the whole process group, and 1 is init.
    match content.parse::<u32>() {
        Ok(pid) if pid > 1 => PidFile::Pid(pid),
        _ => PidFile::Garbage(content.to_string()),
    }
}

/// Parses a `/proc/<pid>/stat` line: `pid (comm) state ppid ...`, where `comm` may hold
/// spaces and parentheses, so the fields start after the last `)`.
///
/// # Errors
/// Why the line is not a stat line.
pub(crate) fn stat(line: &str) -> Result<Proc, String> {
    let close = line
        .rfind(')')
        .ok_or_else(|| format!("no ')' in the /proc stat line {line:?}"))?;
    let fields: Vec<&str> = line[close + 1..].split_whitespace().collect();
    let state = fields
        .first()
        .and_then(|s| s.chars().next())
        .ok_or_else(|| format!("no state in the /proc stat line {line:?}"))?;
    // Field 22 of the line is the 20th after the command name (fields 1 and 2).
    let start_ticks = fields
        .get(19)
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| format!("no start time in the /proc stat line {line:?}"))?;
    Ok(Proc { state, start_ticks })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (rollout-test) se) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 \
                        3 0 987654 1000000 200 18446744073709551615";

    #[test]
    fn a_stat_line_with_parentheses_in_the_name_parses() {
        assert_eq!(
            stat(STAT),
            Ok(Proc {
                state: 'S',
                start_ticks: 987_654
            })
        );
        assert!(stat("garbage").is_err());
        assert!(stat("1 (x) S 1 2").is_err());
    }

    #[test]
    fn pid_files_are_pids_or_garbage() {
        assert_eq!(pid_file("123"), PidFile::Pid(123));
        assert_eq!(pid_file(""), PidFile::Empty);
        assert_eq!(pid_file("0"), PidFile::Garbage("0".into()));
        assert_eq!(pid_file("1"), PidFile::Garbage("1".into()));
        assert_eq!(pid_file("+5"), PidFile::Garbage("+5".into()));
        assert_eq!(
            pid_file("99999999999"),
            PidFile::Garbage("99999999999".into())
        );
        assert_eq!(pid_file("12a"), PidFile::Garbage("12a".into()));
    }

    #[test]
    fn an_answer_parses_and_garbage_is_an_error() {
        let text = format!("file 0 pid 4242\nfile 1 absent\nproc 4242 {STAT}\n");
        let probe = parse(&text, 2).unwrap();
        assert_eq!(probe.files, vec![PidFile::Pid(4242), PidFile::Absent]);
        assert_eq!(probe.alive(4242).map(|p| p.start_ticks), Some(987_654));
        assert_eq!(
            parse("file 0 pid \n", 1).unwrap().files,
            vec![PidFile::Empty]
        );
        assert!(parse("file 0 absent\n", 2).is_err());
        assert!(parse("file 5 absent\n", 1).is_err());
        assert!(parse("hello\n", 0).is_err());
        assert!(parse("proc x y\n", 0).is_err());
    }
}
