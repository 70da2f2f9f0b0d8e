"""README's Reliability row counts bad-input cases: they come from the test suite, so they
cannot drift. `python -m tests.test_readme_counts` prints the current counts."""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# README phrase (its number is the count) -> the pytest node ids (prefixes) it counts.
COUNTS = {
    "API cases": ["tests/reliability/test_bad_inputs.py::test_bad_input_raises_value_error"],
    "entry-point CLI cases": [
        "tests/reliability/test_bad_inputs.py::test_cli_exits_cleanly_with_a_message"],
    "model-stealing cases": [
        "tests/reliability/test_bad_inputs.py::"
        "test_stealing_bad_input_raises_before_compiling_and_charges_nothing"],
    "command lines": [
        "tests/reliability/test_cli.py::test_bad_command_line_exits_2_with_one_error_line"],
    "attack-API cases": ["tests/attacks/test_bad_inputs.py::"],
    "experiment-config cases": [
        "tests/experiments/test_robustness_generalization.py::test_bad_input_fails_before_any_training",
        "tests/experiments/test_context_sensitivity.py::test_bad_input_fails_before_any_work",
        "tests/experiments/test_model_stealing.py::"
        "test_bad_configs_are_refused_before_anything_is_written",
        "tests/experiments/test_reverse_engineering.py::"
        "test_bad_configs_are_refused_before_anything_is_written"],
}


def collected_counts() -> dict[str, int]:
  files = sorted({p.split("::")[0] for prefixes in COUNTS.values() for p in prefixes})
  out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p",
                        "no:xdist", *files], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
  ids = [line.strip() for line in out.stdout.splitlines() if "::" in line]
  assert ids, out.stdout[-2000:] + out.stderr[-2000:]
  return {phrase: sum(any(i.startswith(p) for p in prefixes) for i in ids)
          for phrase, prefixes in COUNTS.items()}


def test_readme_bad_input_counts_match_the_suite():
  readme = open(os.path.join(ROOT, "README.md")).read()
  counts = collected_counts()
  for phrase, n in counts.items():
    assert n > 0, f"no test collected for {phrase!r}: {COUNTS[phrase]}"
    m = re.search(r"(\d+) " + re.escape(phrase), readme)
    assert m, f"README has no '<N> {phrase}'"
    assert int(m.group(1)) == n, f"README says {m.group(1)} {phrase}; the suite has {n}"


if __name__ == "__main__":
  for phrase, n in collected_counts().items():
    print(f"{n} {phrase}")
