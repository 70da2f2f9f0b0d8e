"""The four claims of Stutz, Hein, Schiele (CVPR 2019) as numbers, from an experiment table.

`rows` is the grid's output: one dict per trained model with at least `mode`,
`train_size`, `seed`, `test_error` and `{regular,true,learned}_success_rate` (NaN where
that attack did not run). Everything here is pure and works on host numbers.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

ON_MANIFOLD_MODES = ("on_manifold_true", "on_manifold_learned")


def _mean(rows: Sequence[dict], key: str, **where: Any) -> float:
  vals = [r[key] for r in rows if all(r[k] == v for k, v in where.items())]
  vals = [v for v in vals if v is not None and np.isfinite(v)]
  return float(np.mean(vals)) if vals else float("nan")


def per_mode_table(rows: Sequence[dict], keys: Sequence[str]) -> dict[str, dict[str, dict]]:
  """{mode: {str(N): {key: mean over seeds, key + '_std': std, 'models': count}}}."""
  out: dict[str, dict[str, dict]] = {}
  for mode in dict.fromkeys(r["mode"] for r in rows):
    out[mode] = {}
    for n in sorted({r["train_size"] for r in rows if r["mode"] == mode}):
      sel = [r for r in rows if r["mode"] == mode and r["train_size"] == n]
      cell: dict[str, float] = {"models": len(sel)}
      for k in keys:
        v = np.asarray([r.get(k, np.nan) for r in sel], np.float64)
        v = v[np.isfinite(v)]
        cell[k] = float(v.mean()) if len(v) else float("nan")
        cell[k + "_std"] = float(v.std()) if len(v) else float("nan")
      out[mode][str(n)] = cell
  return out


def linear_fit(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
  """Least-squares y = slope * x + intercept with Pearson r and its two-sided p-value."""
  from scipy import stats
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  ok = np.isfinite(x) & np.isfinite(y)
  x, y = x[ok], y[ok]
  if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
    return {"slope": float("nan"), "intercept": float("nan"), "pearson_r": float("nan"),
            "p_value": float("nan"), "points": int(len(x))}
  fit = stats.linregress(x, y)
  return {"slope": float(fit.slope), "intercept": float(fit.intercept),
          "pearson_r": float(fit.rvalue), "p_value": float(fit.pvalue), "points": int(len(x))}


def _median(values) -> float:
  v = np.asarray(values, np.float64)
  v = v[np.isfinite(v)]
  return float(np.median(v)) if len(v) else float("nan")


def compute_claims(rows: Sequence[dict], study: dict[str, dict[str, Sequence[float]]]
                   ) -> dict[str, Any]:
  """The `claims` block of results.json.

  study: `evaluation.distance_study` output for one normally trained model, as lists.
  """
  sizes = sorted({r["train_size"] for r in rows})
  modes = list(dict.fromkeys(r["mode"] for r in rows))
  claims: dict[str, Any] = {}
  # (1) Regular adversarial examples leave the manifold.
  claims["regular_leave_manifold"] = {
      kind: _median(study[kind]["ratio_true"]) if kind in study else float("nan")
      for kind in ("regular", "learned", "true")}
  claims["orthogonal_fraction"] = {
      kind: _median(study[kind]["orthogonal"]) if kind in study else float("nan")
      for kind in ("regular", "learned", "true")}
  # (2) On-manifold adversarial examples exist (for the normally trained models).
  claims["on_manifold_success_normal"] = {
      kind: {str(n): _mean(rows, f"{kind}_success_rate", mode="normal", train_size=n)
             for n in sizes} for kind in ("true", "learned")}
  # (3) They are generalization errors: on-manifold training lowers both.
  gain = {}
  for mode in (m for m in ON_MANIFOLD_MODES if m in modes):
    gain[mode] = {str(n): {
        "test_error": _mean(rows, "test_error", mode="normal", train_size=n)
        - _mean(rows, "test_error", mode=mode, train_size=n),
        "true_success": _mean(rows, "true_success_rate", mode="normal", train_size=n)
        - _mean(rows, "true_success_rate", mode=mode, train_size=n),
        "learned_success": _mean(rows, "learned_success_rate", mode="normal", train_size=n)
        - _mean(rows, "learned_success_rate", mode=mode, train_size=n),
    } for n in sizes}
  claims["on_manifold_training_gain"] = gain
  claims["success_error_pearson_r"] = {
      kind: linear_fit([r["test_error"] for r in rows],
                       [r.get(f"{kind}_success_rate", np.nan) for r in rows])
      for kind in ("true", "learned")}
  # (4) Regular robustness and generalization are not necessarily contradicting:
  # off-manifold (regular) adversarial training changes test error little while it
  # lowers regular success.
  if "adversarial" in modes:
    claims["off_manifold_training_error_gap"] = {str(n): {
        "test_error": _mean(rows, "test_error", mode="adversarial", train_size=n)
        - _mean(rows, "test_error", mode="normal", train_size=n),
        "regular_success": _mean(rows, "regular_success_rate", mode="adversarial",
                                 train_size=n)
        - _mean(rows, "regular_success_rate", mode="normal", train_size=n),
    } for n in sizes}
  return claims
