//! Loading YAML files: multi-document, line-precise, typed.
//!
//! # Choice of YAML crate
//!
//! `serde_yaml` is unmaintained; the two maintained successors weighed were `serde_norway`
//! (a fork of `serde_yaml` on `unsafe-libyaml`, a C-to-Rust translation) and `serde-saphyr`
//! (pure safe Rust on the `granit-parser` event parser, actively developed, panic-free parsing
//! with budgets against hostile input). Both report the line and column of a *syntax* error,
//! but neither gives positions for the fields that *validation* later complains about
//! (`spec.http[0].route[1].weight` summing to 90 is legal YAML). So the loader reads the
//! span-carrying event stream of `granit-parser` (re-exported by `serde-saphyr`, which the
//! crate also uses to write YAML) and builds, per document, a `serde_json::Value` plus a map
//! from every field path to its line and column ([`value`]). Typed decoding then goes
//! `Value` → struct with `serde_path_to_error` (the failing field's path, looked up in the
//! map for its line) and `serde_ignored` (fields that k8s-openapi types silently drop, turned
//! into errors). Going through JSON values is also what `kubectl` does (YAML → JSON → typed),
//! so scalars are typed as a Kubernetes user expects, and the Kubernetes API source decodes
//! its JSON through the very same typed path.
//!
//! Tolerances, each reported as a warning, never silently: documents of a kind the mesh does
//! not read are skipped; a line that is only `...` indented inside a block (the elision mark
//! of pasted tutorial fragments, not valid YAML there) is ignored when the file fails to parse
//! with it and parses without it; a workload missing `spec.selector`/`spec.template` (a
//! truncated fragment) takes its selector and pod labels from `metadata.labels`.

pub mod limits;
pub mod value;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::error::{ConfigError, ConfigWarning, ErrorKind, Place};
use crate::object::{Kind, LoadedObject, Object, Origin};
use limits::{Limit, Limits};
use value::{Document, LimitError, Pos, SyntaxError};

/// Options for reading objects.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Namespace of namespaced objects that name none (`kubectl apply` uses `default`).
    pub default_namespace: String,
    /// Budgets of each file or string read.
    pub limits: Limits,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            default_namespace: "default".to_string(),
            limits: Limits::default(),
        }
    }
}

/// What reading one file (or string) produced. Objects that decoded are kept even when
/// others failed, so a caller can report every error at once.
#[derive(Debug, Clone, Default)]
pub struct FileLoad {
    pub objects: Vec<LoadedObject>,
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<ConfigWarning>,
}

/// Reads one file; one larger than the `input_bytes` budget is refused without reading it
/// whole.
pub fn load_file(path: &Path, opts: &LoadOptions) -> FileLoad {
    let max = opts.limits.input_bytes;
    let whole_file = |kind| FileLoad {
        errors: vec![ConfigError::new(
            Place {
                file: Some(path.to_path_buf()),
                ..Place::default()
            },
            kind,
        )],
        ..FileLoad::default()
    };
    match read_at_most(path, max) {
        Ok(Some(text)) => load_str(&text, Some(path), opts),
        Ok(None) => whole_file(ErrorKind::LimitExceeded {
            limit: Limit::InputBytes,
            max,
        }),
        Err(e) => whole_file(ErrorKind::Io(e.to_string())),
    }
}

/// The file's text, or `None` when it holds more than `max` bytes (read up to one byte
/// more, so a file growing meanwhile or a device without a size is caught as well).
fn read_at_most(path: &Path, max: usize) -> std::io::Result<Option<String>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let too_big = file
        .metadata()
        .is_ok_and(|m| m.len() > u64::try_from(max).unwrap_or(u64::MAX));
    if too_big {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    let cap = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    file.take(cap).read_to_end(&mut bytes)?;
    if bytes.len() > max {
        return Ok(None);
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Reads every document of `text`; `file` names it in errors.
pub fn load_str(text: &str, file: Option<&Path>, opts: &LoadOptions) -> FileLoad {
    let file_arc = file.map(|f| Arc::new(f.to_path_buf()));
    let mut out = FileLoad::default();
    let file_place = |pos: Pos| Place {
        file: file.map(Path::to_path_buf),
        line: Some(pos.line),
        column: Some(pos.column),
        ..Place::default()
    };

    let limit_error = |e: LimitError| FileLoad {
        errors: vec![ConfigError::new(
            file_place(e.pos),
            ErrorKind::LimitExceeded {
                limit: e.limit,
                max: e.max,
            },
        )],
        ..FileLoad::default()
    };
    let (mut docs, mut syntax) = match value::parse_documents(text, &opts.limits) {
        Ok(parsed) => parsed,
        Err(e) => return limit_error(e),
    };
    if let Some(err) = &syntax
        && let Some((cleaned, lines)) = without_elisions(text)
    {
        let (docs2, syntax2) = match value::parse_documents(&cleaned, &opts.limits) {
            Ok(parsed) => parsed,
            Err(e) => return limit_error(e),
        };
        if syntax2.is_none() {
            tracing::debug!(
                ?file,
                "parsed after ignoring elision lines (first error: {})",
                err.message
            );
            for line in lines {
                out.warnings.push(ConfigWarning {
                    place: file_place(Pos { line, column: 1 }),
                    message: "`...` inside a block (an elision in a pasted fragment) ignored"
                        .into(),
                });
            }
            docs = docs2;
            syntax = None;
        }
    }
    if let Some(err) = syntax {
        out.errors.push(syntax_error(text, err, file));
    }

    for doc in docs {
        decode_document(doc, &file_arc, opts, Strictness::File, &mut out);
    }
    for w in &out.warnings {
        tracing::warn!("{w}");
    }
    out
}

/// Decodes one object read from the Kubernetes API (JSON, `apiVersion` and `kind` filled in)
/// by the very path of a YAML document: same dispatch, same typed decode, same unknown-field
/// and name checks, same errors. There are no lines: `file` is a pseudo file naming the
/// object (`kube://VirtualService.networking.istio.io/default/reviews`). One difference:
/// fields unknown under `status` (written by the cluster, not the user: a newer API server
/// than the types know) are warnings, not errors.
pub fn load_api_object(value: Value, file: Option<&Path>, opts: &LoadOptions) -> FileLoad {
    let file_arc = file.map(|f| Arc::new(f.to_path_buf()));
    let mut out = FileLoad::default();
    let doc = Document {
        value: Some(value),
        spans: value::SpanMap::default(),
    };
    decode_document(doc, &file_arc, opts, Strictness::Api, &mut out);
    out
}

/// How strict decoding is about fields the types do not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strictness {
    /// Every unknown field is an error.
    File,
    /// Unknown fields under `status` are warnings.
    Api,
}

fn syntax_error(text: &str, err: SyntaxError, file: Option<&Path>) -> ConfigError {
    // A tab in the indentation of a line up to the failing one (or the next: a scalar may be
    // reported where it started) is the usual culprit; name it.
    let tab = text
        .lines()
        .take(err.pos.line.max(1) + 1)
        .enumerate()
        .find_map(|(i, line)| {
            let indent: &str = &line[..line.len() - line.trim_start().len()];
            indent.find('\t').map(|col| (i + 1, col + 1))
        });
    match tab {
        Some((line, column)) => ConfigError::new(
            Place {
                file: file.map(Path::to_path_buf),
                line: Some(line),
                column: Some(column),
                ..Place::default()
            },
            ErrorKind::TabIndentation,
        ),
        None => ConfigError::new(
            Place {
                file: file.map(Path::to_path_buf),
                line: Some(err.pos.line),
                column: Some(err.pos.column),
                ..Place::default()
            },
            ErrorKind::Syntax(err.message),
        ),
    }
}

/// Blanks lines that are only `...` with some indentation; `None` when there is none.
fn without_elisions(text: &str) -> Option<(String, Vec<usize>)> {
    let mut lines = Vec::new();
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let body = line.trim_end_matches(['\n', '\r']);
        if body.trim() == "..." && body.starts_with([' ', '\t']) {
            lines.push(i + 1);
            out.push_str(&line[body.len()..]);
        } else {
            out.push_str(line);
        }
    }
    (!lines.is_empty()).then_some((out, lines))
}

fn decode_document(
    doc: Document,
    file: &Option<Arc<PathBuf>>,
    opts: &LoadOptions,
    strictness: Strictness,
    out: &mut FileLoad,
) {
    // Documents from a file have positions (lines start at 1); objects from the API have none.
    let has_lines = doc.spans.start.line > 0;
    let spans = Arc::new(doc.spans);
    let origin = Origin {
        file: file.clone(),
        spans: spans.clone(),
    };
    let place = |field: &str, object: Option<String>| {
        let pos = spans.lookup(field);
        Place {
            file: file.as_deref().cloned(),
            line: has_lines.then_some(pos.line),
            column: has_lines.then_some(pos.column),
            object,
            field: (!field.is_empty()).then(|| field.to_string()),
        }
    };
    let mut value = match doc.value {
        None | Some(Value::Null) => return,
        Some(Value::Object(map)) => map,
        Some(_) => {
            out.errors.push(ConfigError::invalid(
                place("", None),
                "a document must be a mapping with apiVersion and kind",
            ));
            return;
        }
    };
    let str_field = |v: &serde_json::Map<String, Value>, k: &str| {
        v.get(k).and_then(Value::as_str).map(str::to_string)
    };
    let (Some(api_version), Some(kind_name)) =
        (str_field(&value, "apiVersion"), str_field(&value, "kind"))
    else {
        let missing = if str_field(&value, "apiVersion").is_none() {
            "apiVersion"
        } else {
            "kind"
        };
        out.errors.push(ConfigError::invalid(
            place(missing, None),
            format!("missing or non-string `{missing}`"),
        ));
        return;
    };
    let meta = value.get("metadata");
    let name = meta.and_then(|m| m.get("name")).and_then(Value::as_str);
    let namespace = meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str);
    let label = match (namespace, name) {
        (Some(ns), Some(n)) => format!("{kind_name} {ns}/{n}"),
        (None, Some(n)) => format!("{kind_name} {n}"),
        (_, None) => format!("{kind_name} (unnamed)"),
    };

    let kind = match Kind::resolve(&api_version, &kind_name) {
        Ok(Some(k)) => k,
        Ok(None) => {
            out.warnings.push(ConfigWarning {
                place: place("kind", Some(label)),
                message: format!(
                    "kind {kind_name} ({api_version}) is not read by the mesh; skipped"
                ),
            });
            return;
        }
        Err(message) => {
            out.errors.push(ConfigError::invalid(
                place("apiVersion", Some(label)),
                message,
            ));
            return;
        }
    };

    let label_of = |ns: Option<&str>, n: &str| match (kind.is_namespaced(), ns) {
        (true, Some(ns)) => format!("{kind} {ns}/{n}"),
        (true, None) => format!("{kind} {}/{n}", opts.default_namespace),
        (false, _) => format!("{kind} {n}"),
    };
    let Some(name) = name.map(str::to_string) else {
        out.errors.push(ConfigError::invalid(
            place("metadata.name", Some(format!("{kind} (unnamed)"))),
            "required field is missing",
        ));
        return;
    };
    let label = label_of(namespace, &name);
    if let Err(message) = check_name(&name) {
        out.errors.push(ConfigError::invalid(
            place("metadata.name", Some(label)),
            message,
        ));
        return;
    }

    if matches!(
        kind,
        Kind::Deployment | Kind::StatefulSet | Kind::ReplicaSet | Kind::DaemonSet
    ) {
        for filled in fill_fragment_workload(&mut value) {
            out.warnings.push(ConfigWarning {
                place: place("spec", Some(label.clone())),
                message: format!(
                    "`spec.{filled}` missing (a truncated fragment?); taken from metadata.labels"
                ),
            });
        }
    }

    let mut ignored = Vec::new();
    match Object::decode(kind, Value::Object(value), &mut ignored) {
        Ok(mut object) => {
            if strictness == Strictness::Api {
                ignored.retain(|path| {
                    let in_status = path == "status" || path.starts_with("status.");
                    if in_status {
                        out.warnings.push(ConfigWarning {
                            place: Place {
                                object: Some(label.clone()),
                                ..place(path, None)
                            },
                            message: format!(
                                "unknown status field `{}` ignored",
                                last_segment(path)
                            ),
                        });
                    }
                    !in_status
                });
            }
            if !ignored.is_empty() {
                for path in ignored {
                    let at = place(&path, None);
                    out.errors.push(ConfigError::invalid(
                        Place {
                            object: Some(label.clone()),
                            ..at
                        },
                        format!("unknown field `{}`", last_segment(&path)),
                    ));
                }
                return;
            }
            if kind.is_namespaced() && object.meta().namespace.is_none() {
                object.meta_mut().namespace = Some(opts.default_namespace.clone());
            }
            if !kind.is_namespaced() {
                object.meta_mut().namespace = None;
            }
            out.objects.push(LoadedObject { object, origin });
        }
        Err(e) => {
            let (field, message) = refine_decode_error(&e.path, &e.message);
            let mut p = place(&field, Some(label));
            if let Some(pos) = spans.get(&field) {
                p.line = Some(pos.line);
                p.column = Some(pos.column);
            }
            out.errors
                .push(ConfigError::new(p, ErrorKind::Decode(message)));
        }
    }
}

/// For `unknown field`/`missing field` messages serde reports the enclosing object's path;
/// append the field itself so the error names it.
fn refine_decode_error(path: &str, message: &str) -> (String, String) {
    for prefix in ["unknown field `", "missing field `"] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some(end) = rest.find('`')
        {
            let name = &rest[..end];
            let already = path == name || path.ends_with(&format!(".{name}"));
            let field = if already {
                path.to_string()
            } else {
                value::join(path, name)
            };
            return (field, message.to_string());
        }
    }
    (path.to_string(), message.to_string())
}

fn last_segment(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}

/// Kubernetes object names: DNS-1123 subdomain (lowercase alphanumerics, `-` and `.`).
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid name {name:?}: must be lowercase alphanumerics, '-' or '.', starting and ending alphanumeric"
        ))
    }
}

/// A workload fragment without `spec.selector` / `spec.template`: fill them from the object's
/// labels. Returns the fields filled.
fn fill_fragment_workload(value: &mut serde_json::Map<String, Value>) -> Vec<&'static str> {
    let labels = value
        .get("metadata")
        .and_then(|m| m.get("labels"))
        .cloned()
        .unwrap_or_else(|| Value::Object(Default::default()));
    let Some(Value::Object(spec)) = value.get_mut("spec") else {
        return Vec::new();
    };
    let mut filled = Vec::new();
    if !spec.contains_key("selector") {
        spec.insert(
            "selector".into(),
            serde_json::json!({ "matchLabels": labels }),
        );
        filled.push("selector");
    }
    if !spec.contains_key("template") {
        spec.insert(
            "template".into(),
            serde_json::json!({ "metadata": { "labels": labels }, "spec": { "containers": [] } }),
        );
        filled.push("template");
    }
    filled
}
