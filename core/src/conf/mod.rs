//! Configuration files as the servers read them, edited as text: pure functions from the
//! file's text to the edited text, with no IO, so that a backend, a node agent or an ssh
//! session can each read and write the file its own way and edit it the same way.
//!
//! - [`ConfFile`]: gflags flag files (OpenMLDB's `conf/*.flags`) and Java properties files
//!   (OpenMLDB's `conf/taskmanager.properties`);
//! - [`ini`]: Pegasus's `config.ini` (`[section]`, `key = value`);
//! - [`edit`]: one edit by the file's name, whichever the format.
//!
//! Every editor keeps every byte it does not change (comments, order, blank lines), and
//! refuses a key the file does not have (set or commented out), naming the file, since a
//! key the server does not read is a silent no-op.
//!
//! ```
//! use rollout_core::conf;
//!
//! let (text, before) = conf::edit("config.ini", "[replication]\nlb_interval_ms = 10000\n",
//!     "replication.lb_interval_ms", "5000").unwrap();
//! assert_eq!(text, "[replication]\nlb_interval_ms = 5000\n");
//! assert_eq!(before.as_deref(), Some("10000"));
//! assert!(conf::edit("tablet.flags", "--endpoint=a:1\n", "endpont", "b:2").is_err());
//! ```

mod file;
pub mod ini;

pub use file::{ConfFile, FlagsError, Format};
pub use ini::IniError;

/// Why an edit is refused; each names the file (or, for `config.ini`, the section).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfError {
    /// A flags or properties file that does not parse or refuses the edit.
    #[error(transparent)]
    Flags(#[from] FlagsError),
    /// A `config.ini` that refuses the edit.
    #[error("{file}: {source}")]
    Ini {
        /// The file.
        file: String,
        /// Why.
        #[source]
        source: IniError,
    },
}

/// The value `key` has in `text`, the file `name` (its format by its name, as [`edit`]
/// reads it): `None` when the file does not set it.
///
/// # Errors
/// [`ConfError`] when the text does not parse, or (ini) the key is not `SECTION.KEY`.
pub fn get(name: &str, text: &str, key: &str) -> Result<Option<String>, ConfError> {
    if name.ends_with(".ini") {
        let (section, k) = ini::split_key(key).map_err(|source| ConfError::Ini {
            file: name.to_string(),
            source,
        })?;
        return Ok(ini::get(text, section, k).map(str::to_owned));
    }
    let f = ConfFile::parse(name, Format::of(std::path::Path::new(name)), text)?;
    Ok(f.get(key).map(str::to_owned))
}

/// Sets `key` to `value` in `text`, the file `name`, in the format its name says: a name
/// ending in `.ini` is an ini file whose keys are `SECTION.KEY`; `.properties` is Java
/// properties; anything else is a gflags flag file. Returns the edited text and the value
/// the key had.
///
/// # Errors
/// [`ConfError`] when the text does not parse, has no such key (or section), or the value
/// holds a line break; nothing is returned to write then.
pub fn edit(
    name: &str,
    text: &str,
    key: &str,
    value: &str,
) -> Result<(String, Option<String>), ConfError> {
    if name.ends_with(".ini") {
        let ini_err = |source| ConfError::Ini {
            file: name.to_string(),
            source,
        };
        let (section, k) = ini::split_key(key).map_err(ini_err)?;
        let before = ini::get(text, section, k).map(str::to_owned);
        let edited = ini::set(text, section, k, value).map_err(ini_err)?;
        return Ok((edited, before));
    }
    let mut f = ConfFile::parse(name, Format::of(std::path::Path::new(name)), text)?;
    let before = f.get(key).map(str::to_owned);
    f.set(key, value)?;
    Ok((f.render(), before))
}
