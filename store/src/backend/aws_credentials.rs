//! Where one S3 repository's credentials and region come from, the way the
//! AWS tools look for them: the repository's own settings first (named
//! environment variables, a profile, a credentials file), then the process's
//! `AWS_*` variables, web identity and container credentials, the shared
//! config and credentials files (`~/.aws/config`, `~/.aws/credentials`,
//! `AWS_CONFIG_FILE`, `AWS_SHARED_CREDENTIALS_FILE`, `AWS_PROFILE`), and
//! last the EC2 instance role (IMDSv2).
//!
//! Owns the small reader of the shared files (INI: `[section]`, `key =
//! value`, `#`/`;` comments; the config file names profiles `[profile
//! NAME]` but `[default]`) and the order of that search. Never logs, prints
//! or puts a secret in an error: messages name files, profiles and variable
//! names only. Never talks to the network, except one short TCP connect to
//! see whether an instance metadata service is there at all. The token and
//! credential requests to it are `object_store`'s.

use super::s3_settings::S3Settings;
use crate::error::{Result, StoreError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The instance metadata service's address on EC2.
const METADATA_ENDPOINT: &str = "http://169.254.169.254";

/// What signs a repository's requests.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Credentials {
    /// Keys from variables, a profile or a credentials file.
    Static {
        key_id: String,
        secret_key: String,
        token: Option<String>,
    },
    /// Web identity or container credentials, which `object_store` reads
    /// from the process's `AWS_*` variables itself.
    Federated,
    /// The EC2 instance role, from the metadata service at this URL.
    Instance { endpoint: String },
}

impl std::fmt::Debug for Credentials {
    // Never the keys themselves.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Static { .. } => f.write_str("Static(..)"),
            Credentials::Federated => f.write_str("Federated"),
            Credentials::Instance { endpoint } => write!(f, "Instance({endpoint})"),
        }
    }
}

/// A repository's credentials, with the region and endpoint its profile
/// gives (the settings' and the variables' come first; see
/// `S3Backend::open`).
#[derive(Debug)]
pub(crate) struct Resolved {
    pub credentials: Credentials,
    pub profile_region: Option<String>,
    pub profile_endpoint: Option<String>,
}

/// The environment: a function so tests can give their own.
pub(crate) type Environment<'a> = &'a dyn Fn(&str) -> Option<String>;

pub(crate) fn process_environment(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

/// Resolves the credentials for `settings`; `shown` names the repository
/// in errors.
pub(crate) fn resolve(settings: &S3Settings, shown: &str, env: Environment) -> Result<Resolved> {
    let fail = |reason: String| StoreError::Invalid(format!("repository {shown}: {reason}"));
    let from = |credentials| Resolved {
        credentials,
        profile_region: None,
        profile_endpoint: None,
    };
    // 1. The repository's own variables.
    if settings.access_key_id_env.is_some() || settings.secret_access_key_env.is_some() {
        let (Some(id_name), Some(secret_name)) =
            (&settings.access_key_id_env, &settings.secret_access_key_env)
        else {
            return Err(fail(
                "give both access_key_id_env and secret_access_key_env, or neither".into(),
            ));
        };
        let read = |name: &String| {
            env(name).ok_or_else(|| fail(format!("environment variable {name} is not set")))
        };
        let token = match &settings.session_token_env {
            Some(name) => Some(read(name)?),
            None => None,
        };
        return Ok(from(Credentials::Static {
            key_id: read(id_name)?,
            secret_key: read(secret_name)?,
            token,
        }));
    }
    let files = SharedFiles::locate(settings, env);
    // 2. The repository's own profile or credentials file.
    if settings.profile.is_some() || settings.credentials_file.is_some() {
        let profile = settings
            .profile
            .clone()
            .or_else(|| env("AWS_PROFILE"))
            .unwrap_or_else(|| "default".into());
        return files.profile(&profile, env)?.ok_or_else(|| {
            fail(format!(
                "profile `{profile}` has no credentials in {} or {}",
                files.credentials.display(),
                files.config.display()
            ))
        });
    }
    // 3. The process's keys, then web identity and container credentials.
    // Half a pair is a mistake to name, not a reason to look further.
    match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        (Some(key_id), Some(secret_key)) => {
            return Ok(from(Credentials::Static {
                key_id,
                secret_key,
                token: env("AWS_SESSION_TOKEN"),
            }));
        }
        (Some(_), None) => {
            return Err(fail(
                "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(fail(
                "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not".into(),
            ));
        }
        (None, None) => {}
    }
    let federated = (env("AWS_WEB_IDENTITY_TOKEN_FILE").is_some() && env("AWS_ROLE_ARN").is_some())
        || env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").is_some()
        || env("AWS_CONTAINER_CREDENTIALS_FULL_URI").is_some();
    if federated {
        return Ok(from(Credentials::Federated));
    }
    // 4. AWS_PROFILE, or the default profile, in the shared files.
    let named = env("AWS_PROFILE");
    let profile = named.clone().unwrap_or_else(|| "default".into());
    if let Some(resolved) = files.profile(&profile, env)? {
        return Ok(resolved);
    }
    if named.is_some() {
        return Err(fail(format!(
            "AWS_PROFILE names profile `{profile}`, which has no credentials in {} or {}",
            files.credentials.display(),
            files.config.display()
        )));
    }
    // 5. The instance role, if a metadata service answers at all: off EC2
    // the client would otherwise wait out its timeouts on every request.
    if env("AWS_EC2_METADATA_DISABLED").as_deref() != Some("true") {
        let endpoint = instance_endpoint(env);
        if reachable(&endpoint) {
            return Ok(from(Credentials::Instance { endpoint }));
        }
    }
    Err(fail(format!(
        "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE \
         (profiles are read from {} and {}), or give the repository profile= or \
         access_key_id_env= and secret_access_key_env=; no instance metadata service answered \
         at {}",
        files.credentials.display(),
        files.config.display(),
        instance_endpoint(env),
    )))
}

/// The metadata service's URL: `AWS_EC2_METADATA_SERVICE_ENDPOINT` (the
/// AWS tools' variable) or `AWS_METADATA_ENDPOINT` (object_store's), else
/// EC2's own.
fn instance_endpoint(env: Environment) -> String {
    env("AWS_EC2_METADATA_SERVICE_ENDPOINT")
        .or_else(|| env("AWS_METADATA_ENDPOINT"))
        .unwrap_or_else(|| METADATA_ENDPOINT.into())
        .trim_end_matches('/')
        .to_string()
}

/// Whether a TCP connection to the URL's host opens within a second.
fn reachable(endpoint: &str) -> bool {
    use std::net::ToSocketAddrs;
    let Some(rest) = endpoint.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    let with_port = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let Ok(addresses) = with_port.to_socket_addrs() else {
        return false;
    };
    addresses.into_iter().any(|address| {
        std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok()
    })
}

/// The shared config and credentials files.
struct SharedFiles {
    config: PathBuf,
    credentials: PathBuf,
}

impl SharedFiles {
    fn locate(settings: &S3Settings, env: Environment) -> SharedFiles {
        let home = env("HOME").map(PathBuf::from).unwrap_or_default();
        let config = env("AWS_CONFIG_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".aws/config"));
        let credentials = settings
            .credentials_file
            .clone()
            .or_else(|| env("AWS_SHARED_CREDENTIALS_FILE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".aws/credentials"));
        SharedFiles {
            config,
            credentials,
        }
    }

    /// The profile's credentials, region and endpoint; `None` if neither
    /// file gives it credentials. A file that exists but cannot be read or
    /// parsed is an error naming it.
    fn profile(&self, profile: &str, env: Environment) -> Result<Option<Resolved>> {
        let credentials_file = read_ini(&self.credentials)?;
        let config_file = read_ini(&self.config)?;
        let config_section = if profile == "default" {
            "default".to_string()
        } else {
            format!("profile {profile}")
        };
        let empty = HashMap::new();
        let in_credentials = credentials_file.get(profile).unwrap_or(&empty);
        let in_config = config_file.get(&config_section).unwrap_or(&empty);
        // As the AWS tools: the credentials file's keys win over the
        // config file's.
        let get = |key: &str| {
            in_credentials
                .get(key)
                .or_else(|| in_config.get(key))
                .cloned()
        };
        let credentials = match (get("aws_access_key_id"), get("aws_secret_access_key")) {
            (Some(key_id), Some(secret_key)) => Credentials::Static {
                key_id,
                secret_key,
                token: get("aws_session_token"),
            },
            _ => match get("credential_source").as_deref() {
                Some("Ec2InstanceMetadata") => Credentials::Instance {
                    endpoint: instance_endpoint(env),
                },
                Some("Environment") => {
                    match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
                        (Some(key_id), Some(secret_key)) => Credentials::Static {
                            key_id,
                            secret_key,
                            token: env("AWS_SESSION_TOKEN"),
                        },
                        _ => return Ok(None),
                    }
                }
                Some("EcsContainer") => Credentials::Federated,
                _ => return Ok(None),
            },
        };
        Ok(Some(Resolved {
            credentials,
            profile_region: in_config.get("region").cloned(),
            profile_endpoint: in_config.get("endpoint_url").cloned(),
        }))
    }
}

/// Sections of an INI file, each a map of keys to values; an absent file
/// has none.
fn read_ini(path: &Path) -> Result<HashMap<String, HashMap<String, String>>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(error) => {
            return Err(StoreError::io(
                format!("reading AWS file {}", path.display()),
                error,
            ));
        }
    };
    parse_ini(&text).map_err(|line| {
        StoreError::Invalid(format!(
            "AWS file {} line {line}: neither [section] nor key = value",
            path.display()
        ))
    })
}

/// Parses the INI the AWS files use; the 1-based number of a line that is
/// none of its forms. An indented line continues a nested block (`s3 =`
/// followed by indented settings), which cairn does not use: skipped.
fn parse_ini(text: &str) -> std::result::Result<HashMap<String, HashMap<String, String>>, usize> {
    let mut sections: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut current: Option<String> = None;
    for (number, line) in text.lines().enumerate() {
        let indented = line.starts_with([' ', '\t']);
        let line = line.trim();
        if line.is_empty() || line.starts_with(['#', ';']) || indented {
            continue;
        }
        if let Some(name) = line
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
        {
            let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
            sections.entry(name.clone()).or_default();
            current = Some(name);
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(number + 1);
        };
        if let Some(section) = &current {
            sections
                .entry(section.clone())
                .or_default()
                .insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    Ok(sections)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(directory: &Path, credentials: &str, config: &str) -> HashMap<String, String> {
        std::fs::write(directory.join("credentials"), credentials).unwrap();
        std::fs::write(directory.join("config"), config).unwrap();
        HashMap::from([
            (
                "AWS_SHARED_CREDENTIALS_FILE".into(),
                directory.join("credentials").display().to_string(),
            ),
            (
                "AWS_CONFIG_FILE".into(),
                directory.join("config").display().to_string(),
            ),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ])
    }

    fn keys(resolved: &Resolved) -> (&str, Option<&str>) {
        match &resolved.credentials {
            Credentials::Static { key_id, token, .. } => (key_id, token.as_deref()),
            other => panic!("expected keys, got {other:?}"),
        }
    }

    #[test]
    fn profiles_come_from_the_shared_files() {
        let directory = tempfile::tempdir().unwrap();
        let mut vars = files(
            directory.path(),
            "[default]\naws_access_key_id = DEF\naws_secret_access_key = s\n\n\
             [eu]\naws_access_key_id=EU\naws_secret_access_key=s\naws_session_token=t\n",
            "# comment\n[default]\nregion = us-east-1\n[profile eu]\nregion = eu-west-1\n\
             s3 =\n  addressing_style = path\n[profile cfg]\naws_access_key_id = CFG\n\
             aws_secret_access_key = s\nendpoint_url = http://127.0.0.1:1\n",
        );
        let env_of = |vars: &HashMap<String, String>| {
            let vars = vars.clone();
            move |name: &str| vars.get(name).cloned()
        };
        let plain = S3Settings::default();
        let resolved = resolve(&plain, "r", &env_of(&vars)).unwrap();
        assert_eq!(keys(&resolved), ("DEF", None));
        assert_eq!(resolved.profile_region.as_deref(), Some("us-east-1"));

        let eu = S3Settings {
            profile: Some("eu".into()),
            ..S3Settings::default()
        };
        let resolved = resolve(&eu, "r", &env_of(&vars)).unwrap();
        assert_eq!(keys(&resolved), ("EU", Some("t")));
        assert_eq!(resolved.profile_region.as_deref(), Some("eu-west-1"));

        let cfg = S3Settings {
            profile: Some("cfg".into()),
            ..S3Settings::default()
        };
        let resolved = resolve(&cfg, "r", &env_of(&vars)).unwrap();
        assert_eq!(keys(&resolved), ("CFG", None));
        assert_eq!(
            resolved.profile_endpoint.as_deref(),
            Some("http://127.0.0.1:1")
        );

        // The process's keys win over the default profile, not over a
        // repository's own profile.
        vars.insert("AWS_ACCESS_KEY_ID".into(), "ENV".into());
        vars.insert("AWS_SECRET_ACCESS_KEY".into(), "s".into());
        assert_eq!(
            keys(&resolve(&plain, "r", &env_of(&vars)).unwrap()),
            ("ENV", None)
        );
        assert_eq!(
            keys(&resolve(&eu, "r", &env_of(&vars)).unwrap()),
            ("EU", Some("t"))
        );

        let missing = S3Settings {
            profile: Some("nowhere".into()),
            ..S3Settings::default()
        };
        let error = resolve(&missing, "r", &env_of(&vars)).unwrap_err();
        assert!(error.to_string().contains("profile `nowhere`"), "{error}");
    }

    #[test]
    fn named_variables_are_read_and_missing_ones_named() {
        let settings = S3Settings {
            access_key_id_env: Some("EU_KEY".into()),
            secret_access_key_env: Some("EU_SECRET".into()),
            ..S3Settings::default()
        };
        let env = |name: &str| (name == "EU_KEY").then(|| "K".to_string());
        let error = resolve(&settings, "r", &env).unwrap_err();
        assert!(
            error.to_string().contains("EU_SECRET is not set"),
            "{error}"
        );
        let env = |name: &str| Some(format!("{name}-value"));
        let resolved = resolve(&settings, "r", &env).unwrap();
        assert_eq!(keys(&resolved), ("EU_KEY-value", None));
    }

    #[test]
    fn nothing_found_is_a_clear_error() {
        let directory = tempfile::tempdir().unwrap();
        let vars = files(directory.path(), "", "");
        let env = |name: &str| vars.get(name).cloned();
        let error = resolve(&S3Settings::default(), "s3://b", &env).unwrap_err();
        assert!(error.to_string().contains("no AWS credentials"), "{error}");
    }

    #[test]
    fn a_broken_file_is_named_with_its_line() {
        assert_eq!(parse_ini("[a]\nx = 1\nnonsense\n").unwrap_err(), 3);
    }
}
