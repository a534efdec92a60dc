//! `weave plan --cost`: the session's cost plan (`weave::cost_plan`) as a table.

use std::path::Path;

use crate::Failure;

/// The cost plan of the pipeline file `file` against the cache in `cache_dir`, with the
/// run records beside the file for the answers' lengths.
pub(crate) fn estimate(file: &Path, cache_dir: &Path) -> Result<weave::CostPlan, Failure> {
    let pf = crate::read_file(file)?;
    let options = weave::BuildOptions::default();
    weave::cost_plan(&pf, &weave::registry(), &options, cache_dir, &weave::runs_dir(file)).map_err(|e| match e {
        weave::CostError::Invalid(d) => Failure::Other(d.to_string()),
        other => Failure::Other(other.to_string()),
    })
}

/// The plan as a table, one line per LLM step, and the total.
pub(crate) fn table(plan: &weave::CostPlan) -> String {
    let mut out =
        String::from("\nLLM requests (estimated before anything is sent; prices in the providers' currency):\n");
    if plan.steps.is_empty() {
        out.push_str("no LLM step\n");
        return out;
    }
    let header = ["step", "provider", "new requests", "from the cache", "prompt tokens", "answer tokens", "cost"];
    let rows: Vec<[String; 7]> = plan
        .steps
        .iter()
        .map(|s| {
            let provider = if s.batch { format!("{} (batch)", s.provider) } else { s.provider.clone() };
            if s.output_cached {
                return [
                    s.step.clone(),
                    provider,
                    "0".into(),
                    "output cached".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ];
            }
            [
                s.step.clone(),
                provider,
                count(s.new_requests),
                count(s.cache_hits),
                format!("~{}", count(s.prompt_tokens)),
                format!("~{} ({})", count(s.completion_tokens), s.answer_basis.label()),
                s.cost.map_or_else(|| "no prices".to_owned(), |c| format!("~{}", money(c))),
            ]
        })
        .collect();
    out.push_str(&crate::table::render(&header, &rows));
    let new: u64 = plan.steps.iter().map(|s| s.new_requests).sum();
    let hits: u64 = plan.steps.iter().map(|s| s.cache_hits).sum();
    let cost = plan.total_cost().map_or_else(String::new, |c| format!(", about {}", money(c)));
    out.push_str(&format!("total: {} new requests{cost}; {} answered from the cache\n", count(new), count(hits)));
    out
}

/// A count with thousands separated: `4,212`.
fn count(n: u64) -> String {
    weave::format_count(n)
}

/// An amount: cents from 1 up, four significant digits below.
fn money(x: f64) -> String {
    if x >= 1.0 || x == 0.0 { format!("{x:.2}") } else { format!("{:.1$}", x, (-x.log10().floor()) as usize + 3) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_amounts_read_as_people_write_them() {
        assert_eq!(
            (count(0), count(999), count(4212), count(18_000_000)),
            ("0".into(), "999".into(), "4,212".into(), "18,000,000".into())
        );
        assert_eq!((money(3.1), money(0.0), money(0.004_567_8)), ("3.10".into(), "0.00".into(), "0.004568".into()));
    }
}
