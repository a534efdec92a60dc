//! Random DAGs: the order respects every edge, every level is an antichain, and an
//! injected cycle is always found and printed as a real cycle.

use std::collections::HashSet;

use proptest::prelude::*;
use weave_core::{Dag, Dep, NodeSpec, Shape};

/// A random DAG as (declaration order of node ids, edges as (from, to) over node numbers).
/// Node numbers are a topological order; declaration order is a shuffle of it, so the
/// builder cannot lean on declaration order.
fn random_dag() -> impl Strategy<Value = (Vec<usize>, Vec<(usize, usize)>)> {
    (2usize..40).prop_flat_map(|n| {
        let edges = proptest::collection::vec((0..n, 0..n), 0..n * 2).prop_map(|pairs| {
            let set: HashSet<(usize, usize)> =
                pairs.into_iter().filter(|(a, b)| a != b).map(|(a, b)| (a.min(b), a.max(b))).collect();
            let mut v: Vec<_> = set.into_iter().collect();
            v.sort_unstable();
            v
        });
        (Just((0..n).collect::<Vec<_>>()).prop_shuffle(), edges)
    })
}

fn id(i: usize) -> String {
    format!("n{i}")
}

/// Node specs in declaration order: a node without inputs is a source, the others merges
/// (which take any number of inputs), so that every random DAG is well-shaped.
fn specs(decl: &[usize], edges: &[(usize, usize)]) -> Vec<NodeSpec<usize>> {
    decl.iter()
        .map(|&i| {
            let deps: Vec<Dep> = edges.iter().filter(|(_, to)| *to == i).map(|(from, _)| Dep::new(id(*from))).collect();
            let shape = if deps.is_empty() { Shape::Source } else { Shape::Merge };
            NodeSpec { id: id(i), shape, after: Some(deps), cost: 1.0 + (i % 7) as f64, location: None, payload: i }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn order_respects_every_edge((decl, edges) in random_dag()) {
        let dag = Dag::build(specs(&decl, &edges)).map_err(|d| TestCaseError::fail(d.to_string()))?;
        let order = dag.topological_order();
        prop_assert_eq!(order.len(), decl.len());
        let mut pos = vec![usize::MAX; dag.len()];
        for (p, &i) in order.iter().enumerate() {
            prop_assert_eq!(pos[i], usize::MAX, "node listed twice");
            pos[i] = p;
        }
        for (from, to) in dag.edges() {
            prop_assert!(pos[from] < pos[to], "{} comes after {}", dag.node(from).id, dag.node(to).id);
        }
    }

    #[test]
    fn levels_are_antichains_covering_every_node((decl, edges) in random_dag()) {
        let dag = Dag::build(specs(&decl, &edges)).map_err(|d| TestCaseError::fail(d.to_string()))?;
        let mut seen = 0;
        for level in dag.levels() {
            seen += level.len();
            let set: HashSet<usize> = level.iter().copied().collect();
            for (from, to) in dag.edges() {
                prop_assert!(!(set.contains(&from) && set.contains(&to)), "edge inside a level");
            }
        }
        prop_assert_eq!(seen, dag.len());
        for (from, to) in dag.edges() {
            prop_assert!(dag.level_of(from) < dag.level_of(to));
        }
        let cp = dag.critical_path();
        for w in cp.nodes.windows(2) {
            prop_assert!(dag.node(w[1]).inputs.contains(&w[0]), "critical path is not a path");
        }
        let sum: f64 = cp.nodes.iter().map(|&i| dag.node(i).cost).sum();
        prop_assert!((sum - cp.cost).abs() < 1e-9);
    }

    #[test]
    fn an_injected_cycle_is_always_found((decl, edges) in random_dag(), pick in any::<prop::sample::Index>(), hops in 0usize..5) {
        prop_assume!(!edges.is_empty());
        // Walk forward from a random edge to get a path a -> ... -> b, then add b -> a.
        let (a, mut b) = edges[pick.index(edges.len())];
        for _ in 0..hops {
            match edges.iter().find(|(from, _)| *from == b) {
                Some(&(_, next)) => b = next,
                None => break,
            }
        }
        let mut with_cycle = edges.clone();
        with_cycle.push((b, a));
        let err = match Dag::build(specs(&decl, &with_cycle)) {
            Ok(_) => return Err(TestCaseError::fail("a cyclic graph was accepted")),
            Err(e) => e,
        };
        let cycles: Vec<&str> = err.0.iter().filter(|d| d.code == "cycle").map(|d| d.message.as_str()).collect();
        prop_assert_eq!(cycles.len(), 1, "{}", err);
        // The printed cycle is real: every arrow is an edge, and it closes.
        let ids: Vec<&str> = cycles[0].trim_start_matches("cycle: ").split(" -> ").collect();
        prop_assert_eq!(ids.first(), ids.last());
        let edge_set: HashSet<(String, String)> = with_cycle.iter().map(|&(f, t)| (id(f), id(t))).collect();
        for w in ids.windows(2) {
            prop_assert!(edge_set.contains(&(w[0].to_owned(), w[1].to_owned())), "{} -> {} is not an edge", w[0], w[1]);
        }
    }
}
