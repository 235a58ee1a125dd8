//! The AWS shared config files (`~/.aws/credentials` and `~/.aws/config`):
//! the settings of one profile, as the AWS CLI and SDKs read them, for an
//! `s3://` cache (docs/remote-cache.md, "Credentials").
//!
//! object_store reads only the environment, so cairn reads the files
//! itself. Their format is the AWS CLI's own INI dialect: `[name]`
//! sections (`[profile name]` in the config file, except `[default]`),
//! `key = value` lines, `#` and `;` comments, and indented lines that
//! belong to the property above (`s3 =` followed by `  addressing_style =
//! path`), which no INI crate reads as AWS does; so the few lines here
//! parse it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::OpenError;

/// The profile's settings that cairn uses, and the environment variable
/// each one stands for (the environment wins over the files).
const SETTINGS: [(&str, &str); 5] = [
    ("aws_access_key_id", "AWS_ACCESS_KEY_ID"),
    ("aws_secret_access_key", "AWS_SECRET_ACCESS_KEY"),
    ("aws_session_token", "AWS_SESSION_TOKEN"),
    ("region", "AWS_REGION"),
    ("endpoint_url", "AWS_ENDPOINT_URL"),
];

/// Ways a profile can get credentials that cairn does not implement.
const UNSUPPORTED: [&str; 6] = [
    "credential_process",
    "sso_session",
    "sso_start_url",
    "role_arn",
    "web_identity_token_file",
    "credential_source",
];

/// One setting as found: its value and where.
struct Found {
    value: String,
    file: PathBuf,
    line: usize,
}

/// The settings of the profile `AWS_PROFILE` names (else `default`) as
/// environment variables (`AWS_ACCESS_KEY_ID`, `AWS_REGION`, …), from the
/// files `AWS_SHARED_CREDENTIALS_FILE` and `AWS_CONFIG_FILE` name (else
/// `~/.aws/credentials` and `~/.aws/config`). The credentials file wins over
/// the config file. Missing files are no profile; a profile that
/// `AWS_PROFILE` names and neither file has is an error, and so is a
/// profile whose credentials cairn cannot use (a key without its secret,
/// `credential_process`, SSO, an assumed role), naming the file and line.
///
/// With credentials in the environment (`AWS_ACCESS_KEY_ID`), the
/// profile's credentials are neither checked nor returned, as the AWS CLI
/// takes the environment's whole; its region and endpoint still are.
pub fn settings(
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<BTreeMap<&'static str, String>, OpenError> {
    let credentials_from_env = var("AWS_ACCESS_KEY_ID").is_some();
    let named = var("AWS_PROFILE").filter(|name| !name.is_empty());
    let profile = named.clone().unwrap_or_else(|| "default".to_owned());
    let home = var("HOME").map(PathBuf::from);
    let path = |variable: &str, default: &str| {
        var(variable)
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|home| home.join(".aws").join(default)))
    };
    let config = path("AWS_CONFIG_FILE", "config");
    let credentials = path("AWS_SHARED_CREDENTIALS_FILE", "credentials");
    let mut found: BTreeMap<String, Found> = BTreeMap::new();
    let mut present = false;
    // The config file first: the credentials file overrides it.
    for (file, section) in [
        (&config, config_section(&profile)),
        (&credentials, profile.clone()),
    ] {
        let Some(file) = file else { continue };
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => {
                return Err(OpenError::Credentials {
                    path: file.clone(),
                    message: format!("cannot read the AWS profile file: {error}"),
                });
            }
        };
        if let Some(values) = section_of(&text, file, &section)? {
            present = true;
            for (key, (value, line)) in values {
                found.insert(
                    key,
                    Found {
                        value,
                        file: file.clone(),
                        line,
                    },
                );
            }
        }
    }
    if !present {
        return match named {
            Some(name) => Err(OpenError::Credentials {
                path: credentials.unwrap_or_else(|| PathBuf::from("~/.aws/credentials")),
                message: format!(
                    "AWS_PROFILE={name}: no such profile here ([{name}]) nor in {} ([profile {name}])",
                    config.map_or_else(
                        || "~/.aws/config".to_owned(),
                        |path| path.display().to_string()
                    )
                ),
            }),
            None => Ok(BTreeMap::new()),
        };
    }
    if credentials_from_env {
        for (setting, _) in &SETTINGS[..3] {
            found.remove(*setting);
        }
    } else {
        let key = found.get("aws_access_key_id");
        let secret = found.get("aws_secret_access_key");
        match (key, secret) {
            (Some(one), None) | (None, Some(one)) => {
                return Err(at(
                    one,
                    format!(
                        "profile {profile}: aws_access_key_id and aws_secret_access_key go together; only one is set"
                    ),
                ));
            }
            (None, None) => {
                if let Some((name, setting)) = UNSUPPORTED
                    .iter()
                    .find_map(|name| found.get(*name).map(|setting| (name, setting)))
                {
                    return Err(at(
                        setting,
                        format!(
                            "profile {profile}: cairn cannot get credentials through {name}; export them \
                         instead (`aws configure export-credentials --profile {profile} --format env`)"
                        ),
                    ));
                }
            }
            (Some(_), Some(_)) => {}
        }
    }
    Ok(SETTINGS
        .iter()
        .filter_map(|(setting, variable)| {
            found
                .get(*setting)
                .map(|found| (*variable, found.value.clone()))
        })
        .collect())
}

/// An error at `found`'s file and line.
fn at(found: &Found, message: String) -> OpenError {
    OpenError::Credentials {
        path: PathBuf::from(format!("{}:{}", found.file.display(), found.line)),
        message,
    }
}

/// The config file's name of a profile's section.
fn config_section(profile: &str) -> String {
    if profile == "default" {
        "default".to_owned()
    } else {
        format!("profile {profile}")
    }
}

/// The `key = value` lines of section `[name]` of `text` (keys lowercased,
/// with their line numbers), if it has that section. Sections of the same
/// name add up, later lines winning. A line that is not a section, a
/// setting, a comment or an indented sub-property is an error naming its
/// line.
#[allow(clippy::type_complexity, reason = "a map local to this module")]
fn section_of(
    text: &str,
    file: &Path,
    name: &str,
) -> Result<Option<BTreeMap<String, (String, usize)>>, OpenError> {
    let mut current: Option<String> = None;
    let mut values: Option<BTreeMap<String, (String, usize)>> = None;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[') {
            let Some(section) = section.strip_suffix(']') else {
                return Err(OpenError::Credentials {
                    path: PathBuf::from(format!("{}:{}", file.display(), index + 1)),
                    message: format!("a section header must end with `]`: {line:?}"),
                });
            };
            // `[profile  name]` and `[ name ]` are the same section.
            let section = section.split_whitespace().collect::<Vec<_>>().join(" ");
            if section == name {
                values.get_or_insert_with(BTreeMap::new);
            }
            current = Some(section);
            continue;
        }
        if raw.starts_with([' ', '\t']) {
            // A sub-property of the setting above (`s3 =` …): not used.
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(OpenError::Credentials {
                path: PathBuf::from(format!("{}:{}", file.display(), index + 1)),
                message: "expected `key = value`, a `[section]` or a comment".to_owned(),
            });
        };
        if current.as_deref() == Some(name)
            && let Some(values) = values.as_mut()
        {
            values.insert(
                key.trim().to_ascii_lowercase(),
                (value.trim().to_owned(), index + 1),
            );
        }
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home_with(credentials: &str, config: &str) -> tempfile::TempDir {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join(".aws")).unwrap();
        std::fs::write(home.path().join(".aws/credentials"), credentials).unwrap();
        std::fs::write(home.path().join(".aws/config"), config).unwrap();
        home
    }

    fn read(home: &Path, extra: &[(&str, &str)]) -> Result<BTreeMap<&'static str, String>, String> {
        let mut env: BTreeMap<String, String> = extra
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        env.insert("HOME".to_owned(), home.display().to_string());
        settings(&|name| env.get(name).cloned()).map_err(|error| error.to_string())
    }

    const CREDENTIALS: &str = "\
# keys
[default]
aws_access_key_id = AKIDDEFAULT
aws_secret_access_key = secret-default

[ci]
AWS_ACCESS_KEY_ID=AKIDCI
aws_secret_access_key = secret-ci
aws_session_token = token-ci
";

    const CONFIG: &str = "\
[default]
region = eu-west-1
s3 =
  addressing_style = path
  max_concurrent_requests = 4

[profile ci]
region = us-east-2
endpoint_url = http://127.0.0.1:8333
aws_access_key_id = AKIDIGNORED

[profile sso]
sso_session = corp
";

    #[test]
    fn the_default_profile_and_its_region() {
        let home = home_with(CREDENTIALS, CONFIG);
        let settings = read(home.path(), &[]).unwrap();
        assert_eq!(settings["AWS_ACCESS_KEY_ID"], "AKIDDEFAULT");
        assert_eq!(settings["AWS_SECRET_ACCESS_KEY"], "secret-default");
        assert_eq!(settings["AWS_REGION"], "eu-west-1");
        assert!(!settings.contains_key("AWS_SESSION_TOKEN"));
    }

    #[test]
    fn aws_profile_picks_a_profile_and_credentials_win_over_config() {
        let home = home_with(CREDENTIALS, CONFIG);
        let settings = read(home.path(), &[("AWS_PROFILE", "ci")]).unwrap();
        assert_eq!(settings["AWS_ACCESS_KEY_ID"], "AKIDCI");
        assert_eq!(settings["AWS_SESSION_TOKEN"], "token-ci");
        assert_eq!(settings["AWS_REGION"], "us-east-2");
        assert_eq!(settings["AWS_ENDPOINT_URL"], "http://127.0.0.1:8333");
    }

    #[test]
    fn other_files_by_their_variables() {
        let home = home_with("", "");
        let elsewhere = tempfile::tempdir().unwrap();
        let credentials = elsewhere.path().join("creds");
        std::fs::write(&credentials, CREDENTIALS).unwrap();
        let settings = read(
            home.path(),
            &[
                ("AWS_SHARED_CREDENTIALS_FILE", credentials.to_str().unwrap()),
                ("AWS_PROFILE", "ci"),
            ],
        )
        .unwrap();
        assert_eq!(settings["AWS_ACCESS_KEY_ID"], "AKIDCI");
        assert!(!settings.contains_key("AWS_REGION"));
    }

    #[test]
    fn credentials_in_the_environment_replace_the_profiles() {
        let home = home_with(CREDENTIALS, CONFIG);
        let settings = read(
            home.path(),
            &[("AWS_PROFILE", "sso"), ("AWS_ACCESS_KEY_ID", "AKIDENV")],
        )
        .unwrap();
        assert!(settings.is_empty(), "{settings:?}");
        let settings = read(
            home.path(),
            &[("AWS_PROFILE", "ci"), ("AWS_ACCESS_KEY_ID", "AKIDENV")],
        )
        .unwrap();
        assert!(!settings.contains_key("AWS_ACCESS_KEY_ID"));
        assert!(!settings.contains_key("AWS_SESSION_TOKEN"));
        assert_eq!(settings["AWS_REGION"], "us-east-2");
    }

    #[test]
    fn no_files_no_profile() {
        let home = tempfile::tempdir().unwrap();
        assert!(read(home.path(), &[]).unwrap().is_empty());
    }

    #[test]
    fn bad_profiles_are_errors_naming_the_file_and_line() {
        let home = home_with(CREDENTIALS, CONFIG);
        let missing = read(home.path(), &[("AWS_PROFILE", "nope")]).unwrap_err();
        assert!(
            missing.contains("AWS_PROFILE=nope: no such profile"),
            "{missing}"
        );
        assert!(missing.contains(".aws/credentials"), "{missing}");
        let sso = read(home.path(), &[("AWS_PROFILE", "sso")]).unwrap_err();
        assert!(sso.contains(".aws/config:13"), "{sso}");
        assert!(sso.contains("sso_session"), "{sso}");
        assert!(sso.contains("export-credentials --profile sso"), "{sso}");

        let home = home_with("[default]\naws_access_key_id = AKID\n", "");
        let half = read(home.path(), &[]).unwrap_err();
        assert!(half.contains(".aws/credentials:2"), "{half}");
        assert!(half.contains("only one is set"), "{half}");

        let home = home_with("[default\n", "");
        let header = read(home.path(), &[]).unwrap_err();
        assert!(header.contains(".aws/credentials:1"), "{header}");
        let home = home_with("[default]\njust words\n", "");
        let line = read(home.path(), &[]).unwrap_err();
        assert!(line.contains(".aws/credentials:2"), "{line}");
        assert!(line.contains("expected `key = value`"), "{line}");
    }
}
