"""The paper's findings, checked on a grid's numbers, each with a rule that says when it holds.

arXiv 2505.22922 (abstract and conclusions) finds: with a tuned optimizer full-rank training is best;
low-rank methods gain most from high-rank updates (Fira's residual over GaLore); weight
refactorization and momentum reset improve Low-Rank and SLTrain, and Low-Rank-restarts reaches a
lower perplexity than GaLore and Fira with about 25% less memory. Each finding compares the
validation perplexities of two methods, mean over seeds with sample standard deviation
:math:`\\sigma`, against the noise :math:`\\epsilon = \\max(\\sigma_a, \\sigma_b)` (0 for a single
seed). For an expected :math:`\\bar p_a \\le \\bar p_b` the difference is :math:`d = \\bar p_b -
\\bar p_a`, and

* "at or below" (full rank best, Fira at or below GaLore, Low-Rank-restarts at or below
  GaLore / Fira) holds when :math:`d \\ge -\\epsilon` and fails otherwise;
* "improves" (the restarts) holds when :math:`d > \\epsilon`, fails when :math:`d < -\\epsilon`,
  and is not resolved when the two are within one standard deviation.

A finding whose methods did not all finish is not tested; a method whose chosen learning rate
sits at an edge of its search, or was the grid's only rate, is named, since its number may not
be its best.

>>> rows = {"fira": (30.0, 0.2), "galore": (31.0, 0.3)}
>>> print(compare("Fira at or below GaLore", "fira", "galore", rows.get, strict=False).line)
- Fira at or below GaLore: holds (fira 30.00 ± 0.20 vs galore 31.00 ± 0.30: 1.00 lower)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from lowrank_jax.benchmark.results import MethodRow

# The methods arXiv 2505.22922 (section 4) benchmarks beside full-rank Adam: "full rank best"
# compares with these. Other optimizers a grid adds (Muon, Adafactor, Lion, a registered
# method) are reported beside the findings, not as rivals in them.
PAPER_METHODS = (
    "galore", "fira", "apollo", "apollo_mini", "golore", "spam", "stable_spam", "low_rank",
    "low_rank_restarts", "lora", "relora", "sltrain", "sltrain_restarts", "cola", "loro",
)  # fmt: skip

# The paper's reference ratio: Low-Rank-restarts' memory over GaLore's at 1B (its 1B memory comparison: 3.7/4.8 GB).
PAPER_MEMORY_RATIO = 0.77

Ppl = tuple[float, float | None]  # mean and standard deviation over seeds


class Finding(NamedTuple):
  """A checked finding: ``verdict`` is holds, fails, not resolved or not tested."""

  claim: str
  verdict: str
  line: str


def _shown(method: str, ppl: Ppl) -> str:
  return f"{method} {ppl[0]:.2f}" + (f" ± {ppl[1]:.2f}" if ppl[1] is not None else "")


def compare(
    claim: str, low: str, high: str, ppl_of: Callable[[str], Ppl | None], strict: bool
) -> Finding:
  """Checks that ``low``'s perplexity is at or below (``strict``: clearly below) ``high``'s."""
  low_ppl, high_ppl = ppl_of(low), ppl_of(high)
  if low_ppl is None or high_ppl is None:
    missing = low if low_ppl is None else high
    return Finding(claim, "not tested", f"- {claim}: not tested ({missing} has no finished run)")
  difference = high_ppl[0] - low_ppl[0]
  noise = max(low_ppl[1] or 0.0, high_ppl[1] or 0.0)
  if difference < -noise:
    verdict = "fails"
  elif strict and difference <= noise:
    verdict = "not resolved (within one std)"
  else:
    verdict = "holds"
  direction = "lower" if difference >= 0 else "higher"
  return Finding(
      claim,
      verdict.split(" (")[0],
      f"- {claim}: {verdict} ({_shown(low, low_ppl)} vs {_shown(high, high_ppl)}: "
      f"{abs(difference):.2f} {direction})",
  )


def _memory(rows: dict[str, MethodRow]) -> list[Finding]:
  claim = "Low-Rank-restarts needs less memory than GaLore and Fira"
  present = [m for m in ("galore", "fira") if m in rows]
  if "low_rank_restarts" not in rows or not present:
    return [Finding(claim, "not tested", f"- {claim}: not tested (missing methods)")]
  ratios = {m: rows["low_rank_restarts"].state_bytes / rows[m].state_bytes for m in present}
  verdict = "holds" if all(r < 1 for r in ratios.values()) else "fails"
  shown = ", ".join(f"{ratio:.0%} of {m}'s" for m, ratio in ratios.items())
  return [
      Finding(
          claim,
          verdict,
          f"- {claim}: {verdict} (parameters + optimizer state: {shown}; the paper's 1B: "
          f"about {PAPER_MEMORY_RATIO:.0%})",
      )
  ]


def _beyond_the_paper(by_method: dict[str, MethodRow], ppl_of) -> list[Finding]:
  """A note naming the methods outside the paper's that end below full rank (not a finding)."""
  if "full_rank" not in by_method:
    return []
  full_rank = ppl_of("full_rank")
  outside = (m for m in by_method if m != "full_rank" and m not in PAPER_METHODS)
  below = sorted((m for m in outside if ppl_of(m)[0] < full_rank[0]), key=lambda m: ppl_of(m)[0])
  if not below:
    return []
  shown = ", ".join(_shown(m, ppl_of(m)) for m in below)
  return [
      Finding(
          "beyond the paper",
          "note",
          f"- beyond the paper's methods (not a finding), below {_shown('full_rank', full_rank)}: "
          f"{shown}",
      )
  ]


def check_findings(rows: list[MethodRow]) -> list[Finding]:
  """The paper's findings on the rows of one model size."""
  by_method = {row.method: row for row in rows}
  ppl_of = lambda method: by_method[method].ppl() if method in by_method else None
  others = [m for m in by_method if m in PAPER_METHODS]
  rival = min(others, key=lambda m: ppl_of(m)[0]) if others else "any other method"
  checked = [compare("full rank best within one std", "full_rank", rival, ppl_of, strict=False)]
  checked += _beyond_the_paper(by_method, ppl_of)
  for claim, low, high, strict in (
      ("restarts improve Low-Rank", "low_rank_restarts", "low_rank", True),
      ("restarts improve SLTrain", "sltrain_restarts", "sltrain", True),
      ("Fira at or below GaLore", "fira", "galore", False),
      ("Low-Rank-restarts at or below GaLore", "low_rank_restarts", "galore", False),
      ("Low-Rank-restarts at or below Fira", "low_rank_restarts", "fira", False),
  ):
    checked.append(compare(claim, low, high, ppl_of, strict))
  checked += _memory(by_method)
  for what, untuned in (
      ("at an edge of its search", [m for m, row in by_method.items() if row.at_edge]),
      (
          "not searched, the grid's one rate",
          [m for m, row in by_method.items() if not row.searched],
      ),
  ):
    if untuned:
      line = f"- learning rate {what} (may not be the method's best): {', '.join(untuned)}"
      checked.append(Finding("tuning", "note", line))
  return checked


def finding_lines(rows: list[MethodRow]) -> list[str]:
  """The findings, size by size, as the report prints them."""
  lines = []
  for size in dict.fromkeys(r.size for r in rows):
    lines.append(f"{size}:")
    lines += [f.line for f in check_findings([r for r in rows if r.size == size])]
  return lines
