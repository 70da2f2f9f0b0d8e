"""Attacks: one engine over parametrisations of images under norm-ball constraints.

Pixel attacks have the shape `attack(logits_fn, key, x, y) -> x_adv` and are built by
factories from config primitives, directly or by name (`build_attack("pgd", eps=0.3)`).
The engine, `run_attack`, runs any parametrisation (params.py) with any step rule
(steps.py), loss (losses.py) and constraint (threat.py).

Modules: threat (norm balls, projections, inits), params (parametrisations), losses,
steps (step rules), engine (run_attack), base (ATTACKS, checks, compilation), gradient
(FGSM, PGD, Stutz et al., C&W), autopgd (APGD-CE/DLR/T), square_attack, cascades
(worst-case cascades, AutoAttack-style), evaluate, sanity.
"""
from rsec.attacks.autopgd import apgd, apgd_ce, apgd_dlr, apgd_step, apgd_t, checkpoints
from rsec.attacks.base import (ATTACKS, build_attack, check_attack_inputs, logits_shape,
                               make_attack, predict_labels)
from rsec.attacks.cascades import autoattack, cascade
from rsec.attacks.engine import SELECTS, run_attack
from rsec.attacks.evaluate import evaluate_attacks, robust_accuracy_curve
from rsec.attacks.gradient import PixelSpec, cw_l2, engine_impl, fgm, fgsm, paper, pgd
from rsec.attacks.losses import (LOSSES, TARGETED, cross_entropy, dlr, dlr_targeted,
                                 make_loss, margin, ranked_targets)
from rsec.attacks.params import Parametrisation, pixel, tanh_pixel
from rsec.attacks.sanity import sanity_checks
from rsec.attacks.square_attack import square
from rsec.attacks.steps import STEPS, StepContext, StepRule, from_optax
from rsec.attacks.threat import (INITS, NORMS, norm, project_ball, project_l1, project_l2,
                                 project_linf)

__all__ = [
    "ATTACKS", "INITS", "LOSSES", "NORMS", "SELECTS", "STEPS", "TARGETED",
    "Parametrisation", "PixelSpec", "StepContext", "StepRule",
    "apgd", "apgd_ce", "apgd_dlr", "apgd_step", "apgd_t", "autoattack", "build_attack",
    "cascade", "check_attack_inputs", "checkpoints", "cross_entropy", "cw_l2", "dlr",
    "dlr_targeted", "engine_impl", "evaluate_attacks", "fgm", "fgsm", "from_optax",
    "logits_shape", "make_attack", "make_loss", "margin", "norm", "paper", "pgd", "pixel",
    "predict_labels", "project_ball", "project_l1", "project_l2", "project_linf",
    "ranked_targets", "robust_accuracy_curve", "run_attack", "sanity_checks", "square",
    "tanh_pixel",
]
