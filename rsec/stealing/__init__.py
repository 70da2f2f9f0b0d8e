"""Model stealing: a black-box victim, its defences, and the attacks that steal it.

The victim (part 1): outputs (what a black box returns), defences (the registry and the
baseline defences), mad (MAD and its variants in closed form), misinformation (Adaptive
Misinformation), victim (the pure query core and its budgeted shell), utility (the
defender's cost), server / client (the same victim over HTTP).
The attacks (part 2): query_sets (the pools an attacker draws from), strategies (random
and adaptive query streams), rewards (the adaptive strategy's), knockoff (stacks of
stolen models trained from scratch per budget), jbda (JBDA, JB-self, JB-top-k on the
attack engine), transfer (adversarial examples from stolen models to the victim).
"""
from rsec.stealing import mad, misinformation  # noqa: F401  (register their defences)
from rsec.stealing.defences import (DEFENCES, KEY_MODES, AuxModel, Defence, DefenceContext,
                                    check_posteriors, defend, make_defence, query_keys)
from rsec.stealing.outputs import OUTPUT_MODES, OutputMode, make_output_mode

__all__ = [
    "DEFENCES", "KEY_MODES", "OUTPUT_MODES", "AuxModel", "Defence", "DefenceContext",
    "OutputMode", "check_posteriors", "defend", "make_defence", "make_output_mode",
    "query_keys",
]
