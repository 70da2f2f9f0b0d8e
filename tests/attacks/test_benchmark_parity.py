"""The verdict of benchmarks/attacks_vs_peers.py, on made-up results (no torch needed)."""
from __future__ import annotations

from benchmarks.attacks_vs_peers import PARITY_EPS, parity_failures

GRID = (0.03, 0.06, 0.3)


def results(rsec, peer):
  out = {}
  for name in ("pgd40", "apgd_ce"):
    for eps, ours, theirs in zip(GRID, rsec, peer):
      out[f"robust_accuracy/{name}/eps={eps:g}/rsec"] = ours
      out[f"robust_accuracy/{name}/eps={eps:g}/torchattacks"] = theirs
  return out


def test_passes_within_one_point_with_a_discriminating_eps():
  out = results([0.575, 0.10, 0.0], [0.570, 0.095, 0.0])
  assert parity_failures(out, ["pgd40", "apgd_ce"], GRID) == []
  # Being stronger than the peer is never a failure.
  assert parity_failures(results([0.3, 0.0, 0.0], [0.57, 0.1, 0.0]), ["pgd40"], GRID) == []


def test_fails_when_rsec_is_weaker_by_more_than_one_point():
  out = results([0.59, 0.10, 0.0], [0.57, 0.095, 0.0])
  failures = parity_failures(out, ["pgd40", "apgd_ce"], GRID)
  assert len(failures) == 2 and all("eps=0.03" in f and "weaker" in f for f in failures)


def test_fails_when_no_eps_discriminates():
  out = results([0.9, 0.05, 0.0], [0.9, 0.05, 0.0])
  failures = parity_failures(out, ["pgd40"], GRID)
  assert len(failures) == 1 and "no eps" in failures[0]


def test_default_grid_has_an_eps_between_the_two_that_discriminated():
  assert any(0.03 < e < 0.06 for e in PARITY_EPS) and {0.03, 0.06} <= set(PARITY_EPS)
