//! The DAG: steps with ids and dependencies, validated, ordered and levelled.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt::Write as _;

use crate::diagnostic::{Diagnostic, Diagnostics, Location, did_you_mean};
use crate::step::Shape;

/// A dependency as written: the id of the step to run after, and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dep {
    /// The id of the step depended on.
    pub id: String,
    /// Where it was written, for messages.
    pub location: Option<Location>,
}

impl Dep {
    /// A dependency on `id`.
    pub fn new(id: impl Into<String>) -> Self {
        Dep { id: id.into(), location: None }
    }
}

/// One node before validation: what [`Dag::build`] takes.
#[derive(Debug, Clone)]
pub struct NodeSpec<T> {
    /// The node's id, unique in the DAG.
    pub id: String,
    /// The node's shape.
    pub shape: Shape,
    /// The nodes whose output it takes, in input order. `None` means "follow the node
    /// declared before" (or nothing, for a source), so that a plain list is a chain;
    /// `Some(vec![])` makes the node a root.
    pub after: Option<Vec<Dep>>,
    /// A relative cost estimate, for the critical path.
    pub cost: f64,
    /// Where the node was declared, for messages.
    pub location: Option<Location>,
    /// What the DAG carries for the node (the step itself, in a pipeline).
    pub payload: T,
}

impl<T> NodeSpec<T> {
    /// A node that follows the one declared before it.
    pub fn new(id: impl Into<String>, shape: Shape, payload: T) -> Self {
        NodeSpec { id: id.into(), shape, after: None, cost: 1.0, location: None, payload }
    }

    /// Sets the nodes it follows.
    pub fn after<S: Into<String>>(mut self, deps: impl IntoIterator<Item = S>) -> Self {
        self.after = Some(deps.into_iter().map(|d| Dep::new(d)).collect());
        self
    }

    /// Sets the cost estimate.
    pub fn cost(mut self, cost: f64) -> Self {
        self.cost = cost;
        self
    }
}

/// A validated node.
#[derive(Debug)]
pub struct Node<T> {
    /// The node's id.
    pub id: String,
    /// The node's shape.
    pub shape: Shape,
    /// The indices of the nodes it takes input from, in input order.
    pub inputs: Vec<usize>,
    /// The relative cost estimate.
    pub cost: f64,
    /// Where it was declared.
    pub location: Option<Location>,
    /// What the DAG carries for it.
    pub payload: T,
}

/// The longest path through the DAG by estimated cost: what bounds the run's wall time
/// however many workers there are.
#[derive(Debug, Clone, PartialEq)]
pub struct CriticalPath {
    /// The nodes on the path, first to last.
    pub nodes: Vec<usize>,
    /// The sum of their costs.
    pub cost: f64,
}

/// A validated DAG: no duplicate ids, no unknown dependencies, no cycles, shapes that fit.
///
/// Nodes are addressed by their index, in declaration order.
#[derive(Debug)]
pub struct Dag<T> {
    nodes: Vec<Node<T>>,
    consumers: Vec<Vec<usize>>,
    order: Vec<usize>,
    levels: Vec<Vec<usize>>,
    level_of: Vec<usize>,
    warnings: Diagnostics,
}

impl<T> Dag<T> {
    /// Validates the nodes and builds the DAG. On failure, every problem found is listed;
    /// on success, problems that do not stop a run are kept as [`Dag::warnings`].
    pub fn build(specs: Vec<NodeSpec<T>>) -> Result<Dag<T>, Diagnostics> {
        let mut diags = Diagnostics::default();

        // Ids: unique, and short enough to name the step in tables, logs and labels. (A
        // pipeline file's ids are checked where they are written; these come from Rust.)
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(specs.len());
        for (i, s) in specs.iter().enumerate() {
            let chars = s.id.chars().count();
            if chars > crate::spec::MAX_ID_CHARS {
                diags.push(
                    Diagnostic::error(format!(
                        "step id `{}` is {chars} characters long: ids are at most {}",
                        crate::diagnostic::clip(&s.id, 40),
                        crate::spec::MAX_ID_CHARS
                    ))
                    .with_code("invalid-value")
                    .at(s.location.clone()),
                );
            }
            if let Some(&first) = index.get(s.id.as_str()) {
                let mut d = Diagnostic::error(format!("duplicate step id `{}`", s.id))
                    .with_code("duplicate-id")
                    .with_step(&s.id)
                    .at(s.location.clone());
                if let Some(l) = &specs[first].location {
                    d = d.with_help(format!("the first step with this id is at {l}; ids must be unique"));
                }
                diags.push(d);
            } else {
                index.insert(&s.id, i);
            }
        }

        // Dependencies: resolved, with the chain rule for nodes without `after`.
        let mut inputs: Vec<Vec<usize>> = Vec::with_capacity(specs.len());
        for (i, s) in specs.iter().enumerate() {
            let mut ins = Vec::new();
            match &s.after {
                None if s.shape == Shape::Source => {}
                None if i == 0 => {
                    diags.push(
                        Diagnostic::error(format!("this {} has no input", s.shape)).with_code("shape")
                            .with_step(&s.id)
                            .at(s.location.clone())
                            .with_help("it is the first step, so nothing comes before it: start with a source, or name its input with `after`"),
                    );
                }
                None => {
                    let prev = &specs[i - 1];
                    if prev.shape == Shape::Sink {
                        diags.push(
                            Diagnostic::error(format!("this {} follows sink `{}`, which has no output", s.shape, prev.id)).with_code("shape")
                                .with_step(&s.id)
                                .at(s.location.clone())
                                .with_help("a step without `after` takes the output of the step written before it; name its input with `after = [\"...\"]`"),
                        );
                    } else {
                        ins.push(i - 1);
                    }
                }
                Some(deps) => {
                    for d in deps {
                        match index.get(d.id.as_str()) {
                            Some(&j) if ins.contains(&j) => diags.push(
                                Diagnostic::error(format!("`{}` is listed twice in `after`", d.id))
                                    .with_code("duplicate-dep")
                                    .with_step(&s.id)
                                    .at(d.location.clone().or_else(|| s.location.clone())),
                            ),
                            Some(&j) => ins.push(j),
                            None => {
                                let mut diag = Diagnostic::error(format!("unknown step `{}` in `after`", d.id))
                                    .with_code("unknown-dep")
                                    .with_step(&s.id)
                                    .at(d.location.clone().or_else(|| s.location.clone()));
                                if let Some(m) = did_you_mean(&d.id, specs.iter().map(|s| s.id.as_str())) {
                                    diag = diag.with_help(format!("did you mean `{m}`?"));
                                }
                                diags.push(diag);
                            }
                        }
                    }
                }
            }
            inputs.push(ins);
        }

        // Shapes: each step's inputs fit what it is.
        for (i, s) in specs.iter().enumerate() {
            let ins = &inputs[i];
            let here = || Diagnostic::error("").with_code("shape").with_step(&s.id).at(s.location.clone());
            if s.shape == Shape::Source && !ins.is_empty() {
                diags.push(Diagnostic {
                    message: "a source takes no input, but this one has `after`".into(),
                    help: Some("remove `after`, or use a transform".into()),
                    ..here()
                });
            }
            if s.shape.has_inputs() && !s.shape.takes_many_inputs() && ins.len() > 1 {
                diags.push(Diagnostic {
                    message: format!("a {} takes one input, but this one has {}", s.shape, ins.len()),
                    help: Some("combine the inputs with a merge step first".into()),
                    ..here()
                });
            }
            if s.shape.has_inputs() && ins.is_empty() && s.after.as_ref().is_some_and(Vec::is_empty) {
                diags.push(Diagnostic {
                    message: format!("this {} has no input (`after = []`)", s.shape),
                    help: Some("only a source can be a root; name its input with `after`".into()),
                    ..here()
                });
            }
            for &j in ins {
                if specs[j].shape == Shape::Sink && s.after.is_some() {
                    diags.push(Diagnostic {
                        message: format!("`{}` is a sink and has no output to feed this step", specs[j].id),
                        help: Some("take the input from the step before the sink".into()),
                        ..here()
                    });
                }
            }
        }

        let n = specs.len();
        let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, ins) in inputs.iter().enumerate() {
            for &j in ins {
                consumers[j].push(i);
            }
        }

        // Order (Kahn's algorithm; ties go to declaration order, so the order is stable).
        let mut indegree: Vec<usize> = inputs.iter().map(Vec::len).collect();
        let mut ready: BinaryHeap<Reverse<usize>> = (0..n).filter(|&i| indegree[i] == 0).map(Reverse).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(Reverse(i)) = ready.pop() {
            order.push(i);
            for &c in &consumers[i] {
                indegree[c] -= 1;
                if indegree[c] == 0 {
                    ready.push(Reverse(c));
                }
            }
        }
        if order.len() < n {
            for cycle in find_cycles(&consumers, &indegree) {
                let path: Vec<&str> = cycle.iter().chain(cycle.first()).map(|&i| specs[i].id.as_str()).collect();
                diags.push(
                    Diagnostic::error(format!("cycle: {}", path.join(" -> "))).with_code("cycle")
                        .with_step(&specs[cycle[0]].id)
                        .at(specs[cycle[0]].location.clone())
                        .with_help("a step cannot depend, directly or through others, on its own output; remove one of these dependencies"),
                );
            }
        }

        if diags.has_errors() {
            return Err(diags);
        }

        // Warnings: output that nothing uses.
        for (i, s) in specs.iter().enumerate() {
            if s.shape.has_output() && consumers[i].is_empty() {
                diags.push(
                    Diagnostic::warning(format!("the output of this {} is not used by any step", s.shape))
                        .with_code("unused-output")
                        .with_step(&s.id)
                        .at(s.location.clone())
                        .with_help("add a sink after it (an export step), or remove it"),
                );
            }
        }

        // Levels: a node's level is one more than its deepest input's.
        let mut level_of = vec![0usize; n];
        for &i in &order {
            level_of[i] = inputs[i].iter().map(|&j| level_of[j] + 1).max().unwrap_or(0);
        }
        let depth = level_of.iter().copied().max().map_or(0, |m| m + 1);
        let mut levels = vec![Vec::new(); depth];
        for &i in &order {
            levels[level_of[i]].push(i);
        }

        let nodes = specs
            .into_iter()
            .zip(inputs)
            .map(|(s, inputs)| Node {
                id: s.id,
                shape: s.shape,
                inputs,
                cost: s.cost,
                location: s.location,
                payload: s.payload,
            })
            .collect();
        Ok(Dag { nodes, consumers, order, levels, level_of, warnings: diags })
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The nodes in declaration order.
    pub fn nodes(&self) -> &[Node<T>] {
        &self.nodes
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &Node<T> {
        &self.nodes[i]
    }

    /// The index of the node called `id`.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    /// The nodes that take node `i`'s output.
    pub fn consumers(&self, i: usize) -> &[usize] {
        &self.consumers[i]
    }

    /// Every edge as (from, to): data flows from `from` into `to`.
    pub fn edges(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.nodes.iter().enumerate().flat_map(|(i, n)| n.inputs.iter().map(move |&j| (j, i)))
    }

    /// A topological order: every node after all of its inputs; ties in declaration order.
    pub fn topological_order(&self) -> &[usize] {
        &self.order
    }

    /// The parallel levels: level 0 holds the roots, level k the nodes whose deepest input
    /// is on level k-1. Nodes on one level never depend on each other.
    pub fn levels(&self) -> &[Vec<usize>] {
        &self.levels
    }

    /// The level of node `i`.
    pub fn level_of(&self, i: usize) -> usize {
        self.level_of[i]
    }

    /// Problems that do not stop a run (output that nothing uses).
    pub fn warnings(&self) -> &Diagnostics {
        &self.warnings
    }

    /// The longest path by estimated cost.
    pub fn critical_path(&self) -> CriticalPath {
        let n = self.nodes.len();
        let mut best = vec![0f64; n];
        let mut prev: Vec<Option<usize>> = vec![None; n];
        for &i in &self.order {
            let (p, c) = self.nodes[i]
                .inputs
                .iter()
                .map(|&j| (Some(j), best[j]))
                .fold((None, 0f64), |acc, x| if x.1 > acc.1 || acc.0.is_none() { x } else { acc });
            best[i] = c + self.nodes[i].cost;
            prev[i] = p;
        }
        let Some(mut end) = (0..n).max_by(|&a, &b| best[a].total_cmp(&best[b]).then(b.cmp(&a))) else {
            return CriticalPath { nodes: Vec::new(), cost: 0.0 };
        };
        let cost = best[end];
        let mut nodes = vec![end];
        while let Some(p) = prev[end] {
            nodes.push(p);
            end = p;
        }
        nodes.reverse();
        CriticalPath { nodes, cost }
    }

    /// The nodes, taken out, in declaration order.
    pub fn into_nodes(self) -> Vec<Node<T>> {
        self.nodes
    }

    /// The same DAG carrying `f(payload)` for each node.
    pub fn map<U>(self, mut f: impl FnMut(usize, T) -> U) -> Dag<U> {
        let nodes = self
            .nodes
            .into_iter()
            .enumerate()
            .map(|(i, n)| Node {
                id: n.id,
                shape: n.shape,
                inputs: n.inputs,
                cost: n.cost,
                location: n.location,
                payload: f(i, n.payload),
            })
            .collect();
        Dag {
            nodes,
            consumers: self.consumers,
            order: self.order,
            levels: self.levels,
            level_of: self.level_of,
            warnings: self.warnings,
        }
    }

    /// The DAG in Graphviz DOT; `label` gives each node's label lines.
    pub fn to_dot(&self, name: &str, label: impl Fn(usize, &Node<T>) -> String) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "digraph {} {{", dot_id(name));
        out.push_str("  rankdir=LR;\n  node [shape=box, style=rounded, fontname=\"Helvetica\"];\n");
        for (i, n) in self.nodes.iter().enumerate() {
            let shape = match n.shape {
                Shape::Source => ", shape=cylinder",
                Shape::Sink => ", shape=folder",
                Shape::Merge => ", shape=invtrapezium",
                _ => "",
            };
            let _ = writeln!(out, "  {} [label={}{}];", dot_id(&n.id), dot_id(&label(i, n)), shape);
        }
        for (from, to) in self.edges() {
            let _ = writeln!(out, "  {} -> {};", dot_id(&self.nodes[from].id), dot_id(&self.nodes[to].id));
        }
        out.push_str("}\n");
        out
    }

    /// The DAG as a Mermaid flowchart; `label` gives each node's label.
    pub fn to_mermaid(&self, label: impl Fn(usize, &Node<T>) -> String) -> String {
        let mut out = String::from("flowchart LR\n");
        for (i, n) in self.nodes.iter().enumerate() {
            let text = mermaid_text(&label(i, n));
            let (open, close) = match n.shape {
                Shape::Source => ("[(", ")]"),
                Shape::Sink => ("[/", "/]"),
                Shape::Merge => ("{{", "}}"),
                _ => ("(", ")"),
            };
            let _ = writeln!(out, "  n{i}{open}\"{text}\"{close}");
        }
        for (from, to) in self.edges() {
            let _ = writeln!(out, "  n{from} --> n{to}");
        }
        out
    }
}

/// A quoted DOT identifier.
fn dot_id(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Text safe inside a quoted Mermaid label.
fn mermaid_text(s: &str) -> String {
    s.replace('"', "#quot;").replace('\n', "<br/>")
}

/// One cycle per strongly connected component of the nodes left with inputs after
/// Kahn's algorithm (those on or downstream of a cycle), each the shortest cycle through
/// the component's first-declared node, starting there.
fn find_cycles(consumers: &[Vec<usize>], indegree: &[usize]) -> Vec<Vec<usize>> {
    let n = consumers.len();
    let left: Vec<bool> = indegree.iter().map(|&d| d > 0).collect();
    let fwd = |i: usize| consumers[i].iter().copied().filter(|&j| left[j]);
    let mut rev: Vec<Vec<usize>> = vec![Vec::new(); n];
    for i in (0..n).filter(|&i| left[i]) {
        for j in fwd(i) {
            rev[j].push(i);
        }
    }

    // Kosaraju, iteratively (a 10,000-node chain must not overflow the stack).
    let mut seen = vec![false; n];
    let mut post = Vec::new();
    for s in (0..n).filter(|&i| left[i]) {
        if seen[s] {
            continue;
        }
        seen[s] = true;
        let mut stack = vec![(s, 0usize)];
        while let Some((v, k)) = stack.last_mut() {
            let next = consumers[*v].iter().copied().filter(|&j| left[j]).nth(*k);
            *k += 1;
            match next {
                Some(w) if !seen[w] => {
                    seen[w] = true;
                    stack.push((w, 0));
                }
                Some(_) => {}
                None => {
                    post.push(*v);
                    stack.pop();
                }
            }
        }
    }
    let mut comp = vec![usize::MAX; n];
    let mut comps: Vec<Vec<usize>> = Vec::new();
    for &s in post.iter().rev() {
        if comp[s] != usize::MAX {
            continue;
        }
        let c = comps.len();
        let mut members = vec![s];
        comp[s] = c;
        let mut stack = vec![s];
        while let Some(v) = stack.pop() {
            for &w in &rev[v] {
                if comp[w] == usize::MAX {
                    comp[w] = c;
                    members.push(w);
                    stack.push(w);
                }
            }
        }
        comps.push(members);
    }

    let mut cycles = Vec::new();
    for members in &comps {
        let start = *members.iter().min().unwrap_or(&0);
        let c = comp[start];
        let self_loop = consumers[start].contains(&start);
        if members.len() == 1 && !self_loop {
            continue;
        }
        if self_loop {
            cycles.push(vec![start]);
            continue;
        }
        // Breadth-first from `start` inside the component, back to `start`.
        let mut parent = vec![usize::MAX; n];
        let mut queue = VecDeque::from([start]);
        let mut last = None;
        'bfs: while let Some(v) = queue.pop_front() {
            for w in fwd(v) {
                if comp[w] != c {
                    continue;
                }
                if w == start {
                    last = Some(v);
                    break 'bfs;
                }
                if parent[w] == usize::MAX {
                    parent[w] = v;
                    queue.push_back(w);
                }
            }
        }
        if let Some(mut v) = last {
            let mut path = vec![v];
            while v != start {
                v = parent[v];
                path.push(v);
            }
            path.reverse();
            cycles.push(path);
        }
    }
    cycles.sort_by_key(|c| c[0]);
    cycles
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, shape: Shape, after: &[&str]) -> NodeSpec<()> {
        NodeSpec::new(id, shape, ()).after(after.iter().copied())
    }

    fn check_err(specs: Vec<NodeSpec<()>>, expected: &[&str]) {
        let err = Dag::build(specs).unwrap_err();
        let got: Vec<String> = err.0.iter().filter(|d| d.is_error()).map(|d| d.message.clone()).collect();
        assert_eq!(got, expected, "\n{err}");
    }

    #[test]
    fn a_plain_list_is_a_chain() {
        let dag = Dag::build(vec![
            NodeSpec::new("load", Shape::Source, ()),
            NodeSpec::new("clean", Shape::Transform, ()),
            NodeSpec::new("export", Shape::Sink, ()),
        ])
        .unwrap();
        assert_eq!(dag.edges().collect::<Vec<_>>(), [(0, 1), (1, 2)]);
        assert_eq!(dag.levels(), [vec![0], vec![1], vec![2]]);
        assert!(dag.warnings().is_empty());
    }

    #[test]
    fn a_diamond_has_a_parallel_level() {
        let dag = Dag::build(vec![
            node("a", Shape::Source, &[]),
            node("b", Shape::Transform, &["a"]),
            node("c", Shape::Transform, &["a"]),
            node("d", Shape::Merge, &["b", "c"]),
            node("out", Shape::Sink, &["d"]),
        ])
        .unwrap();
        assert_eq!(dag.levels(), [vec![0], vec![1, 2], vec![3], vec![4]]);
        assert_eq!(dag.topological_order(), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn cycles_are_printed_in_full() {
        check_err(
            vec![
                node("a", Shape::Transform, &["c"]),
                node("b", Shape::Transform, &["a"]),
                node("c", Shape::Transform, &["b"]),
            ],
            &["cycle: a -> b -> c -> a"],
        );
        // regression: a self-loop is a cycle of one.
        check_err(vec![node("a", Shape::Transform, &["a"])], &["cycle: a -> a"]);
    }

    #[test]
    fn two_separate_cycles_are_both_reported() {
        check_err(
            vec![
                node("s", Shape::Source, &[]),
                node("a", Shape::Merge, &["s", "b"]),
                node("b", Shape::Transform, &["a"]),
                node("x", Shape::Merge, &["b", "y"]),
                node("y", Shape::Transform, &["x"]),
            ],
            &["cycle: a -> b -> a", "cycle: x -> y -> x"],
        );
    }

    #[test]
    fn bad_references_and_shapes_are_each_named() {
        check_err(
            vec![
                node("load", Shape::Source, &[]),
                node("load", Shape::Source, &[]),
                node("clean", Shape::Transform, &["laod"]),
                node("out", Shape::Sink, &["load"]),
                node("more", Shape::Transform, &["out"]),
                node("src2", Shape::Source, &["load"]),
                node("two", Shape::Transform, &["load", "more"]),
            ],
            &[
                "duplicate step id `load`",
                "unknown step `laod` in `after`",
                "`out` is a sink and has no output to feed this step",
                "a source takes no input, but this one has `after`",
                "a transform takes one input, but this one has 2",
            ],
        );
        let err =
            Dag::build(vec![node("load", Shape::Source, &[]), node("clean", Shape::Transform, &["laod"])]).unwrap_err();
        assert_eq!(err.0[0].help.as_deref(), Some("did you mean `load`?"));
    }

    #[test]
    fn implicit_follow_of_a_sink_is_an_error() {
        let err = Dag::build(vec![
            NodeSpec::new("load", Shape::Source, ()),
            NodeSpec::new("out", Shape::Sink, ()),
            NodeSpec::new("late", Shape::Transform, ()),
        ])
        .unwrap_err();
        assert!(err.0[0].message.contains("follows sink `out`"), "{err}");
    }

    #[test]
    fn unused_output_is_a_warning() {
        let dag =
            Dag::build(vec![NodeSpec::new("load", Shape::Source, ()), NodeSpec::new("clean", Shape::Transform, ())])
                .unwrap();
        let w: Vec<_> = dag.warnings().0.iter().map(|d| (d.step.clone().unwrap(), d.message.clone())).collect();
        assert_eq!(w, [("clean".to_owned(), "the output of this transform is not used by any step".to_owned())]);
    }

    #[test]
    fn critical_path_follows_the_costliest_branch() {
        let dag = Dag::build(vec![
            node("a", Shape::Source, &[]).cost(1.0),
            node("cheap", Shape::Transform, &["a"]).cost(1.0),
            node("llm", Shape::Transform, &["a"]).cost(100.0),
            node("m", Shape::Merge, &["cheap", "llm"]).cost(1.0),
            node("out", Shape::Sink, &["m"]).cost(1.0),
        ])
        .unwrap();
        let cp = dag.critical_path();
        let ids: Vec<&str> = cp.nodes.iter().map(|&i| dag.node(i).id.as_str()).collect();
        assert_eq!(ids, ["a", "llm", "m", "out"]);
        assert_eq!(cp.cost, 103.0);
    }

    #[test]
    fn graphs_render() {
        let dag = Dag::build(vec![node("a", Shape::Source, &[]), node("b \"q\"", Shape::Sink, &["a"])]).unwrap();
        let dot = dag.to_dot("p", |_, n| n.id.clone());
        assert!(dot.contains("\"a\" -> \"b \\\"q\\\"\";"), "{dot}");
        let mm = dag.to_mermaid(|_, n| n.id.clone());
        assert!(mm.contains("n1[/\"b #quot;q#quot;\"/]") && mm.contains("n0 --> n1"), "{mm}");
    }
}
