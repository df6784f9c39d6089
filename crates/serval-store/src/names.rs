//! Endpoint names, urls and version ordering: the invariants every stored name keeps.
//!
//! An endpoint is addressed by its url: `name` or `name/version`. clearml-serving accepted any
//! string and stored names that could never be reached (leading `/`) or that collided with
//! versions (`/` inside a name); serval refuses those when an endpoint is created.

use std::cmp::Ordering;

use crate::StoreError;

/// The url of an endpoint: `name` or `name/version` (clearml's `normalize`: trailing `/` dropped).
pub fn endpoint_url(name: &str, version: Option<&str>) -> String {
    let name = name.trim_end_matches('/');
    match version
        .map(|v| v.trim_matches('/'))
        .filter(|v| !v.is_empty())
    {
        Some(version) => format!("{name}/{version}"),
        None => name.to_string(),
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// Validates the name of an endpoint being created (`model add/auto-update/canary --endpoint`)
/// and returns it without trailing slashes. Names are what the url path carries: letters, digits,
/// `_`, `-` and `.`, no `/` (that separates the version), not starting with `.`.
pub fn validate_endpoint_name(raw: &str) -> Result<String, StoreError> {
    let name = raw.trim_end_matches('/');
    if name.is_empty() {
        return Err(StoreError::InvalidInput(
            "endpoint name must not be empty".to_string(),
        ));
    }
    if name.starts_with('/') {
        return Err(StoreError::InvalidInput(format!(
            "endpoint name '{raw}' must not start with '/' (it would be unreachable under /serve/)"
        )));
    }
    if name.contains('/') {
        return Err(StoreError::InvalidInput(format!(
            "endpoint name '{raw}' must not contain '/' (it separates the version: use --version)"
        )));
    }
    check_chars("endpoint name", raw, name)?;
    Ok(name.to_string())
}

/// Validates an endpoint version (`--version`): the same characters as a name.
pub fn validate_version(raw: &str) -> Result<String, StoreError> {
    let version = raw.trim_matches('/');
    if version.is_empty() {
        return Err(StoreError::InvalidInput(
            "version must not be empty".to_string(),
        ));
    }
    if version.contains('/') {
        return Err(StoreError::InvalidInput(format!(
            "version '{raw}' must not contain '/'"
        )));
    }
    check_chars("version", raw, version)?;
    Ok(version.to_string())
}

fn check_chars(what: &str, raw: &str, value: &str) -> Result<(), StoreError> {
    if value.starts_with('.') {
        return Err(StoreError::InvalidInput(format!(
            "{what} '{raw}' must not start with '.'"
        )));
    }
    if let Some(bad) = value.chars().find(|c| !is_name_char(*c)) {
        return Err(StoreError::InvalidInput(format!(
            "{what} '{raw}' contains '{bad}': use letters, digits, '_', '-' and '.'"
        )));
    }
    Ok(())
}

/// Validates a reference to an endpoint (`name` or `name/version`), as canary targets are.
pub fn validate_endpoint_ref(raw: &str) -> Result<String, StoreError> {
    let trimmed = raw.trim_end_matches('/');
    if trimmed.starts_with('/') {
        return validate_endpoint_name(trimmed);
    }
    match trimmed.split_once('/') {
        Some((name, version)) => {
            let name = validate_endpoint_name(name)?;
            let version = validate_version(version).map_err(|_| {
                StoreError::InvalidInput(format!(
                    "'{raw}' is not an endpoint reference (name or name/version)"
                ))
            })?;
            Ok(endpoint_url(&name, Some(&version)))
        }
        None => validate_endpoint_name(trimmed),
    }
}

/// Validates a regular expression for `--name-regex`.
pub fn validate_name_regex(pattern: &str) -> Result<(), StoreError> {
    regex::Regex::new(pattern).map(|_| ()).map_err(|e| {
        StoreError::InvalidInput(format!("--name is not a valid regular expression: {e}"))
    })
}

/// clearml-serving's ordering of endpoint urls for prefix canaries: the last path segment is
/// left-padded with `0` to width 9 and the keys compared as strings, so numeric versions sort
/// numerically (`m/10` after `m/2`) and a bare `m` before `m/...`.
pub fn version_sort_key(url: &str) -> String {
    match url.rsplit_once('/') {
        Some((head, last)) => format!("{head}/{last:0>9}"),
        None => url.to_string(),
    }
}

/// Compares urls newest-first for prefix canaries (see [`version_sort_key`]).
pub fn newest_first(a: &str, b: &str) -> Ordering {
    version_sort_key(b).cmp(&version_sort_key(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_normalise_like_clearml() {
        assert_eq!(endpoint_url("a", None), "a");
        assert_eq!(endpoint_url("a/", None), "a");
        assert_eq!(endpoint_url("a", Some("1")), "a/1");
        assert_eq!(endpoint_url("a/", Some("1/")), "a/1");
        assert_eq!(endpoint_url("a", Some("")), "a");
    }

    #[test]
    fn endpoint_names_refuse_slashes_and_odd_characters() {
        assert_eq!(validate_endpoint_name("model_a/").unwrap(), "model_a");
        assert!(validate_endpoint_name("/a").is_err());
        assert!(validate_endpoint_name("a/b").is_err());
        assert!(validate_endpoint_name("").is_err());
        assert!(validate_endpoint_name("a b").is_err());
        assert!(validate_endpoint_name("a*").is_err());
        assert!(validate_endpoint_name(".hidden").is_err());
        assert!(validate_endpoint_name("test-model.v2_x").is_ok());
    }

    #[test]
    fn endpoint_refs_take_a_version() {
        assert_eq!(validate_endpoint_ref("m/2").unwrap(), "m/2");
        assert_eq!(validate_endpoint_ref("m").unwrap(), "m");
        assert!(validate_endpoint_ref("m/2/3").is_err());
        assert!(validate_endpoint_ref("/m").is_err());
    }

    #[test]
    fn prefix_order_is_numeric_for_numbers() {
        let mut urls = vec!["m/1", "m/10", "m/2", "m", "m/v1", "m/v2"];
        urls.sort_by(|a, b| newest_first(a, b));
        assert_eq!(urls, vec!["m/v2", "m/v1", "m/10", "m/2", "m/1", "m"]);
    }
}
