//! Reads `docker-compose.yml` the way Compose does — YAML anchors and merge keys (`<<`), then
//! `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `${VAR?error}` and `$$`
//! interpolated from an env file — so tests can check, and start natively, each service exactly
//! as written there (its `command` and `environment`).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, anyhow, bail};
use yaml_rust2::{Yaml, YamlLoader, yaml::Hash};

/// The workspace root (where `docker-compose.yml`, `.env.example` and `deploy/` live).
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
}

/// Parses a `.env` file: `KEY=value` lines; blank lines and `#` comments skipped; no quoting.
pub fn read_env_file(path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut vars = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| anyhow!("{}:{}: not KEY=value", path.display(), n + 1))?;
        vars.insert(key.trim().to_owned(), value.to_owned());
    }
    Ok(vars)
}

/// A compose file after merge keys and interpolation.
#[derive(Debug)]
pub struct Compose {
    /// The whole document, merged and interpolated.
    pub doc: Yaml,
}

/// One service's `command` and `environment` as the container would get them.
#[derive(Debug, Clone)]
pub struct Service {
    /// `command` (list form), empty when unset.
    pub command: Vec<String>,
    /// `environment` (map form), values as strings.
    pub environment: BTreeMap<String, String>,
}

impl Compose {
    /// Loads `path`, interpolating with `vars` (a missing `${VAR:?…}` is an error, as in Compose).
    pub fn load(path: &Path, vars: &BTreeMap<String, String>) -> anyhow::Result<Compose> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut docs =
            YamlLoader::load_from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if docs.len() != 1 {
            bail!("{}: expected one YAML document", path.display());
        }
        let doc = interpolate(resolve_merges(docs.remove(0)), vars)?;
        Ok(Compose { doc })
    }

    /// Service names in file order.
    pub fn service_names(&self) -> Vec<String> {
        match &self.doc["services"] {
            Yaml::Hash(h) => h.keys().filter_map(|k| k.as_str().map(str::to_owned)).collect(),
            _ => Vec::new(),
        }
    }

    /// The raw (merged, interpolated) definition of a service; `Yaml::BadValue` if absent.
    pub fn raw(&self, service: &str) -> &Yaml {
        &self.doc["services"][service]
    }

    /// A service's command and environment.
    pub fn service(&self, name: &str) -> anyhow::Result<Service> {
        let raw = self.raw(name);
        if raw.is_badvalue() {
            bail!("no service {name:?}");
        }
        let command = match &raw["command"] {
            Yaml::Array(items) => items.iter().map(scalar).collect::<anyhow::Result<_>>()?,
            Yaml::BadValue => Vec::new(),
            other => bail!("service {name}: command must be a list, not {other:?}"),
        };
        let mut environment = BTreeMap::new();
        match &raw["environment"] {
            Yaml::Hash(h) => {
                for (k, v) in h {
                    environment.insert(scalar(k)?, scalar(v)?);
                }
            }
            Yaml::BadValue => {}
            other => bail!("service {name}: environment must be a map, not {other:?}"),
        }
        Ok(Service { command, environment })
    }
}

fn scalar(y: &Yaml) -> anyhow::Result<String> {
    Ok(match y {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        Yaml::Null => String::new(),
        other => bail!("not a scalar: {other:?}"),
    })
}

/// Applies YAML merge keys: `<<: *anchor` (or a list of them) under a mapping; keys written in
/// the mapping itself win.
fn resolve_merges(y: Yaml) -> Yaml {
    match y {
        Yaml::Hash(h) => {
            let merge_key = Yaml::String("<<".to_owned());
            let mut out = Hash::new();
            if let Some(sources) = h.get(&merge_key) {
                let sources = match sources {
                    Yaml::Array(a) => a.clone(),
                    one => vec![one.clone()],
                };
                for source in sources {
                    if let Yaml::Hash(src) = resolve_merges(source) {
                        for (k, v) in src {
                            out.insert(k, v);
                        }
                    }
                }
            }
            for (k, v) in h {
                if k != merge_key {
                    out.insert(k, resolve_merges(v));
                }
            }
            Yaml::Hash(out)
        }
        Yaml::Array(a) => Yaml::Array(a.into_iter().map(resolve_merges).collect()),
        other => other,
    }
}

fn interpolate(y: Yaml, vars: &BTreeMap<String, String>) -> anyhow::Result<Yaml> {
    Ok(match y {
        Yaml::String(s) => Yaml::String(interpolate_str(&s, vars)?),
        Yaml::Array(a) => Yaml::Array(
            a.into_iter()
                .map(|v| interpolate(v, vars))
                .collect::<Result<_, _>>()?,
        ),
        Yaml::Hash(h) => {
            let mut out = Hash::new();
            for (k, v) in h {
                out.insert(k, interpolate(v, vars)?);
            }
            Yaml::Hash(out)
        }
        other => other,
    })
}

/// Compose's interpolation of one string.
pub fn interpolate_str(s: &str, vars: &BTreeMap<String, String>) -> anyhow::Result<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or_else(|| anyhow!("unclosed ${{ in {s:?}"))?;
            out.push_str(&expand(&body[..end], vars)?);
            rest = &body[end + 1..];
        } else {
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if len == 0 {
                bail!("lone $ in {s:?} (write $$)");
            }
            out.push_str(vars.get(&after[..len]).map(String::as_str).unwrap_or(""));
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn expand(expr: &str, vars: &BTreeMap<String, String>) -> anyhow::Result<String> {
    let name_len = expr
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(expr.len());
    let (name, op) = expr.split_at(name_len);
    let value = vars.get(name);
    let set_nonempty = value.is_some_and(|v| !v.is_empty());
    Ok(match op {
        "" => value.cloned().unwrap_or_default(),
        _ if op.starts_with(":-") => {
            if set_nonempty {
                value.cloned().unwrap_or_default()
            } else {
                op[2..].to_owned()
            }
        }
        _ if op.starts_with('-') => value.cloned().unwrap_or_else(|| op[1..].to_owned()),
        _ if op.starts_with(":?") => {
            if !set_nonempty {
                bail!("{name}: {}", &op[2..]);
            }
            value.cloned().unwrap_or_default()
        }
        _ if op.starts_with('?') => value.cloned().ok_or_else(|| anyhow!("{name}: {}", &op[1..]))?,
        _ => bail!("unsupported interpolation ${{{expr}}}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation_follows_compose() {
        let vars: BTreeMap<String, String> = [("A", "1"), ("E", "")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(interpolate_str("x${A}y$A", &vars).unwrap(), "x1y1");
        assert_eq!(interpolate_str("${E:-d}|${E-d}|${B-d}", &vars).unwrap(), "d||d");
        assert_eq!(interpolate_str("$$A %2f", &vars).unwrap(), "$A %2f");
        assert!(interpolate_str("${E:?needed}", &vars).is_err());
        assert!(interpolate_str("${B?needed}", &vars).is_err());
        assert_eq!(interpolate_str("${A:?needed}", &vars).unwrap(), "1");
    }

    #[test]
    fn merge_keys_apply_and_local_keys_win() {
        let doc = YamlLoader::load_from_str("a: &a {x: 1, y: 2}\nb:\n  <<: *a\n  y: 3\n").unwrap();
        let merged = resolve_merges(doc[0].clone());
        assert_eq!(merged["b"]["x"].as_i64(), Some(1));
        assert_eq!(merged["b"]["y"].as_i64(), Some(3));
    }
}
