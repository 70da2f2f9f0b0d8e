"""One study module per experiment: validation, orchestration, results and the report.

The entry points in `experiments/` only parse flags and call a study's `run(config,
workdir)`; import a study to run it from your own code. Studies sit on top of the library
(`rsec.train_classifier`, `rsec.manifold`, `rsec.context`, ...); nothing imports them.
"""
