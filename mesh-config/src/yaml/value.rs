//! YAML events → `serde_json::Value` documents plus a map from field path to source position.
//!
//! Scalars are resolved with the YAML 1.2 core schema (what `kubectl` users expect: `80` is a
//! number, `"80"` a string, `true` a bool, `~`/`null`/empty a null); quoted and block scalars
//! are always strings. Anchors and aliases are supported; `<<` merge keys are not (Kubernetes
//! rejects them too). Every node is charged to the input's [`Budget`] before it is built, an
//! alias with everything it would copy (see [`super::limits`]).

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle, ScanError, Span};

use super::limits::{Budget, Extent, Limit, Limits};

/// A source position, 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    fn from_span(span: &Span) -> Self {
        Pos {
            line: span.start.line(),
            column: span.start.col() + 1,
        }
    }
}

/// Field path (`spec.http[0].route[1].weight`, the notation of `serde_path_to_error`) → the
/// position of the key that introduces it (or of the sequence item).
#[derive(Debug, Clone, Default)]
pub struct SpanMap {
    paths: HashMap<String, Pos>,
    /// Position of the document's first node.
    pub start: Pos,
}

impl SpanMap {
    /// The position of `path`, or of its nearest recorded ancestor, or the document start.
    pub fn lookup(&self, path: &str) -> Pos {
        let mut p = path;
        loop {
            if let Some(pos) = self.paths.get(p) {
                return *pos;
            }
            match parent(p) {
                Some(up) => p = up,
                None => return self.start,
            }
        }
    }

    /// The exact position of `path`, if it was recorded.
    pub fn get(&self, path: &str) -> Option<Pos> {
        self.paths.get(path).copied()
    }
}

fn parent(path: &str) -> Option<&str> {
    let cut = path.rfind(['.', '['])?;
    Some(&path[..cut])
}

/// Appends a key or an index to a path.
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

pub fn join_index(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

/// One YAML document of a file.
#[derive(Debug, Clone)]
pub struct Document {
    /// `None` for a document holding only comments (or nothing).
    pub value: Option<Value>,
    pub spans: SpanMap,
}

/// A syntax error: position and the parser's message.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

impl From<ScanError> for SyntaxError {
    fn from(e: ScanError) -> Self {
        let m = e.marker();
        SyntaxError {
            pos: Pos {
                line: m.line(),
                column: m.col() + 1,
            },
            message: e.info().to_string(),
        }
    }
}

/// An input over one of its budgets: nothing of it is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitError {
    pub limit: Limit,
    pub max: usize,
    /// Where the reader was when the budget ran out (the start for `input_bytes`).
    pub pos: Pos,
}

/// What reading an input's documents gave: the documents that parsed before a syntax error
/// (returned with it), or a refusal of the whole input.
pub type Parsed = Result<(Vec<Document>, Option<SyntaxError>), LimitError>;

/// Parses every document of `text` within `limits`.
pub fn parse_documents(text: &str, limits: &Limits) -> Parsed {
    if text.len() > limits.input_bytes {
        return Err(LimitError {
            limit: Limit::InputBytes,
            max: limits.input_bytes,
            pos: Pos { line: 1, column: 1 },
        });
    }
    let mut builder = Builder::new(*limits);
    let mut parser = Parser::new_from_str(text);
    while let Some(next) = parser.next_event() {
        match next {
            Ok((event, span)) => match builder.event(event, &span) {
                Ok(()) => {}
                Err(Refusal::Syntax(e)) => return Ok((builder.docs, Some(e))),
                Err(Refusal::Limit(limit)) => {
                    return Err(LimitError {
                        limit,
                        max: limits.max(limit),
                        pos: Pos::from_span(&span),
                    });
                }
            },
            // The parser has its own nesting bound (deeper than ours, and met first when
            // it scans ahead in flow collections): the same refusal.
            Err(e) if e.info() == PARSER_RECURSION_LIMIT && limits.depth < PARSER_DEPTH => {
                let m = e.marker();
                return Err(LimitError {
                    limit: Limit::Depth,
                    max: limits.depth,
                    pos: Pos {
                        line: m.line(),
                        column: m.col() + 1,
                    },
                });
            }
            Err(e) => return Ok((builder.docs, Some(e.into()))),
        }
    }
    Ok((builder.docs, None))
}

/// `granit-parser`'s message when nesting passes its own bound, [`PARSER_DEPTH`].
const PARSER_RECURSION_LIMIT: &str = "recursion limit exceeded";
const PARSER_DEPTH: usize = 256;

/// Why the builder stopped.
enum Refusal {
    Syntax(SyntaxError),
    Limit(Limit),
}

impl From<SyntaxError> for Refusal {
    fn from(e: SyntaxError) -> Self {
        Refusal::Syntax(e)
    }
}

impl From<Limit> for Refusal {
    fn from(limit: Limit) -> Self {
        Refusal::Limit(limit)
    }
}

/// A sequence or a mapping holding nothing yet.
const EMPTY_CONTAINER: Extent = Extent {
    nodes: 1,
    bytes: 0,
    depth: 1,
};

enum Frame {
    Seq {
        items: Vec<Value>,
        path: String,
        anchor: usize,
        extent: Extent,
    },
    Map {
        map: Map<String, Value>,
        path: String,
        anchor: usize,
        /// The key read, waiting for its value.
        key: Option<String>,
        extent: Extent,
    },
}

struct Builder {
    docs: Vec<Document>,
    stack: Vec<Frame>,
    spans: SpanMap,
    root: Option<Value>,
    /// Anchored values with what copying one costs.
    anchors: HashMap<usize, (Value, Extent)>,
    in_doc: bool,
    budget: Budget,
}

impl Builder {
    fn new(limits: Limits) -> Self {
        Builder {
            docs: Vec::new(),
            stack: Vec::new(),
            spans: SpanMap::default(),
            root: None,
            anchors: HashMap::new(),
            in_doc: false,
            budget: Budget::new(limits),
        }
    }

    fn event(&mut self, event: Event<'_>, span: &Span) -> Result<(), Refusal> {
        match event {
            Event::DocumentStart(..) => {
                self.budget.document()?;
                self.in_doc = true;
                self.spans = SpanMap {
                    start: Pos::from_span(span),
                    ..SpanMap::default()
                };
                self.root = None;
                self.anchors.clear();
            }
            Event::DocumentEnd => {
                if self.in_doc {
                    self.docs.push(Document {
                        value: self.root.take(),
                        spans: std::mem::take(&mut self.spans),
                    });
                }
                self.in_doc = false;
            }
            Event::Scalar(text, style, anchor, tag) => {
                let scalar = Extent::scalar(text.len());
                self.budget.spend(scalar, self.stack.len())?;
                // A scalar in key position is a key.
                if let Some(Frame::Map {
                    key, path, extent, ..
                }) = self.stack.last_mut()
                    && key.is_none()
                {
                    let k = text.into_owned();
                    let child = join(path, &k);
                    self.spans.paths.insert(child, Pos::from_span(span));
                    *key = Some(k);
                    extent.add_child(scalar);
                    return Ok(());
                }
                let tag_suffix = tag.as_ref().map(|t| t.suffix().to_string());
                let value = resolve_scalar(&text, style, tag_suffix.as_deref());
                self.record_item(span);
                if anchor != 0 {
                    self.anchors.insert(anchor, (value.clone(), scalar));
                }
                self.push_value(value, scalar, span)?;
            }
            Event::Alias(id) => {
                let extent = self
                    .anchors
                    .get(&id)
                    .map(|(_, extent)| *extent)
                    .ok_or_else(|| SyntaxError {
                        pos: Pos::from_span(span),
                        message: "alias refers to an unknown anchor".into(),
                    })?;
                if let Some(Frame::Map { key, .. }) = self.stack.last()
                    && key.is_none()
                {
                    return Err(SyntaxError {
                        pos: Pos::from_span(span),
                        message: "an alias cannot be a mapping key here".into(),
                    }
                    .into());
                }
                // Charged before copying: this is what keeps an alias bomb small.
                self.budget.spend_alias(extent, self.stack.len())?;
                let value = self
                    .anchors
                    .get(&id)
                    .map(|(value, _)| value.clone())
                    .unwrap_or_default();
                self.record_item(span);
                self.push_value(value, extent, span)?;
            }
            Event::SequenceStart(_, anchor, _) => {
                self.check_not_key(span)?;
                self.budget.spend(EMPTY_CONTAINER, self.stack.len())?;
                self.record_item(span);
                let path = self.child_path();
                self.stack.push(Frame::Seq {
                    items: Vec::new(),
                    path,
                    anchor,
                    extent: EMPTY_CONTAINER,
                });
            }
            Event::MappingStart(_, anchor, _) => {
                self.check_not_key(span)?;
                self.budget.spend(EMPTY_CONTAINER, self.stack.len())?;
                self.record_item(span);
                let path = self.child_path();
                self.stack.push(Frame::Map {
                    map: Map::new(),
                    path,
                    anchor,
                    key: None,
                    extent: EMPTY_CONTAINER,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (value, anchor, extent) = match self.stack.pop() {
                    Some(Frame::Seq {
                        items,
                        anchor,
                        extent,
                        ..
                    }) => (Value::Array(items), anchor, extent),
                    Some(Frame::Map {
                        map,
                        anchor,
                        extent,
                        ..
                    }) => (Value::Object(map), anchor, extent),
                    None => return Ok(()),
                };
                if anchor != 0 {
                    self.anchors.insert(anchor, (value.clone(), extent));
                }
                self.push_value(value, extent, span)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn check_not_key(&self, span: &Span) -> Result<(), SyntaxError> {
        if let Some(Frame::Map { key: None, .. }) = self.stack.last() {
            return Err(SyntaxError {
                pos: Pos::from_span(span),
                message: "complex mapping keys are not supported".into(),
            });
        }
        Ok(())
    }

    /// The path the next value takes.
    fn child_path(&self) -> String {
        match self.stack.last() {
            None => String::new(),
            Some(Frame::Seq { items, path, .. }) => join_index(path, items.len()),
            Some(Frame::Map { path, key, .. }) => join(path, key.as_deref().unwrap_or("")),
        }
    }

    /// Sequence items are recorded at their own position (map values at their key's).
    fn record_item(&mut self, span: &Span) {
        if let Some(Frame::Seq { items, path, .. }) = self.stack.last() {
            let p = join_index(path, items.len());
            self.spans.paths.insert(p, Pos::from_span(span));
        }
    }

    /// Adds a finished value (holding `extent`) to its parent.
    fn push_value(&mut self, value: Value, extent: Extent, span: &Span) -> Result<(), SyntaxError> {
        match self.stack.last_mut() {
            None => self.root = Some(value),
            Some(Frame::Seq {
                items, extent: e, ..
            }) => {
                items.push(value);
                e.add_child(extent);
            }
            Some(Frame::Map {
                map,
                key,
                extent: e,
                ..
            }) => {
                e.add_child(extent);
                let k = key.take().unwrap_or_default();
                if map.contains_key(&k) {
                    return Err(SyntaxError {
                        pos: Pos::from_span(span),
                        message: format!("duplicate key `{k}`"),
                    });
                }
                map.insert(k, value);
            }
        }
        Ok(())
    }
}

/// YAML 1.2 core schema resolution of one scalar.
fn resolve_scalar(text: &str, style: ScalarStyle, tag: Option<&str>) -> Value {
    match tag {
        Some("str") => return Value::String(text.to_string()),
        Some("null") => return Value::Null,
        Some("bool") | Some("int") | Some("float") => {
            return resolve_plain(text).unwrap_or_else(|| Value::String(text.to_string()));
        }
        _ => {}
    }
    if style != ScalarStyle::Plain {
        return Value::String(text.to_string());
    }
    resolve_plain(text).unwrap_or_else(|| Value::String(text.to_string()))
}

fn resolve_plain(text: &str) -> Option<Value> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Some(Value::Null),
        "true" | "True" | "TRUE" => return Some(Value::Bool(true)),
        "false" | "False" | "FALSE" => return Some(Value::Bool(false)),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "-.inf" | ".nan" | ".NaN" | ".NAN" => return None,
        _ => {}
    }
    if let Some(hex) = text.strip_prefix("0x") {
        return i64::from_str_radix(hex, 16).ok().map(Value::from);
    }
    if let Some(oct) = text.strip_prefix("0o") {
        return i64::from_str_radix(oct, 8).ok().map(Value::from);
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = text.parse::<i64>() {
            return Some(Value::from(i));
        }
        if let Ok(u) = text.parse::<u64>() {
            return Some(Value::from(u));
        }
    }
    if is_float(digits) {
        return text
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(Value::Number);
    }
    None
}

/// `(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?` without the sign.
fn is_float(s: &str) -> bool {
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (mantissa, None),
    };
    let all_digits = |x: &str| x.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match frac {
        Some(f) => all_digits(int) && all_digits(f) && !(int.is_empty() && f.is_empty()),
        None => !int.is_empty() && all_digits(int),
    };
    let exp_ok = match exp {
        None => frac.is_some(),
        Some(e) => {
            let e = e.strip_prefix(['-', '+']).unwrap_or(e);
            !e.is_empty() && all_digits(e)
        }
    };
    mantissa_ok && exp_ok
}
