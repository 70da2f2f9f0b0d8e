"""The claims block: tables, differences and the regression, on hand-made experiment rows."""
import numpy as np

from rsec.manifold import claims


def _rows(seed=0):
  """Rows where on-manifold training halves error and success; adversarial adds 0.01."""
  rng = np.random.default_rng(seed)
  out = []
  for n, base in ((500, 0.4), (2000, 0.2)):
    for s in range(2):
      jitter = 0.01 * rng.standard_normal()
      for mode, err in (("normal", base), ("on_manifold_true", base / 2),
                        ("adversarial", base + 0.01)):
        e = err + jitter
        out.append({"mode": mode, "train_size": n, "seed": s, "test_error": e,
                    "true_success_rate": 2 * e, "learned_success_rate": float("nan"),
                    "regular_success_rate": 0.2 if mode == "adversarial" else 0.9})
  return out


def _study():
  return {"regular": {"ratio_true": [0.9, 1.0, 0.95], "orthogonal": [0.99, 0.98, 1.0]},
          "true": {"ratio_true": [0.0, 0.1, 0.05], "orthogonal": [0.3, 0.4, 0.2]}}


def test_per_mode_table_means_and_counts():
  rows = _rows()
  t = claims.per_mode_table(rows, ("test_error", "learned_success_rate"))
  assert set(t) == {"normal", "on_manifold_true", "adversarial"}
  cell = t["normal"]["500"]
  expect = [r["test_error"] for r in rows if r["mode"] == "normal" and r["train_size"] == 500]
  assert cell["models"] == 2
  np.testing.assert_allclose(cell["test_error"], np.mean(expect))
  np.testing.assert_allclose(cell["test_error_std"], np.std(expect))
  assert np.isnan(cell["learned_success_rate"])  # nothing measured: NaN, not 0


def test_claims_follow_the_rows():
  c = claims.compute_claims(_rows(), _study())
  assert c["regular_leave_manifold"]["regular"] == 0.95
  assert c["regular_leave_manifold"]["true"] == 0.05
  assert np.isnan(c["regular_leave_manifold"]["learned"])
  assert c["orthogonal_fraction"]["true"] == 0.3
  gain = c["on_manifold_training_gain"]["on_manifold_true"]
  np.testing.assert_allclose(gain["500"]["test_error"], 0.2, atol=0.03)
  np.testing.assert_allclose(gain["2000"]["true_success"], 0.2, atol=0.05)
  assert "on_manifold_learned" not in c["on_manifold_training_gain"]
  gap = c["off_manifold_training_error_gap"]
  np.testing.assert_allclose(gap["500"]["test_error"], 0.01, atol=1e-9)
  np.testing.assert_allclose(gap["2000"]["regular_success"], -0.7)
  fit = c["success_error_pearson_r"]["true"]
  np.testing.assert_allclose([fit["slope"], fit["pearson_r"]], [2.0, 1.0], atol=1e-9)
  assert fit["points"] == 12 and fit["p_value"] < 1e-6
  assert np.isnan(c["success_error_pearson_r"]["learned"]["pearson_r"])
  normal = c["on_manifold_success_normal"]["true"]
  assert normal["500"] > normal["2000"]


def test_linear_fit_handles_degenerate_input():
  assert np.isnan(claims.linear_fit([1, 2], [1, 2])["slope"])  # too few points
  assert np.isnan(claims.linear_fit([1, 1, 1], [1, 2, 3])["pearson_r"])  # no spread
  fit = claims.linear_fit([0, 1, 2, np.nan], [1, 3, 5, 7])
  assert fit["points"] == 3 and abs(fit["slope"] - 2) < 1e-9
