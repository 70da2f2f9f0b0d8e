"""Regular, on-true-manifold and on-learned-manifold attacks on a test set, with the
paper's success rates, and the distances of the resulting adversarial examples to the
manifolds.

Success rates follow Stutz et al. (CVPR 2019): over the examples the rule counts (the
classifier correct on the clean, on-manifold image), the share of successful attempts
(`success_rate`), and the share broken by any attempt (`success_rate_any`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from rsec import parallel
from rsec.attacks import build_attack
from rsec.attacks.threat import flat
from rsec.manifold import paper_attacks as manifold_attacks
from rsec.manifold import distances

KINDS = ("regular", "true", "learned")


@dataclasses.dataclass(frozen=True)
class Protocol:
  """The evaluation attacks: Adam on u, L-inf eps (pixels) / eta (theta, z), attempts."""
  eps: float = 0.3
  eta: float = 0.3
  steps: int = 40
  attempts: int = 5
  lr: float = 0.005
  latent_bound: float = 2.0


@dataclasses.dataclass(frozen=True)
class Manifolds:
  """What the on-manifold attacks need: the FONTS generator and, optionally, the VAE-GANs.

  prototypes: [F, C, H, W] glyph images; theta_low/high: [6] data ranges;
  decode/encode: class decoder `(z [B, d], cls [B]) -> images` and encoder
  `(x, cls) -> mu [B, d]` (e.g. `learned.class_decoder(state)`); latent_low/high [C, d].
  """
  prototypes: Any
  theta_low: Any
  theta_high: Any
  decode: Callable | None = None
  encode: Callable | None = None
  latent_low: Any = None
  latent_high: Any = None


def _rates(attempts: np.ndarray, counted: np.ndarray) -> dict[str, float]:
  """attempts [A, N] bool, counted [N] bool -> per-attempt and any-attempt success rates."""
  if not counted.any():
    return {"success_rate": float("nan"), "success_rate_any": float("nan"), "counted": 0}
  return {"success_rate": float(attempts[:, counted].mean()),
          "success_rate_any": float(attempts.any(0)[counted].mean()),
          "counted": int(counted.sum())}


def make_attack_suite(logits_fn: Callable, manifolds: Manifolds,
                      protocol: Protocol = Protocol(), kinds: tuple[str, ...] = KINDS
                      ) -> Callable:
  """The evaluation attacks, compiled once for every model of one architecture.

  logits_fn(variables, x [B, H, W, 1]) -> logits [B, K], with the model's weights as an
  argument (e.g. `lambda v, x: model.apply(v, x, train=False)`), so a grid of trained
  models reuses the compilations. Returns
  `suite(variables, key, test, *, batch_size=250, mesh=None) -> (rates, per_example)` for
  FONTS test examples `test` (image, label, font, theta): rates[kind] = dict(success_rate,
  success_rate_any, counted); per_example[kind] = dict(x_adv [N, H, W, 1], success [N]
  (valid, any attempt), counted [N], and theta [N, 6] / z [N, d] where the attack has them).
  """
  unknown = set(kinds) - set(KINDS)
  if unknown or not kinds:
    raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {tuple(kinds)}")
  if "learned" in kinds and manifolds.decode is None:
    raise ValueError("the 'learned' attack needs manifolds.decode/encode and the latent box "
                     "(a trained VAE-GAN)")
  p = protocol
  protos = jnp.asarray(manifolds.prototypes)
  kw = dict(eta=p.eta, steps=p.steps, restarts=p.attempts, lr=p.lr)
  regular_attack = build_attack("paper", eps=p.eps, norm="linf", steps=p.steps, lr=p.lr,
                                restarts=p.attempts, select="first_success")
  low, high = ((jnp.asarray(manifolds.latent_low), jnp.asarray(manifolds.latent_high))
               if "learned" in kinds else (None, None))

  def regular(f, key, b):
    x_adv, info = regular_attack(f, key, b["image"], b["label"], return_info=True,
                                 check=False)
    clean = jnp.argmax(f(b["image"]), -1) == b["label"]
    return {"x_adv": x_adv, "attempts": info["attempt_success"].T, "counted": clean,
            "success": info["success"] & clean}

  def true(f, key, b):
    _, x_adv, info = manifold_attacks.true_manifold_attack(
        f, key, protos, b["font"], b["label"], b["theta"], manifolds.theta_low,
        manifolds.theta_high, **kw)
    return {"x_adv": x_adv, "attempts": info["attempt_success"].T,
            "counted": info["clean_correct"], "success": info["success_valid"],
            "theta": info["theta"]}

  def learned(f, key, b):
    y = b["label"]
    z0 = manifolds.encode(b["image"], y)
    _, x_adv, info = manifold_attacks.learned_manifold_attack(
        f, key, manifolds.decode, z0, y, low[y], high[y], bound=p.latent_bound, **kw)
    in_box = jnp.all(jnp.abs(info["z"]) <= p.latent_bound + 1e-6, axis=-1)
    return {"x_adv": x_adv, "attempts": info["attempt_success"].T & in_box[:, None],
            "counted": info["clean_correct"], "success": info["success_valid"],
            "z": info["z"]}

  def compiled(fn):
    def run(variables, b):
      # One key per row; a chunk's attack uses its first row's key (the engine splits
      # it per attempt), so chunks draw independent randomness.
      f = lambda x: logits_fn(variables, x)  # noqa: E731
      return fn(f, jax.random.wrap_key_data(b["key"][0]), b)
    return jax.jit(run)

  table = {"regular": regular, "true": true, "learned": learned}
  fns = {kind: compiled(table[kind]) for kind in kinds}

  def suite(variables, key: jax.Array, test: dict[str, np.ndarray], *, batch_size: int = 250,
            mesh: jax.sharding.Mesh | None = None):
    missing = {"image", "label", "font", "theta"} - set(test)
    if missing:
      raise ValueError(f"test must hold FONTS examples with keys image, label, font, theta; "
                       f"missing {sorted(missing)}")
    n = len(test["label"])
    rates, per_example = {}, {}
    for i, kind in enumerate(kinds):
      keys = jax.random.key_data(jax.random.split(jax.random.fold_in(key, i), n))
      arrays = {k: test[k] for k in ("image", "label", "font", "theta")}
      arrays["key"] = np.asarray(keys)
      out = parallel.map_batches(lambda b, f=fns[kind]: f(variables, b), arrays, batch_size,
                                 mesh)
      rates[kind] = _rates(out.pop("attempts").T, out["counted"])
      per_example[kind] = out
    return rates, per_example
  return suite


def distance_study(key: jax.Array, test: dict[str, np.ndarray],
                   per_example: dict[str, dict[str, np.ndarray]], manifolds: Manifolds, *,
                   pca: distances.PCANeighbours | None = None, num: int = 64,
                   steps: int = 200, restarts: int = 20, all_fonts: int = 0
                   ) -> dict[str, dict[str, np.ndarray]]:
  """Distances of successful adversarial examples to the manifolds (claim 1).

  For each attack kind, the first `num` successful examples x_tilde of clean images x:
    perturbation   ||x_tilde - x||_2
    true           distance to FONTS (font and character fixed, over theta)
    true_all_fonts the same minimised over every font of the class, for the first
                   `all_fonts` examples (NaN for the others; F times the cost)
    learned        distance to the class decoder's image (when a VAE-GAN is given)
    local          NN+PCA residual (when `pca` is given)
    ratio_true     true / perturbation: 0 = stays on the manifold, 1 = leaves orthogonally
    orthogonal     share of ||x_tilde - x|| orthogonal to the FONTS tangent space at theta0
  Returns {kind: {name: [n_kind]}} (kinds with no success are left out).
  """
  protos = jnp.asarray(manifolds.prototypes)
  out = {}
  for i, (kind, ex) in enumerate(per_example.items()):
    idx = np.flatnonzero(ex["success"])[:num]
    if len(idx) == 0:
      continue
    x, x_adv = test["image"][idx], ex["x_adv"][idx]
    font, char, theta = test["font"][idx], test["label"][idx], test["theta"][idx]
    k = jax.random.fold_in(key, i)
    _, _, d_true = distances.project_true(k, jnp.asarray(x_adv), font, char, protos,
                                          manifolds.theta_low, manifolds.theta_high,
                                          steps=steps, restarts=restarts)
    pert = np.linalg.norm(flat(x_adv - x), axis=1)
    r = {"perturbation": pert, "true": np.asarray(d_true),
         "ratio_true": np.asarray(d_true) / np.maximum(pert, 1e-12),
         "orthogonal": np.asarray(distances.tangent_fraction(protos, font, char, theta,
                                                             jnp.asarray(x_adv - x)))}
    if all_fonts:
      m = min(all_fonts, len(idx))
      _, _, d_all = distances.project_true_all_fonts(
          jax.random.fold_in(k, 2), jnp.asarray(x_adv[:m]), jnp.asarray(char[:m]), protos,
          manifolds.theta_low, manifolds.theta_high, steps=steps, restarts=restarts)
      # The example's own font is one of the candidates: its (separately optimised)
      # projection bounds the minimum over fonts.
      d_all = np.minimum(np.asarray(d_all), np.asarray(d_true)[:m])
      r["true_all_fonts"] = np.concatenate([d_all, np.full(len(idx) - m, np.nan, np.float32)])
    if manifolds.decode is not None:
      z_start = manifolds.encode(jnp.asarray(x_adv), jnp.asarray(char))
      _, _, d_learned = distances.project_learned(
          jax.random.fold_in(k, 1), jnp.asarray(x_adv), jnp.asarray(char), manifolds.decode,
          z_start, steps=steps, restarts=max(1, restarts // 2))
      r["learned"] = np.asarray(d_learned)
    if pca is not None:
      r["local"] = pca.distance(x_adv)
    out[kind] = r
  return out
