//! Budgets on one YAML input, so that a few hundred hostile bytes (an alias bomb, a deep
//! nesting, a flood of documents) cannot make the reader exhaust memory or stack.
//!
//! Aliases are expanded by copying the anchored value: without a budget a "billion laughs"
//! document of a few hundred bytes expands to gigabytes. The reader therefore knows, for
//! every anchored value, how many nodes and scalar bytes it holds and how deep it goes, and
//! refuses an alias *before* copying when the copy would overrun the file's budget. Depth
//! is bounded too: decoding and dropping a `serde_json::Value` recurse once per level.
//!
//! The defaults leave room for far more than real configuration (Bookinfo's largest file
//! is 8 KiB, about 700 nodes, 7 levels deep).

use std::fmt;

use serde::Serialize;

/// One budget, named in errors and in the `limit` label of
/// `mesh_config_limits_exceeded_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// Bytes of one file or request body.
    InputBytes,
    /// Documents (`---` separated) in one input.
    Documents,
    /// Nesting of sequences and mappings, aliases included.
    Depth,
    /// Nodes (scalars, sequences, mappings) of one input after alias expansion.
    Nodes,
    /// Nodes copied by aliases in one input: the alias expansion budget proper (real
    /// configuration aliases a few labels; a bomb aliases millions of nodes).
    AliasedNodes,
    /// Bytes of scalars and keys of one input after alias expansion.
    ExpandedBytes,
}

impl Limit {
    pub const ALL: [Limit; 6] = [
        Limit::InputBytes,
        Limit::Documents,
        Limit::Depth,
        Limit::Nodes,
        Limit::AliasedNodes,
        Limit::ExpandedBytes,
    ];

    /// Position in [`Limit::ALL`].
    pub fn index(self) -> usize {
        match self {
            Limit::InputBytes => 0,
            Limit::Documents => 1,
            Limit::Depth => 2,
            Limit::Nodes => 3,
            Limit::AliasedNodes => 4,
            Limit::ExpandedBytes => 5,
        }
    }

    /// The name used in errors and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::InputBytes => "input_bytes",
            Limit::Documents => "documents",
            Limit::Depth => "depth",
            Limit::Nodes => "nodes",
            Limit::AliasedNodes => "aliased_nodes",
            Limit::ExpandedBytes => "expanded_bytes",
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The budgets of one input (a file, a request body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub input_bytes: usize,
    pub documents: usize,
    pub depth: usize,
    pub nodes: usize,
    pub aliased_nodes: usize,
    pub expanded_bytes: usize,
}

/// Largest input read by default: 8 MiB (the agent's API takes config bodies up to this).
pub const DEFAULT_INPUT_BYTES: usize = 8 * 1024 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            input_bytes: DEFAULT_INPUT_BYTES,
            documents: 10_000,
            depth: 64,
            nodes: 1_000_000,
            aliased_nodes: 100_000,
            // Without aliases, scalar bytes never exceed the input: this bites only on
            // expansion.
            expanded_bytes: 4 * DEFAULT_INPUT_BYTES,
        }
    }
}

impl Limits {
    /// The maximum of one budget.
    pub fn max(&self, limit: Limit) -> usize {
        match limit {
            Limit::InputBytes => self.input_bytes,
            Limit::Documents => self.documents,
            Limit::Depth => self.depth,
            Limit::Nodes => self.nodes,
            Limit::AliasedNodes => self.aliased_nodes,
            Limit::ExpandedBytes => self.expanded_bytes,
        }
    }
}

/// What a value holds: nodes, scalar and key bytes, and how deep it goes (a scalar is 0
/// deep, a mapping of scalars 1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extent {
    pub nodes: usize,
    pub bytes: usize,
    pub depth: usize,
}

impl Extent {
    pub fn scalar(bytes: usize) -> Self {
        Extent {
            nodes: 1,
            bytes,
            depth: 0,
        }
    }

    /// Adds a child's extent to a container's.
    pub fn add_child(&mut self, child: Extent) {
        self.nodes = self.nodes.saturating_add(child.nodes);
        self.bytes = self.bytes.saturating_add(child.bytes);
        self.depth = self.depth.max(child.depth.saturating_add(1));
    }
}

/// The running total of one input against its [`Limits`].
#[derive(Debug, Clone)]
pub struct Budget {
    limits: Limits,
    nodes: usize,
    aliased: usize,
    bytes: usize,
    documents: usize,
}

impl Budget {
    pub fn new(limits: Limits) -> Self {
        Budget {
            limits,
            nodes: 0,
            aliased: 0,
            bytes: 0,
            documents: 0,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// One more document.
    pub fn document(&mut self) -> Result<(), Limit> {
        self.documents += 1;
        check(self.documents, &self.limits, Limit::Documents)
    }

    /// Materialising `extent` at `depth` (0 for a document's root): refused before the
    /// caller builds anything.
    pub fn spend(&mut self, extent: Extent, depth: usize) -> Result<(), Limit> {
        check(
            depth.saturating_add(extent.depth),
            &self.limits,
            Limit::Depth,
        )?;
        let nodes = self.nodes.saturating_add(extent.nodes);
        check(nodes, &self.limits, Limit::Nodes)?;
        let bytes = self.bytes.saturating_add(extent.bytes);
        check(bytes, &self.limits, Limit::ExpandedBytes)?;
        self.nodes = nodes;
        self.bytes = bytes;
        Ok(())
    }

    /// An alias copying `extent` at `depth`: charged to the alias budget too.
    pub fn spend_alias(&mut self, extent: Extent, depth: usize) -> Result<(), Limit> {
        let aliased = self.aliased.saturating_add(extent.nodes);
        check(aliased, &self.limits, Limit::AliasedNodes)?;
        self.spend(extent, depth)?;
        self.aliased = aliased;
        Ok(())
    }
}

fn check(value: usize, limits: &Limits, limit: Limit) -> Result<(), Limit> {
    if value > limits.max(limit) {
        Err(limit)
    } else {
        Ok(())
    }
}
